"""Per-cycle cost of the persistent drivable map (``map_update``).

``python -m seg_perception.tools.map_bench`` folds the surround rig's fused grids (50 m x 30 m
at 0.2 m, exact truth of a synthetic drive with a few % of cells flipped, as a segmenter
would leave them) into a :class:`DrivableMap` at its defaults (60 m x 60 m at 0.2 m) while
the vehicle drives and turns, and prints the median milliseconds of ``update`` and of
``grid`` (the OccupancyGrid data) on one core (OpenCV limited to one thread): what the node
adds per cycle on top of fusing the grid.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from seg_perception.runtime.geometry.drivable_map import DrivableMap, MapConfig
from seg_perception.runtime.geometry.grid import FREE, OCCUPIED, UNKNOWN, GridSpec
from seg_perception.sim.map_eval import pose_transform
from seg_perception.sim.rig import SURROUND_GRID, render_rig, surround_rig
from seg_perception.sim.scene import drive_sequence


def _grids(grid: GridSpec, count: int, flip: float, seed: int) -> list[np.ndarray]:
    """Fused truth grids of ``count`` frames of a drive, ``flip`` of their cells flipped."""
    rng = np.random.default_rng(seed)
    rig = surround_rig(96, 72)
    out = []
    for spec in drive_sequence(count, fps=2.0, rng=np.random.default_rng(seed)):
        g = render_rig(spec, rig, grid, max_pixel_footprint=5.0).fused
        flips = (rng.random(g.shape) < flip) & (g != UNKNOWN)
        out.append(np.where(flips, np.where(g == FREE, OCCUPIED, FREE), g).astype(np.int8))
    return out


def bench_map(config: MapConfig | None = None, grid: GridSpec = SURROUND_GRID,
              cycles: int = 300, frames: int = 4, threads: int = 1,
              seed: int = 0) -> dict[str, float]:
    """Median milliseconds of ``update``, ``grid`` and both (``map_update``) over ``cycles``
    cycles at 10 Hz of a vehicle at 8 m/s on a curve (yaw changing every cycle, so every
    cycle moves the window and resamples at a new angle)."""
    cv2.setNumThreads(threads)
    config = config or MapConfig()
    grids = _grids(grid, frames, 0.03, seed)
    m = DrivableMap(config)
    upd, out = [], []
    for k in range(cycles):
        yaw = 0.02 * k
        tf = pose_transform(8.0 * 0.1 * k * np.cos(yaw), 8.0 * 0.1 * k * np.sin(yaw), yaw)
        g = grids[k % len(grids)]
        t0 = time.perf_counter()
        m.update(g, grid, tf, k * 100_000_000)
        t1 = time.perf_counter()
        m.grid()
        t2 = time.perf_counter()
        if k >= 10:  # past the first cycles (allocation, caches)
            upd.append(t1 - t0)
            out.append(t2 - t1)
    u, o = np.array(upd) * 1e3, np.array(out) * 1e3
    return {"map_update": float(np.median(u + o)), "update": float(np.median(u)),
            "grid": float(np.median(o)), "map_update_p95": float(np.percentile(u + o, 95)),
            "cells": float(config.width * config.height), "cycles": float(len(u))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads (1: one core)")
    a = ap.parse_args(argv)
    res = bench_map(cycles=a.cycles, threads=a.threads)
    cfg = MapConfig()
    print(f"drivable map {cfg.size_x:g} m x {cfg.size_y:g} m at {cfg.resolution:g} m "
          f"({cfg.width}x{cfg.height} cells), fused grid {SURROUND_GRID.width}x"
          f"{SURROUND_GRID.height} cells, {a.threads} OpenCV thread(s), medians of "
          f"{int(res['cycles'])} cycles:")
    for key in ("map_update", "update", "grid", "map_update_p95"):
        print(f"  {key:16s} {res[key]:7.3f} ms")


if __name__ == "__main__":
    main()
