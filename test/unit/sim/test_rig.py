"""The surround rig and grid fusion against the generator's exact fused truth."""

from __future__ import annotations

import numpy as np
import pytest

from seg_perception.runtime.geometry import DrivableAreaMapper, GridSpec
from seg_perception.runtime.geometry.fusion import fuse_grids
from seg_perception.sim.rig import render_rig, surround_rig
from seg_perception.sim.scene import BoxObstacle, SceneSpec


def test_fusion_rule_is_conservative() -> None:
    a = np.array([[0, 0, 100, -1, -1]], np.int8)
    b = np.array([[0, 100, 0, 0, -1]], np.int8)
    assert fuse_grids([a, b]).tolist() == [[0, 100, 100, 0, -1]]
    assert fuse_grids([a, b], "optimistic").tolist() == [[0, 0, 0, 0, -1]]
    assert fuse_grids([a]).tolist() == a.tolist()
    with pytest.raises(ValueError, match="shape"):
        fuse_grids([a, np.zeros((2, 2), np.int8)])
    with pytest.raises(ValueError, match="rule"):
        fuse_grids([a], "majority")


def test_surround_rig_fused_grid_matches_exact_truth() -> None:
    """Four cameras' projections of exact masks, fused, against the exact fused truth."""
    rig = surround_rig(width=320, height=240)
    grid = GridSpec(0.2, -20.0, 30.0, -15.0, 15.0)
    # Four lanes, the ego in the rightmost: a car at (9, 4) stands where the front and the
    # left camera overlap, so one sees road where the other sees the car or its shadow.
    spec = SceneSpec(curvature=1 / 90, n_lanes=4, obstacles=(
        BoxObstacle(9.0, 4.0, 0.05), BoxObstacle(-9.0, 1.7, 0.0), BoxObstacle(14.0, 0.0, 0.1)))
    render = render_rig(spec, rig, grid)
    assert set(render.views) == {"front", "left", "right", "rear"}
    ours = []
    for cam in rig.cameras:
        mapper = DrivableAreaMapper(grid, cam.mounting)
        mapper.set_camera(cam.model)
        ours.append(mapper.grid_from_mask(render.views[cam.name].drivable))
    fused = fuse_grids(ours)
    truth = render.fused
    seen = truth >= 0
    assert np.array_equal(fused >= 0, seen)
    # All around the vehicle: cells ahead, behind and on both sides are seen.
    gx, gy = grid.cell_centers()
    for mask in (gx > 8, gx < -8, gy > 6, gy < -6):
        assert seen[mask].mean() > 0.2
    agreement = float((fused[seen] == truth[seen]).mean())
    print(f"\nfused 4-camera grid: {agreement:.2%} of {seen.sum()} seen cells agree")
    assert agreement >= 0.98
    # Where one camera sees an obstacle another sees past, the fused grid is occupied.
    per_cam = np.stack([v.grid for v in render.views.values()])
    disputed = (per_cam == 0).any(0) & (per_cam == 100).any(0)
    assert disputed.any() and np.all(truth[disputed] == 100)
