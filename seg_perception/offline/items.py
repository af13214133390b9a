"""What flows through ``process``'s overlapped frame loop, and its reader.

:func:`~seg_perception.offline.process.process_bag` runs ``read -> segment -> outputs ->
write`` (:mod:`seg_perception.runtime.overlap`): :func:`read_items` yields the bag's messages
in log-time order as :class:`DecodedFrame`, :class:`Undecodable` and (keep_input)
:class:`Passthrough` items; the stage (:mod:`.stage`, the cycle runner's bag adapter) turns
decoded frames into one :class:`FrameOutput` per cycle and passes the others on in order;
the writer writes them in the calling thread. Each stage step runs in a thread of its own
(``pipeline_depth`` > 0): the engine's forward pass in one (the pass holds no GIL), its
postprocessing, the mappers and the messages in the other (their numpy work does).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from seg_perception.offline.job import CameraState, ProcessOptions
from seg_perception.offline.reader import BadFrame, cdr_stamp, decode_frame, guarded_messages
from seg_perception.offline.topics import IMAGE_TYPES
from seg_perception.runtime.image_codec import ImageDecodeError

if TYPE_CHECKING:
    from pathlib import Path

    from rosbags.rosbag2 import Reader


@dataclass
class DecodedFrame:
    """A frame of a processed camera, decoded: what the middle stage gets.

    ``index`` is its 0-based position among the topic's messages; ``raw`` (the serialised
    input, for keep_input) is None unless kept."""

    cam: CameraState
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


def read_items(reader: Reader, conns: list[Any], cams: dict[str, CameraState],
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


__all__ = ["DecodedFrame", "FrameOutput", "Passthrough", "Undecodable", "read_items"]
