"""The projection against the synthetic generator's exact ground truth, and free space."""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest

from seg_perception.runtime.geometry import (
    CameraModel,
    CameraMounting,
    DrivableAreaMapper,
    GridSpec,
)
from seg_perception.runtime.geometry.coverage import SLIVER, overclaimed_cells, polygon_coverage
from seg_perception.runtime.geometry.polygon import is_simple
from seg_perception.sim.scene import (
    CAR,
    PEDESTRIAN,
    ROAD,
    SKY,
    BoxObstacle,
    SceneSpec,
    drive_sequence,
    render_scene,
)

OBSTACLES = (
    BoxObstacle(14.0, 1.9, 0.1),
    BoxObstacle(24.0, -1.6, -0.05, color=(200, 200, 40)),
    BoxObstacle(9.0, -5.0, 0.0, 0.8, 0.8, 1.8, label=PEDESTRIAN),
)
PLUMB_BOB = (-0.28, 0.09, 0.001, -0.0015, -0.015)

# (name, mounting x y z roll pitch yaw, grid resolution, road curvature, distortion)
CASES = [
    ("level-1.2m", (0.0, 0.0, 1.2, 0.0, 0.0, 0.0), 0.1, 1 / 60, ()),
    ("1.5m-pitch5-roll-yaw", (0.5, 0.2, 1.5, 0.02, math.radians(5), -0.03), 0.1, -1 / 80, ()),
    ("2.0m-pitch15", (1.0, -0.3, 2.0, -0.03, math.radians(15), 0.05), 0.2, 1 / 100, ()),
    ("1.6m-pitch8-fine", (0.0, 0.0, 1.6, 0.01, math.radians(8.5), 0.0), 0.05, 0.0, ()),
    ("1.4m-plumb_bob", (0.3, 0.0, 1.4, 0.0, math.radians(6), 0.04), 0.1, 1 / 70, PLUMB_BOB),
]
W, H = 480, 270


def _camera(d=()) -> CameraModel:
    pinhole = CameraModel.from_fov(W, H, 75.0)
    return CameraModel(W, H, pinhole.K, d, "plumb_bob")


@pytest.mark.parametrize(("name", "mnt", "res", "kappa", "dist"), CASES, ids=[c[0] for c in CASES])
def test_grid_agrees_with_ground_truth(name, mnt, res, kappa, dist, record_property):
    cam = _camera(dist)
    mounting = CameraMounting(*mnt)
    grid = GridSpec(res, -5.0, 40.0, -10.0, 10.0)
    scene = render_scene(SceneSpec(curvature=kappa, obstacles=OBSTACLES), cam, mounting, grid)
    mapper = DrivableAreaMapper(grid, mounting)
    mapper.set_camera(cam)
    ours = mapper.grid_from_mask(scene.drivable)

    truth = scene.grid
    seen = truth >= 0
    assert np.array_equal(ours >= 0, seen)  # same visibility rules
    assert seen.sum() > 2000 and (truth == 0).sum() > 500 and (truth == 100).sum() > 500
    agreement = float((ours[seen] == truth[seen]).mean())
    record_property("agreement", agreement)
    print(f"\n{name}: {agreement:.2%} of {seen.sum()} seen cells agree")
    assert agreement >= 0.98

    # every cell behind the camera is unseen
    gx, gy = grid.cell_centers()
    pts = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    behind = (mounting.grid_to_optical(pts)[:, 2] <= 0.0).reshape(grid.shape)
    assert behind.any() and np.all(ours[behind] == -1) and np.all(truth[behind] == -1)
    # nothing at or above the horizon is ever read: a mask that is drivable only there
    # leaves no free cell
    rays = cam.pixel_rays(cam.pixel_grid()) @ mounting.rotation.T
    above = (rays[:, 2] >= 0.0).reshape(H, W)
    assert above.any()
    assert not np.any(mapper.grid_from_mask(above, clean=False) == 0)
    # seen free cells are free in the world too (occlusion only removes free space)
    assert np.all(scene.grid_world[truth == 0] == 0)


def test_render_labels_and_image():
    cam = _camera()
    mnt = CameraMounting(0.0, 0.0, 1.5, 0.0, math.radians(5), 0.0)
    scene = render_scene(SceneSpec(obstacles=(BoxObstacle(12.0, 0.0),)), cam, mnt,
                         rng=np.random.default_rng(0))
    assert scene.rgb.shape == (H, W, 3) and scene.rgb.dtype == np.uint8
    assert scene.labels.shape == (H, W) and scene.labels.max() <= 10
    assert np.array_equal(scene.drivable, scene.labels == ROAD)
    assert scene.labels[0, W // 2] == SKY and scene.labels[-1, W // 2] == ROAD
    # the obstacle straight ahead: its rear face centre is Car, at 12 - 2.2 m
    uv = cam.project(mnt.grid_to_optical(np.array([[12.0 - 2.2, 0.0, 0.4]])))[0]
    u, v = np.round(uv).astype(int)
    assert scene.labels[v, u] == CAR
    assert scene.depth[v, u] == pytest.approx(np.hypot(9.8, 1.1), rel=0.02)
    sky_rgb = scene.rgb[scene.labels == SKY].mean(axis=0)
    road_rgb = scene.rgb[scene.labels == ROAD].mean(axis=0)
    assert sky_rgb.mean() > road_rgb.mean() + 40 and sky_rgb[2] > sky_rgb[0]
    # deterministic without an rng
    a = render_scene(SceneSpec(), cam, mnt)
    b = render_scene(SceneSpec(), cam, mnt)
    assert np.array_equal(a.rgb, b.rgb)


def _inside(poly: np.ndarray, x: float, y: float) -> bool:
    return cv2.pointPolygonTest(poly.astype(np.float32), (float(x), float(y)), False) > 0


@pytest.mark.parametrize("max_vertices", [4, 8, 16, 64])
def test_boundary_excludes_islands_and_bounds_vertices(max_vertices):
    cam = _camera()
    mounting = CameraMounting(0.5, 0.0, 1.5, 0.0, math.radians(6), 0.0)
    grid = GridSpec(0.1, -5.0, 40.0, -10.0, 10.0)
    scene = render_scene(SceneSpec(curvature=1 / 80, obstacles=OBSTACLES[:1]), cam, mounting,
                         grid)
    mapper = DrivableAreaMapper(grid, mounting, max_vertices=max_vertices)
    mapper.set_camera(cam)
    mask = scene.drivable.copy()
    # an island: drivable-looking pixels in the grass right of the road, 40x20 pixels
    iu, iv = cam.project(mounting.grid_to_optical(np.array([[12.0, -8.0, 0.0]])))[0].astype(int)
    assert scene.labels[iv, iu] != ROAD
    mask[iv - 10 : iv + 10, iu - 20 : iu + 20] = True
    ours = mapper.grid_from_mask(mask)
    row, col = grid.cell_of(12.0, -8.0)
    assert ours[row, col] == 0  # the island is in the grid ...
    comp = mapper.ego_component(ours)
    assert not comp[row, col]  # ... but not in the ego region
    poly = mapper.boundary_from_grid(ours)
    assert 3 <= len(poly) <= max_vertices
    assert not _inside(poly, 12.0, -8.0)
    # the polygon covers nothing but the ego region (exact overlap areas, float32 points as
    # PolygonStamped carries them), and most of it
    published = poly.astype(np.float32).astype(np.float64)
    over, _ = overclaimed_cells(published, ours, grid)
    assert not over.any()
    cells = (published - [grid.x_min, grid.y_min]) / grid.resolution
    cov, outside = polygon_coverage(cells, grid.shape)
    assert outside < SLIVER and not ((cov > SLIVER) & ~comp).any()
    covered = cov[comp].sum() / comp.sum()
    print(f"\nmax_vertices={max_vertices}: {len(poly)} vertices, "
          f"covers {covered:.1%} of the ego region, none outside it")
    assert is_simple(poly)
    # tight bounds only promise a valid polygon: fewer vertices of a smaller region
    if max_vertices >= 64:
        assert covered > 0.9
    elif max_vertices >= 16:
        assert covered > 0.75


def test_drive_sequence_moves_along_the_road():
    specs = list(drive_sequence(20, fps=10.0, speed=8.0, rng=np.random.default_rng(3)))
    assert len(specs) == 20
    steps = [math.dist(a.ego[:2], b.ego[:2]) for a, b in itertools.pairwise(specs)]
    assert np.allclose(steps, 0.8, atol=0.02)
    assert specs[0].segments and all(s.segments == specs[0].segments for s in specs)
    assert any(abs(k) > 0 for _, k in specs[0].segments)  # the road has curves
    cam = CameraModel.from_fov(160, 90, 75.0)
    mnt = CameraMounting(1.0, 0.0, 1.4, 0.0, math.radians(4), 0.0)
    for spec in specs[::10]:
        lead = spec.obstacles[0]  # a lead car in the ego lane, about 20 m ahead
        ex, ey, eyaw = spec.ego
        lx = ex + math.cos(eyaw) * lead.x - math.sin(eyaw) * lead.y
        ly = ey + math.sin(eyaw) * lead.x + math.cos(eyaw) * lead.y
        _, lat = spec.road().coords(np.array([lx]), np.array([ly]))
        assert lat[0] == pytest.approx(-1.75, abs=0.05) and 15.0 < math.hypot(lead.x, lead.y) < 27
        scene = render_scene(spec, cam, mnt)
        assert scene.labels[-1, 80] == ROAD and (scene.labels == CAR).any()


def test_tree_crowns_are_the_ellipsoid_inscribed_in_their_box():
    from dataclasses import replace

    from seg_perception.sim.scene import TREE
    from seg_perception.sim.scene.boxes import KIND_CROWN, KIND_PLAIN, Box

    crown = Box(10.0, 0.0, 0.0, 4.0, 4.0, 3.0, 7.0, TREE, (60.0, 70.0, 40.0), KIND_CROWN)
    cube = replace(crown, kind=KIND_PLAIN)
    # through the centre: the surface is 2 m before it
    t, _ = crown.intersect(np.array([0.0, 0.0, 5.0]), np.array([[1.0, 0.0, 0.0]]))
    assert t[0] == pytest.approx(8.0)
    # through the box's corner region: the cube is hit, the crown is not
    origin, d = np.array([11.8, -20.0, 6.8]), np.array([[0.0, 1.0, 0.0]])
    assert np.isinf(crown.intersect(origin, d)[0][0])
    assert np.isfinite(cube.intersect(origin, d)[0][0])
    # from every direction (yawed crown), hits lie on the ellipsoid
    crown = replace(crown, yaw=0.3, width=3.0)
    rng = np.random.default_rng(1)
    dirs = rng.normal(size=(500, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origin = np.array([10.0, 0.0, 5.0]) - 12.0 * dirs
    for o, dv in zip(origin, dirs, strict=True):
        t, _ = crown.intersect(o, dv[None])
        p = crown.local((o + t[0] * dv)[None])[0]
        assert np.hypot(np.hypot(p[0] / 2.0, p[1] / 1.5), (p[2] - 5.0) / 2.0) == pytest.approx(1.0)
