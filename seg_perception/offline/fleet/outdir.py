"""The output folder of process-many: its reserved names, its lock and the run token.

Split from the rest of :mod:`seg_perception.offline.fleet` because every part of a run
meets the folder: the names it reserves (the manifest, the summaries, ``.fleet/``), one
driver at a time (:func:`locked_out_dir`), and the check that a worker sees the same folder
as the driver (:func:`check_out_dir`). :class:`FleetError` is the error found before
anything runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

MANIFEST = "manifest.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
WORK_DIR = ".fleet"  # lock file, run token, incomplete outputs
INCOMPLETE = "incomplete"
RESERVED_NAMES = {MANIFEST, SUMMARY_CSV, SUMMARY_JSON, WORK_DIR}


class FleetError(ValueError):
    """A problem with the inputs or the output folder, found before anything runs."""


@contextlib.contextmanager
def locked_out_dir(out_dir: Path) -> Iterator[str]:
    """Create ``out_dir`` and hold its lock for the run (one driver per output folder);
    yields a fresh run token that workers check to prove they see the same folder."""
    import fcntl

    try:
        (out_dir / WORK_DIR / INCOMPLETE).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FleetError(f"cannot create output folder {out_dir}: {exc}") from exc
    if not os.access(out_dir, os.W_OK):
        raise FleetError(f"output folder {out_dir} is not writable")
    lock = open(out_dir / WORK_DIR / "lock", "a+")  # noqa: SIM115 - held for the block
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise FleetError(f"another process-many is writing {out_dir} (lock "
                             f"{lock.name} is held)") from exc
        # Leftovers of runs that crashed: never renamed, so never mistaken for outputs.
        for stale in (out_dir / WORK_DIR / INCOMPLETE).iterdir():
            shutil.rmtree(stale, ignore_errors=True)
        token = uuid.uuid4().hex
        (out_dir / WORK_DIR / "run").write_text(token + "\n")
        yield token
    finally:
        lock.close()


def check_out_dir(out_dir: Path, token: str) -> str | None:
    """None when this machine sees the driver's ``out_dir`` (same run token), else why not."""
    host = socket.gethostname()
    try:
        seen = (out_dir / WORK_DIR / "run").read_text().strip()
    except OSError as exc:
        seen = f"unreadable ({exc.strerror or exc})"
    if seen == token and os.access(out_dir, os.W_OK):
        return None
    return (f"--out {out_dir} on worker host {host} is not the folder the driver writes (run "
            f"token {seen[:40]}): on a cluster --out must be shared storage mounted at the same "
            "path on every node and on the machine running process-many")


__all__ = [
    "INCOMPLETE",
    "MANIFEST",
    "RESERVED_NAMES",
    "SUMMARY_CSV",
    "SUMMARY_JSON",
    "WORK_DIR",
    "FleetError",
    "check_out_dir",
    "locked_out_dir",
]
