"""Camera conventions, validation (absurd intrinsics refused, extreme ones quiet), the cell ->
pixel lookup, lens distortion, free space."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest

from seg_perception.runtime.geometry import (
    BEHIND,
    CameraModel,
    CameraMounting,
    DrivableAreaMapper,
    GridSpec,
    boundary_polygon,
    clean_mask,
    ground_point,
    rpy_matrix,
)
from seg_perception.runtime.geometry.coverage import polygon_coverage
from seg_perception.runtime.geometry.polygon import is_simple, simplify_keep_simple

K500 = (500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0)
PLUMB_BOB = (-0.28, 0.09, 0.001, -0.0015, -0.015)


@pytest.fixture
def cam() -> CameraModel:
    return CameraModel(640, 480, K500)


def project_ground(cam: CameraModel, mnt: CameraMounting, xy) -> np.ndarray:
    pts = np.column_stack([np.asarray(xy, float).reshape(-1, 2), np.zeros(len(xy))])
    return cam.project(mnt.grid_to_optical(pts))


# -- conventions ------------------------------------------------------------------------------
def test_hand_computed_pixel_to_ground(cam):
    # Level camera 1.5 m up: the ground point 10 m ahead is 0.15 rad below the axis, so
    # v = cy + f * 1.5 / 10 = 315; 2 m to the left is u = cx - f * 2 / 10 = 220.
    level = CameraMounting(0.0, 0.0, 1.5, 0.0, 0.0, 0.0)
    uv = project_ground(cam, level, [(10.0, 0.0), (10.0, 2.0)])
    np.testing.assert_allclose(uv, [[320.0, 315.0], [220.0, 315.0]], atol=1e-9)
    back = ground_point(cam, level, np.array([[320.0, 315.0], [220.0, 315.0], [320.0, 240.0]]))
    np.testing.assert_allclose(back[:2], [[10.0, 0.0], [10.0, 2.0]], atol=1e-9)
    assert np.all(np.isnan(back[2]))  # the principal ray of a level camera never meets ground

    # Pitched down by atan(1.5 / 10) the same ground point is at the principal point.
    down = CameraMounting(0.0, 0.0, 1.5, 0.0, math.atan2(1.5, 10.0), 0.0)
    np.testing.assert_allclose(project_ground(cam, down, [(10.0, 0.0)]), [[320, 240]], atol=1e-9)
    # Offsets and yaw: a camera 1 m forward, 0.5 m left, turned 90 degrees left (towards +y);
    # its right-hand side is then +x.
    left = CameraMounting(1.0, 0.5, 1.5, 0.0, 0.0, math.pi / 2)
    uv = project_ground(cam, left, [(1.0, 10.5), (3.0, 10.5), (-1.0, 10.5)])
    np.testing.assert_allclose(uv, [[320, 315], [420, 315], [220, 315]], atol=1e-9)


def test_rotations_follow_urdf_rpy():
    for angles in [(0.1, -0.2, 0.3), (0.0, 0.5, 0.0), (-1.0, 0.4, 2.0)]:
        r = rpy_matrix(*angles)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
    # positive pitch turns body x (forward) down; positive yaw turns it left (+y);
    # positive roll lifts body y (left) up.
    assert (rpy_matrix(0, 0.2, 0) @ [1, 0, 0])[2] < 0
    assert (rpy_matrix(0, 0, 0.2) @ [1, 0, 0])[1] > 0
    assert (rpy_matrix(0.2, 0, 0) @ [0, 1, 0])[2] > 0
    # fixed-axis order: roll first, then pitch, then yaw
    r = rpy_matrix(0.3, 0.2, 0.1)
    expect = rpy_matrix(0, 0, 0.1) @ rpy_matrix(0, 0.2, 0) @ rpy_matrix(0.3, 0, 0)
    np.testing.assert_allclose(r, expect)
    # optical frame: z forward, x right, y down
    rot = CameraMounting(0, 0, 1, 0, 0, 0).rotation
    np.testing.assert_allclose(rot @ [0, 0, 1], [1, 0, 0])
    np.testing.assert_allclose(rot @ [1, 0, 0], [0, -1, 0])
    np.testing.assert_allclose(rot @ [0, 1, 0], [0, 0, -1])


def test_grid_layout_is_occupancy_grid(cam):
    spec = GridSpec(0.5, -2.0, 38.0, -10.0, 10.0)
    assert (spec.width, spec.height) == (80, 40)
    gx, gy = spec.cell_centers()
    assert gx.shape == (40, 80)
    assert gx[0, 0] == pytest.approx(-1.75) and gy[0, 0] == pytest.approx(-9.75)
    assert gx[0, 1] > gx[0, 0] and gy[1, 0] > gy[0, 0]  # column along x, row along y
    assert GridSpec(0.1, 0.0, 40.0, -10.0, 10.0).shape == (200, 400)
    assert GridSpec(0.3, 0.0, 1.0, 0.0, 1.0).width == 4  # rounded up
    # the left half of the image (y > 0 in grid_frame) lands in the upper rows
    mapper = DrivableAreaMapper(spec, CameraMounting(0, 0, 1.5, 0, 0.1, 0), speckle_area=0)
    mapper.set_camera(cam)
    mask = np.zeros((480, 640), np.uint8)
    mask[:, :320] = 1
    grid = mapper.grid_from_mask(mask)
    assert grid.dtype == np.int8 and grid.shape == spec.shape
    assert np.all(grid[gy > 0.5][grid[gy > 0.5] >= 0] == 0)
    assert np.all(grid[gy < -0.5][grid[gy < -0.5] >= 0] == 100)


def test_single_pixel_lands_on_its_ground_point(cam):
    # 1 cm cells are finer than the pixel's ground footprint here (0.02 m across, 0.13 m
    # along the range), so the cells reading pixel (220, 315) are exactly those around (10, 2).
    spec = GridSpec(0.01, 9.0, 11.0, 1.5, 2.5)
    mapper = DrivableAreaMapper(spec, CameraMounting(0, 0, 1.5, 0, 0, 0), speckle_area=0)
    mapper.set_camera(cam)
    mask = np.zeros((480, 640), bool)
    mask[315, 220] = True
    grid = mapper.grid_from_mask(mask)
    gx, gy = spec.cell_centers()
    free = grid == 0
    row, col = spec.cell_of(10.0, 2.0)
    assert free[row, col]
    assert np.all(np.abs(gx[free] - 10.0) < 0.08) and np.all(np.abs(gy[free] - 2.0) < 0.025)
    assert np.all(grid[~free] == 100)


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x_min": 5.0, "x_max": 5.0}, "grid.x_min"),
        ({"x_min": 6.0, "x_max": 5.0}, "grid.x_min"),
        ({"y_min": 1.0, "y_max": -1.0}, "grid.y_min"),
        ({"resolution": 0.0}, "grid.resolution"),
        ({"resolution": -0.1}, "grid.resolution"),
        ({"resolution": float("nan")}, "finite"),
        ({"resolution": 1e-4}, "exceeds"),
    ],
)
def test_grid_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GridSpec(**{"resolution": 0.1, **kwargs}).validate()


def test_mounting_validation():
    with pytest.raises(ValueError, match=r"camera\.z"):
        CameraMounting(z=0.0).validate()
    with pytest.raises(ValueError, match=r"camera\.z"):
        CameraMounting(z=-1.2).validate()
    with pytest.raises(ValueError, match="finite"):
        CameraMounting(pitch=float("inf")).validate()
    with pytest.raises(ValueError, match=r"camera\.z"):
        DrivableAreaMapper(GridSpec(), CameraMounting(z=-0.5))
    with pytest.raises(ValueError, match=r"grid\.x_min"):
        DrivableAreaMapper(GridSpec(0.1, 10.0, 0.0), CameraMounting())
    assert CameraMounting(z=1.5).validate().z == 1.5


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 480, K500), "size"),
        ((640, 0, K500), "size"),
        ((640, 480, (0, 0, 320, 0, 500, 240, 0, 0, 1)), "focal"),
        ((640, 480, (500, 0, 320, 0, -500, 240, 0, 0, 1)), "focal"),
        ((640, 480, (0,) * 9), "focal"),
        ((640, 480, K500, (0.1, 0.0, 0.0)), "coefficients"),
        ((640, 480, K500, (0.1, 0, 0, 0), "weird_lens"), "not supported"),
    ],
)
def test_camera_validation(args, match):
    with pytest.raises(ValueError, match=match):
        CameraModel(*args).validate()


@pytest.mark.parametrize(("k", "d", "model", "size"), [
    ([1e308, 0, 320, 0, 1e308, 240, 0, 0, 1], [0.0] * 5, "plumb_bob", (640, 480)),
    ([5e-324, 0, 320, 0, 5e-324, 240, 0, 0, 1], [0.0] * 5, "plumb_bob", (640, 480)),
    ([500, 0, 320, 0, 500, 240, 0, 0, 1], [1e308, 1e308, 0, 0, 1e308], "plumb_bob", (640, 480)),
    ([500, 0, 320, 0, 500, 240, 0, 0, 1], [1e200] * 8, "rational_polynomial", (640, 480)),
    ([500, 0, 320, 0, 500, 240, 0, 0, 1], [1e308] * 4, "equidistant", (640, 480)),
    ([500, 1e308, 320, 0, 500, 240, 0, 0, 1], [0.0] * 5, "plumb_bob", (640, 480)),
    ([500, 0, 1e308, 0, 500, 240, 0, 0, 1], [0.0] * 5, "plumb_bob", (640, 480)),
    ([500, 0, 320, 0, 500, 240, 0, 0, 1], [0.0] * 5, "plumb_bob", (10**9, 10**9)),
])
def test_absurd_intrinsics_are_refused_with_a_reason(k: list, d: list, model: str,
                                                     size: tuple) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning fails the test
        with pytest.raises(ValueError, match=r"camera|distortion"):
            CameraModel(size[0], size[1], k, d, model).validate()


def test_extreme_but_accepted_intrinsics_raise_no_runtime_warnings() -> None:
    rng = np.random.default_rng(0)
    built = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(60):
            fx, fy = rng.choice([1e-3, 1.0, 500.0, 1e7], 2)
            cx, cy, skew = rng.choice([0.0, 1e-3, 320.0, 1e7, -1e7], 3)
            model = str(rng.choice(["plumb_bob", "rational_polynomial", "equidistant"]))
            n = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}[model]
            d = rng.choice([0.0, 1e6, -1e6, 1.0, -1.0, 1e-12], n)
            w, h = (int(v) for v in rng.choice([1, 2, 640, 131072], 2))
            mapper = DrivableAreaMapper(GridSpec(0.5, 0.0, 30.0, -8.0, 8.0),
                                        CameraMounting(z=1.5, pitch=0.1))
            mapper.set_camera(CameraModel(w, h, [fx, skew, cx, 0, fy, cy, 0, 0, 1], d, model))
            mapper.process(np.ones((48, 64), np.uint8))
            built += 1
    assert built == 60


def test_camera_model_change_detection(cam):
    mapper = DrivableAreaMapper(GridSpec(0.2, 0, 30, -8, 8), CameraMounting(z=1.4, pitch=0.1))
    with pytest.raises(RuntimeError, match="set_camera"):
        mapper.grid_from_mask(np.zeros((480, 640), bool))
    assert mapper.set_camera(cam) is True
    assert mapper.set_camera(cam) is False
    same = CameraModel.from_camera_info_fields(640, 480, list(K500), [0.0] * 5, "plumb_bob")
    assert same == cam and mapper.set_camera(same) is False  # zero D == no D
    assert mapper.rebuilds == 1
    assert mapper.set_camera(CameraModel(640, 480, K500, PLUMB_BOB)) is True
    assert mapper.set_camera(CameraModel(640, 480, K500, PLUMB_BOB)) is False
    k2 = list(K500)
    k2[0] = 510.0
    assert mapper.set_camera(CameraModel(640, 480, k2, PLUMB_BOB)) is True
    assert mapper.set_camera(CameraModel(1280, 960, k2, PLUMB_BOB)) is True
    assert mapper.rebuilds == 4
    with pytest.raises(ValueError, match="focal"):
        mapper.set_camera(CameraModel(640, 480, (0,) * 9))
    assert mapper.camera.width == 1280  # a refused model leaves the previous one in place
    assert mapper.set_mounting(CameraMounting(z=1.4, pitch=0.1)) is False
    assert mapper.set_mounting(CameraMounting(z=1.6, pitch=0.1)) is True
    assert mapper.rebuilds == 5


# -- distortion -------------------------------------------------------------------------------
def _points_in_view(rng, n=400, half_angle=0.6):
    ang = rng.uniform(-half_angle, half_angle, (n, 2))
    depth = rng.uniform(1.0, 50.0, n)
    return np.column_stack([np.tan(ang[:, 0]) * depth, np.tan(ang[:, 1]) * depth, depth])


@pytest.mark.parametrize(
    ("model", "d"),
    [
        ("plumb_bob", PLUMB_BOB),
        ("plumb_bob", (0.05, -0.01, 0.0, 0.0)),
        ("rational_polynomial", (0.2, -0.05, 0.001, 0.0005, 0.002, 0.5, -0.04, 0.01)),
        ("equidistant", (-0.02, 0.005, -0.001, 0.0002)),
    ],
)
def test_distortion_matches_opencv(model, d, rng):
    cam = CameraModel(640, 480, K500, d, model).validate()
    pts = _points_in_view(rng)
    ours = cam.project(pts)
    k = cam.matrix
    if model == "equidistant":
        ref, _ = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), k,
                                           np.asarray(d, float))
    else:
        ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), k, np.asarray(d, float))
    np.testing.assert_allclose(ours, ref.reshape(-1, 2), atol=1e-6)
    # pixel -> ray -> pixel round trip over the whole image
    uv = cam.pixel_grid()[::97]
    np.testing.assert_allclose(cam.project(cam.pixel_rays(uv)), uv, atol=1e-4)


def test_distortion_fold_over_is_not_visible():
    # Strong barrel distortion folds far off-axis points back into the image; those points
    # must be rejected rather than mapped onto pixels that show something else.
    cam = CameraModel(640, 480, K500, PLUMB_BOB)
    r_max = cam.max_valid_radius
    assert 1.0 < r_max < 3.0
    r = np.linspace(r_max * 1.01, 5.0, 2000)
    u = cam.distort_normalized(np.column_stack([r, np.zeros_like(r)]))[:, 0] * 500 + 320
    folded = r[(u >= 0) & (u < 640)]
    assert len(folded)  # the raw polynomial puts these far off-axis points inside the image
    pts = np.column_stack([folded, np.zeros_like(folded), np.ones_like(folded)])
    assert np.all(np.isnan(cam.project(pts)))


def test_distorted_lookup_reads_the_right_pixels():
    cam = CameraModel(640, 480, K500, PLUMB_BOB)
    mnt = CameraMounting(0.0, 0.0, 1.5, 0.0, 0.12, 0.0)
    spec = GridSpec(0.1, -5.0, 30.0, -12.0, 12.0)
    mapper = DrivableAreaMapper(spec, mnt, speckle_area=0)
    mapper.set_camera(cam)
    lut = mapper.lookup
    idx, r0, _ = lut.table((480, 640))
    pix = idx + r0 * 640
    uv = np.column_stack([pix % 640, pix // 640]).astype(float)
    ground = ground_point(cam, mnt, uv)
    gx, gy = spec.cell_centers()
    cells = np.column_stack([gx.ravel(), gy.ravel()])[lut.cell_index]
    err = np.hypot(*(ground - cells).T)
    fp = lut.visibility.footprint.ravel()[lut.cell_index]
    assert np.all(err <= fp + spec.resolution)  # the pixel read holds the cell's ground point


# -- lookup details ---------------------------------------------------------------------------
def test_behind_and_above_horizon_unseen(cam):
    spec = GridSpec(0.2, -20.0, 30.0, -15.0, 15.0)
    mnt = CameraMounting(0.5, 0.0, 1.5, 0.02, 0.05, 0.1)
    mapper = DrivableAreaMapper(spec, mnt)
    mapper.set_camera(cam)
    gx, gy = spec.cell_centers()
    pts = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    behind = (mnt.grid_to_optical(pts)[:, 2] <= 0).reshape(spec.shape)
    assert behind.sum() > 1000
    full = mapper.grid_from_mask(np.ones((480, 640), bool))
    assert np.all(full[behind] == -1)
    assert np.all(mapper.lookup.visibility.reason[behind] == BEHIND)
    # drivable only at and above the horizon: no cell can be free
    rays = cam.pixel_rays(cam.pixel_grid()) @ mnt.rotation.T
    sky = (rays[:, 2] >= 0).reshape(480, 640)
    assert sky.any()
    grid = mapper.grid_from_mask(sky, clean=False)
    assert not np.any(grid == 0)
    assert np.all(grid[behind] == -1)


def test_range_and_footprint_limits(cam):
    spec = GridSpec(0.25, 0.0, 80.0, -20.0, 20.0)
    mnt = CameraMounting(0.0, 0.0, 1.5, 0.0, 0.0, 0.0)
    gx, gy = spec.cell_centers()
    rng_m = np.hypot(gx, gy)
    near = DrivableAreaMapper(spec, mnt, max_range=20.0, max_pixel_footprint=100.0)
    near.set_camera(cam)
    assert near.seen.any() and np.all(rng_m[near.seen] <= 20.0)
    coarse = DrivableAreaMapper(spec, mnt, max_range=500.0, max_pixel_footprint=0.5)
    coarse.set_camera(cam)
    fp = coarse.lookup.visibility.footprint
    assert np.all(fp[coarse.seen] <= 0.5)
    # along the axis the footprint is d^2 / (f h): 0.5 m at d = sqrt(0.5 * 500 * 1.5) = 19.4 m
    axis_row = np.argmin(np.abs(gy[:, 0]))
    seen_x = gx[axis_row][coarse.seen[axis_row]]
    assert seen_x.max() == pytest.approx(math.sqrt(0.5 * 500 * 1.5), abs=0.5)


def test_mask_of_other_size_is_scaled(cam):
    spec = GridSpec(0.1, 0.0, 30.0, -8.0, 8.0)
    mapper = DrivableAreaMapper(spec, CameraMounting(0, 0, 1.5, 0, 0.1, 0), speckle_area=0)
    mapper.set_camera(cam)
    mask = np.zeros((480, 640), np.uint8)
    cv2.fillPoly(mask, [np.array([[100, 479], [560, 479], [350, 260], [300, 260]])], 1)
    full = mapper.grid_from_mask(mask)
    half = mapper.grid_from_mask(cv2.resize(mask, (320, 240), interpolation=cv2.INTER_NEAREST))
    seen = full >= 0
    assert np.array_equal(seen, half >= 0)
    assert (full[seen] == half[seen]).mean() > 0.98
    with pytest.raises(ValueError, match="2-D"):
        mapper.grid_from_mask(np.zeros((480, 640, 3), np.uint8))


def test_speckle_cleaning():
    mask = np.zeros((120, 160), np.uint8)
    mask[60:, :] = 1
    mask[20:22, 30:32] = 1  # a 4-pixel drivable speck in the sky
    mask[90:92, 80:82] = 0  # a 4-pixel hole in the road
    for exact in (False, True):
        out = clean_mask(mask, speckle_area=9, exact=exact)
        assert out.dtype == np.uint8
        assert not out[20:22, 30:32].any() and out[90:92, 80:82].all()
        assert out[70:, :].all() and not out[:55].any()
    assert np.array_equal(clean_mask(mask, 0) != 0, mask != 0)
    assert np.array_equal(clean_mask(mask.astype(bool), 0) != 0, mask != 0)


# -- free-space boundary ----------------------------------------------------------------------
def _inside(poly: np.ndarray, x: float, y: float) -> bool:
    return cv2.pointPolygonTest(poly.astype(np.float32), (x, y), False) > 0


def test_boundary_cuts_holes_and_is_ccw():
    spec = GridSpec(0.1, 0.0, 20.0, -5.0, 5.0)
    grid = np.full(spec.shape, 100, np.int8)
    grid[10:90, 20:180] = 0  # x 2..18, y -4..4 free
    grid[40:60, 90:110] = 100  # an obstacle at x 9..11, y -1..1 inside it
    poly = boundary_polygon(grid == 0, spec, max_vertices=32)
    assert 4 <= len(poly) <= 32
    x, y = poly[:, 0], poly[:, 1]
    assert np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) > 0  # counter-clockwise
    assert not _inside(poly, 10.0, 0.0)  # the obstacle is not claimed as reachable
    assert _inside(poly, 5.0, 0.0) and _inside(poly, 15.0, 3.0) and _inside(poly, 10.0, 2.5)
    assert not _inside(poly, 1.0, 0.0) and not _inside(poly, 10.0, 4.8)
    assert boundary_polygon(np.zeros(spec.shape, bool), spec).shape == (0, 2)
    with pytest.raises(ValueError, match="max_vertices"):
        boundary_polygon(grid == 0, spec, max_vertices=3)


def test_ego_component_skips_small_and_far_islands():
    spec = GridSpec(0.1, 0.0, 20.0, -5.0, 5.0)
    mapper = DrivableAreaMapper(spec, CameraMounting(), min_region_area=0.5)
    grid = np.full(spec.shape, 100, np.int8)
    grid[45:55, 10:14] = 0  # a 0.4 m^2 blob right ahead: below min_region_area
    grid[40:60, 40:200] = 0  # the road ahead, x 4..20
    grid[0:30, 100:140] = 0  # a separate island at y -5..-2
    comp = mapper.ego_component(grid)
    assert comp[50, 100] and not comp[10, 120] and not comp[50, 12]
    poly = mapper.boundary_from_grid(grid)
    assert _inside(poly, 10.0, 0.0) and not _inside(poly, 12.0, -4.0)
    empty = mapper.boundary_from_grid(np.full(spec.shape, -1, np.int8))
    assert empty.shape == (0, 2)


def test_simplification_keeps_polygons_simple():
    bowtie = np.array([[0.0, 0.0], [2.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    assert not is_simple(bowtie) and is_simple(bowtie[[0, 2, 1, 3]])
    # a comb: ten narrow teeth whose crude simplifications readily cross each other
    top = [(x, y) for i in range(10) for x, y in ((4 * i, 10), (4 * i + 1, 10),
                                                   (4 * i + 1, 1), (4 * i + 3, 1))]
    comb = np.array([(0, 0), (40, 0), (40, 10), *reversed(top)], dtype=float)
    assert is_simple(comb)
    comb_area = polygon_coverage(comb, (10, 40))[0]
    for bound in (4, 5, 8, 12):
        out = simplify_keep_simple(comb, bound)
        assert len(out) <= bound and is_simple(out)
        # only ever inside the original: never a hull over the gaps between the teeth
        cov, outside = polygon_coverage(out, (10, 40))
        assert outside == 0 and (cov <= comb_area + 1e-9).all() and cov.sum() > 0
