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

import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seg_perception.tools.procs import interrupt

DIAG_KEYS = ("frames_received", "frames_processed", "frames_dropped",
             "frames_lost_in_transport", "frames_bad", "frames_without_subscribers",
             "frames_without_grid")
#: The soak camera's optical frame and its pose in the node's default grid_frame.
SOAK_FRAME = "soak_camera_optical"
SOAK_MOUNTING = (0.0, 0.0, 1.5, 0.0, 0.1, 0.0)  # x, y, z, roll, pitch, yaw


@dataclass
class SoakOptions:
    """What to flood the node with, for how long, and how to report it."""

    rate_hz: float = 100.0
    width: int = 640
    height: int = 480
    duration_s: float = 600.0
    window_s: float = 30.0
    namespace: str = "/soak"
    model: str = "default"
    device: str = "cpu"
    encoding: str = "rgb8"
    outputs: tuple[str, ...] = ("labels", "drivable/grid")
    attach: bool = False  # use a node already running in ``namespace``
    node_pid: int | None = None  # its process id when attaching (for RSS)
    node_params: dict[str, Any] = field(default_factory=dict)
    ready_timeout_s: float = 300.0
    out_dir: Path = Path("soak_out")


@dataclass
class Window:
    """Figures of one window of the soak."""

    t_start_s: float
    t_end_s: float
    published: int = 0
    late_ticks: int = 0  # publish ticks skipped because the publisher fell behind
    outputs_received: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    rss_mb: float = float("nan")  # at the end of the window
    rss_max_mb: float = float("nan")
    node: dict[str, int] = field(default_factory=dict)  # diagnostics counters, deltas
    load_avg_1m: float = float("nan")


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (NaN when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


def load_average() -> tuple[float, float, float]:
    try:
        a, b, c = Path("/proc/loadavg").read_text().split()[:3]
        return float(a), float(b), float(c)
    except (OSError, ValueError):
        return (float("nan"),) * 3


def latency_stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    arr = np.asarray(values, float)
    return {"n": int(arr.size), "p50": float(np.percentile(arr, 50)),
            "p95": float(np.percentile(arr, 95)), "max": float(arr.max())}


def summarise(windows: list[Window], all_latencies: list[float], warmup_windows: int = 1,
              ) -> dict[str, Any]:
    """Whole-run figures: latency over all windows, RSS growth after the warm-up windows,
    totals of the node's counters."""
    lat = latency_stats(all_latencies)
    rss = [w.rss_mb for w in windows if math.isfinite(w.rss_mb)]
    after = [w.rss_mb for w in windows[warmup_windows:] if math.isfinite(w.rss_mb)]
    base = windows[warmup_windows - 1].rss_mb if 0 < warmup_windows <= len(windows) else \
        (rss[0] if rss else float("nan"))
    totals: dict[str, int] = {}
    for w in windows:
        for k, v in w.node.items():
            totals[k] = totals.get(k, 0) + v
    published = sum(w.published for w in windows)
    p95s = [w.latency_ms.get("p95", float("nan")) for w in windows]
    p95s = [v for v in p95s if math.isfinite(v)]
    return {
        "windows": len(windows),
        "published": published,
        "late_ticks": sum(w.late_ticks for w in windows),
        "outputs_received": sum(w.outputs_received for w in windows),
        "latency_ms": lat,
        "window_p95_ms": {"min": min(p95s) if p95s else float("nan"),
                          "max": max(p95s) if p95s else float("nan")},
        "rss_mb": {"first": rss[0] if rss else float("nan"),
                   "after_warmup": base,
                   "last": rss[-1] if rss else float("nan"),
                   "max": max(rss) if rss else float("nan"),
                   "growth_after_warmup": (after[-1] - base) if after and math.isfinite(base)
                   else float("nan"),
                   "max_growth_after_warmup": (max(after) - base)
                   if after and math.isfinite(base) else float("nan")},
        "node": totals,
        "not_received_by_node": published - totals.get("frames_received", 0)
        if "frames_received" in totals else None,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency p50/p95/max, node RSS and rates per window, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = report["windows"]
    t = [(w["t_start_s"] + w["t_end_s"]) / 2 / 60.0 for w in windows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ax = axes[0]
    for key, style in (("p50", "-o"), ("p95", "-s"), ("max", ":^")):
        ax.plot(t, [w["latency_ms"].get(key, float("nan")) for w in windows], style,
                label=key, markersize=3)
    ax.set_ylabel("latency, stamp -> labels (ms)")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(t, [w["rss_mb"] for w in windows], "-o", markersize=3, label="end of window")
    ax.plot(t, [w["rss_max_mb"] for w in windows], ":", label="max in window")
    ax.set_ylabel("node RSS (MB)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    ax = axes[2]
    dur = [max(1e-9, w["t_end_s"] - w["t_start_s"]) for w in windows]
    ax.plot(t, [w["published"] / d for w, d in zip(windows, dur, strict=True)], "-o",
            markersize=3, label="published")
    for key, label in (("frames_processed", "processed"), ("frames_dropped", "dropped"),
                       ("frames_lost_in_transport", "lost")):
        ax.plot(t, [w["node"].get(key, float("nan")) / d for w, d in
                    zip(windows, dur, strict=True)], "-", label=label)
    ax.set_ylabel("frames/s")
    ax.set_xlabel("minutes")
    ax.legend(loc="center right")
    ax.grid(alpha=0.3)
    o = report["options"]
    fig.suptitle(f"seg_node soak: {o['width']}x{o['height']} {o['encoding']} at "
                 f"{o['rate_hz']:g} Hz, model {o['model']} on {o['device']}; load avg "
                 f"{report['load_average_start'][0]:.1f} -> {report['load_average_end'][0]:.1f}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fastdds_profile() -> None:
    from seg_perception.ros.demo import fastdds_profile

    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(fastdds_profile()))


def start_node(opts: SoakOptions, log_path: Path) -> subprocess.Popen:
    """``seg_node`` in its own process, logging to ``log_path``."""
    params: dict[str, Any] = {"model": opts.model, "device": opts.device}
    from seg_perception.ros.tf_pose import tf_message_type

    if tf_message_type() is None:  # no /tf_static to publish: the pose by parameters
        params.update({"use_tf": False, **dict(zip(
            ("camera.x", "camera.y", "camera.z", "camera.roll", "camera.pitch", "camera.yaw"),
            SOAK_MOUNTING, strict=True))})
    params.update(opts.node_params)
    cmd = [sys.executable, "-m", "seg_perception.ros.node", "--ros-args",
           "-r", f"__ns:={opts.namespace}"]
    for name, value in params.items():
        cmd += ["-p", f"{name}:={value}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    log = open(log_path, "w")  # noqa: SIM115 - handed to the child; closed with it
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


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


def _counters(diag: dict[str, str]) -> dict[str, int]:
    out = {}
    for key in DIAG_KEYS:
        with contextlib.suppress(KeyError, ValueError):
            out[key] = int(diag[key])
    return out


def run_soak(opts: SoakOptions, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the soak; returns the report (also written to ``out_dir``)."""
    import rclpy

    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _fastdds_profile()
    proc = None
    node_log = out / "node.log"
    pid = opts.node_pid
    if not opts.attach:
        proc = start_node(opts, node_log)
        pid = proc.pid
        _wait_for(lambda: "ready: listening on" in node_log.read_text(), opts.ready_timeout_s,
                  "the node's ready line", alive=lambda: proc.poll() is None)
    flood = _Flood(opts)
    load_start = load_average()
    windows: list[Window] = []
    all_lat: list[float] = []
    alive = (lambda: proc.poll() is None) if proc is not None else (lambda: True)
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
        prev = _counters(diag0)
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
            now_counts = _counters(diag)
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
            now_counts = _counters(diag)
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
        if proc is not None:
            interrupt(proc)
            if report:
                report["node_exit_code"] = proc.returncode
    if report:
        (out / "soak.json").write_text(json.dumps(report, indent=2, default=float))
        if windows:
            plot(report, out / "soak.png")
    return report


def format_summary(report: dict[str, Any]) -> str:
    s = report["summary"]
    lat, rss, node = s["latency_ms"], s["rss_mb"], s["node"]
    return "\n".join([
        f"{s['windows']} windows, {s['published']} frames published "
        f"({s['late_ticks']} publish ticks skipped by a late publisher), "
        f"{s['outputs_received']} labels received",
        f"latency stamp -> labels: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, max "
        f"{lat['max']:.1f} ms; per-window p95 {s['window_p95_ms']['min']:.1f}.."
        f"{s['window_p95_ms']['max']:.1f} ms",
        f"node RSS: {rss['first']:.1f} MB first window, {rss['after_warmup']:.1f} after "
        f"warm-up, {rss['last']:.1f} last, {rss['max']:.1f} max; growth after warm-up "
        f"{rss['growth_after_warmup']:+.1f} MB (max {rss['max_growth_after_warmup']:+.1f})",
        "node: " + ", ".join(f"{k.replace('frames_', '')} {v}" for k, v in node.items())
        + (f"; not received by the node {s['not_received_by_node']}"
           if s.get("not_received_by_node") is not None else ""),
        f"node alive at the end: {report['node_alive_at_end']}; load average "
        f"{report['load_average_start'][0]:.2f} -> {report['load_average_end'][0]:.2f} on "
        f"{report['cpus']} CPUs",
    ])
