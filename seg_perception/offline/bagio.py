"""rosbag2 in, rosbag2 out, without ROS: the frame-exact offline path behind ``process``.

The live node drops stale frames to bound latency; offline there is no deadline, so every
frame of a recording gets exactly one message on every output topic, stamped with the
input's header and written at the input's log time. That makes the output bag line up with
the input frame for frame (``ros2 bag play`` of both shows matching pairs).

Bags are read and written with ``rosbags`` (pure Python: ``.mcap`` and ``.db3``, bag
directories or single files, from Foxy to today) and (de)serialised with its ROS 2 type
store, so nothing here needs a ROS install or imports rclpy.

Output topics. Each camera's outputs go to the namespace of its image topic: the topic's
parent after dropping an image_transport ``/compressed`` suffix. ``/cam_front/image_raw``
and ``/cam_front/image_raw/compressed`` both give ``/cam_front``, whose outputs are
``/cam_front/labels``, ``/cam_front/overlay``, ... (the names of CONTRACT.md); a top-level
``/image`` gives ``/labels``, ``/overlay``, ... exactly as a node without namespace would.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import signal
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seg_perception.offline.mcap_prefix import McapPrefixReader, expected_counts_from_metadata
from seg_perception.runtime import messages
from seg_perception.runtime.config import DEFAULTS, SINGLE_CAMERA, PipelineConfig
from seg_perception.runtime.geometry import CameraCalibration, CameraModel, GridSpec, Transform
from seg_perception.runtime.image_codec import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_compressed,
    decode_raw,
    encode_compressed,
)
from seg_perception.runtime.messages import MessageKit
from seg_perception.runtime.overlap import overlapped
from seg_perception.runtime.pipeline import GRID_OUTPUTS as _GRID
from seg_perception.runtime.pipeline import (
    IMAGE_ENCODINGS,
    CameraFrame,
    CameraInfoBuffer,
    FramePipeline,
    FrameResult,
    GridFusion,
    resolve_pose,
)
from seg_perception.runtime.signal_stack import ensure_signal_stack
from seg_perception.runtime.tf import TransformBuffer, TransformError

if TYPE_CHECKING:
    from rosbags.interfaces import Connection, Qos
    from rosbags.rosbag2 import Reader

    from seg_perception.runtime.engine import SegEngine

log = logging.getLogger(__name__)

RAW = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
OCCUPANCY_GRID = messages.OCCUPANCY_GRID
POLYGON_STAMPED = messages.POLYGON_STAMPED
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TF_TOPICS = {"/tf": False, "/tf_static": True}  # topic -> static
IMAGE_TYPES = {RAW: "raw", COMPRESSED: "compressed"}

#: Image outputs (relative names from CONTRACT.md) and their encodings.
IMAGE_OUTPUTS: dict[str, str] = dict(IMAGE_ENCODINGS)
#: Bird's-eye outputs, written when the camera's intrinsics and pose are known.
GRID_OUTPUTS: dict[str, str] = dict(zip(_GRID, (OCCUPANCY_GRID, POLYGON_STAMPED), strict=True))
OUTPUT_TYPES: dict[str, str] = {**dict.fromkeys(IMAGE_OUTPUTS, RAW), **GRID_OUTPUTS}

#: rosbag2 metadata version written: 8 keeps Humble/Iron able to read our bags (9 changed the
#: QoS serialisation that older rosbag2 releases cannot parse); rosbags reads every version.
WRITE_VERSION = 8


class BagError(RuntimeError):
    """A bag cannot be read or written; the message says which bag and why."""


class BagWriteError(BagError):
    """Writing the output bag failed part-way (disk full, I/O error, read-only, file too
    large, quota): the writing ended, the bag was closed with what reached it whole."""


def _write_failure(exc: OSError, path: Path) -> str:
    """``writing FILE failed: No space left on device (ENOSPC)``: what failed, where."""
    name = errno.errorcode.get(exc.errno or 0, "")
    return (f"writing {exc.filename or path} failed: {exc.strerror or exc}"
            + (f" ({name})" if name else ""))


@functools.cache
def typestore() -> Any:
    """The ROS 2 type store used for every (de)serialisation (Jazzy: current LTS).

    Jazzy's store holds sensor_msgs, nav_msgs, geometry_msgs, diagnostic_msgs and
    rosgraph_msgs; their CDR layouts are the same in every ROS 2 distro, so bags from older
    distros deserialise with it too.
    """
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def _types() -> Any:
    return typestore().types


# --- topic naming ----------------------------------------------------------------------------

def camera_namespace(image_topic: str) -> str:
    """The namespace a camera's outputs go to: the image topic's parent.

    A trailing image_transport ``compressed`` segment is dropped first, so the raw and the
    compressed topic of one camera share a namespace. Returns ``""`` for a top-level topic.
    """
    parts = [p for p in image_topic.split("/") if p]
    if len(parts) > 1 and parts[-1] == "compressed":
        parts = parts[:-1]
    return "/" + "/".join(parts[:-1]) if len(parts) > 1 else ""


def output_topic(namespace: str, name: str) -> str:
    """Absolute output topic ``name`` (e.g. ``drivable/grid``) under ``namespace``."""
    return f"{namespace.rstrip('/')}/{name}"


# --- reading ---------------------------------------------------------------------------------

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


def _guarded(messages: Iterator[tuple[Connection, int, bytes]],
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


def _cdr_stamp(raw: bytes | memoryview) -> tuple[int, int] | None:
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
        for conn, log_time, raw in _guarded(reader.messages(conns), Path(path)):
            index = counts[conn.topic]
            counts[conn.topic] += 1
            try:
                header, rgb = decode_frame(conn.msgtype, raw)
            except ImageDecodeError as exc:
                yield Frame(conn.topic, index, log_time, None, None, str(exc))
                continue
            yield Frame(conn.topic, index, log_time, header, rgb)


# --- messages (rosbags types) ----------------------------------------------------------------

def kit() -> MessageKit:
    """Builds type-store messages for :mod:`seg_perception.runtime.messages`."""
    types = _types()
    return MessageKit(lambda name, **fields: types[name](**fields), lambda a: a)


def make_header(sec: int, nanosec: int, frame_id: str) -> Any:
    """A std_msgs/Header for the type store."""
    return messages.header(kit(), sec, nanosec, frame_id)


def image_msg(arr: np.ndarray, encoding: str, header: Any) -> Any:
    """sensor_msgs/Image holding ``arr`` (H, W) mono8 or (H, W, 3) rgb8/bgr8, no row padding."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    return _types()[RAW](
        header=header, height=arr.shape[0], width=arr.shape[1], encoding=encoding,
        is_bigendian=0, step=arr.shape[1] * channels, data=arr.reshape(-1))


def raw_image_msg(data: bytes | np.ndarray, encoding: str, width: int, height: int, step: int,
                  header: Any) -> Any:
    """sensor_msgs/Image from an already encoded payload (any encoding, padding kept)."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else data
    return _types()[RAW](header=header, height=height, width=width, encoding=encoding,
                         is_bigendian=0, step=step, data=np.asarray(buf, np.uint8).reshape(-1))


def compressed_msg(rgb: np.ndarray, header: Any, fmt: str = "jpeg", quality: int = 90) -> Any:
    """sensor_msgs/CompressedImage (JPEG/PNG) as image_transport's compressed plugin writes."""
    data, fmt_str = encode_compressed(rgb, fmt, quality)
    return _types()[COMPRESSED](header=header, format=fmt_str,
                                data=np.frombuffer(data, np.uint8))


def camera_info_msg(model: CameraModel, header: Any, binning: tuple[int, int] = (0, 0),
                    roi: tuple[int, int, int, int] = (0, 0, 0, 0),
                    p: np.ndarray | None = None, r: np.ndarray | None = None) -> Any:
    """sensor_msgs/CameraInfo for a camera model (R identity and P = [K | 0] unless given)."""
    t = _types()
    k = np.asarray(model.K, np.float64)
    if p is None:
        p = np.zeros(12)
        p[[0, 1, 2, 4, 5, 6, 10]] = k[[0, 1, 2, 3, 4, 5, 8]]
    return t[CAMERA_INFO](
        header=header, height=model.height, width=model.width,
        distortion_model=model.distortion_model, d=np.asarray(model.D, np.float64), k=k,
        r=np.eye(3).reshape(-1) if r is None else np.asarray(r, np.float64).reshape(-1),
        p=np.asarray(p, np.float64).reshape(-1), binning_x=binning[0], binning_y=binning[1],
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=roi[0], y_offset=roi[1],
                                                  width=roi[2], height=roi[3],
                                                  do_rectify=False))


def tf_msg(transforms: Sequence[tuple[str, str, Transform]], sec: int = 0,
           nanosec: int = 0) -> Any:
    """tf2_msgs/TFMessage of (parent, child, transform) entries, all stamped (sec, nanosec)."""
    t = _types()
    out = []
    for parent, child, tr in transforms:
        x, y, z = tr.translation
        qx, qy, qz, qw = tr.quaternion
        out.append(t["geometry_msgs/msg/TransformStamped"](
            header=make_header(sec, nanosec, parent), child_frame_id=child,
            transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                rotation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))))
    return t[TF_MESSAGE](transforms=out)


def grid_msg(grid: np.ndarray, spec: GridSpec, header: Any) -> Any:
    """nav_msgs/OccupancyGrid of an int8 (height, width) grid laid out as GridSpec says."""
    return messages.grid_message(kit(), grid, spec, header)


def polygon_msg(points: np.ndarray, header: Any) -> Any:
    """geometry_msgs/PolygonStamped from (N, 2) x, y points (z = 0, on the ground)."""
    return messages.polygon_message(kit(), points, header)


def output_qos(reliability: str = DEFAULTS["output_qos.reliability"],
               depth: int = DEFAULTS["output_qos.depth"]) -> list[Qos]:
    """The QoS the node offers for its outputs (its output_qos.* parameters)."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)
    rel = QosReliability.BEST_EFFORT if reliability == "best_effort" else QosReliability.RELIABLE
    return [Qos(QosHistory.KEEP_LAST, int(depth), rel, QosDurability.VOLATILE,
                zero, zero, QosLiveliness.AUTOMATIC, zero, False)]


def tf_static_qos() -> list[Qos]:
    """The QoS of /tf_static (tf2's static broadcaster: reliable, transient local), so a
    player republishes it latched."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE,
                QosDurability.TRANSIENT_LOCAL, zero, zero, QosLiveliness.AUTOMATIC, zero,
                False)]


# --- writing ---------------------------------------------------------------------------------

class BagWriter:
    """A rosbag2 bag being written; connections are added on first use of a topic.

    ``path`` is the bag directory to create (rosbag2 layout: ``metadata.yaml`` and
    ``<name>.mcap`` or ``.db3`` inside). :meth:`close` must run for the bag to be readable;
    use it as a context manager. ``qos`` is recorded for topics written without their own
    (default: :func:`output_qos`).
    """

    def __init__(self, path: str | Path, storage: str = "mcap",
                 custom_data: dict[str, str] | None = None,
                 qos: Sequence[Any] | None = None) -> None:
        from rosbags.rosbag2 import StoragePlugin

        from seg_perception.offline.mcap_writer import writer_class

        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"output {self.path} exists; rosbag2 bags are never overwritten "
                           "(remove it or choose another name)")
        plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3,
                  "db3": StoragePlugin.SQLITE3}.get(storage)
        if plugin is None:
            raise BagError(f"storage {storage!r} is not 'mcap' or 'sqlite3'")
        self._writer = writer_class()(self.path, version=WRITE_VERSION, storage_plugin=plugin)
        for key, value in (custom_data or {}).items():
            self._writer.set_custom_data(key, str(value))
        try:
            self._writer.open()
        except Exception as exc:
            if self.path.is_dir():  # made by open(): remove what it left (an empty .mcap)
                import shutil

                shutil.rmtree(self.path, ignore_errors=True)
            raise BagError(f"cannot create output bag {self.path}: {exc}") from exc
        self._storage = self._writer.storage
        self._conns: dict[tuple[str, str], Any] = {}
        self._qos = list(qos) if qos else None
        self.counts: Counter[str] = Counter()
        self.closed = False
        #: the OSError that ended the writing (None: none); the bag is closed valid anyway
        #: where ``frames_kept`` is not None (the lean MCAP writer, see mcap_writer.py)
        self.write_error: OSError | None = None

    def connection(self, topic: str, msgtype: str, qos: Sequence[Any] | None = None,
                   msgdef: str | None = None, digest: str | None = None) -> Any:
        """The connection for ``topic``; created with ``qos`` (default: output_qos())."""
        key = (topic, msgtype)
        conn = self._conns.get(key)
        if conn is None:
            kwargs: dict[str, Any] = {
                "offered_qos_profiles": list(qos or self._qos or output_qos())}
            if msgdef and digest:
                kwargs.update(msgdef=msgdef, rihs01=digest)
            else:
                if msgtype not in typestore().fielddefs:
                    raise BagError(f"{topic}: type {msgtype} is unknown and the bag carries no "
                                   "definition of it")
                kwargs["typestore"] = typestore()
            conn = self._writer.add_connection(topic, msgtype, **kwargs)
            self._conns[key] = conn
        return conn

    def write(self, topic: str, msg: Any, log_time: int, qos: Sequence[Any] | None = None) -> None:
        """Serialise a type-store message and write it at ``log_time`` (ns)."""
        msgtype = msg.__msgtype__
        conn = self.connection(topic, msgtype, qos)
        self._write(conn, int(log_time), typestore().serialize_cdr(msg, msgtype))
        self.counts[topic] += 1

    def write_raw(self, topic: str, msgtype: str, data: bytes | memoryview, log_time: int,
                  qos: Sequence[Any] | None = None, msgdef: str | None = None,
                  digest: str | None = None) -> None:
        """Write already serialised CDR bytes (copying a message from another bag)."""
        conn = self.connection(topic, msgtype, qos, msgdef, digest)
        self._write(conn, int(log_time), data)
        self.counts[topic] += 1

    def _write(self, conn: Any, log_time: int, data: bytes | memoryview) -> None:
        if self.write_error is not None:
            raise BagWriteError(_write_failure(self.write_error, self.path))
        try:
            self._writer.write(conn, log_time, data)
        except OSError as exc:
            self.write_error = exc
            raise BagWriteError(_write_failure(exc, self.path)) from exc

    def mark(self, frames: int) -> None:
        """A frame boundary: every message of the first ``frames`` frames has been written.
        After a write error the bag is cut back to the last such boundary in the file."""
        mark = getattr(self._storage, "mark", None)
        if mark is not None:
            mark(frames)

    @property
    def frames_kept(self) -> int | None:
        """After a write error: the frames (as counted by :meth:`mark`) in the closed bag;
        None without an error, or where the storage cannot say (rosbags' own writer)."""
        return getattr(self._storage, "frames_kept", None)

    def close(self) -> None:
        """Write the index and metadata.yaml; SIGINT is held off so a second Ctrl-C cannot
        leave a bag without its summary. Raises :class:`BagWriteError` when that fails."""
        if self.closed:
            return
        self.closed = True
        with _sigint_deferred():
            try:
                self._writer.close()
            except OSError as exc:
                self.write_error = self.write_error or exc
                raise BagWriteError(_write_failure(exc, self.path)) from exc
            finally:
                abort = getattr(self._storage, "abort", None)
                if self._writer.storage is not None and abort is not None:
                    with contextlib.suppress(OSError):  # a failed close: the reserve goes too
                        abort()
            failure = getattr(self._storage, "failure", None)
            if failure is not None:
                self.write_error = self.write_error or failure
                by_id = {c.id: c.topic for c in self._conns.values()}
                self.counts = Counter({by_id[cid]: n for cid, n in self._writer.counts.items()
                                       if cid in by_id})

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The signals that stop a job: Ctrl-C, and what ``kill``, ``timeout`` and systemd send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _deliver(signum: int, previous: Any) -> None:
    """Act on a held-back signal as ``previous`` (the handler before the block) would."""
    if callable(previous):
        previous(signum, None)
    elif previous == signal.SIG_IGN:
        return
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:  # SIG_DFL of SIGTERM: terminate, as without us
        signal.raise_signal(signum)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block has run, then deliver the first one
    (main thread only): a frame's outputs are written whole or not at all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def catch(signum: int, _frame: Any) -> None:
        caught.append(signum)

    previous = {s: signal.signal(s, catch) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        _deliver(caught[0], previous[caught[0]])


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM for the block (main thread only; elsewhere signals do not
    arrive): closing a bag is never cut short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@dataclass
class StopState:
    """What :func:`stop_signals` saw: the first stop signal (None: none) and how many."""

    signum: int | None = None
    count: int = 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


@contextlib.contextmanager
def stop_signals(finishing: str = "finishing the output") -> Iterator[StopState]:
    """SIGTERM handled like Ctrl-C, and no second signal cuts the finishing short.

    Inside the block the first SIGINT or SIGTERM raises KeyboardInterrupt (the job stops
    after its current step and finishes its output, as after Ctrl-C); every later one is
    ignored, with one line on stderr saying that the output is being finished. Without it,
    SIGTERM kills the process on the spot (an .mcap without summary) and a second Ctrl-C
    raises inside the code that closes the bag. Main thread only. The handlers in place
    before are restored after the block, unless a stop signal came: then the process is on
    its way out and further ones stay ignored, so none can cut its exit short (a traceback
    from interpreter shutdown, or death by SIGTERM instead of the exit status).
    """
    state = StopState()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    ensure_signal_stack()  # after the engine's build: OpenVINO's is too small (signal_stack)

    def handler(signum: int, _frame: Any) -> None:
        state.count += 1
        if state.count == 1:
            state.signum = signum
            raise KeyboardInterrupt
        if state.count == 2:  # os.write: no lock a signal handler could deadlock on
            with contextlib.suppress(OSError):
                os.write(2, f"{signal.Signals(signum).name} again: still {finishing}, "
                            "one moment (ignored)\n".encode())

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield state
    finally:
        for s, old in previous.items():
            signal.signal(s, old if state.count == 0 else signal.SIG_IGN)


# --- processing ------------------------------------------------------------------------------

@dataclass
class ProcessOptions:
    """How ``process`` runs the pipeline: the node's parameters, offline.

    ``config`` holds the parameters of every camera; ``configs`` overrides it per camera
    namespace (a params file's ``/<ns>/seg_node`` section). ``grid`` False writes no drivable
    grid and boundary. ``hfov_deg`` gives a pinhole camera model (principal point at the
    centre) to cameras whose bag has no CameraInfo. ``keep_input`` copies every message of
    the input bag too. ``output_reliability``/``output_depth`` are the QoS recorded for the
    outputs (the node's ``output_qos.*``). ``pipeline_depth`` is how many items may wait
    between two threads of the overlapped frame loop (:func:`process_bag`); 0 runs the
    same loop in the calling thread, one stage after the other.

    ``cameras`` (the node's parameter of that name; default: one unnamed camera) names the
    cameras of a rig: camera ``X`` is the bag's image topic in namespace ``.../X`` (see
    :func:`match_cameras`), their frames are processed cycle by cycle (:class:`CycleStage`)
    and a fused ``/drivable/grid`` and ``/drivable/boundary`` are written per cycle, as
    ``seg_node`` with the same ``cameras`` publishes them. ``camera_configs`` are the
    cameras' own snapshots (their ``X.<name>`` parameters), used where ``configs`` has no
    section for the camera's namespace.
    """

    config: PipelineConfig = field(default_factory=PipelineConfig.from_params)
    configs: dict[str, PipelineConfig] = field(default_factory=dict)
    cameras: tuple[str, ...] = SINGLE_CAMERA
    camera_configs: dict[str, PipelineConfig] = field(default_factory=dict)
    grid: bool = True
    hfov_deg: float | None = None
    keep_input: bool = False
    output_reliability: str = DEFAULTS["output_qos.reliability"]
    output_depth: int = DEFAULTS["output_qos.depth"]
    max_pixels: int | None = DEFAULTS["max_image_pixels"]
    pipeline_depth: int = 2

    def config_for(self, namespace: str, camera: str = "") -> PipelineConfig:
        """The snapshot of the camera in ``namespace`` (named ``camera`` of ``cameras``)."""
        if namespace in self.configs:
            return self.configs[namespace]
        return self.camera_configs.get(camera, self.config)

    @property
    def fused(self) -> bool:
        """Whether a fused grid is written: named ``cameras`` and grid outputs on."""
        return self.grid and tuple(self.cameras) != SINGLE_CAMERA


@dataclass
class ProcessSummary:
    """What ``process`` did. ``interrupted`` is True after Ctrl-C; ``error`` is set when the
    input turned out to be unreadable part-way, ``write_error`` when the output could not be
    written (a full disk). The output bag is valid in all these cases.
    ``no_grid`` counts per image topic the frames that got image outputs but no grid (the
    reasons are in ``warnings``); ``poses`` says where each camera's pose came from."""

    input: Path
    output: Path
    cameras: list[CameraStream]
    frames: Counter[str] = field(default_factory=Counter)  # frames written or bad, per topic
    processed: int = 0
    written: Counter[str] = field(default_factory=Counter)  # messages per output topic
    bad: list[BadFrame] = field(default_factory=list)
    no_grid: Counter[str] = field(default_factory=Counter)
    poses: dict[str, str] = field(default_factory=dict)
    copied: int = 0
    interrupted: bool = False
    error: str | None = None
    #: writing the output failed (disk full, I/O error, ...): what failed; ``kept`` frames
    #: (None: unknown) are in the bag, closed valid unless ``unfinished``
    write_error: str | None = None
    kept: int | None = None
    unfinished: bool = False
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: named cameras: cycles run, fused grids written, and per camera the cycles whose
    #: fused grid left it out (its latest grid older than fusion.max_age)
    cycles: int = 0
    fused: int = 0
    left_out: Counter[str] = field(default_factory=Counter)
    _warned: set[str] = field(default_factory=set, init=False, repr=False)

    def warn(self, key: str, text: str) -> None:
        """Record (and log) a warning once per ``key``."""
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(text)
            log.warning("%s", text)

    @property
    def fps(self) -> float:
        """Frames processed per second of the processing loop."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class _Camera:
    """Per-camera state of a processing run: frame counter, its camera_infos by stamp."""

    def __init__(self, stream: CameraStream, options: ProcessOptions, name: str = "") -> None:
        self.stream = stream
        self.name = name  # its name in ``cameras`` ("" for unnamed cameras)
        self.config = options.config_for(stream.namespace, name)
        self.rectified = self.config.rectified(stream.image_topic)
        self.index = 0
        self.infos = CameraInfoBuffer(size=None)  # offline: the whole recording
        self.pose_source: str | None = None


@dataclass
class _Recording:
    """What is read ahead of the frames: every camera_info and the tf tree."""

    tf: TransformBuffer
    info_topics: dict[str, list[_Camera]]


def _read_ahead(reader: Reader, cams: dict[str, _Camera], summary: ProcessSummary,
                path: Path, want_grid: bool) -> _Recording:
    """Camera_infos (paired with frames by stamp later) and /tf_static, /tf of the bag.

    Offline the recording is known in full before the first frame, so a frame can be paired
    with a camera_info logged after it, and a moving transform interpolated between samples
    on both sides of the frame.
    """
    info_topics: dict[str, list[_Camera]] = {}
    for cam in cams.values():
        if cam.stream.camera_info_topic:
            info_topics.setdefault(cam.stream.camera_info_topic, []).append(cam)
    tf = TransformBuffer()
    if not want_grid:
        return _Recording(tf, info_topics)
    conns = [c for c in reader.connections
             if (c.topic in info_topics and c.msgtype == CAMERA_INFO)
             or (c.topic in TF_TOPICS and c.msgtype == TF_MESSAGE)]
    if not conns:
        return _Recording(tf, info_topics)
    store = typestore()
    try:
        for conn, log_time, raw in _guarded(reader.messages(conns), path):
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # SerdeError and friends: one damaged message
                summary.warn(f"unreadable:{conn.topic}", f"{conn.topic}: message at log "
                             f"time {log_time} cannot be deserialised ({exc}); skipped")
                continue
            if conn.msgtype == TF_MESSAGE:
                tf.add_message(msg, static=TF_TOPICS[conn.topic])
                continue
            try:
                calibration = CameraCalibration.from_msg(msg)
            except ValueError as exc:
                summary.warn(f"camera_info:{conn.topic}",
                             f"{conn.topic}: camera_info ignored: {exc}")
                continue
            for cam in info_topics[conn.topic]:
                cam.infos.add(_stamp_ns(msg.header.stamp), calibration)
    except BagError as exc:  # damaged or cut off: the frame loop meets it too and says so
        log.debug("camera_info/tf read-ahead stopped: %s", exc)
    return _Recording(tf, info_topics)


# --- the overlapped frame loop ------------------------------------------------------------
#
# process_bag runs   read -> FrameStage.steps() -> write   (core/overlap.py):
#
#   read    (thread)  messages in log-time order: DecodedFrame, Undecodable, or Passthrough
#                     (other topics with keep_input); each camera's frame index counted here
#   steps   (a thread each) FrameStage.segment: the network's pass on each DecodedFrame;
#                     FrameStage.outputs: labels from its scores, colours, grid, polygon and
#                     the messages: FrameOutput
#   write   (caller)  every item in order: a FrameOutput's messages under _sigint_held,
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
    for conn, log_time, raw in _guarded(reader.messages(conns), src):
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
            yield Undecodable(BadFrame(conn.topic, index, _cdr_stamp(raw), log_time, str(exc)),
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
        recording = _read_ahead(reader, cams, summary, src, options.grid)
        wanted = set(cams)
        conns = [c for c in reader.connections if options.keep_input or c.topic in wanted]
        from seg_perception.offline.stage import ProcessStage

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
                summary.write_error = _write_failure(writer.write_error, dst)
            summary.kept = writer.frames_kept
            summary.written = Counter({t: n for t, n in writer.counts.items() if t in produced})
    return summary


def _write_items(items: Iterator[Any], writer: BagWriter, summary: ProcessSummary, bar: Any,
                 on_frame: FrameHook | None) -> None:
    """The writer of :func:`process_bag`: every item in input order, in the calling thread.

    A frame's outputs (and, with keep_input, its input copy) are written under
    :func:`_sigint_held`, so Ctrl-C never leaves a frame with only some of its outputs; a
    frame is counted in ``summary.frames`` when it is written or listed as bad. Each item
    ends with :meth:`BagWriter.mark`, the point a failed write cuts the bag back to.
    """
    for item in items:
        if isinstance(item, FrameOutput):
            with _sigint_held():
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
    "BagError",
    "BagWriteError",
    "BagWriter",
    "CameraStream",
    "CycleStage",
    "DecodedFrame",
    "FrameOutput",
    "FrameStage",
    "Passthrough",
    "ProcessOptions",
    "ProcessSummary",
    "TransformError",
    "Undecodable",
    "camera_namespace",
    "decode_frame",
    "iter_frames",
    "match_cameras",
    "open_bag",
    "output_topic",
    "process_bag",
    "read_items",
    "select_cameras",
]
