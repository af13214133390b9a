"""Soak benchmark: flood a running ``seg_node`` with camera frames for minutes and watch it.

Starts ``seg_node`` as its own process (or attaches to one already running), publishes
frames of a given size at a fixed rate on ``<namespace>/image`` with a camera_info of the
same stamp each (as camera drivers send them) and the camera's pose on /tf_static (frame
``soak_camera_optical``, 1.5 m up, pitched down 0.1 rad), so grid and boundary are computed
as on a vehicle, subscribes to the node's outputs like a planner would and, per
window of time, records the end-to-end latency (image header stamp -> labels received: p50,
p95, max), the node's resident memory (from /proc), how many frames were published, reached
the node, were processed, replaced in its latest-frame slot (dropped), lost in transport or
rejected, and the machine's load average. Writes ``soak.json`` and ``soak.png``.

    seg-perception soak --rate 100 --width 640 --height 480 --duration 10m --out soak_out

Not a test: the figures depend on the machine and its load, which the report records.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from seg_perception.tools.node_process import NodeProcess, use_fastdds_profile
from seg_perception.tools.soak_report import (
    SoakOptions,
    Window,
    counters,
    latency_stats,
    load_average,
    plot,
    rss_mb,
    summarise,
)

#: The soak camera's optical frame and its pose in the node's default grid_frame.
SOAK_FRAME = "soak_camera_optical"
SOAK_MOUNTING = (0.0, 0.0, 1.5, 0.0, 0.1, 0.0)  # x, y, z, roll, pitch, yaw


def node_params(opts: SoakOptions) -> dict[str, Any]:
    """The parameters of the ``seg_node`` the soak starts."""
    params: dict[str, Any] = {"model": opts.model, "device": opts.device}
    from seg_perception.ros.tf_pose import tf_message_type

    if tf_message_type() is None:  # no /tf_static to publish: the pose by parameters
        params.update({"use_tf": False, **dict(zip(
            ("camera.x", "camera.y", "camera.z", "camera.roll", "camera.pitch", "camera.yaw"),
            SOAK_MOUNTING, strict=True))})
    params.update(opts.node_params)
    return params


def _wait_for(cond: Callable[[], bool], timeout: float, what: str,
              alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if not alive():
            raise RuntimeError(f"seg_node exited while waiting for {what}")
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class _Flood:
    """The ROS side: publisher thread, output and diagnostics subscriptions."""

    def __init__(self, opts: SoakOptions) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PolygonStamped
        from nav_msgs.msg import OccupancyGrid
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from seg_perception.ros.conversions import KIT, numpy_to_imgmsg
        from seg_perception.runtime import messages
        from seg_perception.runtime.geometry import CameraModel
        from seg_perception.runtime.image_codec import encode_raw

        self.opts = opts
        if not rclpy.ok():
            rclpy.init()
        self.node = Node("seg_soak")
        ns = opts.namespace.rstrip("/")
        sensor = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                            reliability=ReliabilityPolicy.BEST_EFFORT)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, f"{ns}/image", sensor)
        self.info_pub = self.node.create_publisher(CameraInfo, f"{ns}/camera_info", sensor)
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.outputs = 0
        self.diag: dict[str, str] = {}
        self.diag_time = 0.0
        types = {"drivable/grid": OccupancyGrid, "drivable/boundary": PolygonStamped}
        for name in opts.outputs:
            cb = self._on_labels if name == "labels" else self._on_other
            self.node.create_subscription(types.get(name, Image), f"{ns}/{name}", cb, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.status_prefix = f"{ns}/seg_node" if ns else "/seg_node"

        # Pre-built messages; only the stamp changes per publish (the publisher costs little).
        rng = np.random.default_rng(0)
        self.msgs = []
        for i in range(8):
            rgb = _road_frame(opts.width, opts.height, i, rng)
            if opts.encoding == "rgb8":
                msg = numpy_to_imgmsg(rgb, "rgb8")
            else:
                data, step = encode_raw(rgb, opts.encoding)
                msg = messages.raw_image_message(KIT, data, opts.encoding, opts.width,
                                                 opts.height, step, None)
            msg.header.frame_id = SOAK_FRAME
            self.msgs.append(msg)
        cam = CameraModel.from_fov(opts.width, opts.height, 90.0)
        self.info = messages.camera_info_message(KIT, cam, messages.header(KIT, 0, 0,
                                                                           SOAK_FRAME))
        self.tf_pub = self._latch_camera_pose()
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._spin = threading.Thread(target=self._spin_loop, daemon=True)
        self._spin.start()
        self.published = 0
        self.late = 0
        self.publishing = threading.Event()

    def _latch_camera_pose(self) -> Any:
        """/tf_static ``base_footprint <- soak_camera_optical`` (reliable, transient local,
        as tf2's static broadcaster); None without tf2_msgs (the node is then started with
        use_tf false and the same pose in its camera.* parameters)."""
        try:
            from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
            from tf2_msgs.msg import TFMessage
        except ImportError:
            return None
        from seg_perception.ros.conversions import KIT
        from seg_perception.runtime import messages
        from seg_perception.runtime.geometry import CameraMounting, Transform

        mount = CameraMounting(*SOAK_MOUNTING)
        optical = Transform.from_matrix(mount.rotation, mount.position)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pub = self.node.create_publisher(TFMessage, "/tf_static", latched)
        pub.publish(messages.tf_message(KIT, [("base_footprint", SOAK_FRAME, optical)]))
        return pub

    def _spin_loop(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def _now_ns(self) -> int:
        return time.time_ns()

    def _on_labels(self, msg: Any) -> None:
        now = self._now_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.outputs += 1
            if stamp > 0:
                self.latencies.append((now - stamp) / 1e6)

    def _on_other(self, _msg: Any) -> None:
        pass

    def _on_diag(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith(self.status_prefix):
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in status.values}
                    self.diag_time = time.monotonic()

    def take(self) -> tuple[list[float], int, dict[str, str]]:
        with self.lock:
            lat, self.latencies = self.latencies, []
            n, self.outputs = self.outputs, 0
            return lat, n, dict(self.diag)

    def publish_one(self, i: int) -> None:
        msg = self.msgs[i % len(self.msgs)]
        now = self._now_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        self.info.header.stamp = msg.header.stamp
        self.info_pub.publish(self.info)  # first: the node pairs the image with it
        self.image_pub.publish(msg)

    def flood(self, until: float) -> None:
        """Publish at ``rate_hz`` on an absolute schedule until monotonic time ``until``;
        ticks the publisher cannot keep up with are skipped (counted), never bunched."""
        period = 1.0 / self.opts.rate_hz
        t0 = time.monotonic()
        k = 0
        self.publishing.set()
        while not self._stop.is_set():
            due = t0 + k * period
            now = time.monotonic()
            if due >= until:
                break
            if due > now:
                time.sleep(due - now)
            elif now - due > period:
                skip = int((now - due) / period)
                with self.lock:
                    self.late += skip
                k += skip
                continue
            self.publish_one(k)
            with self.lock:
                self.published += 1
            k += 1
        self.publishing.clear()

    def take_counts(self) -> tuple[int, int]:
        with self.lock:
            p, late = self.published, self.late
            self.published = self.late = 0
            return p, late

    def close(self) -> None:
        self._stop.set()
        self._spin.join(timeout=2)
        self.executor.remove_node(self.node)
        self.node.destroy_node()


def _road_frame(w: int, h: int, i: int, rng: np.random.Generator) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[: h * 2 // 5] = (120 + 5 * i, 160, 220)
    img[h * 2 // 5:] = (90, 90, 95)
    x = (10 + 37 * i) % max(1, w - w // 6)
    img[h // 3: h // 2, x: x + w // 6] = (200, 30, 30)
    noise = rng.integers(0, 12, (h, w, 1), dtype=np.uint8)
    return img + noise


def run_soak(opts: SoakOptions, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the soak; returns the report (also written to ``out_dir``)."""
    import rclpy

    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    use_fastdds_profile()
    node = None
    pid = opts.node_pid
    if not opts.attach:
        node = NodeProcess(out / "node.log", node_params(opts), namespace=opts.namespace)
        pid = node.pid
    try:
        if node is not None:
            node.wait_ready(opts.ready_timeout_s)
        flood = _Flood(opts)
    except BaseException:
        if node is not None:
            node.stop()
        raise
    load_start = load_average()
    windows: list[Window] = []
    all_lat: list[float] = []
    alive = node.alive if node is not None else (lambda: True)
    report: dict[str, Any] = {}
    try:
        # Warm-up: slow frames until outputs flow (discovery, first inference).
        i = 0

        def flowing() -> bool:
            nonlocal i
            flood.publish_one(i)
            i += 1
            time.sleep(0.4)
            return flood.outputs > 0

        _wait_for(flowing, 120.0, "the first labels", alive=alive)
        # The node's counters as they stand after the warm-up: a diagnostics message newer
        # than the last warm-up frame (they come every diagnostics_period, 1 s by default).
        t_warm = time.monotonic() + 0.2
        _wait_for(lambda: flood.diag_time > t_warm, 30.0, "the node's /diagnostics",
                  alive=alive)
        flood.take_counts()
        progress(f"soak: {opts.width}x{opts.height} {opts.encoding} at {opts.rate_hz:g} Hz for "
                 f"{opts.duration_s:g} s, windows of {opts.window_s:g} s, node pid {pid}")
        t_begin = time.monotonic()
        end = t_begin + opts.duration_s
        publisher = threading.Thread(target=flood.flood, args=(end,), daemon=True)
        _, _, diag0 = flood.take()
        prev = counters(diag0)
        publisher.start()
        t_w = t_begin
        while t_w < end - 1e-6 and alive():
            w_end = min(end, t_w + opts.window_s)
            rss_samples = []
            while time.monotonic() < w_end and alive():
                time.sleep(min(1.0, max(0.0, w_end - time.monotonic())))
                if pid:
                    rss_samples.append(rss_mb(pid))
            lat, n_out, diag = flood.take()
            published, late = flood.take_counts()
            now_counts = counters(diag)
            w = Window(t_w - t_begin, time.monotonic() - t_begin, published, late, n_out,
                       latency_stats(lat))
            finite = [r for r in rss_samples if math.isfinite(r)]
            w.rss_mb = finite[-1] if finite else float("nan")
            w.rss_max_mb = max(finite) if finite else float("nan")
            w.node = {k: now_counts[k] - prev.get(k, 0) for k in now_counts}
            w.load_avg_1m = load_average()[0]
            prev = now_counts or prev
            all_lat.extend(lat)
            windows.append(w)
            lm = w.latency_ms
            progress(f"  {w.t_end_s:6.0f} s: latency p50 {lm['p50']:.0f} p95 {lm['p95']:.0f} "
                     f"max {lm['max']:.0f} ms, RSS {w.rss_mb:.0f} MB, published {published}, "
                     f"processed {w.node.get('frames_processed', '?')}, dropped "
                     f"{w.node.get('frames_dropped', '?')}, lost "
                     f"{w.node.get('frames_lost_in_transport', '?')}, load {w.load_avg_1m:.1f}")
            t_w = w_end
        publisher.join(timeout=5)
        # Drain: outputs still in flight and the node's next diagnostics (every second by
        # default) belong to the last window, so the totals compare like with like.
        time.sleep(2.5)
        lat, n_out, diag = flood.take()
        if windows:
            last = windows[-1]
            last.outputs_received += n_out
            all_lat.extend(lat)
            now_counts = counters(diag)
            for k in now_counts:
                last.node[k] = last.node.get(k, 0) + now_counts[k] - prev.get(k, 0)
        node_died = not alive()
        report = {
            "options": {k: (str(v) if isinstance(v, Path) else v)
                        for k, v in asdict(opts).items()},
            "node_pid": pid,
            "node_alive_at_end": not node_died,
            "load_average_start": load_start,
            "load_average_end": load_average(),
            "cpus": os.cpu_count(),
            "windows": [asdict(w) for w in windows],
            "summary": summarise(windows, all_lat),
            # the node's last /diagnostics status: its stage timings, batch, cycle time
            "node_diagnostics": diag,
        }
    finally:
        flood.close()
        rclpy.try_shutdown()
        if node is not None:
            code = node.stop()
            if report:
                report["node_exit_code"] = code
    if report:
        (out / "soak.json").write_text(json.dumps(report, indent=2, default=float))
        if windows:
            plot(report, out / "soak.png")
    return report
