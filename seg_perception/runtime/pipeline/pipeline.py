"""The frame pipeline both ``seg_node`` and ``seg-perception process`` run.

Frames (with calibration and pose) and a :class:`~seg_perception.runtime.config.PipelineConfig`
snapshot in; labels, colours, overlay, confidence, drivable mask, bird's-eye grid and
free-space polygon out, each only when asked for. The node and ``process`` only convert
messages to :class:`CameraFrame` and results back to messages, so both give the same
outputs for the same input.

One pipeline per engine; it is meant for one thread at a time (the node's worker), except
that :meth:`FramePipeline.infer` (or :meth:`~FramePipeline.infer_start`: the network's pass)
and the rest (:meth:`~FramePipeline.infer_finish`, :meth:`~FramePipeline.render`,
:meth:`~FramePipeline.map`, :meth:`~FramePipeline.boundary`) may run in two threads, one
each, as ``process`` does. It keeps a ground mapper per camera (bounded LRU) so a camera's
lookup is built once per calibration and pose. Several cameras share a cycle:
:meth:`FramePipeline.segment_batch` runs all their frames through the network as one batch
(:meth:`~FramePipeline.infer_batch`), :meth:`FramePipeline.map` makes each camera's grid,
and :meth:`FramePipeline.fuse` the surround grid of the cycle (:mod:`.fusion`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from seg_perception.runtime.config import MAX_CAMERAS, PipelineConfig
from seg_perception.runtime.geometry import (
    CameraInfoMismatchError,
    CameraMounting,
    DrivableAreaMapper,
)
from seg_perception.runtime.geometry.free_region import vehicle_component
from seg_perception.runtime.pipeline.frames import GRID_OUTPUTS, CameraFrame, FrameResult
from seg_perception.runtime.pipeline.fusion import CameraGrid, FusedGrid, GridFusion
from seg_perception.runtime.render import colorize, overlay, palette_lut

if TYPE_CHECKING:
    from seg_perception.runtime.engine import PendingBatch, SegEngine, SegResult

log = logging.getLogger(__name__)

#: Cameras (with their configuration) whose ground mappers are kept: every camera of the
#: largest rig twice over (a parameter change keeps the old ones a while), and the fused one.
MAPPERS_KEPT = 2 * MAX_CAMERAS + 1
#: Mapper name of the fused grid's boundary (no camera is named so: not a valid name).
FUSED = "<fused>"


def _new_mapper(camera: str, mapper_key: tuple[Any, ...]) -> DrivableAreaMapper:
    """A ground mapper for :attr:`PipelineConfig.mapper_key` (``camera`` only keeps one per
    camera). Its pose comes with each frame's view (``set_view``), hence the default here."""
    grid, max_range, max_pixel_footprint, speckle_area, max_vertices, min_region_area = \
        mapper_key
    return DrivableAreaMapper(grid, CameraMounting(), max_range=max_range,
                              max_pixel_footprint=max_pixel_footprint,
                              speckle_area=speckle_area, max_vertices=max_vertices,
                              min_region_area=min_region_area)


class FramePipeline:
    """Runs the engine and the drivable-area geometry on sets of frames."""

    def __init__(self, engine: SegEngine) -> None:
        self.engine = engine
        self.palette = palette_lut(engine.meta.palette)
        # One LRU per pipeline (mappers hold per-camera state), functools' over a function.
        self._mapper_for = functools.lru_cache(maxsize=MAPPERS_KEPT)(_new_mapper)

    # -- the cycle ------------------------------------------------------------------------
    def run(self, frames: Sequence[CameraFrame], config: PipelineConfig | Sequence[
            PipelineConfig], want: Collection[str] | Sequence[Collection[str]]
            ) -> list[FrameResult]:
        """Outputs ``want`` (names of :data:`~.frames.OUTPUTS`) for each frame of a cycle:
        one batched forward pass (:meth:`segment_batch`), then each frame's grid.

        ``config`` and ``want`` are one for all frames or one per frame.
        """
        configs = _per_frame(config, len(frames), PipelineConfig)
        wants = _per_frame_want(want, len(frames))
        segs = self.segment_batch(frames, configs, wants)
        for frame, cfg, w, (result, drivable) in zip(frames, configs, wants, segs, strict=True):
            if drivable is not None and w & set(GRID_OUTPUTS):
                self.map(frame, drivable, cfg, w, result)
        return [r for r, _ in segs]

    def process(self, frame: CameraFrame, config: PipelineConfig,
                want: Collection[str]) -> FrameResult:
        """Outputs ``want`` for one frame under ``config``: :meth:`segment`, then
        :meth:`map` when grid outputs are asked for."""
        want = set(want)
        result, drivable = self.segment(frame, config, want)
        if drivable is not None and want & set(GRID_OUTPUTS):
            self.map(frame, drivable, config, want, result)
        return result

    def segment(self, frame: CameraFrame, config: PipelineConfig, want: Collection[str]
                ) -> tuple[FrameResult, np.ndarray | None]:
        """The image outputs of ``want`` (the network and the colours), and the drivable mask
        for :meth:`map`. The node publishes these before it waits for the frame's
        camera_info and transform. :meth:`infer` then :meth:`render`."""
        return self.render(frame, self.infer(frame, want), config, want)

    def segment_batch(self, frames: Sequence[CameraFrame], configs: Sequence[PipelineConfig],
                      wants: Sequence[Collection[str]]
                      ) -> list[tuple[FrameResult, np.ndarray | None]]:
        """:meth:`segment` for the frames of a cycle with ONE forward pass of the engine
        (frames of any sizes; each frame's outputs at its own resolution). A frame with an
        empty ``want`` is not run."""
        segs = self.infer_batch(frames, wants)
        return [self.render(f, seg, c, w)
                for f, seg, c, w in zip(frames, segs, configs, wants, strict=True)]

    def infer(self, frame: CameraFrame, want: Collection[str]) -> SegResult | None:
        """The network's part of :meth:`segment` (labels, confidence when ``confidence`` is in
        ``want``, drivable mask); None when nothing is wanted. ``seg.timings`` gets
        ``segment`` (ms). Split from :meth:`render` so that ``process`` runs the network in
        one thread and everything after it in another."""
        return self.infer_batch([frame], [want])[0]

    def infer_batch(self, frames: Sequence[CameraFrame], wants: Sequence[Collection[str]]
                    ) -> list[SegResult | None]:
        """:meth:`infer` for a cycle's frames as one batch; ``segment`` is the batch's time."""
        return self.infer_finish(self.infer_start(frames, wants))

    def infer_start(self, frames: Sequence[CameraFrame], wants: Sequence[Collection[str]]
                    ) -> PendingInference:
        """:meth:`infer_batch` up to the end of the forward pass (the engine's
        ``start_batch``); :meth:`infer_finish` does the postprocessing, possibly in another
        thread (``process`` runs the next frame's network meanwhile). An engine-like
        callable without ``start_batch`` (test doubles, wrappers) does all of it here."""
        pending = PendingInference(len(frames), [i for i, w in enumerate(wants) if w])
        if not pending.run:
            return pending
        t0 = time.perf_counter()
        rgbs = [frames[i].rgb for i in pending.run]
        confs = ["confidence" in wants[i] for i in pending.run]
        if hasattr(self.engine, "start_batch"):
            pending.batch = self.engine.start_batch(rgbs, confs)
        elif hasattr(self.engine, "run_batch"):
            pending.segs = self.engine.run_batch(rgbs, confs)
        else:
            pending.segs = [self.engine(rgb, want_confidence=c)
                            for rgb, c in zip(rgbs, confs, strict=True)]
        pending.ms = (time.perf_counter() - t0) * 1e3
        return pending

    def infer_finish(self, pending: PendingInference) -> list[SegResult | None]:
        """The results of :meth:`infer_start`'s frames (None where nothing was wanted)."""
        out: list[SegResult | None] = [None] * pending.n
        if not pending.run:
            return out
        t0 = time.perf_counter()
        segs = pending.segs if pending.batch is None else self.engine.finish_batch(
            pending.batch)
        batch_ms = pending.ms + (time.perf_counter() - t0) * 1e3
        for i, seg in zip(pending.run, segs, strict=True):
            seg.timings["segment"] = batch_ms
            out[i] = seg
        return out

    def render(self, frame: CameraFrame, seg: SegResult | None, config: PipelineConfig,
               want: Collection[str]) -> tuple[FrameResult, np.ndarray | None]:
        """The rest of :meth:`segment`: the image outputs of ``want`` from :meth:`infer`'s
        result (colours and overlay drawn here), and the drivable mask for :meth:`map`."""
        want = set(want)
        result = FrameResult(camera=frame.camera, grid_frame=config.grid_frame)
        if seg is None or not want:
            return result, None
        result.timings.update(seg.timings)
        t1 = time.perf_counter()
        result.labels = seg.labels if "labels" in want else None
        result.confidence = seg.confidence if "confidence" in want else None
        result.drivable = seg.drivable if "drivable/mask" in want else None
        if want & {"labels_color", "overlay"}:
            color = colorize(seg.labels, self.palette)
            if "labels_color" in want:
                result.labels_color = color
            if "overlay" in want:
                result.overlay = overlay(frame.rgb, color, float(config.overlay_alpha))
        result.timings["render"] = (time.perf_counter() - t1) * 1e3
        return result, seg.drivable

    # -- geometry -------------------------------------------------------------------------
    def mapper(self, camera: str, config: PipelineConfig) -> DrivableAreaMapper:
        """The ground mapper of ``camera`` under ``config`` (kept while both stay)."""
        return self._mapper_for(camera, config.mapper_key)

    def map(self, frame: CameraFrame, drivable: np.ndarray, config: PipelineConfig,
            want: Collection[str], result: FrameResult) -> FrameResult:
        """Grid (and boundary, if in ``want``) of a drivable mask into ``result``, using the
        frame's calibration and pose; ``result.no_grid`` says why when they do not allow it.
        """
        if frame.calibration is None or frame.pose is None:
            result.no_grid = frame.no_grid or (
                "no camera_info" if frame.calibration is None else "camera pose unknown")
            return result
        t0 = time.perf_counter()
        try:
            view = frame.calibration.camera_for(frame.rectified, frame.size)
            mounting = view.mounting(frame.pose)
            mapper = self.mapper(frame.camera, config)
            result.lookup_built = mapper.set_view(view.model, mounting)
        except (CameraInfoMismatchError, ValueError) as exc:
            result.no_grid = str(exc)
            return result
        grid = mapper.grid_from_mask(drivable)
        t1 = time.perf_counter()
        result.grid = grid
        result.grid_spec = mapper.grid
        result.timings["grid"] = (t1 - t0) * 1e3
        if "drivable/boundary" in want:
            result.boundary = mapper.boundary_from_grid(grid)
            result.timings["boundary"] = (time.perf_counter() - t1) * 1e3
        return result

    def boundary(self, grid: np.ndarray, config: PipelineConfig, camera: str = FUSED
                 ) -> np.ndarray:
        """The conservative free-space polygon of any grid laid out as ``config.grid``
        (e.g. one fused from several cameras)."""
        if grid.shape != config.grid.shape:
            raise ValueError(f"grid shape {grid.shape} != {config.grid.shape} of the config")
        return self.mapper(camera, config).boundary_from_grid(grid)

    # -- several cameras ------------------------------------------------------------------
    def fuse(self, fusion: GridFusion, results: Sequence[FrameResult], stamps_ns: Sequence[int],
             config: PipelineConfig, want: Collection[str]) -> FusedGrid | None:
        """The cycle's surround grid (and its boundary if ``drivable/boundary`` is in
        ``want``) from the grids of ``results`` (stamped ``stamps_ns``) and ``fusion``'s
        recent grids of the other cameras, under the global ``config`` (see :mod:`.fusion`).
        None when no result of the cycle has a grid."""
        t0 = time.perf_counter()
        fresh = [CameraGrid(r.camera, int(t), r.grid, r.grid_spec)
                 for r, t in zip(results, stamps_ns, strict=True)
                 if r.grid is not None and r.grid_spec is not None]
        fused = fusion.update(fresh, config.grid, config.fusion_max_age, config.grid_frame)
        if fused is None:
            return None
        t1 = time.perf_counter()
        fused.timings["fuse"] = (t1 - t0) * 1e3
        if "drivable/boundary" in want:
            # The free region reached from the vehicle's blind spot (the largest bordering
            # it), else the one nearest the vehicle; conservative either way.
            mapper = self.mapper(FUSED, config)
            region = vehicle_component(fused.grid, config.grid, mapper.ego_xy,
                                       mapper.min_region_cells)
            fused.boundary = (mapper.boundary_from_grid(fused.grid) if region is None
                              else mapper.boundary_of_region(region))
            fused.timings["boundary"] = (time.perf_counter() - t1) * 1e3
        return fused


@dataclass
class PendingInference:
    """Frames between :meth:`FramePipeline.infer_start` and :meth:`~FramePipeline.
    infer_finish`: how many, the indices run, and the engine's pending batch (or, for
    engines without one, the finished results) with the time spent so far (ms)."""

    n: int
    run: list[int]
    batch: PendingBatch | None = None
    segs: list[SegResult] = field(default_factory=list)
    ms: float = 0.0


def _per_frame(value: object, n: int, kind: type) -> list:
    return [value] * n if isinstance(value, kind) else list(value)  # type: ignore[call-overload]


def _per_frame_want(want: Collection[str] | Sequence[Collection[str]], n: int
                    ) -> list[set[str]]:
    items = list(want)
    if all(isinstance(w, str) for w in items):
        return [set(items) for _ in range(n)]
    return [set(w) for w in items]


__all__ = ["FUSED", "MAPPERS_KEPT", "FramePipeline", "PendingInference"]
