"""The readable prefix of an .mcap that was never closed: a recorder killed mid-run, a copy cut
short. Such a file has no summary and no footer, so rosbags' reader refuses it; rosbag2's
``.db3`` in the same state still yields every row written. This reader gives an .mcap the
same behaviour: it walks the records from the start of the file (MCAP spec: magic, header,
then data-section records, each ``<opcode u8><length u64><content>``), decompresses each
chunk (none, zstd or lz4), salvages the complete messages of a chunk that was cut in the
middle, and stops at the first record that does not fit in the file.

It offers what :mod:`seg_perception.core.bagio` uses of a rosbags ``Reader``
(``connections``, ``messages()``, ``start_time``, ...). Messages come in log-time order as
rosbags gives them (sorted within a chunk, chunks merged by time); after the last one,
``messages()`` raises :class:`McapTruncatedError` saying where the file was cut and how
many messages are known to be missing, so a caller never takes the prefix for the whole
recording.
"""

from __future__ import annotations

import heapq
import logging
import struct
import sys
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 1, 2, 3, 4, 5, 6
OP_DATA_END = 0x0F
# Records that only the summary section holds; meeting one means the data section ended.
_SUMMARY_OPS = frozenset({0x08, 0x0A, 0x0B, 0x0D, 0x0E})
MAX_TIME = 2**63 - 1
_OP_NAMES = {OP_HEADER: "header", OP_SCHEMA: "schema", OP_CHANNEL: "channel",
             OP_MESSAGE: "message", OP_CHUNK: "chunk", 0x07: "message index",
             0x09: "attachment", 0x0C: "metadata"}


class McapTruncatedError(RuntimeError):
    """Raised by :meth:`McapPrefixReader.messages` after the last readable message."""


@dataclass
class _Chunk:
    """A chunk record's place in the file, or a run of messages outside chunks."""

    start: int  # offset of the compressed records (or of the first loose message record)
    size: int  # bytes of compressed records available in the file
    compression: str
    uncompressed_size: int
    message_start: int
    message_end: int
    complete: bool  # False for the chunk the file ends in
    loose: list[tuple[int, int, int, int]] = field(default_factory=list)  # (t, cid, off, len)


@dataclass(frozen=True)
class Truncation:
    """Where and how the file ends."""

    offset: int  # byte offset of the first record that does not fit
    file_size: int
    reason: str
    cut_chunk_end: int | None  # log time of the last message the cut chunk held (its header)


def _string(buf: memoryview, i: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, i)
    i += 4
    if i + n > len(buf):
        raise ValueError("string runs past its record")
    return bytes(buf[i:i + n]).decode("utf-8", "replace"), i + n


def _decompress_prefix(data: bytes, compression: str, complete: bool, size: int) -> bytes:
    """All of a chunk's records, or as much of a cut chunk as decompresses."""
    if compression == "":
        return data
    if compression == "zstd":
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd
        if complete:
            return zstd.decompress(data)
        return zstd.ZstdDecompressor().decompress(data, max_length=size)
    if compression == "lz4":
        import lz4.frame

        if complete:
            return lz4.frame.decompress(data)
        return lz4.frame.LZ4FrameDecompressor().decompress(data, max_length=size)
    raise ValueError(f"unsupported chunk compression {compression!r}")


class McapPrefixReader:
    """Reads the complete records of an .mcap file from its start (see the module doc).

    ``expected_counts`` (topic -> message count, e.g. from a bag's metadata.yaml) lets the
    end-of-data error say exactly how many messages of each topic are missing; ``error``
    builds that error from its text (default :class:`McapTruncatedError`).
    """

    def __init__(self, path: str | Path, expected_counts: dict[str, int] | None = None,
                 error: Callable[[str], Exception] = McapTruncatedError) -> None:
        self.path = Path(path)
        self.expected_counts = dict(expected_counts or {})
        self._error = error
        self.connections: list[Any] = []
        self.truncation: Truncation | None = None
        self.message_count = 0
        self.start_time = MAX_TIME
        self.end_time = 0
        self.ros_distro = ""
        self._chunks: list[_Chunk] = []
        self._file: Any = None

    # -- rosbags Reader surface ---------------------------------------------------------------
    @property
    def duration(self) -> int:
        return self.end_time - self.start_time + 1 if self.message_count else 0

    @property
    def topics(self) -> dict[str, Any]:
        return {c.topic: c for c in self.connections}

    def open(self) -> None:
        self._file = self.path.open("rb")
        try:
            self._scan()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> McapPrefixReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scanning -------------------------------------------------------------------------------
    def _scan(self) -> None:
        """One pass over the file: schemas, channels, chunk extents and message counts."""
        f = self._file
        size = self.path.stat().st_size
        if f.read(8) != MAGIC:
            raise ValueError("not an MCAP file (bad magic)")
        self._schemas: dict[int, tuple[str, str, str]] = {}
        self._channels: dict[int, Any] = {}
        self._counts: Counter[int] = Counter()
        pos, loose = 8, None
        while True:
            head = f.read(9)
            if len(head) == 0:
                self._cut(pos, size, "the file ends after a complete record")
                break
            if len(head) < 9:
                self._cut(pos, size, "the file ends inside a record header")
                break
            op, length = struct.unpack("<BQ", head)
            body_at = pos + 9
            if op in (OP_FOOTER, OP_DATA_END) or op in _SUMMARY_OPS:
                break  # the data section ended (the summary or footer is damaged, not data)
            if body_at + length > size:
                if op == OP_CHUNK:
                    self._read_chunk(body_at, length, size - body_at, complete=False)
                name = _OP_NAMES.get(op, f"opcode {op:#x}")
                self._cut(pos, size, f"the {name} record starting there needs {length} bytes, "
                          f"{size - body_at} are left")
                break
            if op == OP_MESSAGE:
                if length < 22:
                    self._cut(pos, size, f"message record of {length} bytes at byte {pos} is "
                              "damaged")
                    break
                cid, _, log_time, _ = struct.unpack("<HIQQ", f.read(22))
                if loose is None:
                    loose = _Chunk(body_at, 0, "", 0, log_time, log_time, True)
                    self._chunks.append(loose)
                loose.loose.append((log_time, cid, body_at + 22, length - 22))
                loose.message_start = min(loose.message_start, log_time)
                loose.message_end = max(loose.message_end, log_time)
                self._count(cid, log_time)
                f.seek(body_at + length)
            elif op == OP_CHUNK:
                loose = None
                try:
                    self._read_chunk(body_at, length, length, complete=True)
                except ValueError as exc:
                    self._cut(pos, size, f"chunk at byte {pos} is damaged: {exc}")
                    break
                f.seek(body_at + length)
            elif op in (OP_SCHEMA, OP_CHANNEL):
                self._definition(op, memoryview(f.read(length)))
            else:  # header, message index, attachment, metadata: nothing for us
                f.seek(body_at + length)
            pos = body_at + length
        self.connections = list(self._channels.values())
        for i, conn in enumerate(self.connections):
            self.connections[i] = conn._replace(msgcount=self._counts.get(conn.id, 0))

    def _cut(self, offset: int, size: int, reason: str) -> None:
        cut_end = None
        last = self._chunks[-1] if self._chunks else None
        if last is not None and not last.complete:
            cut_end = last.message_end
        self.truncation = Truncation(offset, size, reason, cut_end)

    def _count(self, cid: int, log_time: int) -> None:
        self._counts[cid] += 1
        self.message_count += 1
        self.start_time = min(self.start_time, log_time)
        self.end_time = max(self.end_time, log_time)

    def _read_chunk(self, at: int, length: int, available: int, complete: bool) -> None:
        f = self._file
        f.seek(at)
        head = f.read(min(available, 4096))
        if len(head) < 32:
            return
        start, end, usize, _crc = struct.unpack_from("<QQQI", head, 0)
        try:
            compression, i = _string(memoryview(head), 28)
        except (ValueError, struct.error):
            if complete:
                raise ValueError("unreadable chunk header") from None
            return
        if i + 8 > len(head):
            return
        (csize,) = struct.unpack_from("<Q", head, i)
        data_at = at + i + 8
        have = max(0, min(csize, at + available - data_at))
        chunk = _Chunk(data_at, have, compression, usize, start, end, complete and have == csize)
        records = self._records(chunk)
        if records is None:
            return
        self._chunks.append(chunk)
        for op, body in records:
            if op == OP_MESSAGE and len(body) >= 22:
                cid, _, log_time, _ = struct.unpack_from("<HIQQ", body, 0)
                self._count(cid, log_time)
            elif op in (OP_SCHEMA, OP_CHANNEL):
                self._definition(op, body)

    def _records(self, chunk: _Chunk) -> list[tuple[int, memoryview]] | None:
        """The complete records of a chunk (those of a cut chunk that decompress whole)."""
        self._file.seek(chunk.start)
        raw = self._file.read(chunk.size)
        try:
            data = _decompress_prefix(raw, chunk.compression, chunk.complete,
                                      chunk.uncompressed_size)
        except Exception as exc:  # a damaged stream: nothing of this chunk is usable
            if chunk.complete:
                raise ValueError(f"chunk at byte {chunk.start} does not decompress: {exc}") \
                    from exc
            return None
        view = memoryview(data)
        out, i = [], 0
        while i + 9 <= len(view):
            op, length = struct.unpack_from("<BQ", view, i)
            if i + 9 + length > len(view):
                break  # the rest of a cut chunk
            out.append((op, view[i + 9:i + 9 + length]))
            i += 9 + length
        return out

    def _definition(self, op: int, body: memoryview) -> None:
        try:
            if op == OP_SCHEMA:
                (sid,) = struct.unpack_from("<H", body, 0)
                name, i = _string(body, 2)
                encoding, i = _string(body, i)
                data, _ = _string(body, i)
                self._schemas[sid] = (name, encoding, data)
                return
            cid, sid = struct.unpack_from("<HH", body, 0)
            topic, i = _string(body, 4)
            encoding, i = _string(body, i)
            (meta_len,) = struct.unpack_from("<I", body, i)
            metadata = bytes(body[i + 4:i + 4 + meta_len])
        except (struct.error, ValueError):
            return  # a damaged definition: its messages stay unreadable
        if cid in self._channels:
            return
        from rosbags.interfaces import Connection, ConnectionExtRosbag2
        from rosbags.rosbag2.storage_mcap import Schema, get_msgdef, get_qos

        name, sencoding, sdata = self._schemas.get(sid, ("__schemaless__", "", ""))
        schema = Schema(sid, name, sencoding, sdata) if sid in self._schemas else None
        try:
            qos = get_qos(metadata)
        except Exception:  # QoS text we cannot parse: none recorded
            qos = []
        self._channels[cid] = Connection(
            cid, topic, name, get_msgdef(schema), "", 0,
            ConnectionExtRosbag2(encoding, qos), self)

    # -- messages -------------------------------------------------------------------------------
    def messages(self, connections: Collection[Any] = (), start: int | None = None,
                 stop: int | None = None) -> Iterator[tuple[Any, int, bytes]]:
        """``(connection, log_time, data)`` of the readable messages, in log-time order; then
        the ``error`` given at construction if the file was cut (see
        :meth:`truncation_message`)."""
        wanted = {c.id: c for c in (connections or self.connections)}
        lo = 0 if start is None else start
        hi = MAX_TIME if stop is None else stop
        sources = [self._chunk_messages(c, wanted, lo, hi) for c in self._chunks
                   if c.message_end >= lo and c.message_start < hi]
        read: Counter[str] = Counter()
        last_time = None
        for log_time, _, conn, data in heapq.merge(*sources, key=lambda m: (m[0], m[1])):
            if conn is None:
                continue
            read[conn.topic] += 1
            last_time = log_time
            yield conn, log_time, data
        if self.truncation is not None:
            raise self._error(self.truncation_message(wanted.values(), read, last_time))

    def _chunk_messages(self, chunk: _Chunk, wanted: dict[int, Any], lo: int,
                        hi: int) -> Iterator[tuple[int, int, Any, bytes | None]]:
        # A sentinel first, so heapq.merge only decompresses a chunk when its turn comes.
        yield chunk.message_start, -1, None, None
        found = []
        if chunk.loose:
            for log_time, cid, off, n in chunk.loose:
                if cid in wanted and lo <= log_time < hi:
                    self._file.seek(off)
                    found.append((log_time, off, wanted[cid], self._file.read(n)))
        else:
            for op, body in self._records(chunk) or []:
                if op != OP_MESSAGE or len(body) < 22:
                    continue
                cid, _, log_time, _ = struct.unpack_from("<HIQQ", body, 0)
                if cid in wanted and lo <= log_time < hi:
                    found.append((log_time, len(found), wanted[cid], bytes(body[22:])))
        found.sort(key=lambda m: (m[0], m[1]))
        yield from found

    def truncation_message(self, connections: Collection[Any] = (),
                           read: Counter[str] | None = None, last_time: int | None = None) -> str:
        """How far the file got and what is known to be lost, for ``connections``' topics."""
        cut = self.truncation
        if cut is None:
            return ""
        topics = sorted({c.topic for c in connections}) or sorted(self._topic_counts())
        if read is None:
            read = Counter(self._topic_counts())
        got = ", ".join(f"{read.get(t, 0)} of {t}" for t in topics) or "no messages"
        where = (f"the .mcap is cut off at byte {cut.offset} of {cut.file_size} ({cut.reason}; "
                 "no summary: the recording was not closed cleanly or the file was cut)")
        text = f"{where}; read {got}"
        if last_time is not None:
            text += f", the last at log time {last_time / 1e9:.3f} s"
        lost = {t: self.expected_counts[t] - read.get(t, 0) for t in topics
                if t in self.expected_counts}
        if lost:
            text += "; lost: " + ", ".join(f"{max(0, n)} of {t} (of {self.expected_counts[t]} "
                                           "in metadata.yaml)" for t, n in lost.items())
        else:
            text += ("; how many messages followed is unknown (the file has no summary and "
                     "the bag no metadata.yaml with counts)")
            if cut.cut_chunk_end is not None and last_time is not None \
                    and cut.cut_chunk_end > last_time:
                text += (f"; the cut chunk alone held messages up to log time "
                         f"{cut.cut_chunk_end / 1e9:.3f} s, "
                         f"{(cut.cut_chunk_end - last_time) / 1e9:.3f} s after the last read")
        return text

    def _topic_counts(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for conn in self.connections:
            out[conn.topic] += conn.msgcount
        return dict(out)


def expected_counts_from_metadata(bag_dir: Path) -> dict[str, int]:
    """topic -> message count from a bag directory's metadata.yaml ({} when unreadable)."""
    import yaml

    try:
        doc = yaml.safe_load((bag_dir / "metadata.yaml").read_text())
        info = doc["rosbag2_bagfile_information"]
        out: Counter[str] = Counter()
        for entry in info.get("topics_with_message_count") or []:
            out[str(entry["topic_metadata"]["name"])] += int(entry["message_count"])
        return dict(out)
    except Exception:  # no or damaged metadata: counts unknown
        return {}
