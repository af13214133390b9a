"""The free-space polygon never over-claims: every cell it covers is free in the grid.

"Covers" is strict: any cell the (float32, as published) polygon overlaps by more than
``SLIVER`` (0.1 % of a cell) counts, computed from exact overlap areas.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from shared_data import CAMVID, require

from seg_perception.runtime.geometry import (
    CameraModel,
    CameraMounting,
    DrivableAreaMapper,
    GridSpec,
)
from seg_perception.runtime.geometry.coverage import SLIVER, overclaimed_cells, polygon_coverage
from seg_perception.runtime.geometry.free_region import polygon_region, well_composed
from seg_perception.runtime.geometry.outline import lattice_outline
from seg_perception.runtime.geometry.polygon import is_simple
from seg_perception.sim.scene import (
    PEDESTRIAN,
    BoxObstacle,
    SceneSpec,
    drive_sequence,
    render_scene,
)

GRID = GridSpec(0.1, 0.0, 40.0, -10.0, 10.0)
MOUNT = CameraMounting(1.0, 0.0, 1.5, 0.0, math.radians(5), 0.0)
CAM = CameraModel.from_fov(640, 360, 70.0)


def check(mapper: DrivableAreaMapper, grid: np.ndarray) -> tuple[np.ndarray, float]:
    """The published polygon, asserting it is valid; returns it and the share of the ego
    region it covers."""
    poly = mapper.boundary_from_grid(grid)
    assert len(poly) == 0 or 3 <= len(poly) <= mapper.max_vertices
    if len(poly) == 0:
        return poly, 0.0
    published = poly.astype(np.float32).astype(np.float64)  # Point32
    over, _ = overclaimed_cells(published, grid, mapper.grid)
    assert not over.any(), f"{over.sum()} over-claimed cells"
    assert is_simple(poly, strict=True) and is_simple(published)
    x, y = published[:, 0], published[:, 1]
    assert np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) > 0  # counter-clockwise
    comp = mapper.ego_component(grid)
    cells = (published - mapper.grid.origin) / mapper.grid.resolution
    cov, outside = polygon_coverage(cells, mapper.grid.shape)
    assert outside < SLIVER
    return poly, float(cov[comp].sum() / max(1, comp.sum()))


# grid_frame's origin is on the centre of the right lane; the road spans y -1.75 .. 5.25
SCENES = {
    "low obstacle inside the lane": SceneSpec(
        curvature=1 / 120, obstacles=(BoxObstacle(12.0, 0.3, 0.2, 1.2, 1.0, 0.12),)),
    "car ahead and a pedestrian": SceneSpec(
        curvature=-1 / 70, obstacles=(BoxObstacle(16.0, 0.1, 0.05),
                                      BoxObstacle(9.0, 3.0, 0.0, 0.6, 0.6, 1.8,
                                                  label=PEDESTRIAN))),
    "straight, three low obstacles": SceneSpec(obstacles=(
        BoxObstacle(8.0, 0.0, 0.0, 0.8, 0.8, 0.1), BoxObstacle(14.0, 2.5, 0.4, 1.0, 0.6, 0.1),
        BoxObstacle(20.0, 1.0, -0.3, 1.5, 0.5, 0.1))),
}


@pytest.mark.parametrize("max_vertices", [4, 8, 16, 64, 256])
@pytest.mark.parametrize("scene", list(SCENES))
def test_synthetic_scenes_with_obstacles_inside_the_road(scene: str, max_vertices: int) -> None:
    render = render_scene(SCENES[scene], CAM, MOUNT, GRID)
    mapper = DrivableAreaMapper(GRID, MOUNT, max_vertices=max_vertices)
    mapper.set_camera(CAM)
    grid = mapper.grid_from_mask(render.drivable)
    poly, covered = check(mapper, grid)
    assert len(poly) >= 3
    if max_vertices >= 64:
        assert covered > 0.85, covered


def test_an_enclosed_obstacle_is_never_inside_the_polygon() -> None:
    render = render_scene(SCENES["low obstacle inside the lane"], CAM, MOUNT, GRID)
    mapper = DrivableAreaMapper(GRID, MOUNT)
    mapper.set_camera(CAM)
    grid = mapper.grid_from_mask(render.drivable)
    row, col = GRID.cell_of(12.0, 0.3)
    assert grid[row, col] == 100  # the obstacle is in the grid, surrounded by road
    comp = mapper.ego_component(grid)
    filled = np.zeros_like(comp, np.uint8)
    cnts, _ = cv2.findContours(comp.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(filled, cnts, -1, 1, cv2.FILLED)
    assert filled[row, col] and not comp[row, col]  # a hole of the ego region
    _, covered = check(mapper, grid)
    assert covered > 0.9


def test_drive_frames_never_over_claim() -> None:
    mapper = DrivableAreaMapper(GRID, MOUNT)
    mapper.set_camera(CAM)
    for spec in drive_sequence(6, fps=2.0, rng=np.random.default_rng(5)):
        render = render_scene(spec, CAM, MOUNT, GRID)
        check(mapper, mapper.grid_from_mask(render.drivable))


@pytest.mark.parametrize("seed", range(12))
def test_random_ragged_regions(seed: int) -> None:
    """Blobby free space with holes, islands, speckle and corner-only contacts."""
    rng = np.random.default_rng(seed)
    spec = GridSpec(0.1, 0.0, 12.0, -4.0, 4.0)
    noise = cv2.GaussianBlur(rng.normal(size=spec.shape), (0, 0), float(rng.uniform(1, 4)))
    grid = np.where(noise > rng.uniform(-0.3, 0.1), 0, 100).astype(np.int8)
    grid[rng.random(spec.shape) < 0.02] = -1
    grid[rng.random(spec.shape) < 0.01] = 100
    for bound in (4, 12, 64):
        mapper = DrivableAreaMapper(spec, CameraMounting(), max_vertices=bound,
                                    min_region_area=0.0, ego_xy=(6.0, 0.0))
        check(mapper, grid)


def test_region_is_well_composed_hole_free_and_outline_exact() -> None:
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True
    m[2, 2] = False  # a hole
    m[0, 0] = True  # touches the square at a corner only
    assert not well_composed(m)[0, 0] or not well_composed(m)[1, 1]
    yy, xx = np.mgrid[0:6, 0:6]
    region = polygon_region(m, ((yy - 3.0) ** 2 + (xx - 3.0) ** 2).astype(np.float32))
    outline = lattice_outline(region)
    cov, outside = polygon_coverage(outline, m.shape)
    np.testing.assert_allclose(cov, region.astype(float), atol=1e-12)
    assert outside == 0.0 and not region[2, 2] and region.sum() >= 13


def test_exact_coverage_matches_supersampling() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        pts = rng.uniform(0.0, 8.0, (5, 2))
        c = pts.mean(axis=0)
        pts = pts[np.argsort(np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0]))]  # star-shaped
        cov, _ = polygon_coverage(pts, (8, 8))
        s = 64
        img = np.zeros((8 * s, 8 * s), np.uint8)
        cv2.fillPoly(img, [np.round(pts * s * 16).astype(np.int32)], 1, shift=4)
        approx = img.reshape(8, s, 8, s).mean(axis=(1, 3))
        assert np.abs(cov - approx).max() < 0.05
        assert cov.sum() == pytest.approx(0.5 * abs(np.dot(pts[:, 0], np.roll(pts[:, 1], -1))
                                                  - np.dot(pts[:, 1], np.roll(pts[:, 0], -1))))


@pytest.fixture(scope="module")
def camvid_pipeline() -> tuple:
    from seg_perception.runtime.engine import build_engine
    from seg_perception.runtime.pipeline import FramePipeline

    files = sorted((require(CAMVID) / "val").glob("*.png"))[::9][:12]
    frames = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    engine, _ = build_engine("default", device="cpu", threads=1)
    return FramePipeline(engine), frames


def test_real_camvid_frames_through_the_pipeline_never_over_claim(camvid_pipeline) -> None:
    from seg_perception.runtime.config import PipelineConfig
    from seg_perception.runtime.geometry import CameraCalibration
    from seg_perception.runtime.pipeline import CameraFrame

    pipeline, frames = camvid_pipeline
    cal = CameraCalibration.from_model(CameraModel.from_fov(480, 360, 60.0))
    pose = CameraMounting(0.0, 0.0, 1.3, 0.0, math.radians(3), 0.0)
    kept = []
    for bound in (16, 64):
        cfg = PipelineConfig.from_params({"boundary.max_vertices": bound})
        for rgb in frames:
            res = pipeline.process(CameraFrame(rgb, cal, pose), cfg,
                                   {"drivable/grid", "drivable/boundary"})
            assert res.no_grid is None and res.grid is not None
            mapper = pipeline.mapper("", cfg)
            poly, covered = check(mapper, res.grid)
            np.testing.assert_array_equal(poly, res.boundary)
            if bound == 64 and len(poly):
                kept.append(covered)
    assert len(kept) >= len(frames) - 2 and float(np.median(kept)) > 0.8
