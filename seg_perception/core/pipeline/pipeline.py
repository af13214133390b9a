"""The frame pipeline both ``seg_node`` and ``seg-perception process`` run.

Frames (with calibration and pose) and a :class:`~seg_perception.core.config.PipelineConfig`
snapshot in; labels, colours, overlay, confidence, drivable mask, bird's-eye grid and
free-space polygon out, each only when asked for. The node and ``process`` only convert
messages to :class:`CameraFrame` and results back to messages, so both give the same
outputs for the same input.

One pipeline per engine; it is meant for one thread at a time (the node's worker), except
that :meth:`FramePipeline.infer` (the network) and the rest (:meth:`~FramePipeline.render`,
:meth:`~FramePipeline.map`, :meth:`~FramePipeline.boundary`) may run in two threads, one
each, as ``process`` does. It keeps a ground mapper per camera (bounded LRU) so a camera's
lookup is built once per calibration and pose.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..config import PipelineConfig
from ..geometry import CameraInfoMismatchError, DrivableAreaMapper
from ..lru import LruCache
from ..render import colorize, overlay, palette_lut
from .frames import GRID_OUTPUTS, CameraFrame, FrameResult

if TYPE_CHECKING:
    from ..engine import SegEngine, SegResult

log = logging.getLogger(__name__)

#: Cameras (with their configuration) whose ground mappers are kept.
MAPPERS_KEPT = 16


class FramePipeline:
    """Runs the engine and the drivable-area geometry on sets of frames."""

    def __init__(self, engine: SegEngine) -> None:
        self.engine = engine
        self.palette = palette_lut(engine.meta.palette)
        self._mappers: LruCache[DrivableAreaMapper] = LruCache(MAPPERS_KEPT)

    # -- the cycle ------------------------------------------------------------------------
    def run(self, frames: Sequence[CameraFrame], config: PipelineConfig,
            want: Collection[str]) -> list[FrameResult]:
        """Outputs ``want`` (names of :data:`~.frames.OUTPUTS`) for each frame of a cycle.

        Frames are independent here (one forward pass each); a batched forward pass and a
        fused grid of all cameras build on this signature.
        """
        return [self.process(frame, config, want) for frame in frames]

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

    def infer(self, frame: CameraFrame, want: Collection[str]) -> SegResult | None:
        """The network's part of :meth:`segment` (labels, confidence when ``confidence`` is in
        ``want``, drivable mask); None when nothing is wanted. ``seg.timings`` gets
        ``segment`` (ms). Split from :meth:`render` so that ``process`` runs the network in
        one thread and everything after it in another."""
        if not want:
            return None
        t0 = time.perf_counter()
        seg = self.engine(frame.rgb, want_confidence="confidence" in want)
        seg.timings["segment"] = (time.perf_counter() - t0) * 1e3
        return seg

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
        key = (camera, config.mapper_key)
        mapper = self._mappers.get(key)
        if mapper is None:
            mapper = DrivableAreaMapper(
                config.grid, config.mounting, max_range=config.max_range,
                max_pixel_footprint=config.max_pixel_footprint,
                speckle_area=config.speckle_area, max_vertices=config.max_vertices,
                min_region_area=config.min_region_area)
            self._mappers.put(key, mapper)
        return mapper

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

    def boundary(self, grid: np.ndarray, config: PipelineConfig, camera: str = ""
                 ) -> np.ndarray:
        """The conservative free-space polygon of any grid laid out as ``config.grid``
        (e.g. one fused from several cameras)."""
        if grid.shape != config.grid.shape:
            raise ValueError(f"grid shape {grid.shape} != {config.grid.shape} of the config")
        return self.mapper(camera, config).boundary_from_grid(grid)


__all__ = ["MAPPERS_KEPT", "FramePipeline"]
