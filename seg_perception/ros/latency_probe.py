"""Measure a running ``seg_node`` over the whole path: camera publish -> outputs received.

Publishes frames of a given size at a fixed rate on ``image`` (in the node's namespace),
listens to ``labels`` and ``/diagnostics``, and prints the end-to-end latency percentiles and
the node's own per-stage split (decode, inference, publish). Python conversion is only part
of the cost: transport (DDS, shared memory or not) matters as much, so measure both ends.

    python -m seg_perception.ros.latency_probe --namespace / --width 1280 --height 720
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from seg_perception.ros.conversions import numpy_to_imgmsg


def _frame(width: int, height: int, i: int) -> np.ndarray:
    """A road-like test frame that changes a little every time (no caching anywhere)."""
    img = np.empty((height, width, 3), np.uint8)
    img[: height // 2] = (110, 150, 200)
    img[height // 2:] = (90, 90, 95)
    x = (i * 7) % max(1, width - 40)
    img[height // 3: height // 2, x: x + 40] = (200, 40, 40)
    return img


def run(namespace: str, width: int, height: int, rate: float, frames: int,
        all_outputs: bool = True, timeout: float = 120.0) -> dict[str, float | dict[str, str]]:
    """Publish ``frames`` frames at ``rate`` Hz; return latency percentiles and node stages."""
    ns = namespace.rstrip("/")
    node = Node("seg_latency_probe")
    sent: dict[tuple[int, int], float] = {}
    latencies: list[float] = []
    diag: dict[str, str] = {}
    lock = threading.Lock()

    def on_labels(msg: Image) -> None:
        now = time.perf_counter()
        with lock:
            t0 = sent.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
            if t0 is not None:
                latencies.append((now - t0) * 1e3)

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"{ns}/seg_node") or (not ns and "seg_node" in status.name):
                diag.update({kv.key: kv.value for kv in status.values})

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Image, f"{ns}/image", reliable)
    node.create_subscription(Image, f"{ns}/labels", on_labels, reliable)
    if all_outputs:  # the node computes only what someone subscribes to
        for topic in ("labels_color", "overlay", "confidence", "drivable/mask"):
            node.create_subscription(Image, f"{ns}/{topic}", lambda _m: None, reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    deadline = time.monotonic() + timeout
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if pub.get_subscription_count() == 0:
        raise RuntimeError(f"no seg_node subscribes to {ns}/image")
    msgs = []
    for i in range(frames):
        msg = numpy_to_imgmsg(_frame(width, height, i), "rgb8")
        msg.header.frame_id = "probe_camera"
        msgs.append(msg)
    period = 1.0 / rate
    next_t = time.perf_counter()
    for msg in msgs:
        stamp = node.get_clock().now().to_msg()
        msg.header.stamp = stamp
        with lock:
            sent[(stamp.sec, stamp.nanosec)] = time.perf_counter()
        pub.publish(msg)
        next_t += period
        while time.perf_counter() < next_t:
            rclpy.spin_once(node, timeout_sec=max(0.0, next_t - time.perf_counter()))
    end = time.perf_counter() + 3.0
    while time.perf_counter() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {
        "frames_sent": float(frames),
        "frames_received": float(len(latencies)),
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p95_ms": float(np.percentile(lat, 95)),
        "node": diag,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", default="/", help="seg_node's namespace")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--rate", type=float, default=5.0, help="frames per second sent")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--labels-only", action="store_true",
                        help="subscribe to `labels` only (the node then computes nothing else)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    rclpy.init()
    try:
        result = run(args.namespace, args.width, args.height, args.rate, args.frames,
                     not args.labels_only)
    finally:
        rclpy.try_shutdown()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
