"""``process``: the node's frame pipeline on every frame of a bag, the outputs to another.

The live node drops stale frames to bound latency; offline there is no deadline, so every
frame of a recording gets exactly one message on every output topic, stamped with the
input's header and written at the input's log time. That makes the output bag line up with
the input frame for frame (``ros2 bag play`` of both shows matching pairs).

:func:`process_bag` reads the bag (:mod:`~seg_perception.offline.reader`), runs the frames
through a middle stage (:class:`FrameStage`, or :class:`CycleStage` for a rig of named
cameras) in threads that overlap, and writes in input order
(:mod:`~seg_perception.offline.writer`); its options and summary are in
:mod:`~seg_perception.offline.job`.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seg_perception.offline.job import CameraState as _Camera
from seg_perception.offline.job import ProcessOptions, ProcessSummary, read_ahead
from seg_perception.offline.job import Recording as _Recording
from seg_perception.offline.reader import (
    BadFrame,
    bag_topics,
    cdr_stamp,
    decode_frame,
    guarded_messages,
    match_cameras,
    open_bag,
    select_cameras,
)
from seg_perception.offline.topics import (
    GRID_OUTPUTS,
    IMAGE_OUTPUTS,
    IMAGE_TYPES,
    BagError,
    image_msg,
    kit,
    make_header,
    output_qos,
    output_topic,
)
from seg_perception.offline.writer import BagWriteError, BagWriter, write_failure
from seg_perception.runtime import messages
from seg_perception.runtime.config import SINGLE_CAMERA
from seg_perception.runtime.geometry import CameraCalibration, CameraModel, Transform
from seg_perception.runtime.image_codec import ImageDecodeError
from seg_perception.runtime.overlap import overlapped
from seg_perception.runtime.pipeline import (
    CameraFrame,
    FramePipeline,
    FrameResult,
    GridFusion,
    resolve_pose,
)
from seg_perception.runtime.signals import hold_stop_signals
from seg_perception.runtime.tf import stamp_to_ns as _stamp_ns

if TYPE_CHECKING:
    from rosbags.rosbag2 import Reader

    from seg_perception.runtime.engine import SegEngine

log = logging.getLogger(__name__)


# --- the overlapped frame loop ------------------------------------------------------------
#
# process_bag runs   read -> FrameStage.steps() -> write   (runtime/overlap.py):
#
#   read    (thread)  messages in log-time order: DecodedFrame, Undecodable, or Passthrough
#                     (other topics with keep_input); each camera's frame index counted here
#   steps   (a thread each) FrameStage.segment: the network's pass on each DecodedFrame;
#                     FrameStage.outputs: labels from its scores, colours, grid, polygon and
#                     the messages: FrameOutput
#   write   (caller)  every item in order: a FrameOutput's messages under hold_stop_signals,
#                     the summary's counts, on_frame; Undecodable and Passthrough as before
#
# SEAM (issue 10, several cameras per cycle): the middle is FrameStage.steps(), a list of
# generator steps over the item stream. A replacement takes DecodedFrame items in log-time
# order (all cameras interleaved), passes Undecodable and Passthrough items on (in order,
# or when its held frames go out), and yields FrameOutput items: the frames they cover and
# the messages to write with their log times; a cycle's FrameOutput may cover the frames of
# several cameras and carry a fused grid. The reader and the writer need no change. Each
# step runs in a thread of its own (pipeline_depth > 0): the engine's forward pass in one
# step (start_batch), its postprocessing (finish_batch, read-only on the engine) and the
# mappers (grid, polygon) in the other, as FramePipeline's docstring allows. The pass holds
# no GIL; the postprocessing's numpy work does, so it stays off the network's thread.


@dataclass
class DecodedFrame:
    """A frame of a processed camera, decoded: what the middle stage gets.

    ``index`` is its 0-based position among the topic's messages; ``raw`` (the serialised
    input, for keep_input) is None unless kept."""

    cam: _Camera
    index: int
    log_time: int
    header: Any
    rgb: np.ndarray
    conn: Any
    raw: bytes | memoryview | None = None


@dataclass
class Undecodable:
    """A frame that cannot be used (listed in ``summary.bad``); ``raw`` kept for keep_input."""

    bad: BadFrame
    conn: Any
    raw: bytes | memoryview | None = None


@dataclass
class Passthrough:
    """A message of another topic, copied as it is (keep_input)."""

    conn: Any
    raw: bytes | memoryview
    log_time: int


@dataclass
class FrameOutput:
    """What is written for ``frames`` (one, or a cycle's): ``messages`` as (topic, message,
    log time), in order; ``no_grid`` (image topic, frame index, reason) for each frame that
    got image outputs only."""

    frames: list[DecodedFrame]
    messages: list[tuple[str, Any, int]]
    no_grid: list[tuple[str, int, str]] = field(default_factory=list)


@dataclass
class _Segmented:
    """Between FrameStage's two steps: a frame, its pipeline input and the network's pending
    pass (:meth:`FramePipeline.infer_start`), its result once finished."""

    item: DecodedFrame
    frame: CameraFrame
    seg: Any


def read_items(reader: Reader, conns: list[Any], cams: dict[str, _Camera],
               options: ProcessOptions, src: Path) -> Iterator[Any]:
    """The reader of :func:`process_bag`: the bag's messages in log-time order as
    :class:`DecodedFrame`, :class:`Undecodable` and (keep_input) :class:`Passthrough` items.
    A bag unreadable part-way raises :class:`BagError` after its last readable message."""
    keep = options.keep_input
    for conn, log_time, raw in guarded_messages(reader.messages(conns), src):
        cam = cams.get(conn.topic)
        if cam is None or conn.msgtype not in IMAGE_TYPES:
            if keep:
                yield Passthrough(conn, raw, log_time)
            continue
        index = cam.index
        cam.index += 1
        try:
            header, rgb = decode_frame(conn.msgtype, raw, options.max_pixels)
        except ImageDecodeError as exc:
            yield Undecodable(BadFrame(conn.topic, index, cdr_stamp(raw), log_time, str(exc)),
                              conn, raw if keep else None)
            continue
        yield DecodedFrame(cam, index, log_time, header, rgb, conn, raw if keep else None)


class FrameStage:
    """The middle of :func:`process_bag`: decoded frames in, the messages to write out, as
    the node computes them (:class:`~seg_perception.runtime.pipeline.FramePipeline`).

    :meth:`steps` are run in a thread each: :meth:`segment` (the network: one core's worth
    of work that releases the GIL) and :meth:`outputs` (colours, grid, polygon, messages).
    Other items pass through both in order.
    """

    def __init__(self, engine: SegEngine, options: ProcessOptions, recording: _Recording,
                 summary: ProcessSummary) -> None:
        self.pipeline = FramePipeline(engine)
        self.options = options
        self.recording = recording
        self.summary = summary
        self.want = set(IMAGE_OUTPUTS) | (set(GRID_OUTPUTS) if options.grid else set())
        self.kit = kit()

    def steps(self) -> list[Callable[[Iterator[Any]], Iterator[Any]]]:
        """The middle stage's steps, in order (see the SEAM note above)."""
        return [self.segment, self.outputs]

    def segment(self, items: Iterator[Any]) -> Iterator[Any]:
        """Step 1: the network on each :class:`DecodedFrame` (up to its scores)."""
        for item in items:
            if isinstance(item, DecodedFrame):
                frame = self._frame(item)
                yield _Segmented(item, frame, self.pipeline.infer_start([frame], [self.want]))
            else:
                yield item

    def outputs(self, items: Iterator[Any]) -> Iterator[Any]:
        """Step 2: everything after the network's pass (labels from the scores first); a
        :class:`FrameOutput` per frame."""
        for item in items:
            if isinstance(item, _Segmented):
                item.seg = self.pipeline.infer_finish(item.seg)[0]
                yield self._output(item)
            else:
                yield item

    def _lookup(self, target: str, source: str, stamp_ns: int, timeout: float) -> Transform:
        return self.recording.tf.lookup(target, source, stamp_ns)

    def _frame(self, item: DecodedFrame) -> CameraFrame:
        cam, header, rgb = item.cam, item.header, item.rgb
        s, cfg = cam.stream, cam.config
        stamp = _stamp_ns(header.stamp)
        calibration = cam.infos.match(stamp, cfg.camera_info_tolerance)
        no_grid = None
        if calibration is None and cam.infos.count == 0 and self.options.hfov_deg:
            h, w = rgb.shape[:2]
            calibration = CameraCalibration.from_model(
                CameraModel.from_fov(w, h, self.options.hfov_deg))
        if calibration is None:
            no_grid = (cam.infos.describe_miss(stamp, cfg.camera_info_tolerance)
                       if cam.infos.count else
                       f"no CameraInfo ({s.camera_info_topic or 'no camera_info topic'}) "
                       "and no --hfov")
        has_tf = self.recording.tf.messages > 0
        pose = resolve_pose(cfg, header.frame_id, stamp, self._lookup if has_tf else None,
                            "the bag has no /tf or /tf_static", fallback_unknown=True)
        source = f"{pose.source} ({pose.detail})" if pose.detail else pose.source
        if pose.mounting is not None and cam.pose_source != source:
            cam.pose_source = source
            self.summary.poses[s.image_topic] = source
            log.info("%s: camera pose from %s", s.image_topic, source)
        if pose.problem:
            no_grid = pose.problem + (f"; {no_grid}" if no_grid else "")
        return CameraFrame(rgb, calibration, pose.mounting, cam.rectified, s.namespace, no_grid)

    def _output(self, seg: _Segmented) -> FrameOutput:
        return self._frame_output(seg)[0]

    def _frame_output(self, seg: _Segmented) -> tuple[FrameOutput, FrameResult]:
        """A frame's own outputs, and its pipeline result (for the fused grid)."""
        item, frame = seg.item, seg.frame
        cam, header, log_time = item.cam, item.header, item.log_time
        s, cfg = cam.stream, cam.config
        result, drivable = self.pipeline.render(frame, seg.seg, cfg, self.want)
        if drivable is not None and self.options.grid:
            self.pipeline.map(frame, drivable, cfg, self.want, result)
        out = FrameOutput([item], [(s.output(name), image_msg(result.image(name), enc, header),
                                    log_time) for name, enc in IMAGE_OUTPUTS.items()])
        if not self.options.grid:
            return out, result
        if result.grid is not None and result.grid_spec is not None:
            ghdr = make_header(header.stamp.sec, header.stamp.nanosec, result.grid_frame)
            out.messages.append((s.output("drivable/grid"), messages.grid_message(
                self.kit, result.grid, result.grid_spec, ghdr), log_time))
            out.messages.append((s.output("drivable/boundary"), messages.polygon_message(
                self.kit, result.boundary, ghdr), log_time))
        else:
            out.no_grid.append((s.image_topic, item.index, result.no_grid or ""))
        return out, result


@dataclass
class _CycleSegmented:
    """Between CycleStage's two steps: a cycle's frames, their inputs and the network's
    pending pass (a list of results once finished)."""

    items: list[DecodedFrame]
    frames: list[CameraFrame]
    segs: Any


#: Topics of the fused surround grid of named ``cameras`` (the node's own, unprefixed).
FUSED_OUTPUTS: dict[str, str] = {output_topic("", name): t for name, t in GRID_OUTPUTS.items()}


class CycleStage(FrameStage):
    """The middle of :func:`process_bag` for named ``cameras``: frames grouped into cycles
    as ``seg_node`` groups them, one batched forward pass per cycle, each camera's outputs
    and the cycle's fused ``/drivable/grid`` and ``/drivable/boundary``.

    The cycle rule (deterministic, from the recording alone): frames are taken in log-time
    order; a cycle starts with a frame and takes the following frames of the other cameras
    whose header stamps lie within ``fusion.sync_window`` of that first frame's stamp. It
    ends at the first frame that does not fit (its camera is already in the cycle, or its
    stamp is outside the window), which starts the next cycle, or as soon as every camera
    is in it. The fused grid is then the node's (:class:`~seg_perception.runtime.pipeline.
    GridFusion`): stamped with the newest frame of the cycle, written at the newest log
    time of its frames; a camera absent from the cycle takes part with its latest grid
    while that is within ``fusion.max_age`` of the cycle's stamp, and is left out (its
    cells -1 unless another camera sees them; counted in ``summary.left_out``) after.

    The node's worker waits ``fusion.sync_window`` of wall-clock time after a cycle's first
    frame for the other cameras and then takes the latest frame of each; played in real
    time, a rig whose frames of one trigger arrive within the window gives both the same
    cycles, hence the same fused grids. Offline nothing is dropped: a camera's second frame
    inside one window starts a new cycle instead of replacing the first.
    """

    def __init__(self, engine: SegEngine, options: ProcessOptions, recording: _Recording,
                 summary: ProcessSummary, n_cameras: int) -> None:
        super().__init__(engine, options, recording, summary)
        self.n_cameras = n_cameras
        self.fusion = GridFusion()
        self.fused_want = set(GRID_OUTPUTS)

    def steps(self) -> list[Callable[[Iterator[Any]], Iterator[Any]]]:
        return [self.segment_cycles, self.cycle_outputs]

    def cycles(self, items: Iterator[Any]) -> Iterator[Any]:
        """The item stream with each cycle's :class:`DecodedFrame` items as one list; other
        items in order, those met while a cycle is open right after it."""
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

    def segment_cycles(self, items: Iterator[Any]) -> Iterator[Any]:
        """Step 1: one batched forward pass per cycle (up to its scores)."""
        for item in self.cycles(items):
            if isinstance(item, list):
                frames = [self._frame(f) for f in item]
                pending = self.pipeline.infer_start(frames, [self.want] * len(frames))
                yield _CycleSegmented(item, frames, pending)
            else:
                yield item

    def cycle_outputs(self, items: Iterator[Any]) -> Iterator[Any]:
        """Step 2: each camera's outputs and the fused grid; one FrameOutput per cycle."""
        for item in items:
            if isinstance(item, _CycleSegmented):
                item.segs = self.pipeline.infer_finish(item.segs)
                yield self._cycle_output(item)
            else:
                yield item

    def _cycle_output(self, cyc: _CycleSegmented) -> FrameOutput:
        out = FrameOutput(list(cyc.items), [])
        results = []
        for item, frame, seg in zip(cyc.items, cyc.frames, cyc.segs, strict=True):
            one, result = self._frame_output(_Segmented(item, frame, seg))
            out.messages += one.messages
            out.no_grid += one.no_grid
            results.append(result)
        self.summary.cycles += 1
        config = self.options.config
        stamps = [_stamp_ns(f.header.stamp) for f in cyc.items]
        fused = self.pipeline.fuse(self.fusion, results, stamps, config, self.fused_want)
        if fused is None:
            return out
        for cam in fused.left_out:  # the frames' camera: their namespace
            self.summary.left_out[cam] += 1
        if fused.left_out:
            ages = ", ".join(f"{c} {a:.2f} s" for c, a in fused.left_out.items())
            log.info("fused drivable/grid at %d without cameras whose latest grid is older "
                     "than fusion.max_age = %g s: %s", fused.stamp_ns, config.fusion_max_age,
                     ages)
        sec, nsec = divmod(fused.stamp_ns, 1_000_000_000)
        ghdr = make_header(sec, nsec, fused.grid_frame)
        log_time = max(f.log_time for f in cyc.items)
        grid_topic, boundary_topic = FUSED_OUTPUTS
        out.messages.append((grid_topic, messages.grid_message(
            self.kit, fused.grid, fused.spec, ghdr), log_time))
        if fused.boundary is not None:
            out.messages.append((boundary_topic, messages.polygon_message(
                self.kit, fused.boundary, ghdr), log_time))
        self.summary.fused += 1
        return out


FrameHook = Callable[[int], None]


def process_bag(
    src: str | Path,
    dst: str | Path,
    engine: SegEngine,
    *,
    image_topics: Sequence[str] | None = None,
    camera_info_topics: Sequence[str] | None = None,
    options: ProcessOptions | None = None,
    progress: bool = True,
    on_frame: FrameHook | None = None,
    custom_data: dict[str, str] | None = None,
) -> ProcessSummary:
    """Run the frame pipeline on every frame of ``src`` and write the node's outputs to ``dst``.

    One message per output topic per decodable frame, with the input's header and log time
    (the grid and boundary carry ``grid_frame``; a frame without a paired camera_info or a
    camera pose gets image outputs only, counted in ``summary.no_grid`` and warned about).
    Camera poses come from the bag's /tf_static and /tf (``use_tf``), else from the
    camera.* parameters. Frames that cannot be decoded are listed in ``summary.bad``.
    With named ``options.cameras`` (a rig) the frames go through in cycles, one batched
    forward pass and one fused ``/drivable/grid`` and ``/drivable/boundary`` per cycle, as
    the node fuses them (:class:`CycleStage` gives the cycle rule; ``summary.cycles``,
    ``summary.fused``, ``summary.left_out`` by camera namespace). Reading and decoding,
    the network, the rest of the pipeline and writing overlap in threads
    (``options.pipeline_depth``; see :class:`FrameStage`); the writing stays in the
    calling thread, in input order. Ctrl-C stops after the frame being written and still
    closes ``dst`` properly (``summary.interrupted``); so does an input that turns out
    truncated (``summary.error``, after every frame before the damage). An exception in a
    worker thread is raised here. ``on_frame(n)`` is called after the n-th frame is written
    (progress hooks, tests), in the calling thread; a KeyboardInterrupt it raises stops the
    run like Ctrl-C. Raises :class:`BagError` before writing anything when ``src`` cannot be
    opened, no camera is found, or ``dst`` exists.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    options = options or ProcessOptions()
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise BagError(f"output {dst} exists; rosbag2 bags are never overwritten "
                       "(remove it or choose another name)")
    with open_bag(src) as reader:
        topics = bag_topics(reader)
        streams = select_cameras(topics, image_topics, camera_info_topics)
        named = [("", s) for s in streams]
        if tuple(options.cameras) != SINGLE_CAMERA:
            named = match_cameras(streams, options.cameras)
            streams = [s for _, s in named]
        summary = ProcessSummary(src, dst, streams)
        cams = {s.image_topic: _Camera(s, options, name) for name, s in named}
        produced = {t for s in streams for t in s.outputs.values()}
        if options.fused:
            produced |= set(FUSED_OUTPUTS)
        if options.keep_input and (clash := sorted(produced & set(topics))):
            raise BagError(f"--keep-input: input topics {', '.join(clash)} have the names of "
                           "outputs; process a bag without them or drop --keep-input")
        recording = read_ahead(reader, cams, summary, src, options.grid)
        wanted = set(cams)
        conns = [c for c in reader.connections if options.keep_input or c.topic in wanted]
        stage = (CycleStage(engine, options, recording, summary, len(streams))
                 if options.fused else FrameStage(engine, options, recording, summary))
        total = sum(s.count for s in streams)
        bar = tqdm(total=total, unit="frame", desc="process", disable=not progress,
                   dynamic_ncols=True, file=sys.stderr)
        # Created right before the try that closes it: a stop signal cannot land between.
        writer = BagWriter(dst, custom_data=custom_data,
                           qos=output_qos(options.output_reliability, options.output_depth))
        t0 = time.perf_counter()
        try:
            with logging_redirect_tqdm():  # warnings print above the bar, not through it
                source = read_items(reader, conns, cams, options, src)
                # Leaving this block stops and joins the threads, before the reader closes.
                with overlapped(source, stage.steps(), options.pipeline_depth,
                                name="process") as items:
                    _write_items(items, writer, summary, bar, on_frame)
        except KeyboardInterrupt:
            summary.interrupted = True
        except BagWriteError as exc:
            summary.write_error = str(exc)
        except BagError as exc:
            summary.error = str(exc)
        finally:
            summary.seconds = time.perf_counter() - t0
            bar.close()
            try:
                writer.close()
            except BagWriteError as exc:  # not even the closing could be written
                summary.write_error = str(exc)
                summary.unfinished = True
            if writer.write_error is not None and summary.write_error is None:
                summary.write_error = write_failure(writer.write_error, dst)
            summary.kept = writer.frames_kept
            summary.written = Counter({t: n for t, n in writer.counts.items() if t in produced})
    return summary


def _write_items(items: Iterator[Any], writer: BagWriter, summary: ProcessSummary, bar: Any,
                 on_frame: FrameHook | None) -> None:
    """The writer of :func:`process_bag`: every item in input order, in the calling thread.

    A frame's outputs (and, with keep_input, its input copy) are written under
    :func:`hold_stop_signals`, so Ctrl-C never leaves a frame with only some of its outputs; a
    frame is counted in ``summary.frames`` when it is written or listed as bad. Each item
    ends with :meth:`BagWriter.mark`, the point a failed write cuts the bag back to.
    """
    for item in items:
        if isinstance(item, FrameOutput):
            with hold_stop_signals():
                for frame in item.frames:
                    if frame.raw is not None:
                        _copy(writer, frame.conn, frame.raw, frame.log_time, summary)
                for topic, msg, log_time in item.messages:
                    writer.write(topic, msg, log_time)
                for frame in item.frames:
                    summary.frames[frame.cam.stream.image_topic] += 1
                summary.processed += len(item.frames)
            for topic, index, reason in item.no_grid:
                summary.no_grid[topic] += 1
                kind = re.sub(r"[\d.]+", "#", reason)[:60]
                summary.warn(f"no_grid:{topic}:{kind}",
                             f"{topic}: drivable/grid and drivable/boundary not written for "
                             f"frames like #{index}: {reason}")
            bar.update(len(item.frames))
            if on_frame is not None:
                on_frame(summary.processed)
        elif isinstance(item, Undecodable):
            summary.frames[item.bad.topic] += 1
            summary.bad.append(item.bad)
            log.debug("bad frame: %s", item.bad.describe())
            if item.raw is not None:
                _copy(writer, item.conn, item.raw, item.bad.log_time, summary)
            bar.set_postfix(bad=len(summary.bad), refresh=False)
            bar.update(1)
        elif isinstance(item, Passthrough):
            _copy(writer, item.conn, item.raw, item.log_time, summary)
        else:
            raise TypeError(f"process: the middle stage yielded {type(item).__name__}, not a "
                            "FrameOutput, Undecodable or Passthrough")
        writer.mark(summary.processed)


def _copy(writer: BagWriter, conn: Any, raw: bytes, log_time: int,
          summary: ProcessSummary) -> None:
    msgdef = conn.msgdef.data if getattr(conn.msgdef, "data", "") else None
    try:
        writer.write_raw(conn.topic, conn.msgtype, raw, log_time,
                         qos=conn.ext.offered_qos_profiles or None, msgdef=msgdef,
                         digest=conn.digest or None)
        summary.copied += 1
    except BagWriteError:
        raise
    except BagError as exc:
        summary.warn(f"copy:{conn.topic}", f"{exc}; not copied")


__all__ = [
    "FUSED_OUTPUTS",
    "CycleStage",
    "DecodedFrame",
    "FrameOutput",
    "FrameStage",
    "Passthrough",
    "Undecodable",
    "process_bag",
    "read_items",
]
