"""ONNX export and the ONNX Runtime backend: same outputs as PyTorch, self-describing files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from nets import TWO_HEAD_META, scene, two_head
from shared_data import CAMVID, TWINLITENET_WEIGHTS, require
from torch import nn

from seg_perception.cli import main
from seg_perception.runtime.engine import EngineConfigError, SegEngine, build_engine
from seg_perception.runtime.engine.onnx_backend import OnnxBackend
from seg_perception.runtime.export import export_onnx
from seg_perception.runtime.models import ModelMeta, create_model, list_models
from seg_perception.runtime.models.checkpoint import META_KEY, MODEL_KEY, load_model

CPU = torch.device("cpu")
ZOO = ("pidnet_s", "ddrnet_23_slim", "twinlitenet")


def as_tuple(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def assert_matches_pytorch(model: nn.Module, path: Path, w: int, h: int, batch: int = 1) -> None:
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = as_tuple(model(x))
    got = as_tuple(OnnxBackend(path, CPU)(x))
    assert len(got) == len(expected)
    for e, g in zip(expected, got, strict=True):
        assert g.shape == e.shape
        # 1e-3 on logits of order 1; deep random-weight nets reach logits of 50+, where fp32
        # rounding in a different kernel order alone exceeds 1e-3, so scale with them.
        scale = max(1.0, float(e.abs().max()))
        diff = float((e - g).abs().max())
        assert diff < 1e-3 * scale, f"max |onnx - torch| = {diff:.2e}, logits up to {scale:.1f}"


def test_tiny_seg_export_matches_pytorch_and_carries_metadata(tmp_path: Path) -> None:
    model = create_model("tiny_seg").eval()
    path = export_onnx(model, model.meta, tmp_path / "tiny.onnx", width=96, height=64)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["scores"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props[MODEL_KEY] == "tiny_seg"
    assert ModelMeta.from_json(props[META_KEY]) == model.meta.replace(input_size=(96, 64))
    assert_matches_pytorch(model, path, 96, 64)

    backend = OnnxBackend(path, CPU)
    assert backend.meta == model.meta.replace(input_size=(96, 64))
    assert backend.fixed_size == (96, 64) and backend.model_name == "tiny_seg"
    assert backend.device == CPU


def test_two_output_export_matches_pytorch(tmp_path: Path) -> None:
    model = two_head()
    path = export_onnx(model, TWO_HEAD_META, tmp_path / "two.onnx")  # at the meta's size
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["scores", "drivable_scores"]
    assert_matches_pytorch(model, path, 64, 48)
    scores, drivable = OnnxBackend(path, CPU)(torch.zeros(1, 3, 48, 64))
    assert scores.shape == (1, 3, 12, 16) and drivable.shape == (1, 2, 24, 32)


def test_dynamic_export_runs_other_sizes_and_batches(tmp_path: Path) -> None:
    model = two_head()
    path = export_onnx(model, TWO_HEAD_META, tmp_path / "dyn.onnx", 64, 48, dynamic=True)
    backend = OnnxBackend(path, CPU)
    assert backend.dynamic and backend.fixed_size is None
    assert_matches_pytorch(model, path, 96, 80, batch=2)
    assert backend.resolve_input_size((128, 96)) == (128, 96)


def test_onnx_engine_gives_the_torch_engines_labels(tmp_path: Path) -> None:
    model = create_model("tiny_seg").eval()
    path = export_onnx(model, model.meta, tmp_path / "tiny.onnx", width=160, height=120)
    torch_engine = SegEngine(model, model.meta, "cpu", "fp32", input_size=(160, 120))
    onnx_engine, info = build_engine(str(path), device="cpu", backend="onnx")
    assert info.backend == "onnx" and info.precision == "fp32"
    assert onnx_engine.input_size == (160, 120)
    assert info.model == "tiny_seg" and str(path) in info.weights
    frames = [scene(200, 150)]
    if CAMVID.exists():
        frames.append(cv2.cvtColor(cv2.imread(str(sorted((CAMVID / "val").glob("*.png"))[0])),
                                   cv2.COLOR_BGR2RGB))
    for frame in frames:
        a, b = torch_engine(frame), onnx_engine(frame)
        assert b.labels.shape == frame.shape[:2]
        assert (a.labels == b.labels).mean() > 0.999
        assert (a.drivable == b.drivable).mean() > 0.999


def test_onnx_engine_uses_the_drivable_head(tmp_path: Path) -> None:
    model = two_head()
    path = export_onnx(model, TWO_HEAD_META, tmp_path / "two.onnx")
    torch_engine = SegEngine(model, TWO_HEAD_META, "cpu", "fp32")
    onnx_engine, _ = build_engine(str(path), device="cpu", backend="onnx")
    frame = scene(80, 60)
    a, b = torch_engine(frame), onnx_engine(frame)
    assert set(np.unique(b.drivable)) <= {0, 255}
    assert (a.drivable == b.drivable).mean() > 0.999
    assert (a.labels == b.labels).mean() > 0.999


def test_camvid_frame_through_exported_model(tmp_path: Path) -> None:
    frame_path = sorted((require(CAMVID) / "val").glob("*.png"))[0]
    model = create_model("tiny_seg").eval()
    path = export_onnx(model, model.meta, tmp_path / "tiny.onnx", width=240, height=176)
    engine, _ = build_engine(str(path), device="cpu")
    frame = cv2.cvtColor(cv2.imread(str(frame_path)), cv2.COLOR_BGR2RGB)
    result = engine(frame)
    assert result.labels.shape == (360, 480) and result.labels.max() < 11


def test_foreign_onnx_is_refused_clearly(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "foreign.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(EngineConfigError, match="not exported by seg-perception"):
        OnnxBackend(path, CPU)
    with pytest.raises(EngineConfigError, match="not exported by seg-perception"):
        build_engine(str(path), device="cpu")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(EngineConfigError, match="not a loadable ONNX model"):
        OnnxBackend(garbage, CPU)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxBackend(tmp_path / "absent.onnx", CPU)


def test_fixed_size_export_refuses_other_sizes(tmp_path: Path) -> None:
    model = create_model("tiny_seg").eval()
    path = export_onnx(model, model.meta, tmp_path / "tiny.onnx", width=96, height=64)
    with pytest.raises(EngineConfigError, match="exported for input 96x64, not 128x64"):
        build_engine(str(path), device="cpu", input_size=(128, 64))
    with pytest.raises(ValueError, match="takes input 96x64"):
        OnnxBackend(path, CPU)(torch.zeros(1, 3, 64, 128))


def test_cuda_without_cuda_provider_is_a_clear_error(tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    model = create_model("tiny_seg").eval()
    path = export_onnx(model, model.meta, tmp_path / "tiny.onnx", width=32, height=32)
    with pytest.raises(EngineConfigError, match="no CUDA execution provider"):
        OnnxBackend(path, torch.device("cuda", 0))


def test_export_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export", "--model", "tiny_seg", "--format", "onnx", "--output", str(out),
                 "--width", "64", "--height", "48", "--opset", "17"]) == 0
    backend = OnnxBackend(out, CPU)
    assert backend.meta.input_size == (64, 48) and not backend.trained
    assert "random" in backend.weights
    with pytest.raises(SystemExit) as exc:
        main(["export", "--model", "tiny_seg", "--format", "tensorrt"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "tensorrt" in err and "onnx" in err


def test_export_safetensors_sets_the_input_size(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Same weights, the metadata's input size changed: the engine then runs that size."""
    from seg_perception.runtime.models.checkpoint import read_checkpoint, save_checkpoint

    net = load_model("tiny_seg").model
    src = save_checkpoint(net, tmp_path / "src.safetensors")
    out = tmp_path / "small.safetensors"
    assert main(["export", "--model", "tiny_seg", "--checkpoint", str(src), "--format",
                 "safetensors", "--width", "96", "--height", "64", "-o", str(out)]) == 0
    raw, orig = read_checkpoint(out), read_checkpoint(src)
    assert raw.meta is not None and orig.meta is not None
    assert raw.meta.input_size == (96, 64) and orig.meta.input_size != (96, 64)
    assert raw.meta.replace(input_size=orig.meta.input_size) == orig.meta
    assert raw.state.keys() == orig.state.keys()
    assert all(torch.equal(raw.state[k], orig.state[k]) for k in orig.state)
    engine, _ = build_engine("tiny_seg", str(out), "cpu", "fp32", backend="torch")
    assert tuple(engine.input_size) == (96, 64)
    assert main(["export", "--model", "tiny_seg", "--format", "safetensors", "--int8",
                 "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "takes neither --int8 nor --dynamic" in caplog.text
    assert not (tmp_path / "x.safetensors").exists()


def test_export_cli_unknown_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["export", "--model", "no_such_net", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "no_such_net" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_network_export_matches_pytorch(name: str, tmp_path: Path) -> None:
    if name not in list_models():
        pytest.skip(f"{name} is not registered in this version")
    torch.manual_seed(0)
    model = create_model(name).eval()
    path = export_onnx(model, model.meta, tmp_path / f"{name}.onnx", width=256, height=128)
    assert_matches_pytorch(model, path, 256, 128)


@pytest.mark.slow
def test_twinlitenet_official_weights_export(tmp_path: Path) -> None:
    """Real weights, real logits: ONNX Runtime within 1e-3 of PyTorch on both heads."""
    weights = require(TWINLITENET_WEIGHTS)
    if "twinlitenet" not in list_models():
        pytest.skip("twinlitenet is not registered in this version")
    loaded = load_model("twinlitenet", weights)
    path = export_onnx(loaded.model, loaded.meta, tmp_path / "twin.onnx", width=320, height=192,
                       weights=loaded.weights, trained=loaded.trained)
    assert_matches_pytorch(loaded.model, path, 320, 192)
    engine, info = build_engine(str(path), device="cpu")
    assert info.trained and info.model == "twinlitenet" and engine.input_size == (320, 192)
