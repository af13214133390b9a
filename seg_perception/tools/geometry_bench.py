"""Per-frame cost of the drivable grid and free-space polygon, and how the polygon does.

``python -m seg_perception.tools.geometry_bench`` times each step on synthetic 1280x720
road frames (median milliseconds: what the node adds per frame on top of the network, plus
one lookup build per camera model and pose) and checks the polygon on each: over-claimed
cells (covered by the polygon, not free in the grid) and the share of the free region
connected to the vehicle that it keeps.

``--frames DIR`` does the same on real images (PNG/JPEG) segmented by a model (the shipped
default unless ``--model``), through the same frame pipeline as the node.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seg_perception.runtime.geometry.camera import CameraModel, CameraMounting
from seg_perception.runtime.geometry.coverage import overclaimed_cells, polygon_coverage
from seg_perception.runtime.geometry.free_region import ego_component
from seg_perception.runtime.geometry.grid import FREE, GridSpec
from seg_perception.runtime.geometry.mapper import DrivableAreaMapper
from seg_perception.sim.scene import BoxObstacle, SceneSpec, drive_sequence, render_scene


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def polygon_quality(poly: np.ndarray, grid: np.ndarray, spec: GridSpec) -> dict[str, float]:
    """Over-claimed cells of the polygon as published (float32), its area (cells, exact) and
    the ego-connected free area (cells) of the grid."""
    published = np.asarray(poly, np.float64).astype(np.float32).astype(np.float64)
    ego = ego_component(grid, spec)
    if len(published) < 3:
        return {"overclaimed": 0.0, "polygon_cells": 0.0, "ego_cells": float(ego.sum()),
                "free_cells": float((grid == FREE).sum())}
    over, _ = overclaimed_cells(published, grid, spec)
    cells = (published - spec.origin) / spec.resolution
    cov, _ = polygon_coverage(cells, spec.shape)
    return {"overclaimed": float(over.sum()), "polygon_cells": float(cov.sum()),
            "ego_cells": float(ego.sum()), "free_cells": float((grid == FREE).sum())}


def benchmark(
    width: int = 1280,
    height: int = 720,
    grid: GridSpec | None = None,
    mounting: CameraMounting | None = None,
    repeats: int = 30,
    scenes: int = 6,
    max_vertices: int = 64,
) -> dict[str, float]:
    """Median milliseconds of each step, and polygon figures, over synthetic road frames."""
    grid = grid or GridSpec(0.1, 0.0, 40.0, -10.0, 10.0)
    mounting = mounting or CameraMounting(1.0, 0.0, 1.5, 0.0, math.radians(5), 0.0)
    cam = CameraModel.from_fov(width, height, 70.0)
    specs = [SceneSpec(curvature=1 / 90, obstacles=(BoxObstacle(15.0, 1.8, 0.1),
                                                    BoxObstacle(9.0, 0.2, 0.3, 0.8, 0.8, 0.1)))]
    specs += list(drive_sequence(max(0, scenes - 1), fps=1.0, rng=np.random.default_rng(2)))
    mapper = DrivableAreaMapper(grid, mounting, max_vertices=max_vertices)
    t0 = time.perf_counter()
    mapper.set_camera(cam)
    build = 1e3 * (time.perf_counter() - t0)
    exact = DrivableAreaMapper(grid, mounting, exact_speckle=True)
    exact.set_camera(cam)
    rows: dict[str, list[float]] = {k: [] for k in (
        "grid_no_clean", "grid", "grid_exact_speckle", "boundary", "grid_and_boundary",
        "boundary_vertices", "overclaimed_cells", "kept_of_ego_area")}
    for spec in specs:
        mask = render_scene(spec, cam, mounting).drivable.astype(np.uint8)
        g = mapper.grid_from_mask(mask)
        rows["grid_no_clean"].append(
            _median_ms(lambda m=mask: mapper.grid_from_mask(m, clean=False), repeats))
        rows["grid"].append(_median_ms(lambda m=mask: mapper.grid_from_mask(m), repeats))
        rows["grid_exact_speckle"].append(
            _median_ms(lambda m=mask: exact.grid_from_mask(m), max(3, repeats // 5)))
        rows["boundary"].append(_median_ms(lambda g=g: mapper.boundary_from_grid(g), repeats))
        rows["grid_and_boundary"].append(
            _median_ms(lambda m=mask: mapper.process(m), repeats))
        poly = mapper.boundary_from_grid(g)
        q = polygon_quality(poly, g, grid)
        rows["boundary_vertices"].append(float(len(poly)))
        rows["overclaimed_cells"].append(q["overclaimed"])
        rows["kept_of_ego_area"].append(q["polygon_cells"] / max(1.0, q["ego_cells"]))
    out = {"lookup_build": build, "seen_cells": float(mapper.lookup.n_seen),
           "frames": float(len(specs))}
    for key, vals in rows.items():
        out[key] = float(np.sum(vals)) if key == "overclaimed_cells" else float(np.median(vals))
    return out


def evaluate_frames(
    paths: Sequence[Path],
    model: str = "default",
    checkpoint: str | None = None,
    hfov_deg: float = 60.0,
    mounting: CameraMounting | None = None,
    params: dict[str, Any] | None = None,
    size: tuple[int, int] | None = None,
) -> list[dict[str, float]]:
    """Real frames through the frame pipeline (``model`` segments them); per frame the
    polygon figures of :func:`polygon_quality` and the grid / polygon milliseconds.

    ``size`` (width, height) resizes the frames first; the camera is a pinhole of
    ``hfov_deg`` at ``mounting``.
    """
    import cv2

    from seg_perception.runtime.config import PipelineConfig
    from seg_perception.runtime.engine import build_engine
    from seg_perception.runtime.geometry.camera_info import CameraCalibration
    from seg_perception.runtime.pipeline import CameraFrame, FramePipeline

    engine, _ = build_engine(model, checkpoint, "cpu", threads=1)
    pipeline = FramePipeline(engine)
    cfg = PipelineConfig.from_params(params or {})
    mounting = mounting or CameraMounting(0.0, 0.0, 1.3, 0.0, math.radians(3), 0.0)
    out = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        if size is not None:
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        cal = CameraCalibration.from_model(CameraModel.from_fov(w, h, hfov_deg))
        res = pipeline.process(CameraFrame(rgb, cal, mounting), cfg,
                               {"drivable/grid", "drivable/boundary"})
        if res.grid is None:
            continue
        row = polygon_quality(res.boundary, res.grid, cfg.grid)
        row.update(grid_ms=res.timings.get("grid", 0.0),
                   boundary_ms=res.timings.get("boundary", 0.0),
                   vertices=float(len(res.boundary)))
        out.append(row)
    return out


def _summary(rows: list[dict[str, float]]) -> str:
    over = np.array([r["overclaimed"] for r in rows])
    poly = np.array([r["polygon_cells"] for r in rows])
    ego = np.array([r["ego_cells"] for r in rows])
    kept = poly[ego > 0] / ego[ego > 0]
    cost = np.array([r["grid_ms"] + r["boundary_ms"] for r in rows])
    return "\n".join([
        f"  frames: {len(rows)}",
        f"  over-claimed cells (polygon covers > 0.1% of a cell the grid calls occupied or "
        f"unknown): {int(over.sum())} in total, {int((over > 0).sum())} frames",
        f"  polygon area / ego-connected free area: {poly.sum() / max(1, ego.sum()):.1%} "
        f"overall; per frame median {np.median(kept):.1%}, p10 {np.percentile(kept, 10):.1%}, "
        f"min {kept.min():.1%}",
        f"  vertices: median {np.median([r['vertices'] for r in rows]):.0f}",
        f"  grid + polygon per frame: median {np.median(cost):.2f} ms, p95 "
        f"{np.percentile(cost, 95):.2f} ms (grid {np.median([r['grid_ms'] for r in rows]):.2f}"
        f", polygon {np.median([r['boundary_ms'] for r in rows]):.2f})",
    ])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--resolution", type=float, default=0.1)
    ap.add_argument("--max-vertices", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--scenes", type=int, default=6, help="synthetic frames to time")
    ap.add_argument("--frames", type=Path, nargs="+", default=None, metavar="DIR",
                    help="folders of real images to evaluate instead (PNG/JPEG)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--hfov", type=float, default=60.0)
    ap.add_argument("--resize", action="store_true",
                    help="resize real frames to --width x --height first")
    ap.add_argument("--limit", type=int, default=0, help="at most this many real frames")
    a = ap.parse_args(argv)
    if a.frames:
        paths = sorted(p for d in a.frames for p in Path(d).iterdir()
                       if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if a.limit:
            paths = paths[:a.limit]
        params = {"grid.resolution": a.resolution, "boundary.max_vertices": a.max_vertices}
        rows = evaluate_frames(paths, a.model, a.checkpoint, a.hfov, params=params,
                               size=(a.width, a.height) if a.resize else None)
        print(f"{len(paths)} real frames ({', '.join(str(d) for d in a.frames)}), model "
              f"{a.model}, grid {a.resolution} m over 40 m x 20 m, max_vertices "
              f"{a.max_vertices}:")
        print(_summary(rows))
        return
    res = benchmark(a.width, a.height, GridSpec(a.resolution, 0.0, 40.0, -10.0, 10.0),
                    repeats=a.repeats, scenes=a.scenes, max_vertices=a.max_vertices)
    print(f"{a.width}x{a.height}, grid {a.resolution} m over 40 m x 20 m, max_vertices "
          f"{a.max_vertices}, {int(res['frames'])} synthetic frames (medians):")
    units = {"seen_cells": "", "frames": "", "boundary_vertices": "",
             "overclaimed_cells": " (sum)", "kept_of_ego_area": ""}
    for key, val in res.items():
        print(f"  {key:20s} {val:9.3f}" + units.get(key, " ms"))


if __name__ == "__main__":
    main()
