"""A node whose stop waits for a frame in progress says where that frame is."""

from __future__ import annotations

import threading

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
