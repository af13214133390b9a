"""The readable prefix of an .mcap that was never closed: a recorder killed mid-run, a copy cut
short. Such a file has no summary and no footer, so rosbags' reader refuses it; rosbag2's
``.db3`` in the same state still yields every row written. This reader gives an .mcap the
same behaviour on top of the ``mcap`` package: its ``StreamReader`` walks the records from the
start of the file (schemas, channels, chunks, loose messages) and ``breakup_chunk``
decompresses and parses a chunk (none, zstd or lz4).

Own code is kept only where the library cannot help:

- **Salvaging the chunk the file ends in.** ``StreamReader`` reads a record whole or not at
  all: on a cut chunk it raises a bare ``EndOfFile`` (``struct.error`` when the cut falls in
  a record header) and yields none of the chunk's messages; ``breakup_chunk`` refuses a cut
  zstd/lz4 stream. Measured on the bag of test_mcap_prefix.py (40 rgb8 frames of 160x120 with
  camera_info, chunks of ~1 MiB; /tmp script, not kept): cut at 45% of the file,
  ``StreamReader`` yields 0 frames, this reader 18; cut at 80%, 19 against 32; lz4 chunks
  cut at 80%, 19 against 37. :func:`_salvage` decompresses what there is of the cut chunk
  (streaming decompressors) and hands its complete records to ``breakup_chunk``.
- **Saying where the file was cut.** ``EndOfFile`` carries no offset; :func:`_locate_cut`
  walks the record headers after the last complete record to name the byte and the reason.
- **Lazy, log-time ordered reading.** ``mcap``'s readers that order by log time need the
  summary (``SeekingReader``) or load the whole file (``NonSeekingReader``); here each chunk
  is remembered by its offset and decompressed when its turn in the merge comes.

It offers what :mod:`seg_perception.offline.reader` uses of a rosbags ``Reader``
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
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from mcap.data_stream import ReadDataStream
from mcap.exceptions import InvalidMagic
from mcap.opcode import Opcode
from mcap.records import (
    AttachmentIndex,
    Channel,
    Chunk,
    ChunkIndex,
    DataEnd,
    Footer,
    McapRecord,
    Message,
    MetadataIndex,
    Schema,
    Statistics,
    SummaryOffset,
)
from mcap.stream_reader import StreamReader, breakup_chunk

log = logging.getLogger(__name__)

MAX_TIME = 2**63 - 1
# Records that end the data section: meeting one means the data is complete (a damaged
# summary or footer is not lost data).
_DATA_DONE = (DataEnd, Footer, ChunkIndex, Statistics, SummaryOffset, AttachmentIndex,
              MetadataIndex)
_OP_NAMES = {Opcode.HEADER: "header", Opcode.SCHEMA: "schema", Opcode.CHANNEL: "channel",
             Opcode.MESSAGE: "message", Opcode.CHUNK: "chunk",
             Opcode.MESSAGE_INDEX: "message index", Opcode.ATTACHMENT: "attachment",
             Opcode.METADATA: "metadata", Opcode.DATA_END: "data end"}
_DATA_DONE_OPS = frozenset({Opcode.DATA_END, Opcode.FOOTER, Opcode.CHUNK_INDEX,
                            Opcode.STATISTICS, Opcode.SUMMARY_OFFSET, Opcode.ATTACHMENT_INDEX,
                            Opcode.METADATA_INDEX})
_KNOWN_OPS = frozenset(int(op) for op in Opcode)


class McapTruncatedError(RuntimeError):
    """Raised by :meth:`McapPrefixReader.messages` after the last readable message."""


@dataclass
class _Source:
    """One chunk of the file, or a run of messages outside chunks, as a message source."""

    message_start: int
    message_end: int
    record_at: int | None = None  # a complete chunk record: decompressed when its turn comes
    loose: list[tuple[int, int, int, int]] = field(default_factory=list)  # (t, cid, off, len)
    salvaged: list[Message] | None = None  # the complete messages of the chunk cut short


@dataclass(frozen=True)
class Truncation:
    """Where and how the file ends."""

    offset: int  # byte offset of the first record that does not fit
    file_size: int
    reason: str
    cut_chunk_end: int | None  # log time of the last message the cut chunk held (its header)


def _locate_cut(f: BinaryIO, pos: int, size: int) -> tuple[int, int | None, str]:
    """(offset, opcode, reason) of the record after ``pos`` that the library could not read.

    Records the library skips silently (unknown opcodes) are walked past."""
    while True:
        f.seek(pos)
        head = f.read(9)
        if not head:
            return pos, None, "the file ends after a complete record"
        if len(head) < 9:
            return pos, None, "the file ends inside a record header"
        op, length = struct.unpack("<BQ", head)
        name = _OP_NAMES.get(op, f"opcode {op:#x}")
        if pos + 9 + length > size:
            return pos, op, (f"the {name} record starting there needs {length} bytes, "
                             f"{size - pos - 9} are left")
        if op in _KNOWN_OPS:
            return pos, op, f"the {name} record at byte {pos} is damaged"
        pos += 9 + length


def _record_start(f: BinaryIO, at: int, end: int) -> int:
    """Start of the record that ends at ``end``; ``at`` is the end of the record yielded
    before it (the library skips unknown records without yielding them)."""
    while at < end:
        f.seek(at)
        _, length = struct.unpack("<BQ", f.read(9))
        if at + 9 + length == end:
            return at
        at += 9 + length
    raise ValueError(f"no record ends at byte {end}")


def _decompress_prefix(data: bytes, compression: str, size: int) -> bytes:
    """As much of a cut chunk's records as decompresses (streaming decompressors stop where
    the input does; ``breakup_chunk`` needs the whole stream)."""
    if compression == "":
        return data
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor().decompress(data, max_length=size)
    raise ValueError(f"unsupported chunk compression {compression!r}")


def _salvage(f: BinaryIO, at: int, size: int) -> tuple[Chunk, list[McapRecord]] | None:
    """The header and the complete records of the chunk record at ``at`` that the file
    ends in, or None when not even its header is there or its data does not decompress."""
    f.seek(at + 9)
    try:
        # Chunk.read takes the short read of the data as it comes (only an empty read raises).
        chunk = Chunk.read(ReadDataStream(BytesIO(f.read(size - at - 9))))
        data = _decompress_prefix(chunk.data, chunk.compression, chunk.uncompressed_size)
    except Exception:  # cut inside the chunk header, or a damaged stream
        return None
    view, end = memoryview(data), 0
    while end + 9 <= len(view):  # the records that are complete in the decompressed prefix
        (length,) = struct.unpack_from("<Q", view, end + 1)
        if end + 9 + length > len(view):
            break
        end += 9 + length
    whole = Chunk(compression="", data=bytes(view[:end]), message_end_time=0,
                  message_start_time=0, uncompressed_crc=0, uncompressed_size=end)
    return chunk, breakup_chunk(whole)


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
        self._sources: list[_Source] = []
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
        """One pass over the file: schemas, channels, chunk offsets and message counts."""
        f = self._file
        size = self.path.stat().st_size
        self._schemas: dict[int, Schema] = {}
        self._channels: dict[int, Any] = {}
        self._counts: Counter[int] = Counter()
        records = StreamReader(f, emit_chunks=True).records
        end, loose = 8, None  # end: of the last complete record
        while True:
            try:
                rec = next(records)
            except StopIteration:  # the footer and the closing magic: a complete file
                break
            except Exception as exc:  # EndOfFile, struct.error, ...: the file ends or is damaged
                if isinstance(exc, InvalidMagic) or size < 8:
                    raise ValueError("not an MCAP file (bad magic)") from exc
                self._cut_at(end, size)
                break
            at, end = end, f.tell()
            if isinstance(rec, _DATA_DONE):
                break
            if isinstance(rec, Message):
                if loose is None:
                    loose = _Source(rec.log_time, rec.log_time)
                    self._sources.append(loose)
                loose.loose.append((rec.log_time, rec.channel_id, end - len(rec.data),
                                    len(rec.data)))
                loose.message_start = min(loose.message_start, rec.log_time)
                loose.message_end = max(loose.message_end, rec.log_time)
                self._count(rec.channel_id, rec.log_time)
            elif isinstance(rec, Chunk):
                loose = None
                at = _record_start(f, at, end)
                try:
                    inner = breakup_chunk(rec)
                except Exception as exc:  # does not decompress or parse
                    self._cut(at, size, f"chunk at byte {at} is damaged: {exc}")
                    break
                self._sources.append(_Source(rec.message_start_time, rec.message_end_time, at))
                self._take(inner)
                f.seek(end)
            else:
                self._take([rec])
        self.connections = [conn._replace(msgcount=self._counts.get(conn.id, 0))
                             for conn in self._channels.values()]

    def _cut_at(self, end: int, size: int) -> None:
        """The library stopped after the record ending at ``end``: find out where and why,
        and keep the complete messages of a chunk that was cut short."""
        pos, op, reason = _locate_cut(self._file, end, size)
        if op in _DATA_DONE_OPS:
            return  # the data section ended: a damaged summary or footer is no lost data
        if op == Opcode.CHUNK and pos + 9 <= size:
            salvage = _salvage(self._file, pos, size)
            if salvage is not None:
                chunk, inner = salvage
                msgs = [r for r in inner if isinstance(r, Message)]
                self._sources.append(_Source(chunk.message_start_time, chunk.message_end_time,
                                             salvaged=msgs))
                self._take(inner)
        self._cut(pos, size, reason)

    def _cut(self, offset: int, size: int, reason: str) -> None:
        last = self._sources[-1] if self._sources else None
        cut_end = last.message_end if last is not None and last.salvaged is not None else None
        self.truncation = Truncation(offset, size, reason, cut_end)

    def _count(self, cid: int, log_time: int) -> None:
        self._counts[cid] += 1
        self.message_count += 1
        self.start_time = min(self.start_time, log_time)
        self.end_time = max(self.end_time, log_time)

    def _take(self, records: list[McapRecord]) -> None:
        """Definitions and message counts of records read from the data section."""
        for rec in records:
            if isinstance(rec, Message):
                self._count(rec.channel_id, rec.log_time)
            elif isinstance(rec, Schema):
                self._schemas[rec.id] = rec
            elif isinstance(rec, Channel):
                self._definition(rec)

    def _definition(self, channel: Channel) -> None:
        if channel.id in self._channels:
            return
        from rosbags.interfaces import Connection, ConnectionExtRosbag2
        from rosbags.rosbag2.metadata import parse_qos
        from rosbags.rosbag2.storage_mcap import Schema as RosbagsSchema
        from rosbags.rosbag2.storage_mcap import get_msgdef

        schema = self._schemas.get(channel.schema_id)
        as_rosbags = None if schema is None else RosbagsSchema(
            schema.id, schema.name, schema.encoding, schema.data.decode("utf-8", "replace"))
        try:
            qos = parse_qos(channel.metadata.get("offered_qos_profiles", ""))
        except Exception:  # QoS text we cannot parse: none recorded
            qos = []
        self._channels[channel.id] = Connection(
            channel.id, channel.topic, "__schemaless__" if schema is None else schema.name,
            get_msgdef(as_rosbags), "", 0, ConnectionExtRosbag2(channel.message_encoding, qos),
            self)

    # -- messages -------------------------------------------------------------------------------
    def messages(self, connections: Collection[Any] = (), start: int | None = None,
                 stop: int | None = None) -> Iterator[tuple[Any, int, bytes]]:
        """``(connection, log_time, data)`` of the readable messages, in log-time order; then
        the ``error`` given at construction if the file was cut (see
        :meth:`truncation_message`)."""
        wanted = {c.id: c for c in (connections or self.connections)}
        lo = 0 if start is None else start
        hi = MAX_TIME if stop is None else stop
        sources = [self._source_messages(s, wanted, lo, hi) for s in self._sources
                   if s.message_end >= lo and s.message_start < hi]
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

    def _source_messages(self, source: _Source, wanted: dict[int, Any], lo: int,
                         hi: int) -> Iterator[tuple[int, int, Any, bytes | None]]:
        # A sentinel first, so heapq.merge only decompresses a chunk when its turn comes.
        yield source.message_start, -1, None, None
        found = []
        if source.loose:
            for log_time, cid, off, n in source.loose:
                if cid in wanted and lo <= log_time < hi:
                    self._file.seek(off)
                    found.append((log_time, len(found), wanted[cid], self._file.read(n)))
        else:
            if source.salvaged is not None:
                msgs: list[Any] = source.salvaged
            else:
                self._file.seek(source.record_at + 9)
                msgs = breakup_chunk(Chunk.read(ReadDataStream(self._file)))
            for msg in msgs:
                if isinstance(msg, Message) and msg.channel_id in wanted \
                        and lo <= msg.log_time < hi:
                    found.append((msg.log_time, len(found), wanted[msg.channel_id], msg.data))
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
