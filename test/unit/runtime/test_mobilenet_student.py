"""MobileNet backbones converted from the Coral ImageNet tflite files, and the FPN students.

The conversion tests read ``../shared/models/coral`` in place and skip without it; the
comparison with the LiteRT interpreter also skips where ``ai-edge-litert`` is not installed
(a dev tool, not a dependency), and a recorded class and logit stand in for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shared_data import CAMVID, CORAL, require

from seg_perception.runtime.models import create_model, list_models
from seg_perception.runtime.models.mobilenet import (
    MobileNetV1,
    MobileNetV2,
    calibrate_batchnorm,
    load_tflite_backbone,
)
from seg_perception.runtime.models.state import CheckpointError
from seg_perception.runtime.models.tflite_reader import TFLiteError, read_tflite
from seg_perception.training.trainer import init_from

V1_050, V1_075 = "mobilenet_v1_0.5_160_quant.tflite", "mobilenet_v1_0.75_192_quant.tflite"
V2 = "mobilenet_v2_1.0_224_quant.tflite"
CLASSIFIERS = {V1_050: lambda: MobileNetV1(0.5, tf_padding=True),
               V1_075: lambda: MobileNetV1(0.75, tf_padding=True),
               V2: lambda: MobileNetV2(tf_padding=True)}
STUDENTS = {"mnv1_fpn_050": V1_050, "mnv1_fpn_075": V1_075, "mnv2_fpn": V2}
FRAME = "0016E5_07963.png"  # CamVid val; all three classifiers agree with LiteRT on it
# Our fp32 top-1 on FRAME (1001-way: 830 = ImageNet "streetcar") and its logit, recorded
# from the converted models after checking the same class against the LiteRT interpreter.
EXPECTED = {V1_050: (830, 12.57), V1_075: (830, 13.92), V2: (830, 9.42)}


def _tflite(name: str) -> Path:
    return require(CORAL / name)


def _frame(size: int) -> np.ndarray:
    path = require(CAMVID / "val" / FRAME)
    im = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _ours(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy((x.astype(np.float32) - 128.0) / 128.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        return model.eval()(t)[0]


def test_registry_lists_the_students() -> None:
    assert set(STUDENTS) <= set(list_models())
    for name in STUDENTS:
        model = create_model(name).eval()
        assert model.meta.num_classes == 11 and model.meta.output_stride == 4
        assert model.meta.mean == pytest.approx((128 / 255,) * 3)
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 11, 16, 24)


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_converter_loads_each_tflite_strictly(name: str) -> None:
    path = _tflite(name)
    model = CLASSIFIERS[name]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert load_tflite_backbone(model, path) == []  # nothing of the graph left unused
    changed = {k for k, v in model.state_dict().items()
               if k.endswith(("weight", "bias")) and not torch.equal(v, before[k])}
    # Every conv, the classifier and every BN's bias (the folded bias) filled; BN weights
    # stay 1 (identity BN).
    params = {k for k in before if k.endswith(("weight", "bias"))
              and not k.endswith("bn.weight")}
    assert changed == params
    # The first conv equals the graph's dequantised weight, OHWI -> OIHW.
    graph = read_tflite(path)
    first = next(op for op in graph.ops if op.name == "CONV_2D")
    w = graph.tensors[first.inputs[1]].dequantize().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(model.features[0].conv.weight.detach().numpy(), w)


def test_converter_refuses_another_network() -> None:
    with pytest.raises(CheckpointError, match="weight"):
        load_tflite_backbone(MobileNetV1(0.75), _tflite(V1_050))
    with pytest.raises(CheckpointError, match="convolutions"):
        load_tflite_backbone(MobileNetV2(), _tflite(V1_050))


def test_reader_refuses_a_non_tflite_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(TFLiteError, match="TFL3"):
        read_tflite(bad)


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_converted_top1_on_a_real_frame(name: str) -> None:
    model = CLASSIFIERS[name]()
    load_tflite_backbone(model, _tflite(name))
    size = {V1_050: 160, V1_075: 192, V2: 224}[name]
    logits = _ours(model, _frame(size))
    cls, logit = EXPECTED[name]
    assert int(logits.argmax()) == cls
    assert float(logits.max()) == pytest.approx(logit, abs=0.1)


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_converted_top1_equals_the_interpreter(name: str) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    path = _tflite(name)
    model = CLASSIFIERS[name]()
    load_tflite_backbone(model, path)
    it = litert.Interpreter(str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    x = _frame(int(inp["shape"][1]))
    it.set_tensor(inp["index"], x[None])
    it.invoke()
    assert int(_ours(model, x).argmax()) == int(it.get_tensor(out["index"])[0].argmax())


@pytest.mark.parametrize("student", list(STUDENTS))
def test_init_from_tflite_fills_the_backbone_only(student: str) -> None:
    path = _tflite(STUDENTS[student])
    model = create_model(student)
    decoder_before = model.classifier.weight.clone()
    init_from(model, str(path))
    ref = {V1_050: lambda: MobileNetV1(0.5, None, tf_padding=True),
           V1_075: lambda: MobileNetV1(0.75, None, tf_padding=True),
           V2: lambda: MobileNetV2(None, last_conv=False, tf_padding=True)}[STUDENTS[student]]()
    skipped = load_tflite_backbone(ref, path)
    assert skipped  # the ImageNet head (and V2's 1x1 to 1280) are not part of a student
    for k, v in ref.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    assert torch.equal(model.classifier.weight, decoder_before)


def test_calibrated_batchnorm_keeps_the_function() -> None:
    model = MobileNetV1(0.5, tf_padding=True)
    load_tflite_backbone(model, _tflite(V1_050))
    x = torch.from_numpy((_frame(160).astype(np.float32) - 128) / 128).permute(2, 0, 1)[None]
    before = _ours(model, _frame(160))
    assert calibrate_batchnorm(model, [x, x.flip(3)]) == 27
    bn = model.features[0].bn
    assert float(bn.running_var.mean()) != pytest.approx(1.0, abs=1e-3)  # real statistics
    torch.testing.assert_close(_ours(model, _frame(160)), before, atol=1e-3, rtol=1e-4)
    # Training mode on the calibration batch itself reproduces the function too.
    model.train()
    with torch.no_grad():
        train_out = model(torch.cat([x, x.flip(3)]))[0]
    torch.testing.assert_close(train_out, before, atol=1e-2, rtol=1e-3)
