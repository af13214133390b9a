"""The ROS-free transform buffer (bags) and how a frame's camera pose is chosen."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seg_perception.core.config import PipelineConfig
from seg_perception.core.geometry import (
    BODY_FROM_OPTICAL,
    CameraMounting,
    Transform,
    optical_from_mounting,
)
from seg_perception.core.pipeline import TransformLookup, resolve_pose
from seg_perception.core.tf import (
    ExtrapolationError,
    FrameUnknownError,
    TransformBuffer,
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
