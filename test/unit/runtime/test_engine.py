"""Engine, registry, metadata and checkpoint I/O on small real inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seg_perception.runtime.engine import (
    EngineConfigError,
    SegEngine,
    build_engine,
    resolve_device,
    resolve_precision,
)
from seg_perception.runtime.models import ModelMeta, create_model, list_models, resolve_name
from seg_perception.runtime.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
    strip_prefixes,
)


def test_registry_lists_and_refuses_unknown_names() -> None:
    assert "tiny_seg" in list_models()
    with pytest.raises(KeyError, match=r"registered models: .*tiny_seg"):
        resolve_name("no_such_net")


def test_model_carries_metadata() -> None:
    model = create_model("tiny_seg")
    meta = model.meta
    assert meta.num_classes == len(meta.class_names) == len(meta.palette) == 11
    assert meta.drivable_classes == (3,) and meta.class_names[3] == "Road"
    assert ModelMeta.from_json(meta.to_json()) == meta


def test_metadata_rejects_inconsistent_fields() -> None:
    with pytest.raises(ValueError, match="class names"):
        ModelMeta(arch="x", num_classes=2, class_names=("a",), palette=((0, 0, 0),) * 2,
                  drivable_classes=(), input_size=(8, 8))
    with pytest.raises(ValueError, match="drivable"):
        ModelMeta(arch="x", num_classes=1, class_names=("a",), palette=((0, 0, 0),),
                  drivable_classes=(4,), input_size=(8, 8))


def test_engine_outputs_at_frame_resolution(camvid_frame: np.ndarray) -> None:
    engine, info = build_engine("tiny_seg", device="cpu")
    assert not info.trained and "random" in info.weights
    result = engine(camvid_frame)
    h, w = camvid_frame.shape[:2]
    assert result.labels.shape == (h, w) and result.labels.dtype == np.uint8
    assert result.confidence is not None and result.confidence.shape == (h, w)
    assert result.labels.max() < 11
    assert set(np.unique(result.drivable)) <= {0, 255}
    np.testing.assert_array_equal(result.drivable == 255, result.labels == 3)
    assert set(result.timings) == {"preprocess", "inference", "postprocess"}
    # Without confidence requested, none is computed; labels are the same.
    again = engine(camvid_frame, want_confidence=False)
    assert again.confidence is None
    np.testing.assert_array_equal(again.labels, result.labels)


def test_engine_matches_plain_pytorch_reference(rng: np.random.Generator) -> None:
    """Preprocess + bilinear logits + argmax (``logits`` mode) equal a straightforward
    float64 implementation."""
    model = create_model("tiny_seg").eval()
    meta = model.meta
    engine = SegEngine(model, meta, "cpu", "fp32", channels_last=False, upsample="logits")
    w, h = meta.input_size
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    result = engine(frame)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].double() / 255.0
    x = (x - torch.tensor(meta.mean).view(1, 3, 1, 1)) / torch.tensor(meta.std).view(1, 3, 1, 1)
    with torch.no_grad():
        scores = model.double()(x)
        scores = torch.nn.functional.interpolate(scores, size=(h, w), mode="bilinear",
                                                 align_corners=False)
    probs = scores.softmax(1)
    ref = scores.argmax(1)[0].numpy()
    agree = (ref == result.labels).mean()
    assert agree > 0.999, agree
    conf_ref = (probs.max(1).values[0].numpy() * 255).round()
    assert np.abs(conf_ref - result.confidence.astype(float)).max() <= 1.0


def test_engine_resizes_arbitrary_frames(rng: np.random.Generator) -> None:
    engine, _ = build_engine("tiny_seg", device="cpu")
    for h, w in ((100, 173), (720, 1280)):
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert engine(frame).labels.shape == (h, w)
    with pytest.raises(ValueError, match="uint8 RGB"):
        engine(np.zeros((10, 10), np.uint8))


def test_device_and_precision_choices() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_precision("fp32", torch.device("cpu")) == torch.float32
    with pytest.raises(EngineConfigError, match="auto, cpu, cuda"):
        resolve_device("gpu")
    with pytest.raises(EngineConfigError, match="fp32"):
        resolve_precision("int4", torch.device("cpu"))
    with pytest.raises(EngineConfigError, match="CUDA"):
        resolve_precision("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(EngineConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_own_checkpoint_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    model = create_model("tiny_seg").eval()
    meta = model.meta.replace(class_names=tuple(f"c{i}" for i in range(11)))
    path = save_checkpoint(model, tmp_path / "m.safetensors", meta)
    loaded = load_model("tiny_seg", path)
    assert loaded.trained and loaded.meta.class_names[0] == "c0"
    x = torch.from_numpy(rng.standard_normal((1, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))


def test_state_dict_prefixes_are_cleaned(tmp_path: Path) -> None:
    model = create_model("tiny_seg")
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save(wrapped, tmp_path / "dp.pth")
    fresh = create_model("tiny_seg")
    load_checkpoint(fresh, tmp_path / "dp.pth")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)
    assert strip_prefixes({"module.model.a": 1}) == {"a": 1}


def test_malformed_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    model = create_model("tiny_seg")
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(model, tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(model, tmp_path / "missing.pth")
    state = dict(model.state_dict())
    state.pop("classifier.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "keys.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: classifier.weight.*unexpected "
                                              r"keys: extra.weight"):
        load_checkpoint(model, tmp_path / "keys.pth")
    other = create_model("tiny_seg", meta=model.meta.replace(
        num_classes=19, class_names=tuple("abcdefghijklmnopqrs"), palette=((0, 0, 0),) * 19))
    torch.save(other.state_dict(), tmp_path / "classes.pth")
    with pytest.raises(CheckpointError, match="class-count mismatch"):
        load_checkpoint(model, tmp_path / "classes.pth")

    class Evil:
        def __reduce__(self):  # would run code if unpickled without weights_only
            return (print, ("pwned",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(model, tmp_path / "evil.pth")


class _TwoHeads(torch.nn.Module):
    """Class scores plus a separate drivable head, as multi-task networks return them."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        scores = torch.zeros(n, 3, h, w)
        scores[:, 2, : h // 2] = 1.0  # class 2 in the top half
        drivable = torch.zeros(n, 2, h, w)
        drivable[:, 1, :, : w // 2] = 1.0  # head says drivable in the left half
        return scores, drivable


def test_multitask_drivable_head_defines_the_mask() -> None:
    meta = ModelMeta(arch="two", num_classes=3, class_names=("a", "b", "c"),
                     palette=((0, 0, 0),) * 3, drivable_classes=(1,), input_size=(64, 32))
    # Nearest upsampling keeps the halves exact (bilinear scores blur the boundary row).
    engine = SegEngine(_TwoHeads(), meta, "cpu", "fp32", upsample="labels")
    result = engine(np.zeros((64, 128, 3), np.uint8))
    assert (result.labels[:32] == 2).all() and (result.labels[32:] == 0).all()
    assert (result.drivable[:, :64] == 255).all() and (result.drivable[:, 64:] == 0).all()
