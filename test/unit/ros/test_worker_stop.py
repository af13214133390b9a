"""A node whose stop waits for a frame in progress says where that frame is."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("rclpy")

from seg_perception.ros.worker import FrameWorker


def _stuck_in_a_lookup(release: threading.Event) -> None:
    release.wait(60)


def test_busy_where_names_the_call_a_thread_is_stuck_in() -> None:
    release = threading.Event()
    worker = FrameWorker.__new__(FrameWorker)  # only its threads matter here
    stuck = threading.Thread(target=_stuck_in_a_lookup, args=(release,), name="seg_outputs")
    done = threading.Thread(target=lambda: None, name="seg_worker")
    worker._threads = [done, stuck]
    done.start()
    done.join()
    stuck.start()
    try:
        where = worker.busy_where()
        assert where.startswith("seg_outputs in "), where
        assert "_stuck_in_a_lookup (test_worker_stop.py:" in where, where
        assert "seg_worker" not in where  # a thread that ended is not named
    finally:
        release.set()
        stuck.join()
    assert worker.busy_where() == ""


class _Logger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, text: str) -> None:
        self.lines.append(("info", text))

    def warning(self, text: str) -> None:
        self.lines.append(("warning", text))


def test_exit_gives_up_on_a_stuck_frame_but_a_transition_waits_for_it() -> None:
    from types import SimpleNamespace

    from seg_perception.ros.node import SegNode

    release = threading.Event()
    stuck = threading.Thread(target=_stuck_in_a_lookup, args=(release,), name="seg_outputs",
                             daemon=True)
    worker = FrameWorker.__new__(FrameWorker)
    worker._threads = [stuck]
    worker.stop = lambda timeout=5.0: worker.join(0.05)
    stuck.start()
    log = _Logger()
    node = SimpleNamespace(_diag_timer=None, worker=worker, cameras=[], stage="active",
                           get_logger=lambda: log)
    try:
        t0 = time.monotonic()
        SegNode._stop_processing(node, give_up_s=0.3)  # the process's exit
        assert time.monotonic() - t0 < 30
        assert stuck.is_alive() and node.stage == "inactive"
        kind, text = log.lines[-1]
        assert kind == "warning" and "did not finish in 0.3 s" in text
        assert "_stuck_in_a_lookup" in text and "exiting without it" in text

        # A transition (no give_up_s) waits until the frame is done, however long.
        log.lines.clear()
        node.stage = "active"
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (SegNode._stop_processing(node), done.set()))
        waiter.start()
        assert not done.wait(1.0)  # still waiting
        release.set()
        assert done.wait(60)
        assert all(kind == "info" for kind, _ in log.lines)
    finally:
        release.set()
        stuck.join()
