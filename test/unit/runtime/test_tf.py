"""The ROS-free transform buffer (bags) and how a frame's camera pose is chosen."""

from __future__ import annotations

import logging
import math
import threading

import numpy as np
import pytest

from seg_perception.runtime.config import PipelineConfig
from seg_perception.runtime.geometry import (
    BODY_FROM_OPTICAL,
    CameraMounting,
    Transform,
    optical_from_mounting,
)
from seg_perception.runtime.pipeline import TransformLookup, resolve_pose
from seg_perception.runtime.tf import (
    TF_WAIT_CAP,
    ExtrapolationError,
    FrameUnknownError,
    TfWait,
    TransformBuffer,
    waited_note,
)

S = 1_000_000_000


def _yaw(a: float, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> Transform:
    return Transform.from_quaternion((x, y, z), (0.0, 0.0, math.sin(a / 2), math.cos(a / 2)))


def test_static_chain_and_inverse() -> None:
    buf = TransformBuffer()
    mount = CameraMounting(1.2, -0.1, 1.4, 0.01, 0.08, -0.02)
    buf.set_transform("base_footprint", "camera_link",
                      Transform.from_matrix(mount.rotation_body, mount.position), None)
    buf.set_transform("camera_link", "camera_optical", Transform.from_matrix(
        BODY_FROM_OPTICAL, (0, 0, 0)), None)
    t = buf.lookup("base_footprint", "camera_optical", 5 * S)
    want = optical_from_mounting(mount)
    np.testing.assert_allclose(t.matrix, want.matrix, atol=1e-12)
    np.testing.assert_allclose(t.vector, want.vector, atol=1e-12)
    back = buf.lookup("camera_optical", "base_footprint", 0)
    np.testing.assert_allclose((back @ t).matrix, np.eye(3), atol=1e-12)
    assert buf.lookup("camera_link", "camera_link").translation == (0.0, 0.0, 0.0)


def test_moving_transforms_interpolate_and_do_not_extrapolate() -> None:
    buf = TransformBuffer()
    buf.set_transform("odom", "base_footprint", _yaw(0.0, x=0.0), 10 * S)
    buf.set_transform("odom", "base_footprint", _yaw(0.4, x=2.0), 12 * S)
    buf.set_transform("base_footprint", "cam", _yaw(0.1, x=1.0), None)
    mid = buf.lookup("odom", "base_footprint", 11 * S)
    assert mid.translation[0] == pytest.approx(1.0)
    assert math.atan2(mid.matrix[1, 0], mid.matrix[0, 0]) == pytest.approx(0.2)
    chained = buf.lookup("odom", "cam", 11 * S)
    np.testing.assert_allclose(chained.vector, mid.apply(np.array([[1.0, 0, 0]]))[0])
    latest = buf.lookup("odom", "base_footprint", 0)  # time 0: the latest, as in tf2
    assert latest.translation[0] == pytest.approx(2.0)
    with pytest.raises(ExtrapolationError, match=r"not known at 13\.000 s"):
        buf.lookup("odom", "cam", 13 * S)
    with pytest.raises(FrameUnknownError, match="'nowhere' is in no transform"):
        buf.lookup("odom", "nowhere", 11 * S)
    buf.set_transform("map", "other", _yaw(0.0), None)
    with pytest.raises(FrameUnknownError, match="not connected"):
        buf.lookup("odom", "other", 11 * S)


def _lookup_from(buf: TransformBuffer) -> TransformLookup:
    return lambda target, source, stamp, timeout: buf.lookup(target, source, stamp)


def test_pose_from_tf_parameters_or_none() -> None:
    mount = CameraMounting(0.5, 0.0, 1.6, 0.0, 0.1, 0.0)
    buf = TransformBuffer()
    buf.set_transform("base_footprint", "cam_optical", optical_from_mounting(mount), None)
    cfg = PipelineConfig.from_params({"camera.z": 2.0})
    pose = resolve_pose(cfg, "cam_optical", 7 * S, _lookup_from(buf))
    assert pose.source == "tf" and pose.problem is None
    np.testing.assert_allclose(pose.mounting.rotation, mount.rotation, atol=1e-12)
    assert pose.mounting.z == pytest.approx(1.6)
    # use_tf false, or no tf at all: the camera.* parameters
    off = resolve_pose(PipelineConfig.from_params({"use_tf": False, "camera.z": 2.0}),
                       "cam_optical", 0, _lookup_from(buf))
    assert off.source == "parameters" and off.mounting.z == 2.0
    none = resolve_pose(cfg, "cam_optical", 0, None, "tf2_ros is not installed")
    assert none.source == "parameters" and "tf2_ros" in none.detail
    # a missing transform: no pose (no grid), and the reason names both frames
    miss = resolve_pose(cfg, "other_optical", 0, _lookup_from(buf))
    assert miss.mounting is None
    assert "other_optical" in miss.problem and "base_footprint" in miss.problem
    # offline, a camera the recording's tf never mentions falls back to the parameters
    fb = resolve_pose(cfg, "other_optical", 0, _lookup_from(buf), fallback_unknown=True)
    assert fb.source == "parameters" and fb.mounting.z == 2.0
    assert "base_footprint <- other_optical" in fb.detail
    empty = resolve_pose(cfg, "", 0, _lookup_from(buf))
    assert empty.mounting is None and "empty header.frame_id" in empty.problem
    below = TransformBuffer()
    below.set_transform("base_footprint", "cam_optical", optical_from_mounting(
        CameraMounting(0, 0, 1.0)).inverse(), None)
    assert "unusable" in resolve_pose(cfg, "cam_optical", 0, _lookup_from(below)).problem


# --- the live buffer (the node without tf2_ros) --------------------------------------------

def _live() -> TransformBuffer:
    return TransformBuffer(max_history_s=10.0, jump_back_s=1.0, where="/tf")


def test_wait_lookup_returns_once_the_transform_arrives() -> None:
    """A lookup from the worker thread waits on the buffer's condition until the /tf
    callback (another thread) inserts the sample it needs, then returns it."""
    buf = _live()
    buf.set_transform("odom", "base", _yaw(0.0, x=0.0), 10 * S)
    got: dict[str, object] = {}
    started = threading.Event()

    def worker() -> None:
        started.set()
        try:
            got["t"] = buf.wait_lookup("odom", "base", 11 * S, 60.0)
        except Exception as exc:  # reported below
            got["error"] = exc

    thread = threading.Thread(target=worker)
    thread.start()
    assert started.wait(30)
    assert "t" not in got  # 11 s is after the newest sample: nothing to return yet
    buf.set_transform("odom", "base", _yaw(0.0, x=2.0), 12 * S)
    thread.join(60)
    assert not thread.is_alive() and "error" not in got, got
    assert got["t"].translation[0] == pytest.approx(1.0)  # type: ignore[attr-defined]
    # Waiting cannot bring older samples: into the past fails without waiting.
    with pytest.raises(ExtrapolationError) as info:
        buf.wait_lookup("odom", "base", 9 * S, 0.0)
    assert not info.value.future
    with pytest.raises(ExtrapolationError, match="/tf has it") as info:
        buf.wait_lookup("odom", "base", 13 * S, 0.0)
    assert info.value.future


def test_live_history_is_bounded() -> None:
    buf = _live()
    for i in range(201):  # 20 s at 10 Hz
        buf.set_transform("odom", "base", _yaw(0.0, x=i * 0.1), i * S // 10)
    assert buf.lookup("odom", "base", 15 * S).translation[0] == pytest.approx(15.0)
    with pytest.raises(ExtrapolationError, match=r"10\.000 \.\. 20\.000 s"):
        buf.lookup("odom", "base", 5 * S)
    newest, period = buf.chain_state("odom", "base")
    assert newest == 20 * S and period == S // 10


def test_jump_back_clears_moving_transforms_keeps_static(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    buf = _live()
    buf.set_transform("base", "cam", _yaw(0.1, x=1.0), None)
    for i in range(50):
        buf.set_transform("odom", "base", _yaw(0.0, x=float(i)), (100 + i) * S)
    with caplog.at_level(logging.INFO, logger="seg_perception.runtime.tf"):
        buf.set_transform("odom", "base", _yaw(0.0, x=-5.0), 3 * S)  # the bag restarted
        buf.set_transform("odom", "base", _yaw(0.0, x=-4.0), 4 * S)
    assert buf.jumps == 1
    jumps = [r for r in caplog.records if "time jumped back" in r.getMessage()]
    assert len(jumps) == 1 and "static ones kept" in jumps[0].getMessage()
    with pytest.raises(ExtrapolationError):
        buf.lookup("odom", "base", 120 * S)  # the old pass is gone
    # the new pass (x -4.5 at 3.5 s) through the static camera mount (x + 1)
    assert buf.lookup("odom", "cam", int(3.5 * S)).translation[0] == pytest.approx(-3.5)
    assert buf.lookup("base", "cam", 0).translation[0] == pytest.approx(1.0)
    # A small step back (within the bound) is an out-of-order sample, not a jump.
    buf.set_transform("odom", "base", _yaw(0.0, x=-4.5), int(3.5 * S))
    assert buf.jumps == 1


def test_recording_buffer_keeps_everything_and_backward_stamps() -> None:
    """``process``'s buffer (the defaults): no bound, no clearing on backward stamps."""
    buf = TransformBuffer()
    for t in (100, 3, 50, 1):
        buf.set_transform("odom", "base", _yaw(0.0, x=float(t)), t * S)
    assert buf.jumps == 0
    assert buf.lookup("odom", "base", 2 * S).translation[0] == pytest.approx(2.0)
    assert buf.lookup("odom", "base", 75 * S).translation[0] == pytest.approx(75.0)


def test_tf_wait_sized_on_the_period_of_a_moving_transform() -> None:
    """Past the newest sample of a 10 Hz transform the wait is 1.5 periods (the floor for
    times already covered and static chains); after a long wait that timed out, only the
    floor until a newer sample arrives."""
    buf = _live()
    buf.set_transform("base", "cam", _yaw(0.0), None)
    for i in range(10):
        buf.set_transform("odom", "base", _yaw(0.0), 10 * S + i * S // 10)
    newest, period = buf.chain_state("odom", "cam")
    assert newest == 10 * S + 9 * S // 10 and period == S // 10
    assert buf.chain_state("base", "cam") == (None, None)
    wait = TfWait()
    key = ("odom", "cam")
    future = newest + S // 30
    assert wait.timeout(key, future, 0.05, newest, period) == (pytest.approx(0.15),
                                                               pytest.approx(0.1))
    assert wait.timeout(key, newest - 1, 0.05, newest, period) == (0.05, None)
    assert wait.timeout(key, future, 0.5, newest, period)[0] == 0.5  # tf_timeout: the floor
    assert wait.timeout(key, future, 0.05, newest, 10 * S)[0] == TF_WAIT_CAP
    wait.done(key, True, newest)  # the 10 Hz transform stopped
    assert wait.timeout(key, future, 0.05, newest, period) == (0.05, None)
    assert wait.timeout(key, future + S, 0.05, newest + S // 10, period)[0] == \
        pytest.approx(0.15)
    assert "after waiting 0.150 s for the next /tf at ~10.0 Hz" in waited_note(0.15, 0.1)
