"""Shared fixtures, and DDS isolation for the whole test run.

Data paths and ``require`` live in ``shared_data.py`` (importable from tests); they are
re-exported here for older imports.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
from shared_data import (  # noqa: F401 - re-exported
    BDD,
    CAMVID,
    CITYSCAPES,
    REPO,
    SHARED,
    TWINLITENET_WEIGHTS,
    require,
)

# Fast DDS maps a domain to UDP ports 7400 + 250 * id: ids above 232 overflow the port range.
MAX_DOMAIN_ID = 232

# Every node this run starts (in-process or as a subprocess) gets a DDS domain of its own and
# discovery limited to this machine. Set before anything initialises rclpy.
# SEG_TEST_ROS_DOMAIN_ID pins it (several test runs side by side on one machine). Under
# pytest-xdist the controller draws the base once and its workers inherit it; worker gwN
# takes base + N, so the workers' nodes never see each other either.
os.environ.setdefault("SEG_TEST_ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
os.environ["ROS_DOMAIN_ID"] = str(
    1 + (int(os.environ["SEG_TEST_ROS_DOMAIN_ID"]) - 1 + int(_WORKER.removeprefix("gw")))
    % MAX_DOMAIN_ID)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)
# A run started in the background (`make test &`, nohup, some CI runners) inherits SIGINT
# ignored, and an ignored signal stays ignored across exec: every process a test starts would
# ignore the Ctrl-C it sends (`ros2 launch` only handles SIGINT through Python's default
# handler, which Python does not install when SIGINT is ignored at start-up). Tests send
# Ctrl-C as a user's terminal does, so this run takes SIGINT and SIGTERM back (before
# pytest-xdist starts its workers, which then inherit it); its children start with defaults.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
# Large images over UDP lose fragments; the shipped profile uses shared memory (as launch does).
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_shm.xml"))


@pytest.fixture
def camvid_dir() -> Path:
    return require(CAMVID)


@pytest.fixture
def camvid_frame() -> np.ndarray:
    """One real 480x360 RGB driving frame from CamVid val."""
    import cv2

    frames = sorted((require(CAMVID) / "val").glob("*.png"))
    if not frames:
        pytest.skip("no CamVid val frames")
    return cv2.cvtColor(cv2.imread(str(frames[0]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
