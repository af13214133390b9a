"""Metrics and ``seg-perception eval`` on synthetic data whose exact answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from seg_perception.runtime.datasets_info import CAMVID_CLASSES, CAMVID_PALETTE
from seg_perception.runtime.models import registry
from seg_perception.runtime.models.checkpoint import load_model, save_checkpoint
from seg_perception.runtime.models.meta import ModelMeta
from seg_perception.training.datasets import open_dataset
from seg_perception.training.evaluate import evaluate
from seg_perception.training.metrics import ConfusionMatrix, plot_confusion

N = len(CAMVID_CLASSES)
W, H = 64, 48
ORACLE_META = ModelMeta(
    arch="oracle_test", num_classes=N, class_names=CAMVID_CLASSES, palette=CAMVID_PALETTE,
    drivable_classes=(3,), input_size=(W, H), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
    output_stride=1, dataset="camvid", ignore_index=11,
)


class ColourOracle(nn.Module):
    """A 1x1 conv scoring each pixel by closeness to each class's palette colour.

    ``2 p.x - |p|^2`` ranks classes like ``-|x - p|^2``, so on images painted with the palette
    (and shown at their native size) it reproduces the annotation exactly.
    """

    def __init__(self, num_classes: int = N) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)
        self.set_colours(list(range(num_classes)))

    def set_colours(self, order: list[int]) -> None:
        p = torch.tensor([CAMVID_PALETTE[i] for i in order], dtype=torch.float32) / 255.0
        with torch.no_grad():
            self.conv.weight.copy_((2 * p)[:, :, None, None])
            self.conv.bias.copy_(-(p * p).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def write_synthetic_camvid(root: Path, frames: int = 3, seed: int = 0) -> np.ndarray:
    """Palette-painted frames in SegNet layout (val split); returns the stacked labels."""
    rng = np.random.default_rng(seed)
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    lines, labels = [], []
    for i in range(frames):
        lab = np.zeros((H, W), np.uint8)
        for c in range(N):  # vertical stripes of every class, then some void pixels
            lab[:, c * W // N : (c + 1) * W // N] = c
        lab = np.roll(lab, i * 3, axis=1)
        lab[rng.random((H, W)) < 0.05] = 11
        img = np.array((*CAMVID_PALETTE, (0, 0, 0)), np.uint8)[lab]
        img[lab == 11] = rng.integers(0, 256, (int((lab == 11).sum()), 3))
        cv2.imwrite(str(root / "val" / f"f{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "valannot" / f"f{i}.png"), lab)
        lines.append(f"val/f{i}.png valannot/f{i}.png")
        labels.append(lab)
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    return np.stack(labels)


@pytest.fixture
def oracle_registered(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register the oracle for this test only (the registry is restored afterwards)."""
    entry = registry.ModelEntry("oracle_test", lambda num_classes=N: ColourOracle(num_classes),
                                ORACLE_META, "test oracle")
    monkeypatch.setitem(registry._REGISTRY, "oracle_test", entry)
    return "oracle_test"


def test_confusion_perfect_and_ignored() -> None:
    cm = ConfusionMatrix(3, ignore_index=255)
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = target.copy()
    pred[1, 2:] = 0  # wrong, but on ignored pixels
    cm.update(pred, target)
    assert cm.counts.sum() == 6
    np.testing.assert_allclose(cm.iou(), [1.0, 1.0, 1.0])
    assert cm.miou() == 1.0 and cm.pixel_accuracy() == 1.0


def test_confusion_swapped_class_lowers_exactly_its_ious() -> None:
    cm = ConfusionMatrix(4, ignore_index=255)
    target = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    pred = np.array([0, 0, 0, 0, 2, 2, 2, 2, 2, 3])  # class 1 called class 2
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    iou = cm.iou()
    assert iou[0] == 1.0 and iou[3] == 1.0
    assert iou[1] == 0.0
    assert iou[2] == pytest.approx(3 / 5)  # TP 3, FP 2, FN 0
    assert cm.miou() == pytest.approx((1 + 0 + 0.6 + 1) / 4)
    assert cm.pixel_accuracy() == pytest.approx(8 / 10)
    assert cm.counts[1, 2] == 2


def test_confusion_absent_class_is_nan_and_skipped() -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    assert np.isnan(cm.iou()[2])
    assert cm.miou() == 1.0
    summary = cm.summary(["a", "b", "c"])
    assert summary["per_class_iou"]["c"] is None


def test_plot_confusion(tmp_path: Path) -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]))
    path = plot_confusion(cm, ["a", "b", "c"], tmp_path / "cm.png")
    assert cv2.imread(str(path)) is not None


def test_evaluate_oracle_is_perfect_and_swap_hits_two_classes(tmp_path: Path) -> None:
    write_synthetic_camvid(tmp_path)
    data = open_dataset("camvid", tmp_path, "val")
    oracle = ColourOracle().eval()
    result = evaluate(oracle, ORACLE_META, data)
    np.testing.assert_allclose(result.confusion.iou(), np.ones(N))
    assert result.miou == 1.0
    order = list(range(N))
    order[3], order[8] = 8, 3  # Road and Car swap colours
    oracle.set_colours(order)
    iou = evaluate(oracle, ORACLE_META, data).confusion.iou()
    assert iou[3] == 0.0 and iou[8] == 0.0
    np.testing.assert_allclose(np.delete(iou, [3, 8]), np.ones(N - 2))


def test_eval_cli_writes_json_and_confusion(tmp_path: Path, oracle_registered: str) -> None:
    from seg_perception.cli import main

    root = tmp_path / "data"
    write_synthetic_camvid(root)
    ckpt = save_checkpoint(load_model(oracle_registered).model, tmp_path / "oracle.safetensors")
    out = tmp_path / "out"
    rc = main(["eval", "--model", oracle_registered, "--checkpoint", str(ckpt), "--dataset",
               "camvid", "--data-root", str(root), "--split", "val", "--device", "cpu",
               "--json", str(tmp_path / "r.json"), "--out", str(out)])
    assert rc == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["miou"] == 1.0
    assert results["per_class_iou"]["Road"] == 1.0
    assert results["frames"] == 3
    assert (out / "confusion.png").is_file() and (out / "results.json").is_file()


def test_eval_cli_reports_missing_data(tmp_path: Path) -> None:
    from seg_perception.cli import main

    rc = main(["eval", "--model", "tiny_seg", "--data-root", str(tmp_path), "--split", "val"])
    assert rc == 2


def test_drivable_confusion_counts_obstacles_read_as_road() -> None:
    from seg_perception.training.evaluate import drivable_confusion

    cm = ConfusionMatrix(3, ignore_index=255)
    # class 0 road (drivable), 1 car, 2 sky: 1 of 4 car pixels predicted road, no sky pixel.
    cm.update(np.array([0, 0, 0, 1, 1, 1, 2, 2]), np.array([0, 0, 1, 1, 1, 1, 2, 2]))
    shares = drivable_confusion(cm, ["road", "car", "sky"], (0,))
    assert shares == {"car": 0.25, "sky": 0.0}


def test_eval_cli_engine_and_logits_paths(tmp_path: Path, oracle_registered: str) -> None:
    from seg_perception.cli import main

    root = tmp_path / "data"
    write_synthetic_camvid(root)
    model = load_model(oracle_registered).model
    order = list(range(N))
    order[3], order[8] = 8, 3  # Road and Car swap colours: every car pixel reads as road
    model.set_colours(order)
    ckpt = save_checkpoint(model, tmp_path / "swapped.safetensors")
    results = {}
    for path in ("engine", "logits"):
        rc = main(["eval", "--model", oracle_registered, "--checkpoint", str(ckpt),
                   "--data-root", str(root), "--device", "cpu", "--path", path,
                   "--json", str(tmp_path / f"{path}.json")])
        assert rc == 0
        results[path] = json.loads((tmp_path / f"{path}.json").read_text())
    for r in results.values():
        assert r["read_as_drivable"]["Car"] == 1.0
        assert r["read_as_drivable"]["Sky"] == 0.0
        assert "Road" not in r["read_as_drivable"]
    assert results["engine"]["path"] == "engine" and "on cpu" in results["engine"]["engine"]
    assert results["engine"]["confusion"] == results["logits"]["confusion"]


def test_eval_engine_path_is_the_node_engine(camvid_dir: Path) -> None:
    """The figure eval reports comes from SegEngine, exactly as the node calls it."""
    from seg_perception.runtime.engine import build_engine
    from seg_perception.training.evaluate import evaluate_engine

    data = open_dataset("camvid", camvid_dir, "val", limit=2)
    engine, _ = build_engine("default", device="cpu", threads=1)
    result = evaluate_engine(engine, data)
    expected = ConfusionMatrix(N, 11)
    for i in range(len(data)):
        img, lab = data.load(i)
        expected.update(engine(img).labels, lab)
    np.testing.assert_array_equal(result.confusion.counts, expected.counts)
    assert result.confusion.counts.sum() > 0.9 * 2 * 480 * 360
