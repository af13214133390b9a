"""The frame cycle, once, for ``seg_node`` and ``seg-perception process`` alike.

A *cycle* is the frames of one or several cameras that share one forward pass of the network:

    start          one batched forward pass (:meth:`~.pipeline.FramePipeline.infer_start`)
    finish_images  labels/confidence from the scores, colours, overlay -> ``sink.images``
    finish_grids   each frame's calibration and pose (``context``), its grid and boundary
                   -> ``sink.grid``; the fused grid (several cameras) -> ``sink.fused_grid``;
                   the persistent map (``map.*``) from the cycle's grid -> ``sink.drivable_map``

The adapters differ only where they must: how frames become a cycle (the node: latest-frame
slots and a wall-clock window; ``process``: header stamps in log-time order), where
calibration and pose come from (live buffers and tf2, or the recording read ahead), and what
happens to the outputs (published, or written to a bag). Those are the two ports below:
:class:`CycleContext` (calibration for a camera and stamp, pose for a frame) and
:class:`CycleSink` (images, grid, fused grid). ``start`` and the two ``finish`` halves may
run in two threads, one each (the next cycle's forward pass overlaps the previous cycle's
outputs), and the node runs ``finish_grids`` later than ``finish_images`` when a frame's
camera_info may still come: between them nothing of the cycle changes.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from seg_perception.runtime.config import PipelineConfig
from seg_perception.runtime.geometry import CameraCalibration, GridSpec, Transform
from seg_perception.runtime.geometry.drivable_map import TIME_JUMP_NS, DrivableMap
from seg_perception.runtime.pipeline.frames import GRID_OUTPUTS, CameraFrame, FrameResult
from seg_perception.runtime.pipeline.fusion import FusedGrid, GridFusion
from seg_perception.runtime.pipeline.pipeline import FramePipeline, PendingInference
from seg_perception.runtime.pipeline.pose import PoseResult


@dataclass
class CycleFrame:
    """One camera's decoded frame in a cycle, and what the cycle makes of it.

    ``camera`` keys the camera's ground mapper and its grid in the fusion; ``want`` names
    the outputs to compute (:data:`~.frames.OUTPUTS`); ``ref`` is the adapter's own (its
    channel and message, or the bag item) for its sink. ``result`` and ``drivable`` are set
    by :meth:`CycleRunner.finish_images`; ``calibration`` and ``pose`` by
    :meth:`CycleRunner.finish_grids`.
    """

    camera: str
    rgb: np.ndarray
    stamp_ns: int
    frame_id: str
    config: PipelineConfig
    want: set[str]
    rectified: bool = False
    ref: Any = None
    result: FrameResult | None = None
    drivable: np.ndarray | None = None
    calibration: CameraCalibration | None = None
    pose: PoseResult | None = None

    @property
    def wants_grid(self) -> bool:
        """Its grid step has something to do: a drivable mask and grid outputs asked for."""
        return self.drivable is not None and bool(self.want & set(GRID_OUTPUTS))


@dataclass
class Cycle:
    """A cycle between :meth:`CycleRunner.start` and its two finishing halves.

    ``config`` is the global parameter snapshot taken with it (the fused grid's geometry and
    rule, the map's); ``fused_want`` the fused outputs asked for; ``fuse`` whether the
    frames are fused at all (a rig: for ``fused_want`` or for the map); ``map_key`` names
    the persistent map this cycle's grid goes into (None: none; ``process`` keeps one per
    output topic; a grid stamped at or before the map's last update, e.g. a frame sent
    twice, is not folded in again, unless time went back by more than 1 s, which clears
    the map). ``timings`` are the cycle's stages (ms: ``inference`` is the forward
    pass and its postprocessing, ``images`` the sink's image outputs, ``map`` the map's
    update). ``deadline`` is the adapter's (the node's calibration wait).
    """

    frames: list[CycleFrame]
    config: PipelineConfig
    fused_want: set[str]
    pending: PendingInference
    t_start: float
    fuse: bool = False
    map_key: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    fused: FusedGrid | None = None
    map: MapUpdate | None = None
    deadline: float = 0.0


@dataclass
class MapUpdate:
    """What a cycle did to the persistent map: ``map`` updated with the grid stamped
    ``stamp_ns`` (``cleared`` first when time went back), or, with ``map`` None, why not
    (``problem``: no transform ``map.frame`` <- ``grid_frame``)."""

    map: DrivableMap | None
    frame: str
    stamp_ns: int
    cleared: bool = False
    problem: str | None = None

    @property
    def spec(self) -> GridSpec:
        """The window as a GridSpec in ``frame`` (OccupancyGrid origin and size)."""
        assert self.map is not None
        (x0, y0), res = self.map.origin, self.map.resolution
        h, w = self.map.shape
        return GridSpec(res, x0, x0 + w * res, y0, y0 + h * res)


class CycleContext(Protocol):
    """Where a frame's calibration and pose come from (the node's buffers and tf2, or the
    recording)."""

    def calibration(self, frame: CycleFrame) -> tuple[CameraCalibration | None, str | None]:
        """The camera_info paired with ``frame`` (None: none) and, when None, why not."""

    def pose(self, frame: CycleFrame) -> PoseResult:
        """``frame``'s camera pose in ``grid_frame`` (see :func:`~.pose.resolve_pose`)."""

    def map_transform(self, target: str, source: str, stamp_ns: int, timeout: float
                      ) -> tuple[Transform | None, str | None]:
        """The transform ``target`` (``map.frame``) <- ``source`` (``grid_frame``) at
        ``stamp_ns``, or None and why not (never a guess)."""


class CycleSink(Protocol):
    """Where a cycle's outputs go (published, or written to a bag)."""

    def images(self, frame: CycleFrame) -> None:
        """``frame.result``'s image outputs are ready."""

    def grid(self, frame: CycleFrame) -> None:
        """``frame.result``'s grid (and boundary) are ready, or ``result.no_grid`` says why
        there is none; ``frame.pose`` says where the pose came from."""

    def fused_grid(self, cycle: Cycle, fused: FusedGrid) -> None:
        """The cycle's fused grid (``fused.boundary`` when asked for)."""

    def drivable_map(self, cycle: Cycle, update: MapUpdate) -> None:
        """The persistent map after this cycle (or why it was not updated)."""


class CycleRunner:
    """Runs cycles through one :class:`~.pipeline.FramePipeline` (see the module docstring).

    ``fusion`` keeps the cameras' latest grids between cycles, ``maps`` the persistent maps
    (by ``Cycle.map_key``; a new one when ``map.*`` change); one runner per node or bag
    job. Not thread-safe beyond the split the module docstring allows.
    """

    def __init__(self, pipeline: FramePipeline, context: CycleContext, sink: CycleSink,
                 fusion: GridFusion | None = None) -> None:
        self.pipeline = pipeline
        self.context = context
        self.sink = sink
        self.fusion = fusion if fusion is not None else GridFusion()
        self.maps: dict[str, DrivableMap] = {}

    def run(self, frames: Sequence[CycleFrame], config: PipelineConfig,
            fused_want: Collection[str] = (), fuse: bool | None = None,
            map_key: str | None = None) -> Cycle | None:
        """A whole cycle in the calling thread (None when ``frames`` is empty)."""
        cycle = self.start(frames, config, fused_want, fuse, map_key)
        if cycle is not None:
            self.finish_images(cycle)
            self.finish_grids(cycle)
        return cycle

    def start(self, frames: Sequence[CycleFrame], config: PipelineConfig,
              fused_want: Collection[str] = (), fuse: bool | None = None,
              map_key: str | None = None) -> Cycle | None:
        """The cycle up to the end of its forward pass: ONE batch for all ``frames`` (of any
        sizes). ``fuse`` defaults to whether fused outputs are wanted. None when there is
        no frame."""
        if not frames:
            return None
        t_start = time.perf_counter()
        images = [CameraFrame(f.rgb, camera=f.camera, rectified=f.rectified) for f in frames]
        pending = self.pipeline.infer_start(images, [f.want for f in frames])
        return Cycle(list(frames), config, set(fused_want), pending, t_start,
                     bool(fused_want) if fuse is None else fuse, map_key)

    def finish_images(self, cycle: Cycle) -> None:
        """Labels and confidence from the scores, colours and overlay; each frame's image
        outputs to ``sink.images``."""
        t0 = time.perf_counter()
        segs = self.pipeline.infer_finish(cycle.pending)
        for frame, seg in zip(cycle.frames, segs, strict=True):
            image = CameraFrame(frame.rgb, camera=frame.camera, rectified=frame.rectified)
            frame.result, frame.drivable = self.pipeline.render(image, seg, frame.config,
                                                                frame.want)
        t1 = time.perf_counter()
        cycle.timings["inference"] = cycle.pending.ms + (t1 - t0) * 1e3
        for frame in cycle.frames:
            self.sink.images(frame)
        cycle.timings["images"] = (time.perf_counter() - t1) * 1e3

    def finish_grids(self, cycle: Cycle) -> FusedGrid | None:
        """Each frame's grid and boundary with its calibration and pose as the context has
        them now (``sink.grid``), then the fused grid of the cycle (``sink.fused_grid``),
        then the persistent map (``sink.drivable_map``)."""
        for frame in cycle.frames:
            if frame.wants_grid:
                self._grid(frame)
        if cycle.fuse:
            results = [f.result for f in cycle.frames if f.result is not None]
            stamps = [f.stamp_ns for f in cycle.frames if f.result is not None]
            cycle.fused = self.pipeline.fuse(self.fusion, results, stamps, cycle.config,
                                             cycle.fused_want)
            if cycle.fused is not None:
                self.sink.fused_grid(cycle, cycle.fused)
        if cycle.map_key is not None:
            self._map(cycle)
        return cycle.fused

    def _map(self, cycle: Cycle) -> None:
        """The cycle's grid (fused, or its one camera's) into the persistent map."""
        if cycle.fuse:
            if cycle.fused is None:
                return
            grid, spec = cycle.fused.grid, cycle.fused.spec
            stamp, grid_frame = cycle.fused.stamp_ns, cycle.fused.grid_frame
        else:
            made = [f for f in cycle.frames if f.result is not None
                    and f.result.grid is not None and f.result.grid_spec is not None]
            if not made:
                return
            f = made[-1]
            grid, spec = f.result.grid, f.result.grid_spec
            stamp, grid_frame = f.stamp_ns, f.result.grid_frame
        config = cycle.config.map
        key = cycle.map_key or ""
        drivable_map = self.maps.get(key)
        if drivable_map is None or drivable_map.config != config:
            drivable_map = self.maps[key] = DrivableMap(config)
        last = drivable_map.stamp_ns
        if last is not None and last - TIME_JUMP_NS <= stamp <= last:
            return  # this instant (or an earlier one) is in the map already: never twice
        t0 = time.perf_counter()
        transform, problem = self.context.map_transform(config.frame, grid_frame, stamp,
                                                        cycle.config.tf_timeout)
        if transform is None:
            cycle.map = MapUpdate(None, config.frame, stamp, problem=problem or "no transform")
        else:
            cleared = drivable_map.update(grid, spec, transform, stamp)
            cycle.map = MapUpdate(drivable_map, config.frame, stamp, cleared)
        cycle.timings["map"] = (time.perf_counter() - t0) * 1e3
        self.sink.drivable_map(cycle, cycle.map)

    def _grid(self, frame: CycleFrame) -> None:
        assert frame.result is not None and frame.drivable is not None
        frame.pose = self.context.pose(frame)
        frame.calibration, missing = self.context.calibration(frame)
        problems = [p for p in (frame.pose.problem, missing if frame.calibration is None
                                else None) if p]
        image = CameraFrame(frame.rgb, frame.calibration, frame.pose.mounting, frame.rectified,
                            frame.camera, "; ".join(problems) or None)
        self.pipeline.map(image, frame.drivable, frame.config, frame.want, frame.result)
        self.sink.grid(frame)


__all__ = ["Cycle", "CycleContext", "CycleFrame", "CycleRunner", "CycleSink", "MapUpdate"]
