"""Writing rosbag2 bags without ROS, so that they stay valid whatever stops the writing.

``process`` writes its output here, the demo and the tests their input bags. A
:class:`BagWriter` adds a topic's connection on its first message, never overwrites a bag,
and always leaves a bag that ``ros2 bag`` reads: its closing (the index and
``metadata.yaml``) is not cut short by a second Ctrl-C, and a write that fails part-way
(disk full, I/O error) ends the writing with :class:`BagWriteError` and a bag closed with
what reached it whole (cut back to the last frame boundary by the lean MCAP writer of
:mod:`seg_perception.offline.mcap_writer`).
"""

from __future__ import annotations

import contextlib
import errno
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seg_perception.offline.topics import BagError, output_qos, typestore
from seg_perception.runtime.signals import ignore_stop_signals

#: rosbag2 metadata version written: 8 keeps Humble/Iron able to read our bags (9 changed the
#: QoS serialisation that older rosbag2 releases cannot parse); rosbags reads every version.
WRITE_VERSION = 8


class BagWriteError(BagError):
    """Writing the output bag failed part-way (disk full, I/O error, read-only, file too
    large, quota): the writing ended, the bag was closed with what reached it whole."""


def write_failure(exc: OSError, path: Path) -> str:
    """``writing FILE failed: No space left on device (ENOSPC)``: what failed, where."""
    name = errno.errorcode.get(exc.errno or 0, "")
    return (f"writing {exc.filename or path} failed: {exc.strerror or exc}"
            + (f" ({name})" if name else ""))


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
            raise BagWriteError(write_failure(self.write_error, self.path))
        try:
            self._writer.write(conn, log_time, data)
        except OSError as exc:
            self.write_error = exc
            raise BagWriteError(write_failure(exc, self.path)) from exc

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
        with ignore_stop_signals():
            try:
                self._writer.close()
            except OSError as exc:
                self.write_error = self.write_error or exc
                raise BagWriteError(write_failure(exc, self.path)) from exc
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


__all__ = ["WRITE_VERSION", "BagWriteError", "BagWriter", "write_failure"]
