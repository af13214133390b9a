"""N cameras in one node: one batched forward pass of N frames against N separate passes.

Split from the single-frame bench (:mod:`.bench`): ``seg-perception bench --cameras``
renders a synthetic surround rig (:mod:`seg_perception.sim.rig`), times the engine's and
the node pipeline's cycles both ways, alternating cycle by cycle, and scores the fused grid
against the generator's exact fused truth.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from seg_perception.runtime.engine import SegEngine
from seg_perception.tools.bench import stage_stats


def _rig_frames(cameras: int, size: tuple[int, int]) -> tuple[list[Any], Any]:
    """``cameras`` frames of a synthetic surround rig at ``size`` (front, left, right, rear,
    then more cameras around the car), with their camera models and poses."""
    import math

    from seg_perception.runtime.geometry import CameraCalibration, CameraMounting
    from seg_perception.runtime.pipeline import CameraFrame
    from seg_perception.sim.rig import Rig, RigCamera, render_rig, surround_rig
    from seg_perception.sim.scene import drive_sequence

    rig = surround_rig(*size)
    if cameras > len(rig.cameras):  # more: spread evenly around the vehicle
        base = rig.cameras[0]
        rig = Rig(tuple(RigCamera(f"cam{i}", base.model, CameraMounting(
            1.0, 0.0, 1.6, 0.0, 0.12, 2 * math.pi * i / cameras - (math.pi if 2 * i > cameras
                                                                    else 0.0)))
            for i in range(cameras)))
    cams = rig.cameras[:cameras]
    spec = next(iter(drive_sequence(1, rng=np.random.default_rng(0))))
    render = render_rig(spec, Rig(cams), _bench_grid(), np.random.default_rng(1))
    frames = [CameraFrame(render.views[c.name].rgb, CameraCalibration.from_model(c.model),
                          c.mounting, camera=c.name) for c in cams]
    return frames, render


def _bench_grid() -> Any:
    from seg_perception.sim.rig import SURROUND_GRID

    return SURROUND_GRID


def _multicam_runs(engine: SegEngine, pipeline: Any, frames: list[Any], config: Any,
                   want: set[str], want_confidence: bool) -> dict[str, Callable[[], None]]:
    """The four cycles ``run_multicam_bench`` times for one N: engine and pipeline, batched
    (one forward pass of every frame) and separate (one pass per frame)."""
    from seg_perception.runtime.pipeline import GridFusion

    rgbs = [f.rgb for f in frames]
    fusion = GridFusion()

    def engine_batched() -> None:
        engine.run_batch(rgbs, want_confidence)

    def engine_separate() -> None:
        for rgb in rgbs:
            engine(rgb, want_confidence)

    def cycle(results: list[Any]) -> None:
        pipeline.fuse(fusion, results, [0] * len(results), config,
                      {"drivable/grid", "drivable/boundary"})

    def pipeline_batched() -> None:
        cycle(pipeline.run(frames, config, want))

    def pipeline_separate() -> None:
        cycle([pipeline.run([f], config, want)[0] for f in frames])

    return {"engine_batched": engine_batched, "engine_separate": engine_separate,
            "pipeline_batched": pipeline_batched, "pipeline_separate": pipeline_separate}


def run_multicam_bench(
    engine: SegEngine,
    cameras: tuple[int, ...] = (1, 2, 4),
    cycles: int = 50,
    warmup: int = 5,
    frame_size: tuple[int, int] = (480, 360),
    want_confidence: bool = False,
) -> dict[str, Any]:
    """Cycle time and frames per second per camera for N cameras in one node, batched (ONE
    forward pass of N frames) against N separate forward passes, side by side.

    For each N the two ways alternate cycle by cycle on the same frames (a synthetic
    surround rig at ``frame_size``), so the machine's load hits both alike. Two cycles are
    timed: the engine's (frames in, labels and drivable masks out at each camera's
    resolution) and the node's pipeline (the engine cycle, then each camera's grid and the
    fused surround grid with its boundary). ``gain`` is separate / batched cycle time.
    """
    from seg_perception.runtime.config import PipelineConfig
    from seg_perception.runtime.pipeline import FramePipeline, GridFusion

    grid = _bench_grid()
    pipeline = FramePipeline(engine)
    out: dict[str, Any] = {"frame_size": list(frame_size), "cycles": cycles, "warmup": warmup,
                           "confidence": want_confidence, "cameras": {}}
    want = {"labels", "drivable/mask", "drivable/grid"} | (
        {"confidence"} if want_confidence else set())
    for n in cameras:
        frames, render = _rig_frames(n, frame_size)
        config = PipelineConfig.from_params({
            "grid.resolution": grid.resolution, "grid.x_min": grid.x_min,
            "grid.x_max": grid.x_max, "grid.y_min": grid.y_min, "grid.y_max": grid.y_max})
        engine.warmup(*frame_size, runs=1, batch_sizes=(1, n))

        runs = _multicam_runs(engine, pipeline, frames, config, want, want_confidence)
        times: dict[str, list[float]] = {k: [] for k in runs}
        for i in range(warmup + cycles):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                if i >= warmup:
                    times[name].append((time.perf_counter() - t0) * 1e3)
        fused = pipeline.fuse(GridFusion(), pipeline.run(frames, config, {"drivable/grid"}),
                              [0] * n, config, {"drivable/grid"})
        seen = render.fused >= 0
        entry: dict[str, Any] = {}
        for name, values in times.items():
            st = stage_stats(values)
            entry[name] = {"cycle_ms": st, "fps_per_camera": 1e3 / st["median"],
                           "fps_total": n * 1e3 / st["median"]}
        for what in ("engine", "pipeline"):
            entry[f"{what}_gain"] = (entry[f"{what}_separate"]["cycle_ms"]["median"]
                                     / entry[f"{what}_batched"]["cycle_ms"]["median"])
        entry["fused_seen_cells"] = int(seen.sum())
        entry["fused_agreement_with_truth"] = (
            float((fused.grid[seen] == render.fused[seen]).mean()) if fused is not None
            and seen.any() else None)
        out["cameras"][str(n)] = entry
    return out


def format_multicam(report: dict[str, Any]) -> str:
    """The table ``seg-perception bench --cameras`` prints."""
    m = report["multicam"]
    fw, fh = m["frame_size"]
    lines = [
        f"{report.get('model', '?')} ({report.get('backend')}, {report.get('precision')}) on "
        f"{report.get('device')}: N cameras at {fw}x{fh}, {m['cycles']} cycles after "
        f"{m['warmup']} warm-up, batched and separate alternating cycle by cycle",
        f"{'N':>2} {'cycle':<9}{'batched ms':>11}{'p95':>7}{'fps/cam':>9}"
        f"{'separate ms':>13}{'p95':>7}{'fps/cam':>9}{'gain':>7}",
    ]
    for n, e in m["cameras"].items():
        for what in ("engine", "pipeline"):
            b, s = e[f"{what}_batched"], e[f"{what}_separate"]
            lines.append(
                f"{n:>2} {what:<9}{b['cycle_ms']['median']:>11.1f}{b['cycle_ms']['p95']:>7.1f}"
                f"{b['fps_per_camera']:>9.1f}{s['cycle_ms']['median']:>13.1f}"
                f"{s['cycle_ms']['p95']:>7.1f}{s['fps_per_camera']:>9.1f}"
                f"{e[f'{what}_gain']:>6.2f}x")
    lines.append("engine: frames in, labels + drivable masks out; pipeline: + each camera's "
                 "grid, the fused grid and its boundary; gain = separate / batched")
    agree = ", ".join(f"N={n}: {e['fused_agreement_with_truth']:.2%} of "
                      f"{e['fused_seen_cells']}" for n, e in m["cameras"].items()
                      if e["fused_agreement_with_truth"] is not None)
    if agree:
        lines.append(f"fused grid vs the generator's exact fused truth (this model, one "
                     f"frame of the synthetic rig): {agree} seen cells")
    mach = report.get("machine", {})
    if mach:
        load = mach.get("load_average")
        lines.append(f"machine: {mach.get('device_name')}, {mach.get('torch_threads')} torch "
                     f"threads of {mach.get('cpus_available')} CPUs"
                     + (f", load average {load[0]:.2f}" if load else ""))
    return "\n".join(lines)


__all__ = [
    "format_multicam",
    "run_multicam_bench",
]
