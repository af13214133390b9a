"""rosbags' MCAP storage writer, writing the same bytes with fewer copies of the messages.

Why: ``process`` writes about 1.5 MB of images per 480x360 frame. rosbags' writer copies each
message four times before the file sees it (into a record, into the chunk's BytesIO and its
regrowths, out of it with ``getvalue()``, into the chunk record), about as much CPU as the
file write itself on a 2-core machine where ``process`` competes with the network for CPU.
Here a chunk is a list of buffers: a message's record header is packed on its own and its
data kept by reference until the chunk is written, with one ``write`` per buffer.

A write error (disk full, EIO, EFBIG, EDQUOT) no longer leaves an .mcap without summary:
the file is written unbuffered, so what a failed write leaves in it is known, and the bag
is closed with the chunks written whole, cut back to the last frame boundary; a reserve
file keeps room for the closing (:class:`LeanMcapWriter`).

The file is byte for byte the one rosbags writes (tested); only uncompressed chunks take the
lean path (the project never asks rosbags for chunk compression; a compressed writer falls
back to rosbags' own code). A message's data must not change after ``write``: it is read
when its chunk is written (rosbags' serializer returns a fresh buffer per message; the
bag readers return immutable bytes).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import struct
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from types import MappingProxyType
from typing import Any, ClassVar

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import (
    MAXSIZE,
    McapWriter,
    PendingChunk,
    write_string,
    write_uint16,
    write_uint32,
    write_uint64,
)

#: A chunk's size after which it is written (rosbags' own threshold).
CHUNK_BYTES = 2**20
#: Message record header: opcode, record length, channel id, sequence, log and publish time.
_MESSAGE = struct.Struct("<BQHIQQ")
#: Chunk record header: opcode, record length, start and end time, uncompressed size, CRC
#: (0: none), compression name (the empty string: its length), compressed size.
_CHUNK = struct.Struct("<BQQQQIIQ")
#: The bag folder's reserve file: space kept free so that the summary, footer and
#: metadata.yaml can still be written when the disk fills up (see :class:`LeanMcapWriter`).
RESERVE_NAME = ".seg_perception.reserve"
#: The reserve's least size; it grows with the summary it stands for (2x its estimate).
RESERVE_BYTES = 2**20


class _Parts:
    """A chunk's records as buffers: what rosbags' writer calls on a chunk's BytesIO
    (``write``, ``tell``, ``getvalue``) plus :meth:`keep`, which takes a buffer uncopied."""

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.size = 0

    def write(self, data: Any) -> int:
        """Copy ``data`` in (small records: schemas, channels; their BytesIO may be reused)."""
        copy = bytes(data)
        self.parts.append(copy)
        self.size += len(copy)
        return len(copy)

    def keep(self, data: Any) -> None:
        """Append ``data`` by reference (it must not change until the chunk is written)."""
        self.parts.append(data)
        self.size += memoryview(data).nbytes

    def tell(self) -> int:
        return self.size

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


def _new_chunk() -> PendingChunk:
    return PendingChunk(2**63 - 1, 0, _Parts(), defaultdict(list))  # type: ignore[arg-type]


class _File:
    """The .mcap unbuffered, with its own position: once a ``write`` returns, its bytes are
    in the file, so after a failed write (disk full, I/O error) everything up to the last
    complete record is known to be there. (A BufferedWriter keeps some bytes back and
    writes them, or fails to, during a later write.)"""

    def __init__(self, raw: io.FileIO, pos: int) -> None:
        self.raw = raw
        self.pos = pos

    def write_once(self, view: memoryview) -> int:
        """One write(2); a short count on a filling disk (tests replace it to fail)."""
        return os.write(self.raw.fileno(), view)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            n = self.write_once(view[done:])
            if n <= 0:
                raise OSError(errno.EIO, "write(2) wrote nothing")
            done += n
            self.pos += n
        return done

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        self.raw.close()


class _Reserve:
    """A file of ``size`` bytes in the bag folder, removed to make room for the closing."""

    def __init__(self, path: Any) -> None:
        self.path = path
        self.size = 0
        self.released = False

    def grow(self, size: int) -> None:
        """Allocate the file to ``size`` bytes (OSError, e.g. ENOSPC, when the disk cannot)."""
        if size <= self.size or self.released:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            try:
                os.posix_fallocate(fd, 0, size)  # AttributeError: not on this OS (macOS)
            except (OSError, AttributeError) as exc:  # no fallocate: write zeros instead
                if isinstance(exc, OSError) and exc.errno not in (
                        errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                os.lseek(fd, self.size, os.SEEK_SET)
                block = bytes(min(size, 2**16))
                left = size - self.size
                while left > 0:
                    left -= os.write(fd, block[:left])
        finally:
            os.close(fd)
        self.size = size

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.size = 0
        self.released = True


@dataclass
class _Written:
    """A chunk in the file: where it starts and ends (its message indexes included), its
    uncompressed size and its messages per channel and time range (for the statistics)."""

    start: int
    end: int
    size: int
    counts: dict[int, int]
    first: int
    last: int


class LeanMcapWriter(McapWriter):
    """:class:`rosbags.rosbag2.storage_mcap.McapWriter` with list-of-buffers chunks, that
    still closes a valid MCAP after a write error (disk full, EIO, EFBIG, EDQUOT, ...).

    A failed write ends the writing: the summary then indexes only the chunks written whole,
    cut back to the last frame boundary (:meth:`mark`) that reached the file, so the bag
    holds whole frames only (``frames_kept`` of them); the file is truncated behind it. A
    reserve file in the bag folder keeps space for the summary, footer and metadata.yaml;
    it is removed before they are written, and on every exit.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chunk = _new_chunk()
        buffered = self.bio
        buffered.flush()  # the header
        raw = buffered.detach()
        self.bio = _File(raw, raw.tell())  # type: ignore[arg-type]
        self.data_start = self.bio.pos
        #: the OSError that ended the writing (None: none)
        self.failure: OSError | None = None
        #: frames (the count given to :meth:`mark`) in the closed bag after a failure
        self.frames_kept: int | None = None
        self._written: list[_Written] = []
        self._mark = (0, 0, 0)  # last frame boundary: (chunk number, bytes into it, frames)
        self._safe = (0, 0, 0)  # the last frame boundary known to be in the file
        self._recovered = False
        self._reserve = _Reserve(self.path.parent / RESERVE_NAME)
        try:
            self._reserve.grow(RESERVE_BYTES)
        except OSError:
            self._reserve.release()
            self.bio.close()
            raise

    def mark(self, frames: int) -> None:
        """A frame boundary: every message of ``frames`` frames has been given to write."""
        where = (len(self._written), self.chunk.bio.tell(), frames)
        self._mark = where
        if where[1] == 0:  # between chunks: all before it is written
            self._safe = where

    def write(self, connection: Any, timestamp: int, data: bytes | memoryview) -> None:
        """Add one message to the pending chunk (rosbags' bookkeeping, no copy of ``data``)."""
        if self.failure is not None:
            raise OSError(self.failure.errno, f"the bag is no longer written to after "
                          f"{self.failure.strerror}", str(self.path))
        if self.compression:
            super().write(connection, timestamp, data)
            return
        self.message_start_time = min(timestamp, self.message_start_time)
        self.message_end_time = max(timestamp, self.message_end_time)
        self.channel_stats[connection.id] += 1
        chunk = self.chunk
        chunk.message_start_time = min(timestamp, chunk.message_start_time)
        chunk.message_end_time = max(timestamp, chunk.message_end_time)
        parts: _Parts = chunk.bio  # type: ignore[assignment]
        chunk.msgs[connection.id].append((timestamp, parts.size))
        size = memoryview(data).nbytes
        parts.keep(_MESSAGE.pack(0x05, 22 + size, connection.id, 0, timestamp, timestamp))
        parts.keep(data)
        if parts.size > CHUNK_BYTES:
            self.close_chunk()

    def close_chunk(self) -> None:
        """Write the pending chunk and its message indexes, keep its chunk index entry; on
        an OSError the writing ends (``failure``) and the error is raised."""
        if self.failure is not None:
            raise self.failure
        chunk = self.chunk
        done = _Written(self.bio.tell(), 0, chunk.bio.tell(),
                        {cid: len(m) for cid, m in chunk.msgs.items()},
                        chunk.message_start_time, chunk.message_end_time)
        try:
            self._write_chunk()
            done.end = self.bio.tell()
            self._written.append(done)
            if self._mark[0] == len(self._written) - 1:
                self._safe = self._mark
            self._reserve.grow(self._reserve_needed())
        except OSError as exc:
            if not exc.filename:
                exc.filename = str(self.path)
            self.failure = exc
            self.chunk = _new_chunk()
            raise

    def _write_chunk(self) -> None:
        if self.compression:
            super().close_chunk()
            self.chunk = _new_chunk()
            return
        chunk = self.chunk
        parts: _Parts = chunk.bio  # type: ignore[assignment]
        size = parts.size
        chunk_start = self.bio.tell()
        small: list[Any] = [_CHUNK.pack(0x06, 40 + size, chunk.message_start_time,
                                         chunk.message_end_time, size, 0, 0, size)]
        for part in parts.parts:  # record headers gathered: one write(2) per image
            if memoryview(part).nbytes < 4096:
                small.append(part)
                continue
            if small:
                self.bio.write(b"".join(small))
                small = []
            self.bio.write(part)
        if small:
            self.bio.write(b"".join(small))
        chunk_end = self.bio.tell()

        # From here on as rosbags' McapWriter.close_chunk (rosbags 0.11.9).
        offsets: list[tuple[int, int]] = []
        for cid, msgs in chunk.msgs.items():
            offsets.append((cid, self.bio.tell()))
            rec = _Parts()
            write_uint16(rec, cid)  # type: ignore[arg-type]
            write_uint32(rec, len(msgs) * 16)  # type: ignore[arg-type]
            for ts, offset in msgs:
                write_uint64(rec, ts)  # type: ignore[arg-type]
                write_uint64(rec, offset)  # type: ignore[arg-type]
            self.bio.write(b"\x07" + (rec.size).to_bytes(8, "little") + rec.getvalue())

        index = _Parts()
        for value in (chunk.message_start_time, chunk.message_end_time, chunk_start,
                      chunk_end - chunk_start):
            write_uint64(index, value)  # type: ignore[arg-type]
        write_uint32(index, len(offsets) * 10)  # type: ignore[arg-type]
        for cid, offset in offsets:
            write_uint16(index, cid)  # type: ignore[arg-type]
            write_uint64(index, offset)  # type: ignore[arg-type]
        write_uint64(index, self.bio.tell() - chunk_end)  # type: ignore[arg-type]
        write_string(index, self.compression)  # type: ignore[arg-type]
        write_uint64(index, size)  # type: ignore[arg-type]
        write_uint64(index, size)  # type: ignore[arg-type]
        self.chunks.append(_Buffer(index.getvalue()))  # type: ignore[arg-type]
        self.chunk = _new_chunk()

    def _reserve_needed(self) -> int:
        """Twice an estimate of the summary plus metadata.yaml (schemas, channels with their
        QoS and metadata, one index entry per chunk), at least RESERVE_BYTES."""
        schemas = sum(len(s.data) + len(s.name) + 32 for s in self.schemas)
        estimate = 2**16 + schemas + 4096 * len(self.channels) + 256 * len(self.chunks)
        return max(RESERVE_BYTES, 2 * estimate)

    def finish_data(self) -> None:
        """Write the pending chunk (the reserve still held), then free the reserve; after a
        write error, cut the file back to the last frame that reached it whole."""
        if self.failure is None and self.chunk.bio.tell():
            with contextlib.suppress(OSError):  # kept in self.failure
                self.close_chunk()
        self._reserve.release()
        if self.failure is not None and not self._recovered:
            self._recover()

    def _recover(self) -> None:
        """Truncate to the last frame boundary in the file, re-writing the chunk it falls in
        up to it; the statistics are the kept chunks'."""
        self._recovered = True
        with contextlib.suppress(OSError):
            self.bio.close()
        raw = io.FileIO(self.path, "r+")
        n, offset, frames = self._safe
        keep = self._written[:n]
        redo = b""
        if n < len(self._written):  # the boundary lies in chunk n, which is in the file whole
            chunk = self._written[n]
            if offset >= chunk.size:
                keep = self._written[:n + 1]
            else:
                redo = self._read_chunk(raw, chunk)[:offset]
        end = keep[-1].end if keep else self.data_start
        raw.truncate(end)
        raw.seek(end)
        self.bio = _File(raw, end)
        self._written = keep
        self.chunks = self.chunks[:len(keep)]
        self.chunk = _new_chunk()
        if redo:
            self._refill(redo)
            self.failure, failure = None, self.failure
            try:
                self.close_chunk()
            finally:
                self.failure = failure
        self._recount()
        self.frames_kept = frames

    def _read_chunk(self, raw: io.FileIO, chunk: _Written) -> bytes:
        """The records of a chunk in the file, uncompressed."""
        raw.seek(chunk.start + 9 + 28)
        head = raw.read(4)
        name = raw.read(int.from_bytes(head, "little")).decode()
        stored = int.from_bytes(raw.read(8), "little")
        data = raw.read(stored)
        if name == "zstd":
            from rosbags.rosbag2.storage_mcap import zstd
            data = zstd.decompress(data)
        elif name:
            raise OSError(errno.EIO, f"cannot re-read a {name} chunk")
        return data

    def _refill(self, records: bytes) -> None:
        """The pending chunk made of ``records`` (whole records, as written before)."""
        chunk = _new_chunk()
        pos = 0
        while pos < len(records):
            size = int.from_bytes(records[pos + 1:pos + 9], "little")
            if records[pos] == 0x05:
                cid, _seq, ts = struct.unpack_from("<HIQ", records, pos + 9)
                chunk.msgs[cid].append((ts, pos))
                chunk.message_start_time = min(chunk.message_start_time, ts)
                chunk.message_end_time = max(chunk.message_end_time, ts)
            pos += 9 + size
        chunk.bio.keep(records)  # type: ignore[attr-defined]
        self.chunk = chunk

    def _recount(self) -> None:
        stats = dict.fromkeys(self.channel_stats, 0)
        for chunk in self._written:
            for cid, count in chunk.counts.items():
                stats[cid] += count
        self.channel_stats = stats
        self.message_start_time = min((c.first for c in self._written), default=MAXSIZE)
        self.message_end_time = max((c.last for c in self._written), default=0)

    def close(self, version: int, metadata: str) -> None:
        """Finish the data (:meth:`finish_data`), then the summary and footer; if writing
        those fails, cut back to the end of the data and write them once more."""
        self.finish_data()
        end = self.bio.tell()
        try:
            super().close(version, metadata)
        except OSError as exc:
            if self.failure is None:
                self.failure = exc
                self.frames_kept = self._mark[2]
            self.bio.raw.truncate(end)
            self.bio.raw.seek(end)
            self.bio.pos = end
            super().close(version, metadata)

    def abort(self) -> None:
        self._reserve.release()
        super().abort()


class _Buffer:
    """A finished chunk index entry as rosbags' ``close`` reads it (``tell``, ``getbuffer``)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def tell(self) -> int:
        return len(self._data)

    def getbuffer(self) -> memoryview:
        return memoryview(self._data)


#: rosbags releases whose MCAP writer internals (PendingChunk, record layout) this module
#: was checked against, byte for byte; with any other, :func:`writer_class` gives rosbags'
#: own ``Writer``.
CHECKED_ROSBAGS = ("0.11.9",)


class LeanWriter(Writer):
    """rosbags' rosbag2 ``Writer`` with :class:`LeanMcapWriter` as its MCAP storage; after a
    write error its metadata (the .mcap's and metadata.yaml) counts the messages kept."""

    STORAGE_PLUGINS: ClassVar[Mapping[StoragePlugin, Any]] = MappingProxyType(
        {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: LeanMcapWriter})

    def close(self) -> None:
        storage = self.storage
        if isinstance(storage, LeanMcapWriter):
            storage.finish_data()
            if storage.failure is not None:
                self.counts = {cid: storage.channel_stats.get(cid, 0) for cid in self.counts}
                self.min_timestamp = storage.message_start_time
                self.max_timestamp = storage.message_end_time
        super().close()


def writer_class() -> type[Writer]:
    """:class:`LeanWriter` where the installed rosbags is one it was checked against, else
    rosbags' ``Writer`` (the same bags, with the extra copies)."""
    try:
        installed = version("rosbags")
    except PackageNotFoundError:
        return Writer
    return LeanWriter if installed in CHECKED_ROSBAGS else Writer


__all__ = ["CHECKED_ROSBAGS", "CHUNK_BYTES", "RESERVE_BYTES", "RESERVE_NAME", "LeanMcapWriter",
           "LeanWriter", "writer_class"]
