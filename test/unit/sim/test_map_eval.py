"""The persistent drivable map on a synthetic drive against exact truth: the issue's goals.

A seeded drive at 0.4 m cells (the figures at 0.2 m over 150 frames come from
scripts/map_eval.py); deterministic, so the thresholds hold for this seed exactly as run.
"""

from __future__ import annotations

import numpy as np
import pytest

from seg_perception.runtime.geometry.drivable_map import DrivableMap, MapConfig
from seg_perception.runtime.geometry.grid import GridSpec
from seg_perception.sim.map_eval import (
    Degradation,
    evaluate_drive,
    format_figures,
    pose_transform,
    world_occupied,
)
from seg_perception.sim.scene import BoxObstacle, SceneSpec

GRID = GridSpec(0.4, -20.0, 30.0, -15.0, 15.0)
CONFIG = MapConfig(resolution=0.4, decay_s=2.0)


@pytest.fixture(scope="module")
def figures() -> dict[str, float]:
    return evaluate_drive(1, 50, configs={"map": CONFIG}, grid=GRID)


@pytest.mark.slow
def test_map_meets_the_goals_on_a_degraded_drive(figures):
    f = figures
    print(format_figures(1, f))
    # the degradation is real: the fused grid alone calls percents of obstacles free
    assert f["fused.false_free"] > 0.01 and f["frame.false_free"] > 0.001
    # (3) not-drivable cells the map calls free: at most 0.1 %
    assert f["map.false_free"] <= 0.001
    assert f["exact.false_free"] <= 0.001
    # (4) flicker at least 3x lower than the fused grid's
    assert f["map.flicker_ratio"] >= 3.0
    # (2) cells seen before stay known for map.decay_s
    assert f["map.known_for_decay"] >= 0.995
    assert f["map.oldest_recent_s"] > 0.8 * CONFIG.decay_s
    # (1) agreement: the map holds obstacles through flips, drops and false-free blobs
    assert f["map.agreement_occupied"] > max(f["fused.agreement_occupied"],
                                             f["frame.agreement_occupied"]) + 0.02
    assert f["exact.agreement"] > 0.9


def test_same_seed_same_figures():
    kw = {"configs": {"map": CONFIG}, "grid": GRID}
    assert evaluate_drive(3, 6, **kw) == evaluate_drive(3, 6, **kw)
    other = evaluate_drive(3, 6, degrade=Degradation(flip=0.1), **kw)
    assert other != evaluate_drive(3, 6, **kw)


def test_world_truth_is_the_road_minus_obstacles():
    spec = SceneSpec(ego_pose=(10.0, -1.75, 0.0), obstacles=(BoxObstacle(8.0, 0.0),))
    m = DrivableMap(MapConfig(size_x=40.0, size_y=40.0))
    odom_from_road = pose_transform(10.0, -1.75, 0.0).inverse()  # odom at the ego pose
    m.update(np.full(GRID.shape, -1, np.int8), GRID, pose_transform(0.0, 0.0, 0.0), 0)
    occ = world_occupied(spec, odom_from_road, m)

    def at(x: float, y: float) -> bool:
        r, c = m.cell_of(x, y)
        return bool(occ[r, c])

    assert not at(0.1, 0.1)  # on the road in front of the vehicle
    assert at(8.1, 0.1)  # under the car 8 m ahead
    # the road is 7 m wide and the vehicle in the right lane: edges at y = -1.75 and 5.25
    assert not at(0.1, 5.1) and at(0.1, 5.5)
    assert not at(0.1, -1.5) and at(0.1, -1.9)
    assert not at(3.1, 0.1) and at(10.1, 0.1) and not at(10.5, 0.1)
