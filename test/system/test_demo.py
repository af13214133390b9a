"""A short `seg-perception demo` end to end: bag, node over DDS, recording, report files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from seg_perception.runtime.geometry import GridSpec
from seg_perception.sim.demo_report import grid_picture, side_by_side, write_animation

pytestmark = pytest.mark.integration


def test_grid_picture_orientation() -> None:
    """Forward is up and left is left in the bird's-eye picture."""
    spec = GridSpec(1.0, 0.0, 10.0, -5.0, 5.0)
    grid = np.full(spec.shape, 100, np.int8)
    grid[spec.cell_of(9.5, 4.5)] = 0  # far ahead, on the left
    pic = grid_picture(grid, spec, height=10)
    assert pic.shape == (10, 10, 3)
    assert tuple(pic[0, 0]) == (80, 190, 90)  # top-left: the free cell
    assert tuple(pic[0, 9]) == (190, 60, 60)


def test_side_by_side_and_animation(tmp_path: Path) -> None:
    frames = [side_by_side([np.full((90, 160, 3), i * 20, np.uint8),
                            np.zeros((45, 80), np.uint8)], 90, ["a", "b"]) for i in range(5)]
    assert frames[0].shape == (90, 320, 3)
    video = write_animation(frames, tmp_path / "v", 10)
    assert video.is_file() and video.stat().st_size > 0


def test_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "seg_perception", "demo", "--out", str(out), "--frames", "6",
         "--width", "320", "--height", "180", "--rate", "0.5", "--device", "cpu"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = out / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["frames_played"] == 6
    assert summary["outputs_recorded"]["/camera/labels"] >= 1
    assert summary["outputs_recorded"]["/camera/drivable/grid"] >= 1
    assert Path(summary["video"]).is_file()
    assert (out / "input_bag" / "metadata.yaml").is_file()
    assert (out / "output_bag" / "metadata.yaml").is_file()
    still = cv2.imread(str(report / "frame_first.png"))
    assert still is not None and still.shape[0] == 360
    assert (report / "summary.md").read_text().startswith("# seg_perception demo")


def test_surround_demo_end_to_end(tmp_path: Path) -> None:
    """`demo --cameras 4`: a four-camera drive through one node; the report shows the four
    views, the fused grid and the exact fused truth, and scores one against the other."""
    out = tmp_path / "surround"
    proc = subprocess.run(
        [sys.executable, "-m", "seg_perception", "demo", "--cameras", "4", "--out", str(out),
         "--frames", "10", "--fps", "5", "--width", "320", "--height", "240", "--device",
         "cpu"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = out / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["cameras"] == ["front", "left", "right", "rear"]
    assert summary["frames_played"] == 10
    rec = summary["outputs_recorded"]
    assert all(rec[f"/{c}/overlay"] >= 1 for c in summary["cameras"])
    assert rec["/drivable/grid"] >= 1 and rec["/drivable/boundary"] >= 1
    agree = summary["fused_agreement_with_truth"]
    assert agree["frames"] >= 1 and agree["mean"] >= 0.85, agree
    diag = summary["node_diagnostics"]
    assert diag["cameras"] == "4" and float(diag["batch_size_p50"]) >= 1
    assert set(summary["camera_diagnostics"]) == set(summary["cameras"])
    still = cv2.imread(str(report / "frame_first.png"))
    assert still is not None and still.shape[0] == 480  # 2 x 2 views of 240
    assert Path(summary["video"]).is_file() and (out / "truth.npz").is_file()
    assert (report / "summary.md").read_text().startswith("# seg_perception demo: 4 cameras")
