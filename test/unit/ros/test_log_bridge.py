"""The log bridge: the ROS-free layers log through ``logging``; in a node their records
(and Python warnings) go to the node's logger with their severity, rate-limited, and nothing
is printed past it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from shared_data import REPO

# Run in a fresh interpreter, as in a node process: under pytest, launch's logging module
# (imported by the launch tests' plugins) makes new loggers LaunchLoggers that do not propagate.
_BRIDGE_FAKE = r"""
import logging, warnings
from seg_perception.runtime.geometry import (CameraModel, CameraMounting, DrivableAreaMapper,
                                             GridSpec)
from seg_perception.ros.log_bridge import route_to, unroute

class Fake:
    def __init__(self):
        self.lines = []
    def __getattr__(self, level):
        if level.startswith("_") or level == "get_effective_level":
            raise AttributeError(level)
        return lambda text: self.lines.append((level, text))

fake = Fake()
handler = route_to(fake, capture_warnings=True)
for _ in range(5):  # a camera looking at the sky: "sees none" at each rebuild
    mapper = DrivableAreaMapper(GridSpec(), CameraMounting(z=1.5, pitch=-1.2))
    mapper.set_camera(CameraModel.from_fov(64, 48, 60.0))
logging.getLogger("seg_perception.runtime.engine").info("model loaded")
logging.getLogger("seg_perception.runtime.engine").debug("not shown at INFO")
warnings.warn("something odd", RuntimeWarning, stacklevel=1)
unroute(handler)
assert logging.getLogger("seg_perception").propagate
print(repr(fake.lines))
"""

_BRIDGE_RCLPY = r"""
import logging, rclpy
from seg_perception.ros.log_bridge import route_to, unroute
rclpy.init()
node = rclpy.create_node("log_bridge_check")
handler = route_to(node.get_logger(), capture_warnings=False)
logging.getLogger("seg_perception.runtime.geometry.mapper").warning(
    "the camera sees none of the grid's cells (test)")
unroute(handler)
node.destroy_node()
rclpy.shutdown()
"""


def test_log_bridge_sends_core_records_with_severity_and_rate_limit() -> None:
    pytest.importorskip("rclpy")
    done = subprocess.run([sys.executable, "-c", _BRIDGE_FAKE], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # nothing printed past the bridge (no lastResort lines)
    lines = eval(done.stdout)  # our own subprocess's output
    sees = [(lvl, t) for lvl, t in lines if "sees none" in t]
    assert len(sees) == 1 and sees[0][0] == "warning"  # five occurrences, one line
    assert sees[0][1].startswith("[runtime.geometry.mapper] the camera sees none")
    assert ("info", "[runtime.engine] model loaded") in lines
    assert not any("not shown" in t for _, t in lines)
    assert any(lvl == "warning" and "something odd" in t for lvl, t in lines)


def test_log_bridge_with_a_real_rclpy_logger() -> None:
    """Through a node's logger the line gets severity and node name (rcutils, on stderr)."""
    pytest.importorskip("rclpy")
    done = subprocess.run([sys.executable, "-c", _BRIDGE_RCLPY], capture_output=True,
                          text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "RCUTILS_COLORIZED_OUTPUT": "0"})
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stderr.splitlines() if "sees none" in ln)
    assert "[WARN]" in line and "[log_bridge_check]" in line, line
