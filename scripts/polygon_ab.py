#!/usr/bin/env python3
"""The free-space polygon of two versions of ``freespace.py`` on the same real grids, side
by side in one process: cost per frame and how much of the free area each keeps.

Grids come from real frames through the frame pipeline (the default model, a pinhole of
60 degrees at 1.3 m, as ``python -m seg_perception.tools.geometry_bench --frames`` makes
them); each version's :func:`boundary_polygon` runs on each grid in turn (interleaved, so
machine load hits both alike), and the polygon as published is checked for over-claimed
cells (covered by it, not free in the grid: must be 0).

    python scripts/polygon_ab.py --old OLD_FREESPACE.py \\
        --frames ../shared/data/camvid/val ../shared/data/camvid/train --width 1280 --height 720

``--old`` is a freespace.py of another revision, e.g. ``git show main:seg_perception/runtime/
geometry/freespace.py > /tmp/freespace_main.py``. The polygon's steps now live in sibling
modules (free_region, outline, polygon, coverage) that a freespace.py of a later revision
imports from this checkout: only a freespace.py from before that split is a whole other
version.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np


def load_old(path: Path) -> ModuleType:
    """``path`` as a module of seg_perception.runtime.geometry (its relative imports work)."""
    name = "seg_perception.runtime.geometry._freespace_old"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=Path, required=True, help="the other freespace.py")
    ap.add_argument("--frames", type=Path, nargs="+", required=True, metavar="DIR")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per grid and version")
    ap.add_argument("--limit", type=int, default=0, help="at most this many frames")
    ap.add_argument("--max-vertices", type=int, default=64)
    args = ap.parse_args(argv)

    import cv2

    from seg_perception.runtime.config import PipelineConfig
    from seg_perception.runtime.engine import build_engine
    from seg_perception.runtime.geometry import CameraModel, CameraMounting
    from seg_perception.runtime.geometry import freespace as new
    from seg_perception.runtime.geometry.camera_info import CameraCalibration
    from seg_perception.runtime.geometry.grid import FREE
    from seg_perception.runtime.pipeline import CameraFrame, FramePipeline
    from seg_perception.tools.geometry_bench import polygon_quality

    old = load_old(args.old)
    paths = sorted(p for d in args.frames for p in d.iterdir()
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if args.limit:
        paths = paths[:args.limit]
    engine, _ = build_engine("default", None, "cpu", threads=1)
    pipeline = FramePipeline(engine)
    cfg = PipelineConfig.from_params({"boundary.max_vertices": args.max_vertices})
    mounting = CameraMounting(0.0, 0.0, 1.3, 0.0, np.radians(3), 0.0)
    versions = {"old": old.boundary_polygon, "new": new.boundary_polygon}
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in versions}
    load0 = os.getloadavg()
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        bgr = cv2.resize(bgr, (args.width, args.height), interpolation=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        cal = CameraCalibration.from_model(CameraModel.from_fov(args.width, args.height, 60.0))
        frame = CameraFrame(rgb, cal, mounting)
        res = pipeline.process(frame, cfg, {"drivable/grid"})
        if res.grid is None:
            continue
        mapper = pipeline.mapper(frame.camera, cfg)  # the node's arguments to the polygon
        dist2, min_cells = mapper._dist2, mapper.min_region_cells
        comp = res.grid == FREE
        for name, fn in versions.items():
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                poly = fn(comp, cfg.grid, mapper.max_vertices, dist2, min_cells)
                times.append(time.perf_counter() - t0)
            q = polygon_quality(poly, res.grid, cfg.grid)
            q["ms"] = 1e3 * float(np.median(times))
            q["vertices"] = float(len(poly))
            rows[name].append(q)
    load1 = os.getloadavg()
    print(f"{len(rows['new'])} grids from {len(paths)} frames "
          f"({', '.join(map(str, args.frames))}) at {args.width}x{args.height}, "
          f"max_vertices {args.max_vertices}; load average before "
          f"{' '.join(f'{x:.2f}' for x in load0)}, after {' '.join(f'{x:.2f}' for x in load1)}")
    for name, rs in rows.items():
        ms = np.array([r["ms"] for r in rs])
        over = np.array([r["overclaimed"] for r in rs])
        poly = np.array([r["polygon_cells"] for r in rs])
        ego = np.array([r["ego_cells"] for r in rs])
        kept = poly[ego > 0] / ego[ego > 0]
        print(f"  {name} ({args.old if name == 'old' else new.__file__}):\n"
              f"    polygon per frame: median {np.median(ms):.2f} ms, mean {ms.mean():.2f} ms, "
              f"p95 {np.percentile(ms, 95):.2f} ms, max {ms.max():.2f} ms\n"
              f"    over-claimed cells: {int(over.sum())} in total, {int((over > 0).sum())} "
              f"frames\n"
              f"    polygon area / ego-connected free area: {poly.sum() / max(1, ego.sum()):.2%}"
              f" overall; per frame median {np.median(kept):.2%}, min {kept.min():.2%}\n"
              f"    vertices: median {np.median([r['vertices'] for r in rs]):.0f}")
    o = np.array([r["ms"] for r in rows["old"]])
    n = np.array([r["ms"] for r in rows["new"]])
    print(f"  new / old cost per frame: median {np.median(n / o):.2f}, "
          f"total {n.sum() / o.sum():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
