"""Every model that ships weights: the file loads from the package and its record describes it.

The record (``seg_perception/weights/<file stem>.json``) is what users read to trust a model:
where its initial weights came from, how it was trained, what it scores on which split and how
fast it runs. These tests tie the record to the file (name, sha256, input size, parameters),
so a retrained file cannot ship with the old figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seg_perception.cli import main as cli_main
from seg_perception.runtime.models import get_entry, list_models
from seg_perception.runtime.models.checkpoint import file_sha256, load_model, read_checkpoint

SHIPPED = sorted(n for n in list_models() if get_entry(n).shipped_weights)
# Records written since the held-out protocol: they carry the full set of facts.
FULL_RECORD_KEYS = {"model", "file", "sha256", "parameters", "initial_weights", "training",
                    "estimate", "speed"}


def _record(name: str) -> dict:
    path = get_entry(name).shipped_weights_path()
    if path is None:
        pytest.skip(f"{name}: its shipped weights are not in this checkout")
    record = path.with_suffix(".json")
    assert record.is_file(), f"{path.name} ships without a record ({record.name})"
    return json.loads(record.read_text())


def test_at_least_the_default_and_the_teacher_ship() -> None:
    assert {"lightfpn", "espnetv2_camvid", "mnv1_fpn_050"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_matches_its_record(name: str) -> None:
    record = _record(name)
    path = get_entry(name).shipped_weights_path()
    assert path is not None and record["model"] == name and record["file"] == path.name
    assert path.stat().st_size < 8 * 1024 * 1024
    raw = read_checkpoint(path)
    assert raw.meta is not None and raw.model_name == name
    loaded = load_model(name)
    assert loaded.trained and "shipped with the package" in loaded.weights
    if set(record) >= FULL_RECORD_KEYS:
        assert record["sha256"] == file_sha256(path)
        assert record["parameters"] == sum(p.numel() for p in loaded.model.parameters())
        assert tuple(record["estimate"]["input_size"]) == tuple(raw.meta.input_size)
        assert tuple(record["speed"]["input_size"]) == tuple(raw.meta.input_size)
        for src in record["initial_weights"]:
            assert src["source"] and src["licence"]
        per_class = record["estimate"]["per_class_iou"]
        assert list(per_class) == list(raw.meta.class_names)
        mean = sum(per_class.values()) / len(per_class)
        assert abs(mean - record["estimate"]["miou"]) < 1e-3


def test_new_records_are_complete() -> None:
    for name in ("espnetv2_camvid", "mnv1_fpn_050"):
        record = _record(name)
        assert set(record) >= FULL_RECORD_KEYS, f"{name}: {FULL_RECORD_KEYS - set(record)}"
        assert record["estimate"]["split"] == "train:0006R0"
        assert record["training"]["commands"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["espnetv2_camvid", "mnv1_fpn_050"])
def test_shipped_weights_score_on_the_decision_drive(name: str, camvid_dir: Path,
                                                     tmp_path: Path) -> None:
    """Through the node's path on drive 0006R0: the recorded figure, or better when trained on it.

    The teacher ships the weights its figure was measured on; the default ships the train+val
    sibling of the held-out run that gave its estimate, so it has seen 0006R0 and must score
    at least that estimate.
    """
    record = _record(name)
    out = tmp_path / "eval.json"
    assert cli_main(["eval", "--model", name, "--data-root", str(camvid_dir), "--split",
                     "train:0006R0", "--threads", "2", "--json", str(out)]) == 0
    miou = json.loads(out.read_text())["miou"]
    est = record["estimate"]
    if est.get("weights") == record["file"]:
        assert abs(miou - est["miou"]) < 0.01, f"{name}: {miou:.4f} vs {est['miou']:.4f}"
    else:
        assert miou >= est["miou"] - 0.01, f"{name}: {miou:.4f} vs {est['miou']:.4f}"
