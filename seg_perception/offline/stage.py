"""The middle of ``process``: decoded frames in, the messages to write out, through the
runtime's cycle runner (the node's cycle, :class:`~seg_perception.runtime.pipeline.
CycleRunner`).

:func:`~seg_perception.offline.process.process_bag` runs ``read -> segment -> outputs ->
write``, each in a thread of its own (:mod:`seg_perception.runtime.overlap`): ``segment``
groups frames into cycles and starts each cycle's one batched forward pass; ``outputs``
finishes it (image outputs, each camera's grid, the fused grid) and hands the writer one
:class:`~seg_perception.offline.items.FrameOutput` per cycle. Other items (undecodable
frames, copied messages) pass through both in order.

The cycle rule (deterministic, from the recording alone). Unnamed cameras: every frame is a
cycle of its own. Named ``cameras`` (a rig): frames are taken in log-time order; a cycle
starts with a frame and takes the following frames of the other cameras whose header stamps
lie within ``fusion.sync_window`` of that first frame's stamp. It ends at the first frame
that does not fit (its camera is already in the cycle, or its stamp is outside the window),
which starts the next cycle, or as soon as every camera is in it. The fused grid is the
node's (:class:`~seg_perception.runtime.pipeline.GridFusion`): stamped with the newest frame
of the cycle, written at the newest log time of its frames; a camera absent from the cycle
takes part with its latest grid while that is within ``fusion.max_age`` of the cycle's
stamp, and is left out (its cells -1 unless another camera sees them; counted in
``summary.left_out``) after.

The node's worker waits ``fusion.sync_window`` of wall-clock time after a cycle's first
frame for the other cameras and then takes the latest frame of each; played in real time, a
rig whose frames of one trigger arrive within the window gives both the same cycles, hence
the same fused grids. Offline nothing is dropped: a camera's second frame inside one window
starts a new cycle instead of replacing the first.

The persistent map (``drivable/map``, ``map.*``): where the recording's tf knows
``map.frame`` (an ``odom -> base_footprint`` on /tf), every cycle's grid (the fused one of
a rig, else the camera's) goes into the map of its output topic (``/drivable/map`` for a
rig, ``<camera namespace>/drivable/map`` otherwise), written at the cycle's newest log
time, as the node publishes it; a cycle whose transform is missing is warned about and
leaves the map as it was. A recording without ``map.frame`` writes no map (one info line).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seg_perception.offline.items import DecodedFrame, FrameOutput
from seg_perception.offline.topics import (
    FUSED_OUTPUTS,
    image_msg,
    kit,
    make_header,
    map_topic,
)
from seg_perception.runtime import messages
from seg_perception.runtime.geometry import CameraCalibration, CameraModel, Transform
from seg_perception.runtime.pipeline import (
    GRID_OUTPUTS,
    IMAGE_ENCODINGS,
    Cycle,
    CycleFrame,
    CycleRunner,
    FramePipeline,
    FusedGrid,
    GridFusion,
    MapUpdate,
    PoseResult,
    resolve_pose,
)
from seg_perception.runtime.tf import TransformError

if TYPE_CHECKING:
    from seg_perception.offline.job import ProcessOptions, ProcessSummary, Recording
    from seg_perception.runtime.engine import SegEngine

log = logging.getLogger(__name__)


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class _Ref:
    """``process``'s own part of a cycle frame: the bag item and its messages so far."""

    item: DecodedFrame
    messages: list[tuple[str, Any, int]] = field(default_factory=list)
    no_grid: str | None = None


class ProcessStage:
    """Cycles of decoded frames through the runner; the runner's context (the recording's
    camera_infos and tf) and sink (messages for the writer). See the module docstring."""

    def __init__(self, engine: SegEngine, options: ProcessOptions, recording: Recording,
                 summary: ProcessSummary, n_cameras: int) -> None:
        self.options = options
        self.recording = recording
        self.summary = summary
        self.runner = CycleRunner(FramePipeline(engine), self, self, GridFusion())
        self.want = set(IMAGE_ENCODINGS) | (set(GRID_OUTPUTS) if options.grid else set())
        self.fused_want = set(GRID_OUTPUTS) if options.fused else set()
        self.n_cameras = n_cameras if options.fused else 1
        #: map.frame is in the recording's tf: a drivable/map is written
        self.mapping = options.grid and options.config.map.frame in recording.tf.frames
        if options.grid and not self.mapping:
            log.info("no drivable/map: the recording's tf has no frame %r (map.frame)",
                     options.config.map.frame)
        self._extra: list[tuple[str, Any, int]] = []
        self.kit = kit()

    @property
    def pipeline(self) -> FramePipeline:
        return self.runner.pipeline

    def steps(self) -> list[Callable[[Iterator[Any]], Iterator[Any]]]:
        """The stage's steps, in order; each runs in a thread of its own."""
        return [self.segment, self.outputs]

    def cycles(self, items: Iterator[Any]) -> Iterator[Any]:
        """The item stream with each cycle's decoded frames as one list; other items in
        order, those met while a cycle is open right after it."""
        window = round(self.options.config.sync_window * 1e9)
        cycle: list[DecodedFrame] = []
        held: list[Any] = []
        for item in items:
            if not isinstance(item, DecodedFrame):
                if cycle:
                    held.append(item)
                else:
                    yield item
                continue
            if cycle and (any(f.cam is item.cam for f in cycle)
                          or abs(_stamp_ns(item.header.stamp)
                                 - _stamp_ns(cycle[0].header.stamp)) > window):
                yield cycle
                yield from held
                cycle, held = [], []
            cycle.append(item)
            if len(cycle) == self.n_cameras:
                yield cycle
                yield from held
                cycle, held = [], []
        if cycle:
            yield cycle
            yield from held

    def segment(self, items: Iterator[Any]) -> Iterator[Any]:
        """Step 1: one batched forward pass per cycle (up to its scores)."""
        for item in self.cycles(items):
            if isinstance(item, list):
                frames = [self._cycle_frame(f) for f in item]
                key = None
                if self.mapping:
                    key = map_topic("" if self.options.fused else item[0].cam.stream.namespace)
                yield self.runner.start(frames, self.options.config, self.fused_want,
                                        map_key=key)
            else:
                yield item

    def outputs(self, items: Iterator[Any]) -> Iterator[Any]:
        """Step 2: everything after the network's pass; one FrameOutput per cycle."""
        for item in items:
            if isinstance(item, Cycle):
                yield self._output(item)
            else:
                yield item

    def _cycle_frame(self, item: DecodedFrame) -> CycleFrame:
        cam = item.cam
        return CycleFrame(cam.stream.namespace, item.rgb, _stamp_ns(item.header.stamp),
                          item.header.frame_id, cam.config, self.want, cam.rectified,
                          _Ref(item))

    def _output(self, cycle: Cycle) -> FrameOutput:
        self._extra = []
        self.runner.finish_images(cycle)
        self.runner.finish_grids(cycle)
        if self.options.fused:
            self.summary.cycles += 1
        out = FrameOutput([f.ref.item for f in cycle.frames], [])
        for f in cycle.frames:
            out.messages += f.ref.messages
            if f.ref.no_grid is not None:
                out.no_grid.append((f.ref.item.cam.stream.image_topic, f.ref.item.index,
                                    f.ref.no_grid))
        out.messages += self._extra
        return out

    # -- the runner's context: the recording ----------------------------------------------
    def calibration(self, frame: CycleFrame) -> tuple[CameraCalibration | None, str | None]:
        cam = frame.ref.item.cam
        tolerance = frame.config.camera_info_tolerance
        calibration = cam.infos.match(frame.stamp_ns, tolerance)
        if calibration is not None:
            return calibration, None
        if cam.infos.count:
            return None, cam.infos.describe_miss(frame.stamp_ns, tolerance)
        if self.options.hfov_deg:
            h, w = frame.rgb.shape[:2]
            return CameraCalibration.from_model(
                CameraModel.from_fov(w, h, self.options.hfov_deg)), None
        topic = cam.stream.camera_info_topic or "no camera_info topic"
        return None, f"no CameraInfo ({topic}) and no --hfov"

    def _lookup(self, target: str, source: str, stamp_ns: int, timeout: float) -> Transform:
        return self.recording.tf.lookup(target, source, stamp_ns)

    def map_transform(self, target: str, source: str, stamp_ns: int, timeout: float
                      ) -> tuple[Transform | None, str | None]:
        try:
            return self.recording.tf.lookup(target, source, stamp_ns), None
        except TransformError as exc:
            return None, (f"drivable/map not updated at {stamp_ns * 1e-9:.3f} s: no transform "
                          f"{target} <- {source} ({exc})")

    def pose(self, frame: CycleFrame) -> PoseResult:
        has_tf = self.recording.tf.messages > 0
        return resolve_pose(frame.config, frame.frame_id, frame.stamp_ns,
                            self._lookup if has_tf else None,
                            "the bag has no /tf or /tf_static", fallback_unknown=True)

    # -- the runner's sink: messages ------------------------------------------------------
    def images(self, frame: CycleFrame) -> None:
        item, result = frame.ref.item, frame.result
        stream = item.cam.stream
        frame.ref.messages += [(stream.output(name), image_msg(result.image(name), enc,
                                                               item.header), item.log_time)
                               for name, enc in IMAGE_ENCODINGS.items()]

    def grid(self, frame: CycleFrame) -> None:
        item, result, pose = frame.ref.item, frame.result, frame.pose
        cam = item.cam
        source = f"{pose.source} ({pose.detail})" if pose.detail else pose.source
        if pose.mounting is not None and cam.pose_source != source:
            cam.pose_source = source
            self.summary.poses[cam.stream.image_topic] = source
            log.info("%s: camera pose from %s", cam.stream.image_topic, source)
        if result.grid is None or result.grid_spec is None:
            frame.ref.no_grid = result.no_grid or ""
            return
        header = item.header
        ghdr = make_header(header.stamp.sec, header.stamp.nanosec, result.grid_frame)
        frame.ref.messages += [
            (cam.stream.output("drivable/grid"),
             messages.grid_message(self.kit, result.grid, result.grid_spec, ghdr), item.log_time),
            (cam.stream.output("drivable/boundary"),
             messages.polygon_message(self.kit, result.boundary, ghdr), item.log_time)]

    def fused_grid(self, cycle: Cycle, fused: FusedGrid) -> None:
        for cam in fused.left_out:  # the frames' camera: their namespace
            self.summary.left_out[cam] += 1
        if fused.left_out:
            ages = ", ".join(f"{c} {a:.2f} s" for c, a in fused.left_out.items())
            log.info("fused drivable/grid at %d without cameras whose latest grid is older "
                     "than fusion.max_age = %g s: %s", fused.stamp_ns,
                     cycle.config.fusion_max_age, ages)
        sec, nsec = divmod(fused.stamp_ns, 1_000_000_000)
        ghdr = make_header(sec, nsec, fused.grid_frame)
        log_time = max(f.ref.item.log_time for f in cycle.frames)
        grid_topic, boundary_topic = FUSED_OUTPUTS
        self._extra.append((grid_topic, messages.grid_message(
            self.kit, fused.grid, fused.spec, ghdr), log_time))
        if fused.boundary is not None:
            self._extra.append((boundary_topic, messages.polygon_message(
                self.kit, fused.boundary, ghdr), log_time))
        self.summary.fused += 1


    def drivable_map(self, cycle: Cycle, update: MapUpdate) -> None:
        if update.map is None:
            kind = "".join(c for c in (update.problem or "")[:60] if not c.isdigit())
            self.summary.warn(f"map:{kind}", update.problem or "drivable/map not updated")
            return
        if update.cleared:
            log.info("time went back at %.3f s: drivable/map cleared", update.stamp_ns * 1e-9)
        sec, nsec = divmod(update.stamp_ns, 1_000_000_000)
        hdr = make_header(sec, nsec, update.frame)
        log_time = max(f.ref.item.log_time for f in cycle.frames)
        self._extra.append((cycle.map_key, messages.grid_message(
            self.kit, update.map.grid(), update.spec, hdr), log_time))


__all__ = ["ProcessStage"]
