"""``seg-perception soak``: a few seconds of it in CI (the 10-minute run is not a test)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from shared_data import REPO

from seg_perception.cli import build_parser


def test_duration_and_sizes_parse_and_refuse() -> None:
    parser = build_parser()
    args = parser.parse_args(["soak", "--duration", "10m", "--rate", "100"])
    assert args.duration == 600.0 and args.rate == 100.0 and args.width == 640
    assert parser.parse_args(["soak", "--duration", "90s"]).duration == 90.0
    assert parser.parse_args(["soak", "--duration", "1.5h"]).duration == 5400.0
    for bad in (["--duration", "-3"], ["--duration", "soon"], ["--rate", "0"],
                ["--width", "-5"]):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["soak", *bad])
        assert exc.value.code == 2


def test_summary_and_plot_from_windows(tmp_path: Path) -> None:
    from dataclasses import asdict

    from seg_perception.tools.soak_report import (
        SoakOptions,
        Window,
        format_summary,
        plot,
        summarise,
    )

    windows = []
    for i in range(6):
        w = Window(30.0 * i, 30.0 * (i + 1), published=3000, outputs_received=700,
                   latency_ms={"n": 700, "p50": 40.0 + i, "p95": 80.0, "max": 150.0},
                   rss_mb=400.0 + (30.0 if i == 0 else 2.0 * i), rss_max_mb=440.0,
                   node={"frames_received": 2950, "frames_processed": 700,
                         "frames_dropped": 2250, "frames_lost_in_transport": 0},
                   load_avg_1m=8.0)
        windows.append(w)
    summary = summarise(windows, [40.0] * 90 + [200.0] * 10)
    assert summary["published"] == 18000 and summary["not_received_by_node"] == 300
    assert summary["rss_mb"]["after_warmup"] == 430.0  # the first window is the warm-up
    assert summary["rss_mb"]["growth_after_warmup"] == pytest.approx(10.0 - 30.0)
    assert summary["latency_ms"]["max"] == 200.0 and summary["latency_ms"]["p50"] == 40.0
    opts = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(SoakOptions()).items()}
    report = {"options": opts, "windows": [asdict(w) for w in windows], "summary": summary,
              "load_average_start": (8.0, 8.0, 8.0), "load_average_end": (9.0, 8.0, 8.0),
              "node_alive_at_end": True, "cpus": 2}
    plot(report, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = format_summary(report)
    assert "growth after warm-up -20.0 MB" in text and "p95 80.0" in text


@pytest.mark.integration
def test_short_soak_against_a_node(tmp_path: Path) -> None:
    """Six seconds at 20 Hz: every window has latency figures and the node's RSS."""
    pytest.importorskip("rclpy")
    out = tmp_path / "soak"
    cmd = [sys.executable, "-m", "seg_perception", "soak", "--duration", "6s", "--window",
           "2", "--rate", "20", "--width", "160", "--height", "120", "--model", "tiny_seg",
           "--device", "cpu", "--namespace", "/it_soak", "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr + (out / "node.log").read_text()
    report = json.loads((out / "soak.json").read_text())
    assert (out / "soak.png").read_bytes()[:4] == b"\x89PNG"
    windows = report["windows"]
    assert len(windows) == 3
    for w in windows:
        assert w["latency_ms"]["n"] > 0 and 0 < w["latency_ms"]["p50"] < 10_000
        assert math.isfinite(w["rss_mb"]) and w["rss_mb"] > 50
        assert w["node"].get("frames_processed", 0) > 0
        # every processed frame got its grid: camera_info of its stamp, pose from /tf_static
        assert w["node"].get("frames_without_grid") == 0, w["node"]
    s = report["summary"]
    assert 0 < s["published"] <= 125  # 20 Hz for 6 s at most (fewer on a loaded machine)
    assert s["outputs_received"] > 0 and s["node"]["frames_received"] > 0
    assert report["node_alive_at_end"] and report["node_exit_code"] == 0
    assert "latency stamp -> labels" in done.stdout
