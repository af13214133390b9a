"""Model zoo: PIDNet, DDRNet and TwinLiteNet build, load the authors' checkpoint layouts, and
the real TwinLiteNet weights give a plausible drivable area on BDD100K frames."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from shared_data import BDD, TWINLITENET_WEIGHTS, require

from seg_perception.cli import main as cli_main
from seg_perception.runtime.datasets_info import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from seg_perception.runtime.engine import EngineInfo, SegEngine, build_engine
from seg_perception.runtime.models import create_model, get_entry, resolve_name
from seg_perception.runtime.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from seg_perception.runtime.models.layers import SegmentHead
from seg_perception.runtime.models.twinlitenet import combine_heads

CITYSCAPES_NETS = ("pidnet_s", "pidnet_m", "pidnet_l", "ddrnet_23_slim", "ddrnet_23")
ALL_NETS = (*CITYSCAPES_NETS, "twinlitenet")
SMALL = (1, 3, 128, 256)


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics and attention gains, so a mis-mapped key changes outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith(("running_mean", "bias")):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif name.endswith("gamma") or (name.endswith("weight") and t.ndim == 1):
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=g))
    return model.eval()


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        y = model(x)
    return y if isinstance(y, tuple) else (y,)


@pytest.mark.parametrize("name", ALL_NETS)
def test_networks_build_and_give_documented_shapes(name: str) -> None:
    model = create_model(name).eval()
    x = torch.randn(SMALL)
    out = _outputs(model, x)
    meta = model.meta
    if name == "twinlitenet":
        scores, drivable = out
        assert scores.shape == (1, 3, 128, 256) and drivable.shape == (1, 2, 128, 256)
        assert meta.input_size == (640, 360) and meta.output_stride == 1
        assert meta.mean == (0, 0, 0) and meta.std == (1, 1, 1)
        assert meta.drivable_classes == (1,)
        assert meta.class_names == ("background", "drivable area", "lane line")
    else:
        (scores,) = out
        assert scores.shape == (1, 19, 16, 32)  # output stride 8
        assert meta.input_size == (2048, 1024) and meta.output_stride == 8
        assert meta.mean == (0.485, 0.456, 0.406) and meta.std == (0.229, 0.224, 0.225)
        assert meta.class_names == CITYSCAPES_CLASSES and meta.palette == CITYSCAPES_PALETTE
        assert meta.drivable_classes == (0,) and meta.class_names[0] == "road"
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("name", ("pidnet_s", "ddrnet_23_slim", "twinlitenet"))
def test_sizes_not_divisible_by_8_work(name: str) -> None:
    # The official PIDNet/DDRNet code sizes the 1/8 branch as H // 8 and fails on such inputs;
    # ours follows the feature maps. TwinLiteNet's decoder gives 8x the 1/8 map.
    out = _outputs(create_model(name).eval(), torch.randn(1, 3, 100, 180))[0]
    expected = (1, 3, 104, 184) if name == "twinlitenet" else (1, 19, 13, 23)
    assert out.shape == expected


# Paper figures (M params). PIDNet-M: the paper's table says 34.4 M, but the official code
# with the official configuration (m=2, n=3, planes=64, ppm 96, head 128) - the layout its
# released checkpoints have - builds 28.54 M; S (7.6) and L (36.9) match the paper exactly.
PAPER_PARAMS = {
    "pidnet_s": 7.6, "pidnet_m": 28.54, "pidnet_l": 36.9,
    "ddrnet_23_slim": 5.7, "ddrnet_23": 20.1, "twinlitenet": 0.44,
}


@pytest.mark.parametrize("name", ALL_NETS)
def test_parameter_counts_match_papers(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions == pytest.approx(PAPER_PARAMS[name], rel=0.02)


def _aux_heads(name: str) -> dict[str, torch.Tensor]:
    """Training-only heads as the authors' models carry them (shapes from their code)."""
    if name.startswith("pidnet"):
        planes, head = {"pidnet_s": (32, 128), "pidnet_m": (64, 128),
                        "pidnet_l": (64, 256)}[name]
        heads = {"seghead_p": SegmentHead(2 * planes, head, 19),
                 "seghead_d": SegmentHead(2 * planes, planes, 1)}
    else:
        planes, head = {"ddrnet_23_slim": (32, 64), "ddrnet_23": (64, 128)}[name]
        heads = {"seghead_extra": SegmentHead(2 * planes, head, 19)}
    return {f"{h}.{k}": v for h, mod in heads.items() for k, v in mod.state_dict().items()}


def _authors_layouts(name: str, state: dict[str, torch.Tensor]) -> dict[str, object]:
    """The files each author publishes (or their trainers write), built from ``state``."""
    if name.startswith("pidnet"):
        # tools/train.py saves FullModel(model, sem_loss, bd_loss).state_dict(): model.* plus
        # the OHEM loss's class weights; the released files wrap it in {'state_dict': ...}.
        flat = {f"model.{k}": v for k, v in {**state, **_aux_heads(name)}.items()}
        flat["sem_loss.criterion.weight"] = torch.ones(19)
        return {"released": {"state_dict": flat}, "best.pt": flat}
    if name.startswith("ddrnet"):
        # HRNet framework: FullModel(model, loss) saved flat - model.* and loss.*.
        flat = {f"model.{k}": v for k, v in {**state, **_aux_heads(name)}.items()}
        flat["loss.criterion.weight"] = torch.ones(19)
        return {"released": flat}
    # TwinLiteNet: DataParallel state_dict (pretrained/best.pth), and the resume file.
    wrapped = {f"module.{k}": v for k, v in state.items()}
    resume = {"epoch": 100, "state_dict": wrapped, "lr": 5e-4,
              "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "params": [0, 1]}]}}
    return {"released": wrapped, "checkpoint.pth.tar": resume}


@pytest.mark.parametrize("name", ALL_NETS)
def test_authors_checkpoint_layouts_round_trip(name: str, tmp_path: Path) -> None:
    model = _randomise(create_model(name))
    reference = model.state_dict()
    for layout, obj in _authors_layouts(name, reference).items():
        path = tmp_path / f"{layout}.pth"
        torch.save(obj, path)
        fresh = create_model(name)
        load_checkpoint(fresh, path)
        loaded = fresh.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in reference.items()), layout
    # Same weights, same output - through load_model, the path the engine takes.
    result = load_model(name, tmp_path / "released.pth")
    assert result.trained and result.name == name
    x = torch.randn(1, 3, 64, 128)
    for a, b in zip(_outputs(result.model, x), _outputs(model, x), strict=True):
        torch.testing.assert_close(a, b)


def test_own_format_round_trip_for_zoo_models(tmp_path: Path) -> None:
    model = _randomise(create_model("pidnet_s"))
    path = save_checkpoint(model, tmp_path / "pidnet_s.safetensors")
    loaded = load_model("pidnet-s", path)  # an alias resolves to the same entry
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_outputs(loaded.model, x)[0], _outputs(model, x)[0])
    assert loaded.meta == model.meta and resolve_name("pidnet-s") == "pidnet_s"


def test_malformed_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    model = create_model("pidnet_s")
    state = dict(model.state_dict())

    def check(obj: object, pattern: str, name: str = "pidnet_s") -> None:
        path = tmp_path / "c.pth"
        if isinstance(obj, bytes):
            path.write_bytes(obj)
        else:
            torch.save(obj, path)
        with pytest.raises(CheckpointError, match=pattern):
            load_checkpoint(create_model(name), path)

    check(b"\x89PNG\r\n not a checkpoint", "not a PyTorch checkpoint")
    check({}, "holds no state_dict")
    check({"state_dict": {"epoch": 3}}, "holds no tensors")
    check({"state_dict": {f"model.{k}": v for k, v in state.items()
                          if k != "layer1.0.conv1.weight"}}, r"missing keys: layer1\.0\.conv1")
    check({"state_dict": {**{f"model.{k}": v for k, v in state.items()},
                          "model.extra_head.weight": torch.zeros(1)}},
          r"unexpected keys: extra_head\.weight")
    # The authors' CamVid PIDNet-S (11 classes) into the 19-class Cityscapes model.
    camvid = create_model("pidnet_s", meta=model.meta.replace(
        num_classes=11, class_names=tuple("abcdefghijk"), palette=((0, 0, 0),) * 11))
    check({"state_dict": {f"model.{k}": v for k, v in camvid.state_dict().items()}},
          r"class-count mismatch\? the model has 19 classes, the checkpoint 11")
    # A different network's file: no segmentation head of this family.
    check({f"module.{k}": v for k, v in create_model("twinlitenet").state_dict().items()},
          "not a segmentation checkpoint of this family")
    # Pickled code is refused, never executed.
    check({"state_dict": state, "cfg": argparse.Namespace(lr=0.01)}, "weights_only")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(model, tmp_path / "bad.safetensors")


def test_imagenet_backbones_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    # PIDNet's ImageNet files: {'state_dict': I-branch trunk + classifier}, no final_layer.
    trunk = {k: v for k, v in create_model("pidnet_s").state_dict().items()
             if k.startswith(("conv1.", "layer1.", "layer2.", "layer3.", "layer4."))}
    torch.save({"state_dict": {**trunk, "fc.weight": torch.zeros(1000, 1024)}},
               tmp_path / "PIDNet_S_ImageNet.pth.tar")
    with pytest.raises(CheckpointError, match=r"ImageNet-pretrained.*fc\.weight"):
        load_model("pidnet_s", tmp_path / "PIDNet_S_ImageNet.pth.tar")
    # DDRNet's ImageNet files (classification DualResNet): flat, down5/last_layer/linear.
    trunk = {k: v for k, v in create_model("ddrnet_23_slim").state_dict().items()
             if not k.startswith(("spp.", "final_layer."))}
    trunk |= {"down5.0.weight": torch.zeros(256, 128, 3, 3),
              "last_layer.0.weight": torch.zeros(1024, 512, 1, 1),
              "linear.weight": torch.zeros(1000, 1024), "linear.bias": torch.zeros(1000)}
    torch.save(trunk, tmp_path / "DDRNet23s_imagenet.pth")
    with pytest.raises(CheckpointError, match="ImageNet-pretrained classification backbone"):
        load_model("ddrnet_23_slim", tmp_path / "DDRNet23s_imagenet.pth")


def test_twinlitenet_scores_reproduce_the_official_picture() -> None:
    """argmax == official rule (lane over drivable over background), ties included."""
    g = torch.Generator().manual_seed(0)
    da = torch.randn(2, 2, 64, 64, generator=g) * 3
    ll = torch.randn(2, 2, 64, 64, generator=g) * 3
    da[0, :, :8] = 1.5  # exact ties: torch.max picks index 0 (not drivable / not lane)
    ll[0, :, 8:16] = -0.5
    ll[1, :, :4] = 2.0
    # Rounding traps: a lane margin far below the drivable margin's ulp.
    da[1, 0, 8:16], da[1, 1, 8:16] = -4.0, 8.0
    ll[1, 0, 8:16], ll[1, 1, 8:16] = 0.0, 1e-3
    ll[1, 0, 16:20], ll[1, 1, 16:20] = 0.0, -1e-3
    official = torch.where(ll.argmax(1) == 1, 2, torch.where(da.argmax(1) == 1, 1, 0))
    scores = combine_heads(da, ll)
    assert torch.equal(scores.argmax(1), official)
    for dtype in (torch.float16, torch.bfloat16):
        assert torch.equal(combine_heads(da.to(dtype), ll.to(dtype)).argmax(1),
                           torch.where(ll.to(dtype).argmax(1) == 1, 2,
                                       torch.where(da.to(dtype).argmax(1) == 1, 1, 0)))
    tiny = combine_heads(torch.tensor([0.0, 12.0]).view(1, 2, 1, 1),
                         torch.tensor([0.0, 1e-7]).view(1, 2, 1, 1))
    assert tiny.argmax(1).item() == 2  # 12 + 1e-7 == 12 in float32: must not tie
    conf = scores.softmax(1).max(1).values
    assert conf.min() >= 1 / 3 - 1e-6 and conf.max() <= 1
    # Confident heads give a confident class; a doubtful head gives a doubtful one.
    sure = combine_heads(torch.tensor([[-8.0, 8.0]]).view(1, 2, 1, 1),
                         torch.tensor([[8.0, -8.0]]).view(1, 2, 1, 1)).softmax(1)
    unsure = combine_heads(torch.tensor([[-0.1, 0.1]]).view(1, 2, 1, 1),
                           torch.tensor([[8.0, -8.0]]).view(1, 2, 1, 1)).softmax(1)
    assert sure[0, 1].item() > 0.99 and 0.45 < unsure[0, 1].item() < 0.6


def _official_demo(model: torch.nn.Module, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The authors' test_image.py: cv2.resize to 640x360 (BGR uint8), BGR->RGB, /255; lane
    argmax painted over drivable argmax. Returns that picture (0/1/2 at 640x360) and the
    argmax of our three-class scores for the very same input tensor."""
    small = cv2.resize(bgr, (640, 360))
    x = torch.from_numpy(np.ascontiguousarray(small[:, :, ::-1].transpose(2, 0, 1)))
    with torch.no_grad():
        da, ll = model.heads(x[None].float() / 255.0)
    ours = combine_heads(da, ll).argmax(1)[0].numpy()
    da, ll = da.argmax(1)[0].numpy(), ll.argmax(1)[0].numpy()
    return np.where(ll == 1, 2, np.where(da == 1, 1, 0)), ours


@pytest.fixture(scope="module")
def twinlitenet_engine() -> tuple[SegEngine, EngineInfo]:
    # The torch backend: the test compares the module itself with the authors' demo.
    return build_engine("twinlitenet", checkpoint=require(TWINLITENET_WEIGHTS), device="cpu",
                        precision="fp32", backend="torch")


def test_official_twinlitenet_weights_load_strictly() -> None:
    raw = torch.load(require(TWINLITENET_WEIGHTS), map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in raw)
    model = create_model("twinlitenet")
    assert {k.removeprefix("module.") for k in raw} == set(model.state_dict())
    load_checkpoint(model, TWINLITENET_WEIGHTS)  # strict: raises on any mismatch


@pytest.mark.parametrize("frame", ("caeb782d-4a20b7c4", "caec69a1-75429ccd",
                                   "cb22c820-f094952f"))
def test_official_twinlitenet_gives_plausible_drivable_area(
    frame: str, twinlitenet_engine: tuple[SegEngine, EngineInfo]
) -> None:
    engine, info = twinlitenet_engine
    assert info.trained and info.model == "twinlitenet"
    bgr = cv2.imread(str(require(BDD / f"{frame}.jpg")))
    assert bgr.shape == (720, 1280, 3)
    result = engine(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    drivable = result.drivable == 255
    h, w = drivable.shape
    # Measured on these frames: 19-29 % drivable, none in the top third, one region holding
    # 89-100 % of it, centred left of middle (right-hand traffic, ego lane) at 70-75 % height.
    assert 0.10 < drivable.mean() < 0.45
    assert drivable[: h // 3].mean() < 0.005
    n, cc, stats, _ = cv2.connectedComponentsWithStats(drivable.astype(np.uint8), 8)
    assert n > 1
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    assert stats[largest, cv2.CC_STAT_AREA] > 0.8 * drivable.sum()
    ys, xs = np.nonzero(cc == largest)
    assert 0.6 < ys.mean() / h < 0.85 and 0.25 < xs.mean() / w < 0.6
    assert (result.labels == 2).mean() < 0.03  # lane lines are thin
    # Same as the authors' demo: identical argmax on an identical input; from the camera
    # frame, our float resize differs from cv2's uint8 resize by <= 0.5/255 per pixel.
    official, ours_same_input = _official_demo(engine.model, bgr)
    assert np.array_equal(ours_same_input, official)
    # The engine's labels are the 640x360 argmax, nearest-upsampled exactly 2x.
    assert (result.labels[::2, ::2] == official).mean() > 0.995


def test_models_command_lists_every_network(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(ALL_NETS) <= set(rows)
    pid = rows["pidnet_s"]
    assert pid["checkpoint_format"] == "pidnet" and "pidnet-s" in pid["aliases"]
    assert pid["input_size"] == [2048, 1024] and pid["num_classes"] == 19
    assert pid["parameters_m"] == pytest.approx(7.63, abs=0.01)
    assert pid["shipped_weights"] is False and "ImageNet" in pid["normalisation"]
    tln = rows["twinlitenet"]
    assert tln["normalisation"] == "RGB/255 only" and tln["checkpoint_format"] == "twinlitenet"
    assert get_entry("ddrnet23").name == "ddrnet_23"
    assert cli_main(["models"]) == 0
    table = capsys.readouterr().out
    assert "pidnet_l" in table and "twinlitenet" in table and "2048x1024" in table
    assert cli_main(["models", "no_such_net"]) == 2
