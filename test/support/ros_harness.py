"""Helpers for tests that start ``seg_node`` as a process and talk to it over DDS."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from seg_perception.tools.procs import interrupt


class NodeProcess:
    """``seg_node`` (or the ``module`` of another node, e.g. the lifecycle node) in its own
    process; its stderr/stdout go to a log file we can read."""

    def __init__(self, log_path: Path, params: dict[str, Any], namespace: str = "",
                 remaps: dict[str, str] | None = None,
                 module: str = "seg_perception.ros.node") -> None:
        cmd = [sys.executable, "-m", module, "--ros-args"]
        for name, value in params.items():
            cmd += ["-p", f"{name}:={value}"]
        if namespace:
            cmd += ["-r", f"__ns:={namespace}"]
        for src, dst in (remaps or {}).items():
            cmd += ["-r", f"{src}:={dst}"]
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        if not self._log.closed:  # still readable after stop(), for assertion messages
            self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_log(self, text: str, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if not self.alive():
                raise AssertionError(f"seg_node exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {text!r} in the node log:\n{self.log()}")

    def stop(self) -> int:
        # SIGINT, as Ctrl-C / ros2 launch do; killed (a failed exit status) only after 60 s
        interrupt(self.proc, timeout=60)
        self._log.close()
        return self.proc.returncode


class Probe:
    """An in-process node that publishes inputs and records every output it receives."""

    def __init__(self, name: str = "probe") -> None:
        if not rclpy.ok():
            rclpy.init()
        self.node = Node(name)
        self.received: dict[str, list[Any]] = defaultdict(list)
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
        node.stop()
        stop.set()
        spinner.join(timeout=30)
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
