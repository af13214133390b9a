"""Helpers for tests that start ``seg_node`` as a process and talk to it over DDS."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from seg_perception.tools import node_process


class NodeProcess(node_process.NodeProcess):
    """``seg_node`` (or the ``module`` of another node, e.g. the lifecycle node) in its own
    process, its output in ``log_path``: :class:`seg_perception.tools.node_process.NodeProcess`
    with the tests' 60 s SIGINT grace in :meth:`stop` (a loaded machine exits slowly)."""

    stop_timeout = 60.0  # SIGINT first, as Ctrl-C does; SIGKILL (a failed status) only after


class Probe:
    """An in-process node that publishes inputs and records every output it receives."""

    def __init__(self, name: str = "probe") -> None:
        if not rclpy.ok():
            rclpy.init()
        self.node = Node(name)
        self.received: dict[str, list[Any]] = defaultdict(list)
        self._clients: dict[tuple[Any, str], Any] = {}
        self._lock = threading.Lock()
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop:
            self.executor.spin_once(timeout_sec=0.05)

    def subscribe(self, msg_type: Any, topic: str, reliable: bool = True) -> None:
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)

        def cb(msg: Any, topic: str = topic) -> None:
            with self._lock:
                self.received[topic].append(msg)

        self.node.create_subscription(msg_type, topic, cb, qos)

    def publisher(self, msg_type: Any, topic: str, reliable: bool = True) -> Any:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        return self.node.create_publisher(msg_type, topic, qos)

    def client(self, srv_type: Any, name: str) -> Any:
        """The probe's client of service ``name``, created once: a client made afresh for each
        call must be matched afresh, and its first response can be lost meanwhile."""
        key = (srv_type, name)
        if key not in self._clients:
            self._clients[key] = self.node.create_client(srv_type, name)
        return self._clients[key]

    def messages(self, topic: str) -> list[Any]:
        with self._lock:
            return list(self.received[topic])

    def wait_until(self, cond: Callable[[], bool], timeout: float = 180.0,
                   what: str = "condition", tick: Callable[[], None] | None = None,
                   period: float = 0.3) -> None:
        """Poll ``cond``; call ``tick`` (e.g. re-publish a frame) every ``period`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if tick is not None:
                tick()
            time.sleep(period)
        raise AssertionError(f"timed out waiting for {what}")

    @contextlib.contextmanager
    def static_tf(self, transforms: Any | Sequence[Any]) -> Iterator[Any]:
        """Latch ``transforms`` on /tf_static for the ``with`` block only (yields the
        broadcaster). The probe outlives a test (module scope): a broadcaster left behind
        would hand a later test's node an earlier test's camera pose, transient local,
        racing the transform that test sends."""
        import tf2_ros

        broadcaster = tf2_ros.StaticTransformBroadcaster(self.node)
        broadcaster.sendTransform(transforms)
        try:
            yield broadcaster
        finally:
            self.node.destroy_publisher(broadcaster.pub_tf)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=30)  # one spin_once; longer on a loaded machine
        self.executor.remove_node(self.node)
        self.node.destroy_node()


@contextlib.contextmanager
def spinning(node: Any) -> Iterator[Any]:
    """An in-process node spun by an executor thread for the block; afterwards the node is
    stopped and destroyed and rclpy shut down (for tests that look inside a live SegNode)."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        yield node
    finally:
        node.close()
        stop.set()
        spinner.join(timeout=30)
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
