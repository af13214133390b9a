"""Per-frame cost of the drivable grid and boundary on a synthetic frame.

``python -m seg_perception.core.geometry.bench`` prints median milliseconds; the numbers are
what the node adds per frame on top of the network (plus one lookup build per camera).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np

from .camera import CameraModel, CameraMounting
from .grid import GridSpec
from .mapper import DrivableAreaMapper
from .scene import BoxObstacle, SceneSpec, render_scene


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def benchmark(
    width: int = 1280,
    height: int = 720,
    grid: GridSpec | None = None,
    mounting: CameraMounting | None = None,
    repeats: int = 100,
) -> dict[str, float]:
    """Median milliseconds of each step for one rendered road scene."""
    grid = grid or GridSpec(0.1, 0.0, 40.0, -10.0, 10.0)
    mounting = mounting or CameraMounting(1.0, 0.0, 1.5, 0.0, math.radians(5), 0.0)
    cam = CameraModel.from_fov(width, height, 70.0)
    spec = SceneSpec(curvature=1 / 90, obstacles=(BoxObstacle(15.0, 1.8, 0.1),))
    mask = render_scene(spec, cam, mounting).drivable.astype(np.uint8)
    mapper = DrivableAreaMapper(grid, mounting)
    t0 = time.perf_counter()
    mapper.set_camera(cam)
    build = 1e3 * (time.perf_counter() - t0)
    exact = DrivableAreaMapper(grid, mounting, exact_speckle=True)
    exact.set_camera(cam)
    g = mapper.grid_from_mask(mask)
    return {
        "lookup_build": build,
        "grid_no_clean": _median_ms(lambda: mapper.grid_from_mask(mask, clean=False), repeats),
        "grid": _median_ms(lambda: mapper.grid_from_mask(mask), repeats),
        "grid_exact_speckle": _median_ms(lambda: exact.grid_from_mask(mask), repeats),
        "boundary": _median_ms(lambda: mapper.boundary_from_grid(g), repeats),
        "grid_and_boundary": _median_ms(lambda: mapper.process(mask), repeats),
        "seen_cells": float(mapper.lookup.n_seen),
        "boundary_vertices": float(len(mapper.boundary_from_grid(g))),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--resolution", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=100)
    a = ap.parse_args(argv)
    res = benchmark(a.width, a.height, GridSpec(a.resolution, 0.0, 40.0, -10.0, 10.0),
                    repeats=a.repeats)
    print(f"{a.width}x{a.height}, grid {a.resolution} m over 40 m x 20 m:")
    for key, val in res.items():
        print(f"  {key:20s} {val:9.3f}" + ("" if key in ("seen_cells", "boundary_vertices")
                                           else " ms"))


if __name__ == "__main__":
    main()
