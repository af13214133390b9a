"""Reading rosbag2 bags without ROS: open them, list their cameras, decode their frames.

``process``, ``process-many``, ``play`` and the demo read bags through here, with
``rosbags`` (``.mcap`` and ``.db3``, bag directories or single files, from Foxy to today).
A bag that cannot be read becomes a :class:`~seg_perception.offline.topics.BagError` that
names it and the likely cause (one line, not a traceback from a storage plugin), and an
.mcap cut off by a recorder that was killed is read up to the cut (through
:mod:`seg_perception.offline.mcap_prefix`). Which image topics are processed, and with
which camera_info, is decided here too (:func:`select_cameras`, :func:`match_cameras`).
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seg_perception.offline.mcap_prefix import McapPrefixReader, expected_counts_from_metadata
from seg_perception.offline.topics import (
    CAMERA_INFO,
    COMPRESSED,
    IMAGE_TYPES,
    OUTPUT_TYPES,
    RAW,
    BagError,
    camera_namespace,
    output_topic,
    typestore,
)
from seg_perception.runtime.image_codec import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_compressed,
    decode_raw,
)

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.rosbag2 import Reader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BagTopic:
    """One topic of a bag: name, type, message count and the QoS it was recorded with."""

    name: str
    msgtype: str
    count: int
    qos: tuple[Any, ...] = ()


def _bag_hint(path: Path, exc: BaseException, midway: bool = False) -> str:
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    suffix = path.suffix if path.is_file() else ""
    if path.is_dir():
        files = [p.suffix for p in path.iterdir() if p.suffix in (".mcap", ".db3")]
        suffix = files[0] if files else suffix
    if midway:
        hint = "the data is corrupt or cut off from here on"
    elif suffix == ".mcap":
        hint = ("the file is truncated or corrupt (a recording that was not closed "
                "cleanly lacks its summary; `mcap recover` can repair it)")
    elif suffix == ".db3":
        hint = "the SQLite file is truncated, corrupt or not a rosbag2 database"
    else:
        hint = "expected a rosbag2 directory (metadata.yaml) or a .mcap/.db3 file"
    return f"{text}; {hint}"


def _single_mcap(path: Path) -> Path | None:
    """The bag's .mcap file: ``path`` itself, or the only .mcap in the bag directory."""
    if path.is_file():
        return path if path.suffix == ".mcap" else None
    files = sorted(path.glob("*.mcap")) if path.is_dir() else []
    return files[0] if len(files) == 1 else None


def _open_mcap_prefix(path: Path) -> McapPrefixReader | None:
    """The readable prefix of a cut-off .mcap (no summary, no footer), or None when the
    file is not one (then the original error stands)."""
    mcap = _single_mcap(path)
    if mcap is None:
        return None
    expected = expected_counts_from_metadata(path) if path.is_dir() else {}
    reader = McapPrefixReader(mcap, expected,
                              error=lambda text: BagError(f"bag {path} is incomplete: {text}"))
    try:
        reader.open()
    except Exception as exc:  # not even a readable start: the original error is clearer
        log.debug("%s: no readable prefix either: %s", mcap, exc)
        reader.close()
        return None
    if reader.truncation is None or not reader.connections:
        reader.close()
        return None
    cut = reader.truncation
    log.warning("bag %s: %s is cut off at byte %d of %d (no summary: not closed cleanly); "
                "reading the %d messages before the cut", path, mcap.name, cut.offset,
                cut.file_size, reader.message_count)
    return reader


@contextlib.contextmanager
def open_bag(path: str | Path) -> Iterator[Reader]:
    """Open a rosbag2 bag (directory, ``.mcap`` or ``.db3``) for reading.

    Any failure to open becomes a :class:`BagError` naming the bag and the likely cause, so
    callers can show one line instead of a traceback from deep inside the storage plugin.
    An .mcap that was never closed (a recorder killed, a copy cut short: no summary) reads
    as its complete records, like a damaged .db3 does: one warning says so, and iterating
    its messages ends with an error saying where it was cut and what is known to be lost.
    """
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # ReaderError, OSError, struct/apsw/yaml errors: all "unreadable"
        prefix = _open_mcap_prefix(path)
        if prefix is None:
            raise BagError(f"cannot read bag {path}: {_bag_hint(path, exc)}") from exc
        reader = prefix
    try:
        yield reader
    finally:
        with contextlib.suppress(Exception):
            reader.close()


def bag_topics(reader: Reader) -> dict[str, BagTopic]:
    """Topics of an open bag by name (first type wins where a topic has several)."""
    topics: dict[str, BagTopic] = {}
    for conn in reader.connections:
        qos = tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ())
        old = topics.get(conn.topic)
        if old is None:
            topics[conn.topic] = BagTopic(conn.topic, conn.msgtype, conn.msgcount, qos)
        elif old.msgtype == conn.msgtype:
            topics[conn.topic] = BagTopic(conn.topic, conn.msgtype, old.count + conn.msgcount,
                                          old.qos + qos)
    return topics


def guarded_messages(messages: Iterator[tuple[Connection, int, bytes]],
                     path: Path) -> Iterator[tuple[Connection, int, bytes]]:
    """Re-raise storage errors met while iterating as :class:`BagError` (truncated data)."""
    count = 0
    while True:
        try:
            item = next(messages)
        except StopIteration:
            return
        except (KeyboardInterrupt, BagError):  # BagError: a cut-off .mcap, already explained
            raise
        except Exception as exc:
            raise BagError(f"bag {path} is unreadable after {count} messages: "
                           f"{_bag_hint(path, exc, midway=True)}") from exc
        count += 1
        yield item


@dataclass(frozen=True)
class CameraStream:
    """One camera to process: its image topic, transport, output namespace, camera_info."""

    image_topic: str
    transport: str  # "raw" or "compressed"
    namespace: str
    camera_info_topic: str | None
    count: int = 0

    def output(self, name: str) -> str:
        """Absolute topic of output ``name`` (e.g. ``overlay``) for this camera."""
        return output_topic(self.namespace, name)

    @property
    def outputs(self) -> dict[str, str]:
        """Relative output name -> absolute topic, every output this camera may write."""
        return {name: self.output(name) for name in OUTPUT_TYPES}


def select_cameras(
    topics: dict[str, BagTopic],
    image_topics: Sequence[str] | None = None,
    camera_info_topics: Sequence[str] | None = None,
) -> list[CameraStream]:
    """Pick the cameras to process and pair each with its camera_info topic.

    Default: every Image/CompressedImage topic; where a camera has both a raw and a
    compressed topic only the raw one is used. Explicit topics must exist and be images.
    ``camera_info_topics`` pairs with the chosen image topics by position (one for each);
    by default ``<namespace>/camera_info`` is used when it exists.
    Raises :class:`BagError` for unknown topics and for cameras whose outputs would collide.
    """
    images = {n: t for n, t in topics.items() if t.msgtype in IMAGE_TYPES}
    listing = ", ".join(f"{n} ({t.msgtype})" for n, t in sorted(images.items())) or "none"
    if image_topics:
        chosen = []
        for name in image_topics:
            if name not in topics:
                raise BagError(f"image topic {name} is not in the bag; image topics: {listing}")
            if name not in images:
                raise BagError(f"topic {name} is {topics[name].msgtype}, not an image; image "
                               f"topics: {listing}")
            chosen.append(name)
    else:
        if not images:
            raise BagError("the bag has no sensor_msgs/Image or CompressedImage topic; "
                           f"topics: {', '.join(sorted(topics)) or 'none'}")
        chosen = sorted(images)
        raw_ns = {camera_namespace(n) for n in chosen if images[n].msgtype == RAW}
        skipped = [n for n in chosen
                   if images[n].msgtype == COMPRESSED and camera_namespace(n) in raw_ns]
        for name in skipped:
            log.info("%s skipped: the raw image of the same camera is processed", name)
        chosen = [n for n in chosen if n not in skipped]

    by_ns: dict[str, list[str]] = {}
    for name in chosen:
        by_ns.setdefault(camera_namespace(name), []).append(name)
    clashes = {ns: names for ns, names in by_ns.items() if len(names) > 1}
    if clashes:
        ns, names = next(iter(clashes.items()))
        raise BagError(f"image topics {', '.join(names)} would all write to namespace "
                       f"'{ns or '/'}'; pick one camera per namespace with --image-topic")

    infos: list[str | None]
    if camera_info_topics:
        if len(camera_info_topics) != len(chosen):
            raise BagError(f"{len(camera_info_topics)} camera_info topics for {len(chosen)} "
                           "cameras: give one per --image-topic, in the same order")
        infos = list(camera_info_topics)
        for name in infos:
            if name not in topics or topics[name].msgtype != CAMERA_INFO:
                found = topics[name].msgtype if name in topics else "absent"
                raise BagError(f"camera_info topic {name} is not a CameraInfo topic of the bag "
                               f"({found})")
    else:
        infos = []
        for name in chosen:
            guess = output_topic(camera_namespace(name), "camera_info")
            ok = guess in topics and topics[guess].msgtype == CAMERA_INFO
            infos.append(guess if ok else None)

    return [
        CameraStream(name, IMAGE_TYPES[images[name].msgtype], camera_namespace(name), info,
                     images[name].count)
        for name, info in zip(chosen, infos, strict=True)
    ]


def match_cameras(streams: Sequence[CameraStream], names: Sequence[str]
                  ) -> list[tuple[str, CameraStream]]:
    """The stream of each camera of ``cameras``, in the order of ``names``: camera ``X`` is
    the image topic whose namespace ends in ``X`` (``/X/image_raw``,
    ``/car/X/image/compressed``), as ``seg_node`` with ``cameras: [X, ...]`` subscribes
    ``X/image`` (remapped to the recorded topic). Streams of no camera are not processed.
    Raises :class:`BagError` for a camera with no topic or several."""
    listing = ", ".join(s.image_topic for s in streams) or "none"
    out = []
    for name in names:
        found = [s for s in streams if s.namespace.rsplit("/", 1)[-1] == name]
        if not found:
            raise BagError(f"camera {name} of cameras has no image topic in a namespace "
                           f".../{name} in the bag; image topics: {listing}")
        if len(found) > 1:
            raise BagError(f"camera {name} of cameras matches several image topics "
                           f"({', '.join(s.image_topic for s in found)}); choose with "
                           "--image-topic")
        out.append((name, found[0]))
    for s in streams:
        if not any(s is st for _, st in out):
            log.info("%s skipped: not in the namespace of a camera of cameras (%s)",
                     s.image_topic, ", ".join(names))
    return out


@dataclass(frozen=True)
class BadFrame:
    """A frame that produced no output: where it is and why."""

    topic: str
    index: int  # 0-based position among the topic's messages, in log-time order
    stamp: tuple[int, int] | None  # header stamp (sec, nanosec) when it could be read
    log_time: int  # ns
    reason: str

    def describe(self) -> str:
        stamp = f"{self.stamp[0]}.{self.stamp[1]:09d}" if self.stamp else "unreadable"
        return f"{self.topic} #{self.index} (stamp {stamp}, log time {self.log_time}): " \
               f"{self.reason}"


def cdr_stamp(raw: bytes | memoryview) -> tuple[int, int] | None:
    """Header stamp from raw CDR bytes (a stamped message starts with it) or None."""
    buf = bytes(raw[:12])
    if len(buf) < 12:
        return None
    order = "<" if buf[1] == 1 else ">"
    sec, nanosec = struct.unpack(order + "iI", buf[4:12])
    return (sec, nanosec) if nanosec < 1_000_000_000 else None


def decode_frame(msgtype: str, raw: bytes | memoryview,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Any, np.ndarray]:
    """Deserialise an image message and decode its pixels: ``(header, rgb)``.

    Raises :class:`ImageDecodeError` for anything that stops the frame from being used,
    a message that does not deserialise (truncated, wrong type) included, and an image of
    more than ``max_pixels`` pixels.
    """
    try:
        msg = typestore().deserialize_cdr(raw, msgtype)
    except Exception as exc:  # SerdeError, struct.error, IndexError ...
        raise ImageDecodeError(f"cannot deserialise {msgtype}: {exc}",
                               kind="message.undeserialisable") from exc
    if msgtype == COMPRESSED:
        rgb = decode_compressed(msg.format, msg.data, max_pixels)
    else:
        # copy: the payload is a read-only view of the bag buffer; the engine wants its own.
        rgb = decode_raw(msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian,
                         msg.data, copy=True, max_pixels=max_pixels)
    return msg.header, rgb


@dataclass
class Frame:
    """A decoded frame of a bag (``rgb`` None and ``error`` set when it cannot be used)."""

    topic: str
    index: int
    log_time: int
    header: Any | None
    rgb: np.ndarray | None
    error: str | None = None


def iter_frames(path: str | Path, image_topics: Sequence[str] | None = None) -> Iterator[Frame]:
    """Decoded frames of a bag's image topics (default: all), in log-time order."""
    with open_bag(path) as reader:
        cams = select_cameras(bag_topics(reader), image_topics)
        wanted = {c.image_topic for c in cams}
        conns = [c for c in reader.connections if c.topic in wanted]
        counts: Counter[str] = Counter()
        for conn, log_time, raw in guarded_messages(reader.messages(conns), Path(path)):
            index = counts[conn.topic]
            counts[conn.topic] += 1
            try:
                header, rgb = decode_frame(conn.msgtype, raw)
            except ImageDecodeError as exc:
                yield Frame(conn.topic, index, log_time, None, None, str(exc))
                continue
            yield Frame(conn.topic, index, log_time, header, rgb)


__all__ = [
    "BadFrame",
    "BagTopic",
    "CameraStream",
    "Frame",
    "bag_topics",
    "cdr_stamp",
    "decode_frame",
    "guarded_messages",
    "iter_frames",
    "match_cameras",
    "open_bag",
    "select_cameras",
]
