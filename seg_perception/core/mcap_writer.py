"""rosbags' MCAP storage writer, writing the same bytes with fewer copies of the messages.

Why: ``process`` writes about 1.5 MB of images per 480x360 frame. rosbags' writer copies each
message four times before the file sees it (into a record, into the chunk's BytesIO and its
regrowths, out of it with ``getvalue()``, into the chunk record), about as much CPU as the
file write itself on a 2-core machine where ``process`` competes with the network for CPU.
Here a chunk is a list of buffers: a message's record header is packed on its own and its
data kept by reference until the chunk is written, with one ``write`` per buffer.

The file is byte for byte the one rosbags writes (tested); only uncompressed chunks take the
lean path (the project never asks rosbags for chunk compression; a compressed writer falls
back to rosbags' own code). A message's data must not change after ``write``: it is read
when its chunk is written (rosbags' serializer returns a fresh buffer per message; the
bag readers return immutable bytes).
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from types import MappingProxyType
from typing import Any, ClassVar

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import (
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


class LeanMcapWriter(McapWriter):
    """:class:`rosbags.rosbag2.storage_mcap.McapWriter` with list-of-buffers chunks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chunk = _new_chunk()

    def write(self, connection: Any, timestamp: int, data: bytes | memoryview) -> None:
        """Add one message to the pending chunk (rosbags' bookkeeping, no copy of ``data``)."""
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
        """Write the pending chunk, its message indexes, and keep its chunk index entry."""
        if self.compression:
            super().close_chunk()
            self.chunk = _new_chunk()
            return
        chunk = self.chunk
        parts: _Parts = chunk.bio  # type: ignore[assignment]
        size = parts.size
        chunk_start = self.bio.tell()
        self.bio.write(_CHUNK.pack(0x06, 40 + size, chunk.message_start_time,
                                   chunk.message_end_time, size, 0, 0, size))
        for part in parts.parts:
            self.bio.write(part)
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
    """rosbags' rosbag2 ``Writer`` with :class:`LeanMcapWriter` as its MCAP storage."""

    STORAGE_PLUGINS: ClassVar[Mapping[StoragePlugin, Any]] = MappingProxyType(
        {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: LeanMcapWriter})


def writer_class() -> type[Writer]:
    """:class:`LeanWriter` where the installed rosbags is one it was checked against, else
    rosbags' ``Writer`` (the same bags, with the extra copies)."""
    try:
        installed = version("rosbags")
    except PackageNotFoundError:
        return Writer
    return LeanWriter if installed in CHECKED_ROSBAGS else Writer


__all__ = ["CHECKED_ROSBAGS", "CHUNK_BYTES", "LeanMcapWriter", "LeanWriter", "writer_class"]
