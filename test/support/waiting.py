"""Waiting on a condition with a deadline: a test on a busy machine waits as long as it must
and no longer, and fails naming what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 120.0,
               period: float = 0.05) -> None:
    """Poll ``cond`` every ``period`` seconds until it holds; fail naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(period)
