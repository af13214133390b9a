"""The default model: registered, small, with CamVid metadata, and its weights ship inside."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import seg_perception
from seg_perception.runtime.models import get_entry
from seg_perception.runtime.models.checkpoint import load_model, read_checkpoint
from seg_perception.runtime.models.zoo import DEFAULT_MODEL

# Validation mIoU of LightFPN's shipped weights (the default until the distilled student),
# reported with them (CamVid val, 101 frames, 11 classes at 480x360, void ignored); the slow
# test allows one point below it. The default's own figures: test_shipped_weights.py.
LIGHTFPN_VAL_MIOU = 0.661  # epoch 202 of the run recorded in weights/lightfpn.json

PACKAGE_DIR = Path(seg_perception.__file__).resolve().parent


def _shipped() -> Path:
    path = get_entry(DEFAULT_MODEL).shipped_weights_path()
    if path is None:
        pytest.skip(f"the default model's weights are not in this checkout ({DEFAULT_MODEL})")
    return path


def test_default_model_is_the_student_with_camvid_meta() -> None:
    assert DEFAULT_MODEL == "mnv1_fpn_050"
    entry = get_entry(DEFAULT_MODEL)
    meta = entry.meta
    assert meta.num_classes == 11 and meta.drivable_classes == (3,)
    assert meta.class_names[3] == "Road" and meta.ignore_index == 11
    w, h = meta.input_size
    assert w % 32 == 0 and h % 32 == 0
    assert entry.shipped_weights == "mnv1_fpn_050.safetensors"
    assert read_checkpoint(_shipped()).meta.input_size == meta.input_size


def test_default_model_forward_shape_and_size() -> None:
    model = load_model(DEFAULT_MODEL).model
    params = sum(p.numel() for p in model.parameters())
    assert params * 4 < 8e6  # fp32 weights under 8 MB
    w, h = model.meta.input_size
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, h, w))
    assert out.shape == (1, 11, h // 4, w // 4)


def test_shipped_weights_load_from_the_package() -> None:
    path = _shipped()
    assert path.parent == PACKAGE_DIR / "weights"
    assert path.stat().st_size < 8 * 1024 * 1024
    raw = read_checkpoint(path)
    assert raw.model_name == DEFAULT_MODEL and raw.meta is not None
    assert raw.meta.dataset == "camvid" and raw.meta.num_classes == 11
    loaded = load_model("default")
    assert loaded.trained and loaded.name == DEFAULT_MODEL
    assert "shipped with the package" in loaded.weights


@pytest.mark.slow
def test_lightfpn_weights_score_on_camvid_val(camvid_dir: Path) -> None:
    from seg_perception.training.datasets import open_dataset
    from seg_perception.training.evaluate import evaluate

    if get_entry("lightfpn").shipped_weights_path() is None:
        pytest.skip("LightFPN's weights are not in this checkout")
    loaded = load_model("lightfpn")
    data = open_dataset("camvid", camvid_dir, "val", cache=False)
    assert len(data) == 101
    result = evaluate(loaded.model, loaded.meta, data, "cpu")
    assert result.miou >= LIGHTFPN_VAL_MIOU - 0.01, f"val mIoU {result.miou:.4f}"


def test_shipped_weights_load_outside_the_checkout(tmp_path: Path) -> None:
    """From another working directory (no ../shared beside it) the default still loads."""
    import os
    import subprocess
    import sys

    _shipped()
    code = ("from seg_perception.runtime.models.checkpoint import load_model; "
            "m = load_model('default'); print(m.trained, m.name)")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", DEFAULT_MODEL]
