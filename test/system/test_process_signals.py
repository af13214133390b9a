"""Stopping ``process`` by signal: SIGINT and SIGTERM stop it after the current frame and still
leave a finished bag (exit 130), a repeated signal never cuts the finishing short, and
``stop_signals`` restores or keeps the handlers accordingly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from bags import IMAGE_OUTPUTS, read_bag, start_process
from waiting import wait_until

from seg_perception.runtime.signals import STOP_SIGNALS, hold_stop_signals, stop_signals


@pytest.mark.slow
def test_sigint_leaves_a_valid_bag(tmp_path: Path) -> None:
    """Ctrl-C on the command line: exit 130 and an output bag with whole frames only."""
    n = 1500
    proc, err, reader = start_process(tmp_path, n, min_done=2)
    proc.send_signal(signal.SIGINT)
    stdout = proc.stdout.read()
    proc.wait(timeout=60)
    reader.join(timeout=5)
    assert proc.returncode == 130, stdout.decode() + bytes(err).decode()
    assert b"is a valid bag" in stdout
    assert b"Traceback" not in bytes(err)
    out = read_bag(tmp_path / "out")
    counts = {len(out.get(f"/cam/{name}", [])) for name in IMAGE_OUTPUTS}
    assert len(counts) == 1 and 0 < counts.pop() < n


def _finish(proc: subprocess.Popen, err: bytearray, reader: Any,
            repeat: list[int] | None = None) -> tuple[str, str]:
    """Wait for the exit, sending the signals of ``repeat`` every millisecond meanwhile (they
    land while the bag is being finished)."""
    deadline = time.monotonic() + 120
    while repeat and proc.poll() is None and time.monotonic() < deadline:
        for sig in repeat:
            with contextlib.suppress(ProcessLookupError):  # it may exit meanwhile
                proc.send_signal(sig)
        time.sleep(0.001)
    stdout = proc.stdout.read()
    proc.wait(timeout=120)
    reader.join(timeout=5)
    return stdout.decode(), bytes(err).decode()


def _assert_finished_bag(out: Path, n: int) -> int:
    """The output is a complete rosbag2 bag (metadata.yaml, .mcap with summary: rosbags'
    own reader opens it, not the prefix fallback) with whole frames only."""
    from rosbags.rosbag2 import Reader

    assert (out / "metadata.yaml").is_file()
    with Reader(out) as reader:  # raises on an .mcap without summary
        counts = {c.topic: c.msgcount for c in reader.connections}
    per_output = {counts.get(f"/cam/{name}", 0) for name in IMAGE_OUTPUTS}
    assert len(per_output) == 1, counts
    k = per_output.pop()
    assert 0 < k < n
    assert {len(read_bag(out)[f"/cam/{name}"]) for name in IMAGE_OUTPUTS} == {k}
    return k


@pytest.mark.slow
def test_sigterm_finishes_the_bag_and_exits_130(tmp_path: Path) -> None:
    n = 1500
    proc, err, reader = start_process(tmp_path, n)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = _finish(proc, err, reader)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted by SIGTERM" in stdout and "is a valid bag" in stdout, stdout
    assert "Traceback" not in stderr
    k = _assert_finished_bag(tmp_path / "out", n)
    assert f"interrupted by SIGTERM after {k} frames" in stdout


@pytest.mark.slow
@pytest.mark.parametrize(("first", "again"), [
    (signal.SIGINT, [signal.SIGINT]),
    (signal.SIGTERM, [signal.SIGTERM, signal.SIGINT]),
])
def test_repeated_signals_while_finishing_still_finish_the_bag(tmp_path: Path, first: int,
                                                              again: list[int]) -> None:
    """Ctrl-C, then Ctrl-C again and again while the bag is being finished (every ms until
    the process exits): the bag still gets its summary and metadata.yaml, exit 130, no
    traceback."""
    n = 1500
    proc, err, reader = start_process(tmp_path, n)
    proc.send_signal(first)
    stdout, stderr = _finish(proc, err, reader, repeat=again)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert "is a valid bag" in stdout, stdout
    assert stderr.count("still finishing") <= 1  # said once, however many came
    _assert_finished_bag(tmp_path / "out", n)



def test_stop_signals_restores_handlers_and_holds_back_repeats() -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    with stop_signals() as state:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            wait_until(lambda: state.count > 0, "the SIGTERM")  # the handler raises here
        os.kill(os.getpid(), signal.SIGINT)  # ignored now: finishing
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: state.count >= 3, "the two later signals")
    assert state.name == "SIGTERM" and state.count == 3
    # Stopping: later signals stay ignored so none cuts the exit short ...
    assert all(signal.getsignal(s) == signal.SIG_IGN for s in STOP_SIGNALS)
    for s, handler in before.items():
        signal.signal(s, handler)
    with stop_signals():  # ... while a run without signal restores the handlers
        pass
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before
    # A frame's writes are never split: the signal comes after the held block.
    order = []
    try:
        with stop_signals(), pytest.raises(KeyboardInterrupt):
            with hold_stop_signals():
                held, caught = signal.getsignal(signal.SIGTERM), []

                def seen(signum: int, frame: Any) -> None:  # the block's own handler, noted
                    caught.append(signum)
                    held(signum, frame)

                signal.signal(signal.SIGTERM, seen)
                os.kill(os.getpid(), signal.SIGTERM)
                wait_until(lambda: bool(caught), "the held-back SIGTERM")
                order.append("block done")
            order.append("not reached")
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert order == ["block done"]
