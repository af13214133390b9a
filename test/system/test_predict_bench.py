"""The predict and bench verbs on small generated images (and CamVid frames when present);
bench refuses nonsense sizes in one line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from nets import TWO_HEAD_META, scene, two_head
from shared_data import CAMVID, REPO, require
from torch import nn

from seg_perception.cli import main
from seg_perception.runtime.export import export_onnx
from seg_perception.runtime.models import create_model
from seg_perception.runtime.render import palette_lut
from seg_perception.tools.bench import count_flops, stage_stats
from seg_perception.tools.peak import measure_peak

TINY = create_model("tiny_seg").meta


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def check_outputs(out: Path, stem: str, hw: tuple[int, int], num_classes: int,
                  palette: tuple, drivable_classes: tuple[int, ...] | None,
                  overlay: bool = True) -> None:
    """The three files exist at the image's resolution with consistent contents."""
    labels = cv2.imread(str(out / f"{stem}_labels.png"), cv2.IMREAD_UNCHANGED)
    color = cv2.imread(str(out / f"{stem}_color.png"), cv2.IMREAD_UNCHANGED)
    drivable = cv2.imread(str(out / f"{stem}_drivable.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == hw and labels.dtype == np.uint8
    assert drivable.shape == hw and drivable.dtype == np.uint8
    assert color.shape == (*hw, 3)
    assert labels.max() < num_classes
    assert set(np.unique(drivable)) <= {0, 255}
    np.testing.assert_array_equal(cv2.cvtColor(color, cv2.COLOR_BGR2RGB),
                                  palette_lut(palette)[labels])
    if drivable_classes is not None:
        np.testing.assert_array_equal(drivable == 255, np.isin(labels, drivable_classes))
    assert (out / f"{stem}_overlay.png").is_file() == overlay


def test_predict_writes_files_at_each_resolution_and_reports_bad_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    a = write_rgb(tmp_path / "street.png", scene(100, 70))
    b = write_rgb(tmp_path / "small.jpg", scene(64, 48))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a PNG")
    out = tmp_path / "out"
    status = main(["predict", str(a), str(bad), str(b), "--model", "tiny_seg", "--out", str(out),
                   "--device", "cpu"])
    assert status != 0
    assert "broken.png" in caplog.text
    assert "RANDOM weights" in caplog.text
    check_outputs(out, "street", (70, 100), 11, TINY.palette, TINY.drivable_classes)
    check_outputs(out, "small", (48, 64), 11, TINY.palette, TINY.drivable_classes)
    assert not list(out.glob("broken*"))


def test_predict_camvid_frames_with_an_exported_model(tmp_path: Path) -> None:
    frames = sorted((require(CAMVID) / "val").glob("*.png"))[:2]
    model = create_model("tiny_seg").eval()
    onnx_path = export_onnx(model, model.meta, tmp_path / "tiny.onnx", width=160, height=120)
    out = tmp_path / "out"
    assert main(["predict", *map(str, frames), "--model", str(onnx_path), "--out", str(out),
                 "--device", "cpu"]) == 0
    for frame in frames:
        check_outputs(out, frame.stem, (360, 480), 11, TINY.palette, TINY.drivable_classes)


def test_predict_multitask_model_takes_drivable_from_its_head(tmp_path: Path) -> None:
    onnx_path = export_onnx(two_head(), TWO_HEAD_META, tmp_path / "two.onnx")
    folder = tmp_path / "images"
    folder.mkdir()
    write_rgb(folder / "a.png", scene(90, 60))
    write_rgb(folder / "b.png", scene(50, 40))
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--model", str(onnx_path), "--out", str(out),
                 "--device", "cpu", "--no-overlay"]) == 0
    for stem, hw in (("a", (60, 90)), ("b", (40, 50))):
        check_outputs(out, stem, hw, 3, TWO_HEAD_META.palette, None, overlay=False)


def test_predict_unknown_model_fails_cleanly(tmp_path: Path) -> None:
    img = write_rgb(tmp_path / "x.png", scene(32, 24))
    assert main(["predict", str(img), "--model", "no_such_net", "--out", str(tmp_path)]) == 2


BENCH_KEYS = {"model", "weights", "trained", "backend", "device", "precision", "input_size",
              "frame_size", "frames", "warmup", "stages_ms", "fps", "gflops_per_frame",
              "achieved_gflops_per_s", "achieved_gflops_per_s_end_to_end", "peak",
              "peak_fraction", "machine"}


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_bench_writes_json(tmp_path: Path, backend: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bench.json"
    assert main(["bench", "--model", "tiny_seg", "--width", "64", "--height", "48",
                 "--device", "cpu", "--backend", backend, "--precision", "fp32",
                 "--frames", "3", "--warmup", "1",
                 "--camera", "80x60", "--peak-size", "256", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert set(report) >= BENCH_KEYS
    assert report["backend"] == backend and report["model"] == "tiny_seg"
    assert report["input_size"] == [64, 48] and report["frame_size"] == [80, 60]
    assert report["frames"] == 3 and report["precision"] == "fp32"
    for stage in ("preprocess", "inference", "postprocess", "total"):
        s = report["stages_ms"][stage]
        assert 0 < s["median"] <= s["p95"]
    assert report["fps"] > 0
    # tiny_seg at 64x48: four 3x3 convolutions and a 1x1 classifier, FLOPs = 2 x MACs.
    macs = (32 * 24 * 16 * 3 + 16 * 12 * 32 * 16 + 8 * 6 * 64 * 32 + 8 * 6 * 64 * 64) * 9
    macs += 8 * 6 * 11 * 64
    assert report["gflops_per_frame"] == pytest.approx(2 * macs / 1e9)
    assert report["peak"]["gflops_per_s"] > 0 and report["peak"]["size"] == 256
    assert report["peak_fraction"] > 0
    machine = report["machine"]
    for key in ("cpu_model", "torch_threads", "torch_version", "onnxruntime_version",
                "device_name"):
        assert machine[key]
    printed = capsys.readouterr().out
    assert "inference" in printed and "frames/s" in printed and "GFLOP" in printed


def test_flop_count_is_twice_the_macs() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(conv, torch.zeros(1, 3, 16, 16)) == 2 * (8 * 3 * 9 * 16 * 16)


def test_peak_and_stats() -> None:
    peak = measure_peak(torch.device("cpu"), torch.float32, size=128, min_seconds=0.01)
    assert peak.gflops_per_s > 0 and peak.dtype == "fp32"
    assert peak.gflops_per_s == max(peak.by_library.values())
    assert set(peak.by_library) == {"torch", "onnxruntime", "openvino"}
    stats = stage_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["median"] == 3.0 and 4.0 < stats["p95"] < 100.0


def test_bench_times_the_given_image_at_the_camera_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--image is the frame timed (resized to --camera), noise only without it; an unreadable
    file is one line and exit 2."""
    import seg_perception.tools.bench as bench

    seen: list[np.ndarray] = []
    real = bench.time_engine

    def spy(engine, frame, *args, **kwargs):
        seen.append(frame)
        return real(engine, frame, *args, **kwargs)

    monkeypatch.setattr(bench, "time_engine", spy)
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[60:] = (200, 10, 10)
    img = write_rgb(tmp_path / "frame.png", rgb)
    args = ["bench", "--model", "tiny_seg", "--width", "64", "--height", "48", "--device",
            "cpu", "--backend", "torch", "--precision", "fp32", "--frames", "2", "--warmup",
            "0", "--camera", "80x60", "--peak-size", "64"]
    assert main([*args, "--image", str(img), "--json", str(tmp_path / "b.json")]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["frame"] == "image" and report["frame_source"] == str(img)
    assert f"({img})" in capsys.readouterr().out
    np.testing.assert_array_equal(seen[-1], cv2.resize(rgb, (80, 60),
                                                       interpolation=cv2.INTER_AREA))
    assert main(args) == 0
    assert seen[-1].shape == (60, 80, 3) and seen[-1].std() > 50  # noise
    assert main([*args, "--image", str(tmp_path / "missing.png")]) == 2


@pytest.mark.parametrize("args", [["--width", "-5"], ["--height", "0"], ["--width", "abc"],
                                  ["--width", "100000", "--height", "100000"],
                                  ["--frames", "0"], ["--warmup", "-1"], ["--threads", "-3"],
                                  ["--peak-size", "0"], ["--camera", "0x5"],
                                  ["--camera", "99999x10"]])
def test_bench_nonsense_sizes_print_one_line_and_exit_2(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "seg_perception", "bench", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "error: argument" in lines[0], lines
    assert "Traceback" not in done.stderr


def test_bench_of_a_rig_reports_the_map_update(tmp_path: Path) -> None:
    """``bench --cameras``: the batched rig figures and the persistent map's per-cycle cost
    (``map_update``, the map.* defaults) in the JSON; the cost is a figure, not a test."""
    path = tmp_path / "rig.json"
    assert main(["bench", "--model", "tiny_seg", "--device", "cpu", "--cameras", "1,2",
                 "--frames", "2", "--warmup", "1", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["map_update"]["cells"] == 300 * 300
    assert report["map_update"]["map_update"] > 0 and report["map_update"]["cycles"] > 0


def test_bench_against_times_two_models_in_alternating_rounds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``bench --against``: both engines on the same frame, round by round, and the ratio."""
    import seg_perception.tools.bench as bench

    order: list[tuple[int, int]] = []
    real = bench.time_engine

    def spy(engine: Any, frame: np.ndarray, frames: int, *a: Any, **k: Any) -> Any:
        order.append((id(engine), frames))
        return real(engine, frame, frames, *a, **k)

    monkeypatch.setattr(bench, "time_engine", spy)
    path = tmp_path / "bench.json"
    assert main(["bench", "--model", "tiny_seg", "--against", "tiny_seg", "--width", "64",
                 "--height", "48", "--device", "cpu", "--precision", "fp32", "--frames", "7",
                 "--warmup", "1", "--camera", "80x60", "--peak-size", "64",
                 "--json", str(path)]) == 0
    side = json.loads(path.read_text())["side_by_side"]
    assert list(side["engines"]) == ["tiny_seg", "tiny_seg (--against)"]
    assert side["frame_size"] == [80, 60] and side["frames"] == 7 and side["rounds"] == 7
    first, other = side["engines"].values()
    assert first["ratio"] == 1.0 and other["ratio"] > 0 and other["fps"] > 0
    assert 0 < other["total_ms"]["median"] <= other["total_ms"]["p95"]
    rounds = order[1:]  # the first call is run_bench's own timing of --model
    assert [n for _, n in rounds] == [1] * 14  # 7 rounds of one frame each, in turn
    assert len({e for e, _ in rounds[0::2]}) == 1 and len({e for e, _ in rounds[1::2]}) == 1
    assert rounds[0][0] != rounds[1][0]
    assert "side by side on 80x60 frames" in capsys.readouterr().out


def test_bench_against_refuses_cameras_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    assert main(["bench", "--model", "tiny_seg", "--against", "tiny_seg", "--cameras", "2",
                 "--device", "cpu"]) == 2
    assert "does not go with --cameras" in caplog.text
