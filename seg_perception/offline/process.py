"""``process``: the node's frame pipeline on every frame of a bag, the outputs to another.

The live node drops stale frames to bound latency; offline there is no deadline, so every
frame of a recording gets exactly one message on every output topic, stamped with the
input's header and written at the input's log time. That makes the output bag line up with
the input frame for frame (``ros2 bag play`` of both shows matching pairs).

:func:`process_bag` reads the bag (:mod:`~seg_perception.offline.reader`), runs the frames
through the cycle runner's bag adapter (:mod:`.stage`) in threads that overlap
(:mod:`.items` says what flows between them), and writes in input order
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seg_perception.offline.items import (
    FrameOutput,
    Passthrough,
    Undecodable,
    read_items,
)
from seg_perception.offline.job import CameraState as _Camera
from seg_perception.offline.job import ProcessOptions, ProcessSummary, read_ahead
from seg_perception.offline.reader import (
    bag_topics,
    match_cameras,
    open_bag,
    select_cameras,
)
from seg_perception.offline.stage import ProcessStage
from seg_perception.offline.topics import (
    FUSED_OUTPUTS,
    BagError,
    map_qos,
    map_topic,
    output_qos,
)
from seg_perception.offline.writer import BagWriteError, BagWriter, write_failure
from seg_perception.runtime.config import SINGLE_CAMERA
from seg_perception.runtime.overlap import overlapped
from seg_perception.runtime.signals import hold_stop_signals

if TYPE_CHECKING:

    from seg_perception.runtime.engine import SegEngine

log = logging.getLogger(__name__)


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
    the node fuses them (:mod:`.stage` gives the cycle rule; ``summary.cycles``,
    ``summary.fused``, ``summary.left_out`` by camera namespace). Reading and decoding,
    the network, the rest of the pipeline and writing overlap in threads
    (``options.pipeline_depth``; see :mod:`.items`); the writing stays in the
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
        maps = set()  # drivable/map topics (written where the recording's tf has map.frame)
        if options.grid:
            maps = ({map_topic("")} if options.fused
                    else {map_topic(s.namespace) for s in streams})
        produced |= maps
        if options.keep_input and (clash := sorted(produced & set(topics))):
            raise BagError(f"--keep-input: input topics {', '.join(clash)} have the names of "
                           "outputs; process a bag without them or drop --keep-input")
        recording = read_ahead(reader, cams, summary, src, options.grid)
        wanted = set(cams)
        conns = [c for c in reader.connections if options.keep_input or c.topic in wanted]
        stage = ProcessStage(engine, options, recording, summary, len(streams))
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
                    _write_items(items, writer, summary, bar, on_frame, maps)
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
                 on_frame: FrameHook | None, latched: set[str] = frozenset()) -> None:
    """The writer of :func:`process_bag`: every item in input order, in the calling thread.

    A frame's outputs (and, with keep_input, its input copy) are written under
    :func:`hold_stop_signals`, so Ctrl-C never leaves a frame with only some of its outputs; a
    frame is counted in ``summary.frames`` when it is written or listed as bad. Each item
    ends with :meth:`BagWriter.mark`, the point a failed write cuts the bag back to.
    ``latched`` topics (drivable/map) are recorded reliable and transient local, as the node
    offers them, so a player republishes them latched.
    """
    latched_qos = map_qos()
    for item in items:
        if isinstance(item, FrameOutput):
            with hold_stop_signals():
                for frame in item.frames:
                    if frame.raw is not None:
                        _copy(writer, frame.conn, frame.raw, frame.log_time, summary)
                for topic, msg, log_time in item.messages:
                    writer.write(topic, msg, log_time, latched_qos if topic in latched else None)
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


__all__ = ["process_bag"]
