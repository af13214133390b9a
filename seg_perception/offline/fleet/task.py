"""One bag's task: process it as ``process`` does, into a name renamed only when complete.

Split from the driver's side (:mod:`.archive`, :mod:`.manifest`): :func:`run_task` is what
a worker runs for each bag (:func:`~seg_perception.offline.process.process_bag`, exactly as
``process`` does) into ``DIR/.fleet/incomplete/<name>.<id>``, renamed to ``DIR/<name>``
only when every frame was handled, so a crash or Ctrl-C never leaves a half bag under a
final name. It never raises for a bad bag: the :class:`TaskResult` says what happened.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from seg_perception.offline.fleet.inputs import BagInput
from seg_perception.offline.fleet.manifest import DONE, FAILED, PARTIAL
from seg_perception.offline.fleet.outdir import INCOMPLETE, WORK_DIR

if TYPE_CHECKING:
    from seg_perception.offline.job import ProcessOptions
    from seg_perception.runtime.engine import SegEngine

log = logging.getLogger(__name__)

MAX_BAD_LISTED = 20  # bad frames described per bag in the manifest (the count is exact)


@dataclass(frozen=True)
class TaskSpec:
    """What every task of a run shares: output folder and the options of ``process``."""

    out_dir: Path
    options: ProcessOptions
    image_topics: tuple[str, ...] | None = None
    camera_info_topics: tuple[str, ...] | None = None


@dataclass
class TaskResult:
    """What a worker reports for one bag (becomes the bag's manifest record)."""

    name: str
    status: str
    frames_total: int = 0
    frames_read: int = 0
    frames_processed: int = 0
    bad_frames: int = 0
    bad: list[str] = field(default_factory=list)
    messages_written: int = 0
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    worker: str = ""

    @property
    def fps(self) -> float:
        return self.frames_processed / self.seconds if self.seconds > 0 else 0.0


class Stopped(KeyboardInterrupt):
    """Raised from the frame hook when the driver asked the worker to stop."""


ProgressHook = Callable[[int, int], None]  # (frames handled, frames total)


def run_task(bag: BagInput, spec: TaskSpec, engine: SegEngine,
             custom_data: dict[str, str] | None = None, stop: threading.Event | None = None,
             on_progress: ProgressHook | None = None) -> TaskResult:
    """Process one bag as ``process`` does, into a temporary name renamed when complete.

    Never raises for a bad bag: the result's status is DONE, FAILED (``error`` says why; no
    output is left) or PARTIAL (``stop`` was set; the partial output is removed).
    """
    from seg_perception.offline.process import process_bag
    from seg_perception.offline.reader import bag_topics, open_bag, select_cameras
    from seg_perception.offline.topics import BagError

    worker = f"{socket.gethostname()}:{os.getpid()}"
    result = TaskResult(bag.name, FAILED, worker=worker)
    if stop is not None and stop.is_set():
        result.status = PARTIAL
        return result
    if not bag.path.exists():
        result.error = (f"bag {bag.path} does not exist on {socket.gethostname()} (on a "
                        "cluster, bags must be at the same path on every node)")
        return result
    # A folder of its own per attempt; the bag inside has its final name, because rosbag2
    # names the storage file after the bag folder (<name>/<name>.mcap, as `process` writes).
    attempt = spec.out_dir / WORK_DIR / INCOMPLETE / f"{bag.name}.{uuid.uuid4().hex[:8]}"
    tmp = attempt / bag.name
    t0 = time.perf_counter()
    try:
        with open_bag(bag.path) as reader:
            cams = select_cameras(bag_topics(reader), spec.image_topics,
                                  spec.camera_info_topics)
        result.frames_total = sum(c.count for c in cams)
        if on_progress is not None:
            on_progress(0, result.frames_total)

        def hook(processed: int) -> None:
            if on_progress is not None:
                on_progress(processed, result.frames_total)
            if stop is not None and stop.is_set():
                raise Stopped

        attempt.mkdir(parents=True, exist_ok=True)
        summary = process_bag(bag.path, tmp, engine, image_topics=spec.image_topics,
                              camera_info_topics=spec.camera_info_topics,
                              options=spec.options, progress=False, on_frame=hook,
                              custom_data=custom_data)
    except BagError as exc:
        result.error = str(exc)
        _discard(attempt)
        return result
    except Exception as exc:  # a bug or a decoder crash fails this bag only
        log.exception("bag %s failed", bag.path)
        result.error = f"{type(exc).__name__}: {exc}"
        _discard(attempt)
        return result
    finally:
        result.seconds = time.perf_counter() - t0
    result.frames_read = sum(summary.frames.values())
    result.frames_processed = summary.processed
    result.bad_frames = len(summary.bad)
    result.bad = [b.describe() for b in summary.bad[:MAX_BAD_LISTED]]
    result.messages_written = sum(summary.written.values())
    result.warnings = list(summary.warnings)
    result.seconds = summary.seconds
    if on_progress is not None:
        on_progress(result.frames_read, result.frames_total)
    if summary.write_error:  # a full disk, an I/O error: this bag fails, nothing is kept
        result.error = f"{summary.write_error} (after {summary.processed} of " \
                       f"{result.frames_total} frames processed; no output kept)"
    elif summary.interrupted:
        result.status = PARTIAL
    elif summary.error:
        result.error = f"{summary.error} (after {result.frames_read} of {result.frames_total} " \
                       "frames; no output kept)"
    else:
        try:
            _put_in_place(tmp, spec.out_dir / bag.name)
            result.status = DONE
        except OSError as exc:
            result.error = f"cannot move the finished output to {spec.out_dir / bag.name}: {exc}"
    _discard(attempt)
    return result


def _discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _put_in_place(tmp: Path, final: Path) -> None:
    """Rename the finished output to its final name (replacing an older output of that bag:
    the manifest says RUNNING until the driver records the result)."""
    if final.exists():
        old = tmp.with_name(tmp.name + ".old")  # inside the attempt's folder, removed with it
        os.rename(final, old)
        os.rename(tmp, final)
        _discard(old)
    else:
        os.rename(tmp, final)


__all__ = [
    "MAX_BAD_LISTED",
    "ProgressHook",
    "Stopped",
    "TaskResult",
    "TaskSpec",
    "run_task",
]
