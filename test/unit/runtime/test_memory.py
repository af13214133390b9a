"""Memory a model build leaves behind after it is released: none that grows per build.

A lifecycle node builds its engine at every configure and drops it at every cleanup, so any
memory a build keeps for the life of the process grows without bound (it was ~14 MB per
build of the default model on OpenVINO: torch.jit.trace's TorchScript types, never freed).
Each check runs in a fresh interpreter so the figures are that process's own resident set
(VmRSS); the first cycles are warm-up (allocator pools, OpenVINO's plugin, lazy imports),
the bound is on the growth after them and is several times what a healthy run shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from seg_perception.runtime.engine.openvino_backend import openvino_available

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not openvino_available(), reason="openvino not installed")]

#: Growth allowed after the warm-up cycles (a healthy run grows ~1 MB; the leak was ~14 MB
#: per cycle, > 90 MB over the cycles measured).
BOUND_MB = 30.0

RSS = textwrap.dedent("""
    import gc

    def rss_mb():
        gc.collect()
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc/self/status")
""")


def run_cycles(body: str, timeout: float = 900.0) -> list[float]:
    """Run ``body`` (which prints ``rss <MB>`` once per cycle) in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", RSS + textwrap.dedent(body)],
                         capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert out.returncode == 0, out.stdout + out.stderr
    return [float(line.split()[1]) for line in out.stdout.splitlines()
            if line.startswith("rss ")]


def growth(rss: list[float], first: int) -> float:
    return rss[-1] - rss[first - 1]


def test_openvino_engine_build_and_release_keeps_no_memory() -> None:
    """12 builds of the default model's OpenVINO engine, each released: flat from cycle 3."""
    rss = run_cycles("""
        from seg_perception.runtime.engine import build_engine

        for _ in range(12):
            engine, info = build_engine("default", device="cpu", backend="openvino")
            assert info.backend == "openvino"
            del engine, info
            print(f"rss {rss_mb():.1f}", flush=True)
    """)
    assert len(rss) == 12
    assert growth(rss, 3) < BOUND_MB, f"RSS per cycle (MB): {rss}"


def test_lifecycle_configure_cleanup_cycles_keep_no_memory() -> None:
    """8 configure/cleanup cycles of seg_lifecycle_node with the default model (OpenVINO on
    this CPU): flat from cycle 3."""
    rss = run_cycles("""
        import rclpy
        from rclpy.lifecycle import TransitionCallbackReturn
        from rclpy.parameter import Parameter
        from seg_perception.ros.node import SegNode

        rclpy.init()
        node = SegNode(autostart=False, namespace="/lc_memory", parameter_overrides=[
            Parameter("device", value="cpu"), Parameter("warmup", value=False)])
        for _ in range(8):
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node.info.backend == "openvino", node.info
            assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
            print(f"rss {rss_mb():.1f}", flush=True)
        node.close()
        node.destroy_node()
        rclpy.shutdown()
    """)
    assert len(rss) == 8
    assert growth(rss, 3) < BOUND_MB, f"RSS per cycle (MB): {rss}"
