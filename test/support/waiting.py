"""Waiting on a condition with a deadline: a test on a busy machine waits as long as it must
and no longer, and fails naming what it waited for."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable

#: A py-spy executable to dump a stuck process's Python stacks into a failure message (the
#: one on PATH by default; tests do not need it).
PY_SPY_ENV = "SEG_TEST_PY_SPY"


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 120.0,
               period: float = 0.05) -> None:
    """Poll ``cond`` every ``period`` seconds until it holds; fail naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(period)


def python_stacks(pid: int) -> str:
    """The Python threads' stacks of a stuck process and its children (py-spy), for a failure
    message; a note saying why not where py-spy is missing or fails."""
    exe = os.environ.get(PY_SPY_ENV) or shutil.which("py-spy")
    if not exe:
        return f"(no Python stacks of {pid}: py-spy is not installed; {PY_SPY_ENV} names one)"
    try:
        out = subprocess.run([exe, "dump", "--subprocesses", "--pid", str(pid)],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(py-spy dump of {pid} failed: {exc})"
    return f"Python stacks of {pid} and its children (py-spy):\n{out.stdout}{out.stderr}"
