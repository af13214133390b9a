"""Drives along a winding road: a route of straights and arcs, and the scenes of each frame.

Split from the renderer: :func:`drive_sequence` only produces :class:`.spec.SceneSpec`
values (the ego pose and the cars around it, frame by frame) for the demo, the rigs and the
benches to render; :func:`make_route` draws the road's pieces from a random generator.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from seg_perception.sim.scene.boxes import CAR_COLOURS
from seg_perception.sim.scene.spec import BoxObstacle, SceneSpec


def make_route(length: float, rng: np.random.Generator) -> tuple[tuple[float, float], ...]:
    """Straights and left/right arcs (radius 35-90 m, 25-70 degrees) totalling ``length``."""
    segs: list[tuple[float, float]] = [(float(rng.uniform(15.0, 30.0)), 0.0)]
    total = segs[0][0]
    sign = float(rng.choice((-1.0, 1.0)))
    while total < length:
        radius = float(rng.uniform(35.0, 90.0))
        angle = math.radians(float(rng.uniform(25.0, 70.0)))
        segs.append((radius * angle, sign / radius))
        straight = float(rng.uniform(10.0, 30.0))
        segs.append((straight, 0.0))
        total += radius * angle + straight
        sign = -sign if rng.uniform() < 0.75 else sign
    return tuple(segs)


def drive_sequence(
    n_frames: int,
    fps: float = 10.0,
    speed: float = 8.0,
    rng: np.random.Generator | None = None,
    **spec_fields: object,
) -> Iterator[SceneSpec]:
    """SceneSpecs of a vehicle driving ``speed`` m/s in the right lane of a winding road.

    A lead car keeps about 20 m ahead, oncoming cars pass in the left lane and a few cars are
    parked half on the pavement on either side. ``spec_fields`` override other SceneSpec
    fields (lane width, lanes, seed, ...). The same ``rng`` state gives the same drive.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    base = SceneSpec(**spec_fields)  # type: ignore[arg-type]
    dt = 1.0 / fps
    length = speed * n_frames * dt + 200.0
    segments = make_route(length, rng)
    seed = int(spec_fields.get("seed", rng.integers(1 << 15)))  # type: ignore[call-overload]
    base = replace(base, segments=segments, seed=seed)
    road = base.road()
    half = base.road_half_width
    lane = base.lane_width
    lat_ego = -half + 0.5 * lane
    lat_left = half - 0.5 * lane
    s_start = 5.0
    lead_gap = float(rng.uniform(18.0, 24.0))
    oncoming = [float(s) for s in rng.uniform(30.0, length, size=max(2, int(length // 60)))]
    parked = [float(s) for s in rng.uniform(20.0, length, size=max(2, int(length // 50)))]
    colours = [int(c) for c in rng.integers(len(CAR_COLOURS), size=64)]

    def place(s: float, lat: float, yaw: float, ego: tuple[float, float, float], k: int):
        x, y, h = road.pose_at(s)
        x, y = x - math.sin(h) * lat, y + math.cos(h) * lat
        ex, ey, eyaw = ego
        c, sn = math.cos(eyaw), math.sin(eyaw)
        dx, dy = x - ex, y - ey
        return BoxObstacle(
            x=c * dx + sn * dy, y=-sn * dx + c * dy, yaw=h + yaw - eyaw,
            color=CAR_COLOURS[colours[k % len(colours)]],
        )

    for i in range(n_frames):
        t = i * dt
        s_e = s_start + speed * t
        x, y, h = road.pose_at(s_e)
        ego = (x - math.sin(h) * lat_ego, y + math.cos(h) * lat_ego, h)
        obs = [place(s_e + lead_gap + 2.0 * math.sin(0.3 * t), lat_ego, 0.0, ego, 0)]
        for k, s0 in enumerate(oncoming):
            s_o = s0 - 0.8 * speed * t
            if -20.0 < s_o - s_e < 120.0:
                obs.append(place(s_o, lat_left, math.pi, ego, k + 1))
        for k, s0 in enumerate(parked):
            if -20.0 < s0 - s_e < 120.0:
                side = 1.0 if k % 2 else -1.0
                obs.append(place(s0, side * (half + 0.5), 0.0, ego, k + 20))
        yield replace(base, ego_pose=ego, obstacles=tuple(obs))


__all__ = [
    "drive_sequence",
    "make_route",
]
