"""CameraInfo as image_geometry reads it: binning, ROI, raw (K, D) vs rectified (P, R)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seg_perception.runtime.geometry import (
    BODY_FROM_OPTICAL,
    CameraCalibration,
    CameraInfoMismatchError,
    CameraModel,
    CameraMounting,
    DrivableAreaMapper,
    GridSpec,
    Transform,
    mounting_from_optical,
    optical_from_mounting,
)
from seg_perception.sim.scene import SceneSpec, render_scene

K = (900.0, 0.0, 640.5, 0.0, 905.0, 360.25, 0.0, 0.0, 1.0)
D = (-0.30, 0.10, 0.001, -0.002, -0.02)
MOUNT = CameraMounting(1.0, 0.0, 1.5, 0.0, math.radians(6), 0.0)
GRID = GridSpec(0.2, 0.0, 30.0, -8.0, 8.0)


def _grid(view_model: CameraModel, mounting: CameraMounting, mask: np.ndarray) -> np.ndarray:
    mapper = DrivableAreaMapper(GRID, mounting, speckle_area=0)
    mapper.set_view(view_model, mounting)
    return mapper.grid_from_mask(mask)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    seen = (a != -1) | (b != -1)
    return float((a == b)[seen].mean())


def test_binning_and_roi_move_and_scale_k_as_image_geometry_does() -> None:
    full = CameraCalibration.from_fields(1280, 720, K)
    assert full.image_size == (1280, 720) and full.binning_x == 1  # binning 0 means 1
    binned = CameraCalibration.from_fields(1280, 720, K, binning_x=2, binning_y=4)
    assert binned.image_size == (640, 180)
    m = binned.camera_for(False).model
    np.testing.assert_allclose(m.K, (450.0, 0.0, 320.25, 0.0, 226.25, 90.0625, 0, 0, 1.0))
    roi = CameraCalibration.from_fields(1280, 720, K, roi=(100, 60, 800, 400), binning_x=2,
                                        binning_y=2)
    assert roi.image_size == (400, 200)
    k = np.reshape(roi.camera_for(False).model.K, (3, 3))
    assert k[0, 2] == pytest.approx((640.5 - 100) / 2) and k[1, 2] == pytest.approx(
        (360.25 - 60) / 2)
    # a 3-D point lands where the full-resolution pixel, cropped and binned, says
    pts = np.array([[0.3, -0.2, 4.0], [-1.0, 0.4, 9.0]])
    uv_full = CameraModel(1280, 720, K).project(pts)
    uv = roi.camera_for(False).model.project(pts)
    np.testing.assert_allclose(uv, (uv_full - [100, 60]) / 2, atol=1e-9)


def test_an_image_that_disagrees_with_its_camera_info_is_refused_not_rescaled() -> None:
    cal = CameraCalibration.from_fields(1280, 720, K)
    with pytest.raises(CameraInfoMismatchError, match="image is 640x360 but its camera_info "
                       "describes 1280x720"):
        cal.camera_for(False, (640, 360))
    binned = CameraCalibration.from_fields(1280, 720, K, binning_x=2, binning_y=2)
    assert binned.camera_for(False, (640, 360)).model.size == (640, 360)
    with pytest.raises(CameraInfoMismatchError, match="binning 2x2"):
        binned.camera_for(False, (1280, 720))
    with pytest.raises(CameraInfoMismatchError, match="P is empty or zero"):
        CameraCalibration.from_fields(1280, 720, K, p=[0.0] * 12).camera_for(True)
    for bad in (dict(k=[0.0] * 9), dict(roi=(1200, 0, 400, 100)), dict(r=[2.0] * 9)):
        with pytest.raises(ValueError):
            CameraCalibration.from_fields(1280, 720, **{"k": K, **bad})


def test_a_rectified_image_is_not_distorted_twice() -> None:
    """image_rect: P (here a different focal length than K) and no D; K+D would be wrong."""
    w, h = 640, 360
    k_raw = (450.0, 0.0, 320.0, 0.0, 450.0, 180.0, 0.0, 0.0, 1.0)
    p_rect = np.array([[400.0, 0.0, 318.0, 0.0], [0.0, 400.0, 182.0, 0.0], [0, 0, 1.0, 0]])
    cal = CameraCalibration.from_fields(w, h, k_raw, D, p=p_rect.ravel())
    pinhole = CameraModel(w, h, tuple(p_rect[:, :3].ravel()))
    scene = render_scene(SceneSpec(curvature=1 / 90), pinhole, MOUNT, GRID)
    rect = cal.camera_for(True, (w, h))
    assert rect.model == pinhole and not rect.model.D
    grid = _grid(rect.model, rect.mounting(MOUNT), scene.drivable)
    assert _agreement(grid, scene.grid) > 0.995
    raw = cal.camera_for(False, (w, h))
    assert raw.model.D == D
    twice = _grid(raw.model, raw.mounting(MOUNT), scene.drivable)
    assert _agreement(twice, scene.grid) < 0.95  # K and D on a rectified image: wrong
    # and the raw image of the same camera is read with K and D
    distorted = render_scene(SceneSpec(curvature=1 / 90), raw.model, MOUNT, GRID)
    assert _agreement(_grid(raw.model, MOUNT, distorted.drivable), distorted.grid) > 0.995


def test_rectification_rotation_and_stereo_baseline_move_the_projection_frame() -> None:
    w, h = 640, 360
    f, baseline = 420.0, 0.3
    r = Transform.from_quaternion((0, 0, 0), (0.0, math.sin(0.02), 0.0, math.cos(0.02)))
    p_right = np.array([[f, 0.0, 320.0, -f * baseline], [0.0, f, 180.0, 0.0],
                        [0.0, 0.0, 1.0, 0.0]])
    cal = CameraCalibration.from_fields(w, h, (f, 0, 320, 0, f, 180, 0, 0, 1), D,
                                        r=r.matrix.ravel(), p=p_right.ravel())
    view = cal.camera_for(True, (w, h))
    np.testing.assert_allclose(view.offset, (-baseline, 0.0, 0.0), atol=1e-12)
    # independently: the projection frame is R X + t, i.e. at -R^T t in the optical frame
    grid_from_opt = optical_from_mounting(MOUNT)
    proj_in_opt = Transform.from_matrix(r.matrix.T, -(r.matrix.T @ np.array(view.offset)))
    expect = mounting_from_optical(grid_from_opt @ proj_in_opt)
    got = view.mounting(MOUNT)
    assert got.position == pytest.approx(expect.position, abs=1e-12)
    np.testing.assert_allclose(got.rotation, expect.rotation, atol=1e-12)
    # the right camera sits baseline metres to the right of the left (optical +x = -y)
    assert got.y == pytest.approx(MOUNT.y - baseline * math.cos(0.02), abs=1e-3)
    scene = render_scene(SceneSpec(), view.model, got, GRID)
    assert _agreement(_grid(view.model, got, scene.drivable), scene.grid) > 0.995


def test_body_and_optical_frames_round_trip() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        m = CameraMounting(*rng.uniform(-5, 5, 3), *rng.uniform(-3.1, 3.1, 3))
        back = mounting_from_optical(optical_from_mounting(m))
        np.testing.assert_allclose(back.rotation, m.rotation, atol=1e-12)
        assert back.position == pytest.approx(m.position, abs=1e-12)
    down = CameraMounting(0.0, 0.0, 2.0, 0.3, math.pi / 2, -0.4)  # gimbal lock
    back = mounting_from_optical(optical_from_mounting(down))
    np.testing.assert_allclose(back.rotation, down.rotation, atol=1e-12)
    # REP 103: a level camera's optical z looks along grid x, optical x along -y
    level = optical_from_mounting(CameraMounting(0, 0, 1.0, 0, 0, 0))
    np.testing.assert_allclose(level.matrix, BODY_FROM_OPTICAL, atol=1e-15)
