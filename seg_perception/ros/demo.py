"""``seg-perception demo``: a drive through the node over DDS, recorded and reported.

1. a bag: a synthetic drive (scene generator) or the user's own;
2. ``seg_node`` as its own process (default model, ``use_sim_time``);
3. the bag played to it with ``/clock`` (:class:`BagPlayer`), its outputs recorded to a bag;
4. a report folder: a video of camera | overlay | drivable grid, a latency and rate summary,
   and the paths of both bags.

With ``cameras`` > 1 (``demo --cameras 4``) the drive is seen by a synthetic surround rig
(front, left, right, rear, on /tf_static) and one ``seg_node`` serves all cameras: the
report shows the cameras' overlays, the fused surround grid and the generator's exact fused
truth, with the agreement of the two and the node's batch size and cycle time.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from seg_perception.offline.reader import bag_topics, decode_frame, open_bag
from seg_perception.offline.topics import (
    GRID_OUTPUTS,
    IMAGE_OUTPUTS,
    BagError,
    camera_namespace,
    output_topic,
    typestore,
)
from seg_perception.offline.writer import BagWriter
from seg_perception.ros.player import BagPlayer, PlayOptions, message_class
from seg_perception.ros.tf_pose import tf_message_type
from seg_perception.runtime.config import PipelineConfig
from seg_perception.runtime.geometry import GridSpec
from seg_perception.sim.demo_report import (
    grid_picture,
    side_by_side,
    write_animation,
    write_synthetic_drive,
)
from seg_perception.tools.procs import interrupt

log = logging.getLogger(__name__)

RAW_IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"


@dataclass
class DemoOptions:
    """What to run. Without ``bag`` a synthetic drive of ``frames`` frames is made."""

    out: Path
    bag: Path | None = None
    image_topic: str | None = None
    camera_info_topic: str | None = None
    frames: int = 100
    fps: float = 10.0
    width: int = 640
    height: int = 360
    model: str = "default"
    checkpoint: str = ""
    device: str = "auto"
    rate: float = 1.0
    seed: int = 0
    node_params: dict[str, Any] = field(default_factory=dict)
    startup_timeout: float = 180.0
    cameras: int = 1


def fastdds_profile() -> Path:
    """The Fast DDS shared-memory profile, installed (colcon) or in the source tree (pip -e)."""
    here = Path(__file__).resolve().parent.parent.parent / "config" / "fastdds_shm.xml"
    if here.is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("seg_perception")) / "config" / "fastdds_shm.xml"
    except Exception:  # no ament index: the source path is all there is
        return here


def _stamp_of(raw: bytes | memoryview) -> tuple[int, int]:
    """Header stamp of a CDR message whose first field is a std_msgs/Header."""
    fmt = "<iI" if bytes(raw[1:2]) == b"\x01" else ">iI"
    sec, nsec = struct.unpack_from(fmt, raw, 4)
    return sec, nsec


class _Recorder:
    """Records serialised messages of chosen topics to a bag, noting wall arrival times."""

    def __init__(self, node: Node, writer: BagWriter) -> None:
        self.node = node
        self.writer = writer
        self.arrivals: dict[str, dict[tuple[int, int], float]] = {}
        self._lock = threading.Lock()
        self._subs: list[Any] = []

    def add(self, topic: str, msgtype: str, record: bool = True) -> None:
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        if topic.endswith("image_raw") or topic.endswith("/compressed"):
            qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.arrivals[topic] = {}

        def callback(data: bytes, topic: str = topic) -> None:
            now = time.perf_counter()
            with self._lock:
                if msgtype != "diagnostic_msgs/msg/DiagnosticArray":
                    self.arrivals[topic].setdefault(_stamp_of(data), now)
                if record:
                    self.writer.write_raw(topic, msgtype, data, time.time_ns())

        self._subs.append(self.node.create_subscription(
            message_class(msgtype), topic, callback, qos, raw=True))

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.arrivals.get(topic, {}))

    def matched(self) -> bool:
        """True once every recorded output topic has a publisher (the node) connected."""
        return all(sub.get_publisher_count() > 0 for sub in self._subs[:-2])


def _image_topic(bag: Path, wanted: str | None) -> tuple[str, str]:
    with open_bag(bag) as reader:
        topics = bag_topics(reader)
    images = {t: v.msgtype for t, v in topics.items() if v.msgtype in (RAW_IMAGE,
                                                                       COMPRESSED_IMAGE)}
    if wanted:
        if wanted not in images:
            raise BagError(f"{wanted} is not an image topic of {bag}; image topics: "
                           f"{', '.join(sorted(images)) or 'none'}")
        return wanted, images[wanted]
    if not images:
        raise BagError(f"{bag} has no sensor_msgs/Image or CompressedImage topic")
    first = sorted(images)[0]
    if len(images) > 1:
        log.info("several image topics in %s; using %s (choose with --image-topic)", bag, first)
    return first, images[first]


def _pose_params(m: Any, prefix: str = "") -> dict[str, float]:
    """The ``camera.*`` parameters (``prefix``: ``X.`` for camera X) of a mounting."""
    return {f"{prefix}camera.{k}": float(getattr(m, k))
            for k in ("x", "y", "z", "roll", "pitch", "yaw")}


def _tf_topics(bag: Path) -> list[str]:
    """The bag's /tf_static and /tf: the node takes the camera pose from them."""
    with open_bag(bag) as reader:
        topics = bag_topics(reader)
    return [t for t in ("/tf_static", "/tf") if t in topics]


def _start_node(opts: DemoOptions, ns: str, image_topic: str, info_topic: str,
                compressed: bool, params: dict[str, Any], log_path: Path) -> subprocess.Popen:
    remaps = {}
    if compressed:
        remaps["image/compressed"] = image_topic
        params = {**params, "input_transport": "compressed"}
    else:
        remaps["image"] = image_topic
    remaps["camera_info"] = info_topic
    return _launch_node(ns, remaps, params, log_path)


def _param_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _launch_node(ns: str, remaps: dict[str, str], params: dict[str, Any], log_path: Path
                 ) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "seg_perception.ros.node", "--ros-args", "-r", f"__ns:={ns}"]
    for src, dst in remaps.items():
        cmd += ["-r", f"{src}:={dst}"]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={_param_text(value)}"]
    log.info("starting seg_node: %s", " ".join(cmd[1:]))
    with open(log_path, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _wait_ready(proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "ready: listening on" in log_path.read_text():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"seg_node exited with {proc.returncode}; its log "
                               f"({log_path}):\n{log_path.read_text()}")
        time.sleep(0.2)
    raise RuntimeError(f"seg_node did not become ready in {timeout:.0f} s; see {log_path}")


def _play_through(player: BagPlayer, rec: _Recorder, image_topic: str, out_topic: str) -> Any:
    """Play once the node subscribes to every played topic, then wait until ``out_topic`` has
    one message per ``image_topic`` frame played (or nothing new for 5 s); the play stats."""
    # DDS matching takes a moment: frames published before it are lost for good.
    pubs = list({id(p): p for p in player.publishers()}.values())
    deadline = time.monotonic() + 30
    while (not all(p.get_subscription_count() >= 1 for p in pubs)
           and time.monotonic() < deadline):
        time.sleep(0.1)
    time.sleep(0.5)
    stats = player.play()
    played = stats.published.get(image_topic, 0)
    last, last_change = -1, time.monotonic()
    while time.monotonic() - last_change < 5.0:
        n = rec.count(out_topic)
        if n >= played:
            break
        if n != last:
            last, last_change = n, time.monotonic()
        time.sleep(0.2)
    time.sleep(2.5)  # the diagnostics that count every frame
    return stats


class _Observer:
    """The demo's own node (recorder, player), spun in a thread from :meth:`start` on."""

    def __init__(self, name: str = "seg_demo") -> None:
        self._owned = not rclpy.ok()
        if self._owned:
            rclpy.init()
        self.node = Node(name)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.05)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._executor.remove_node(self.node)
        self.node.destroy_node()
        if self._owned:
            rclpy.try_shutdown()


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """Run the whole demo; returns the summary that is also written to ``summary.json``."""
    if opts.cameras > 1:
        return run_surround_demo(opts)
    from tqdm import tqdm

    t_start = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    input_bag = out / "input_bag"
    output_bag = out / "output_bag"
    report = out / "report"
    for path in (output_bag,) + ((input_bag,) if opts.bag is None else ()):
        if path.exists():
            raise BagError(f"{path} exists from an earlier run: remove it or use another --out")
    report.mkdir(exist_ok=True)

    params: dict[str, Any] = {"model": opts.model, "device": opts.device,
                              "use_sim_time": True}
    if opts.checkpoint:
        params["checkpoint"] = opts.checkpoint
    if opts.bag is None:
        with tqdm(total=opts.frames, desc="rendering synthetic drive", unit="frame") as bar:
            drive = write_synthetic_drive(input_bag, opts.frames, opts.fps, opts.width,
                                          opts.height, seed=opts.seed,
                                          progress=lambda _i: bar.update(1))
        image_topic, info_topic, msgtype = (drive.image_topic, drive.camera_info_topic,
                                            RAW_IMAGE)
        params.update(_pose_params(drive.mounting))
        if tf_message_type() is None:  # /tf_static cannot be played: the same pose by hand
            params["use_tf"] = False
    else:
        input_bag = Path(opts.bag)
        image_topic, msgtype = _image_topic(input_bag, opts.image_topic)
        info_topic = opts.camera_info_topic or output_topic(camera_namespace(image_topic),
                                                            "camera_info")
    params.update(opts.node_params)
    ns = camera_namespace(image_topic) or "/"
    node_log = out / "seg_node.log"

    # Player, node and recorder share shared-memory transport with segments that fit images.
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(fastdds_profile()))
    proc = _start_node(opts, ns, image_topic, info_topic, msgtype == COMPRESSED_IMAGE, params,
                       node_log)
    observer = _Observer()
    node = observer.node
    outputs = {output_topic(ns, name): "sensor_msgs/msg/Image" for name in IMAGE_OUTPUTS}
    outputs.update({output_topic(ns, name): t for name, t in GRID_OUTPUTS.items()})
    stats = None
    try:
        with BagWriter(output_bag) as writer:
            rec = _Recorder(node, writer)
            for topic, mtype in outputs.items():
                rec.add(topic, mtype)
            rec.add("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")
            rec.add(image_topic, msgtype, record=False)  # arrival times of the inputs
            observer.start()
            _wait_ready(proc, node_log, opts.startup_timeout)
            labels_topic = output_topic(ns, "labels")
            deadline = time.monotonic() + 30
            while not rec.matched() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # let the node see our subscriptions too
            player = BagPlayer(node, input_bag, PlayOptions(
                rate=opts.rate, topics=[image_topic, info_topic, *_tf_topics(input_bag)],
                delay=1.0))
            log.info("playing %s at rate %.2f", input_bag, opts.rate)
            stats = _play_through(player, rec, image_topic, labels_topic)
    finally:
        interrupt(proc)
        observer.close()

    summary = _summarise(rec, stats, image_topic, outputs, ns, node_log)
    summary.update({
        "input_bag": str(input_bag.resolve()),
        "output_bag": str(output_bag.resolve()),
        "node_log": str(node_log.resolve()),
        "image_topic": image_topic,
        "camera_info_topic": info_topic,
        "rate": opts.rate,
    })
    spec = PipelineConfig.from_params(
        {k: v for k, v in params.items() if k.startswith("grid.")}).grid
    summary["video"] = str(_render_report(input_bag, output_bag, image_topic, ns, spec, report,
                                          opts.fps))
    summary["wall_time_s"] = round(time.perf_counter() - t_start, 1)
    (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (report / "summary.md").write_text(_markdown(summary))
    return summary


def _summarise(rec: _Recorder, stats: Any, image_topic: str, outputs: dict[str, str], ns: str,
               node_log: Path) -> dict[str, Any]:
    """Counts, whole-path latency (input arrival -> output arrival) and the node's figures."""
    played = stats.published.get(image_topic, 0) if stats else 0
    inputs = rec.arrivals.get(image_topic, {})
    labels = rec.arrivals.get(output_topic(ns, "labels"), {})
    lat = [(labels[k] - inputs[k]) * 1e3 for k in labels if k in inputs]
    node_values: dict[str, str] = {}
    try:
        node_values = _last_diagnostics(rec.writer.path)
    except Exception as exc:  # the report should not fail on a missing diagnostics message
        log.warning("no diagnostics read back: %s", exc)
    return {
        "frames_played": played,
        "outputs_recorded": {t: rec.count(t) for t in outputs},
        "latency_input_to_labels_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1) if lat else None,
            "p95": round(float(np.percentile(lat, 95)), 1) if lat else None,
            "frames": len(lat),
        },
        "node_diagnostics": node_values,
    }


def _last_diagnostics(bag: Path) -> dict[str, str]:
    """The node's last status (``...seg_node: segmentation``)."""
    return _all_diagnostics(bag).get("segmentation", {})


def _all_diagnostics(bag: Path) -> dict[str, dict[str, str]]:
    """The last values of each seg_node status, by what follows ``seg_node: `` in its name
    (``segmentation``, ``camera front``, ...)."""
    store = typestore()
    out: dict[str, dict[str, str]] = {}
    with open_bag(bag) as reader:
        conns = [c for c in reader.connections if c.topic == "/diagnostics"]
        for conn, _t, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            for status in msg.status:
                if "seg_node" in status.name:
                    what = status.name.rsplit(": ", 1)[-1]
                    out[what] = {kv.key: kv.value for kv in status.values}
    return out


def _render_report(input_bag: Path, output_bag: Path, image_topic: str, ns: str,
                   spec: GridSpec, report: Path, fps: float) -> Path:
    """camera | overlay | bird's-eye grid for every processed frame, as a video and stills."""
    import cv2

    store = typestore()
    overlay_topic = output_topic(ns, "overlay")
    grid_topic = output_topic(ns, "drivable/grid")
    boundary_topic = output_topic(ns, "drivable/boundary")
    overlays: dict[tuple[int, int], np.ndarray] = {}
    grids: dict[tuple[int, int], np.ndarray] = {}
    boundaries: dict[tuple[int, int], np.ndarray] = {}
    with open_bag(output_bag) as reader:
        for conn, _t, raw in reader.messages():
            if conn.topic == overlay_topic:
                header, rgb = decode_frame(conn.msgtype, raw)
                overlays[(header.stamp.sec, header.stamp.nanosec)] = rgb
            elif conn.topic == grid_topic:
                msg = store.deserialize_cdr(raw, conn.msgtype)
                grids[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = np.asarray(
                    msg.data, np.int8).reshape(msg.info.height, msg.info.width)
            elif conn.topic == boundary_topic:
                msg = store.deserialize_cdr(raw, conn.msgtype)
                boundaries[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = np.array(
                    [[p.x, p.y] for p in msg.polygon.points], np.float64).reshape(-1, 2)
    frames = []
    blank = spec.empty()
    with open_bag(input_bag) as reader:
        conns = [c for c in reader.connections if c.topic == image_topic]
        for conn, _t, raw in reader.messages(connections=conns):
            header, rgb = decode_frame(conn.msgtype, raw)
            key = (header.stamp.sec, header.stamp.nanosec)
            if key not in overlays:
                continue  # dropped by the node (counted in the summary)
            grid = grids.get(key, blank)
            pic = grid_picture(grid, spec, boundaries.get(key), rgb.shape[0])
            frames.append(side_by_side([rgb, overlays[key], pic], 360,
                                       ["camera", "segmentation overlay", "drivable grid"]))
    if not frames:
        raise RuntimeError("the node produced no overlay for any frame: see the node log")
    for name, idx in (("first", 0), ("middle", len(frames) // 2), ("last", len(frames) - 1)):
        cv2.imwrite(str(report / f"frame_{name}.png"), cv2.cvtColor(frames[idx],
                                                                    cv2.COLOR_RGB2BGR))
    return write_animation(frames, report / "drive", fps)


def _markdown(s: dict[str, Any]) -> str:
    lat = s["latency_input_to_labels_ms"]
    diag = s.get("node_diagnostics", {})
    lines = [
        "# seg_perception demo",
        "",
        f"- video: `{s['video']}`",
        f"- input bag: `{s['input_bag']}` (topic `{s['image_topic']}`)",
        f"- output bag: `{s['output_bag']}`",
        f"- node log: `{s['node_log']}`",
        f"- frames played: {s['frames_played']} at rate {s['rate']}",
        "- outputs recorded: " + ", ".join(f"`{t}` {n}" for t, n in
                                           s["outputs_recorded"].items()),
        f"- latency input -> labels (wall clock, whole path over DDS): p50 {lat['p50']} ms, "
        f"p95 {lat['p95']} ms over {lat['frames']} frames",
        f"- node: model {diag.get('model')}, device {diag.get('device')}, processed "
        f"{diag.get('frames_processed')} / received {diag.get('frames_received')}, dropped "
        f"{diag.get('frames_dropped')}, stages p50: decode {diag.get('decode_p50_ms')} ms, "
        f"inference {diag.get('inference_p50_ms')} ms, publish {diag.get('publish_p50_ms')} ms,"
        f" grid {diag.get('grid_p50_ms')} ms",
        f"- wall time: {s['wall_time_s']} s",
        "",
    ]
    return "\n".join(lines)


# --- several cameras -----------------------------------------------------------------------------

SURROUND_NAMES = ("front", "left", "right", "rear")


def run_surround_demo(opts: DemoOptions) -> dict[str, Any]:
    """``demo --cameras N`` (2-4): a synthetic drive seen by the first N cameras of the
    surround rig, through one seg_node serving all of them; see the module docstring."""
    from tqdm import tqdm

    from seg_perception.sim.demo_report import write_surround_drive
    from seg_perception.sim.rig import SURROUND_GRID, Rig, surround_rig

    if opts.bag is not None:
        raise BagError("--cameras renders its own surround drive; drop --bag (for your own "
                       "multi-camera bag use `seg_node` with `cameras` and "
                       "`seg-perception process`)")
    if not 2 <= opts.cameras <= len(SURROUND_NAMES):
        raise BagError(f"--cameras {opts.cameras}: the synthetic rig has 2 to "
                       f"{len(SURROUND_NAMES)} cameras ({', '.join(SURROUND_NAMES)})")
    t_start = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    input_bag, output_bag, report = out / "input_bag", out / "output_bag", out / "report"
    for path in (input_bag, output_bag):
        if path.exists():
            raise BagError(f"{path} exists from an earlier run: remove it or use another --out")
    report.mkdir(exist_ok=True)
    full = surround_rig(opts.width, opts.height)
    rig = Rig(tuple(full.camera(n) for n in SURROUND_NAMES[:opts.cameras]))
    grid = SURROUND_GRID
    with tqdm(total=opts.frames, desc=f"rendering a {opts.cameras}-camera drive",
              unit="frame") as bar:
        drive = write_surround_drive(input_bag, opts.frames, opts.fps, opts.width, opts.height,
                                     rig, grid, seed=opts.seed, truth=out / "truth.npz",
                                     progress=lambda _i: bar.update(1))
    names = list(rig.names)
    params: dict[str, Any] = {
        "model": opts.model, "device": opts.device, "use_sim_time": True, "cameras": names,
        "grid.resolution": grid.resolution, "grid.x_min": grid.x_min,
        "grid.x_max": grid.x_max, "grid.y_min": grid.y_min, "grid.y_max": grid.y_max}
    if opts.checkpoint:
        params["checkpoint"] = opts.checkpoint
    if tf_message_type() is None:
        # Without tf2_msgs the rig's /tf_static cannot be played: each camera's own pose by
        # parameters instead (the same transforms), so the fused grid is the same.
        log.info("tf2_msgs is not installed: the cameras' poses go to seg_node as "
                 "X.camera.* parameters with use_tf false")
        params["use_tf"] = False
        for n in names:
            params.update(_pose_params(rig.camera(n).mounting, f"{n}."))
    params.update(opts.node_params)
    remaps = {f"{n}/image": drive.image_topics[n] for n in names}
    remaps.update({f"{n}/camera_info": drive.info_topics[n] for n in names})
    node_log = out / "seg_node.log"
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(fastdds_profile()))
    proc = _launch_node("/", remaps, params, node_log)
    observer = _Observer()
    node = observer.node
    outputs = {output_topic(f"/{n}", t): "sensor_msgs/msg/Image"
               for n in names for t in ("overlay", "labels")}
    outputs.update({output_topic("", name): t for name, t in GRID_OUTPUTS.items()})
    fused_topic = output_topic("", "drivable/grid")
    stats = None
    try:
        with BagWriter(output_bag) as writer:
            rec = _Recorder(node, writer)
            for topic, mtype in outputs.items():
                rec.add(topic, mtype)
            rec.add("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")
            for n in names:  # arrival times of the inputs
                rec.add(drive.image_topics[n], RAW_IMAGE, record=False)
            observer.start()
            _wait_ready(proc, node_log, opts.startup_timeout)
            deadline = time.monotonic() + 30
            while not all(sub.get_publisher_count() > 0 for sub in rec._subs[:len(outputs)]) \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)
            topics = [*drive.image_topics.values(), *drive.info_topics.values(), "/tf_static"]
            player = BagPlayer(node, input_bag, PlayOptions(rate=opts.rate, topics=topics,
                                                            delay=1.0))
            log.info("playing %s (%d cameras) at rate %.2f", input_bag, len(names), opts.rate)
            stats = _play_through(player, rec, drive.image_topics[names[0]], fused_topic)
    finally:
        interrupt(proc)
        observer.close()

    diag = {}
    try:
        diag = _all_diagnostics(output_bag)
    except Exception as exc:  # the report should not fail on a missing diagnostics message
        log.warning("no diagnostics read back: %s", exc)
    video, scores = _render_surround(input_bag, output_bag, drive, names, report, opts.fps)
    inputs = rec.arrivals.get(drive.image_topics[names[0]], {})
    fused_at = rec.arrivals.get(fused_topic, {})
    lat = [(fused_at[k] - inputs[k]) * 1e3 for k in fused_at if k in inputs]
    agree = [a for a, _ in scores.values()]
    summary: dict[str, Any] = {
        "cameras": names,
        "frames_played": stats.published.get(drive.image_topics[names[0]], 0) if stats else 0,
        "outputs_recorded": {t: rec.count(t) for t in outputs},
        "latency_input_to_fused_grid_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1) if lat else None,
            "p95": round(float(np.percentile(lat, 95)), 1) if lat else None,
            "frames": len(lat)},
        "fused_agreement_with_truth": {
            "mean": round(float(np.mean(agree)), 4) if agree else None,
            "min": round(float(np.min(agree)), 4) if agree else None,
            "frames": len(agree),
            "seen_cells_per_frame": int(np.mean([n for _, n in scores.values()]))
            if scores else 0},
        "node_diagnostics": diag.get("segmentation", {}),
        "camera_diagnostics": {n: diag.get(f"camera {n}", {}) for n in names},
        "input_bag": str(input_bag.resolve()),
        "output_bag": str(output_bag.resolve()),
        "truth": str((out / "truth.npz").resolve()),
        "node_log": str(node_log.resolve()),
        "rate": opts.rate,
        "video": str(video),
        "wall_time_s": round(time.perf_counter() - t_start, 1),
    }
    (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (report / "summary.md").write_text(_surround_markdown(summary))
    return summary


def _render_surround(input_bag: Path, output_bag: Path, drive: Any, names: list[str],
                     report: Path, fps: float) -> tuple[Path, dict[tuple[int, int], Any]]:
    """The cameras' overlays | fused grid | exact fused truth, per fused grid; the agreement
    of each fused grid with the truth of its stamp."""
    import cv2

    from seg_perception.sim.demo_report import agreement, grid_picture, mosaic

    store = typestore()
    overlays: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    grids: dict[tuple[int, int], np.ndarray] = {}
    boundaries: dict[tuple[int, int], np.ndarray] = {}
    topics = {output_topic(f"/{n}", "overlay"): n for n in names}
    with open_bag(output_bag) as reader:
        for conn, _t, raw in reader.messages():
            if conn.topic in topics:
                header, rgb = decode_frame(conn.msgtype, raw)
                overlays.setdefault((header.stamp.sec, header.stamp.nanosec), {})[
                    topics[conn.topic]] = rgb
            elif conn.topic == "/drivable/grid":
                msg = store.deserialize_cdr(raw, conn.msgtype)
                grids[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = np.asarray(
                    msg.data, np.int8).reshape(msg.info.height, msg.info.width)
            elif conn.topic == "/drivable/boundary":
                msg = store.deserialize_cdr(raw, conn.msgtype)
                boundaries[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = np.array(
                    [[p.x, p.y] for p in msg.polygon.points], np.float64).reshape(-1, 2)
    truth = np.load(drive.truth)
    by_stamp = {divmod(int(t), 1_000_000_000): i for i, t in enumerate(truth["stamps"])}
    spec = drive.grid
    frames, scores = [], {}
    for key in sorted(grids):
        views = overlays.get(key, {})
        if key not in by_stamp or not views:
            continue
        exact = truth["fused"][by_stamp[key]]
        scores[key] = agreement(grids[key], exact)
        tiles = mosaic([views.get(n) for n in names], names, 240)
        h = tiles.shape[0]
        pics = [grid_picture(grids[key], spec, boundaries.get(key), h),
                grid_picture(exact, spec, None, h)]
        row = side_by_side([tiles, *pics], h, ["", f"fused grid ({scores[key][0]:.1%} agree)",
                                               "exact fused truth"])
        frames.append(row)
    if not frames:
        raise RuntimeError("the node produced no fused grid with overlays: see the node log")
    for name, idx in (("first", 0), ("middle", len(frames) // 2), ("last", len(frames) - 1)):
        cv2.imwrite(str(report / f"frame_{name}.png"), cv2.cvtColor(frames[idx],
                                                                    cv2.COLOR_RGB2BGR))
    return write_animation(frames, report / "drive", fps), scores


def _surround_markdown(s: dict[str, Any]) -> str:
    lat = s["latency_input_to_fused_grid_ms"]
    diag = s.get("node_diagnostics", {})
    agree = s["fused_agreement_with_truth"]
    lines = [
        f"# seg_perception demo: {len(s['cameras'])} cameras, one node",
        "",
        f"- video: `{s['video']}` (the cameras' overlays | fused grid | exact fused truth)",
        f"- input bag: `{s['input_bag']}` (cameras {', '.join(s['cameras'])})",
        f"- output bag: `{s['output_bag']}`",
        f"- node log: `{s['node_log']}`",
        f"- frames played per camera: {s['frames_played']} at rate {s['rate']}",
        "- outputs recorded: " + ", ".join(f"`{t}` {n}" for t, n in
                                           s["outputs_recorded"].items()),
        f"- fused grid vs the generator's exact fused truth: mean {agree['mean']}, worst "
        f"{agree['min']} of about {agree['seen_cells_per_frame']} seen cells per frame, over "
        f"{agree['frames']} fused grids",
        f"- latency first camera's input -> fused grid (wall clock, over DDS): p50 "
        f"{lat['p50']} ms, p95 {lat['p95']} ms over {lat['frames']} cycles",
        f"- node: model {diag.get('model')}, device {diag.get('device')}, backend "
        f"{diag.get('backend')}, batch size p50 {diag.get('batch_size_p50')}, cycle time p50 "
        f"{diag.get('cycle_time_p50_ms')} ms (p95 {diag.get('cycle_time_p95_ms')} ms), "
        f"fused grids {diag.get('fused_grids_published')}",
        "",
        "| camera | received | processed | dropped | rate Hz | latency p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in s["camera_diagnostics"].items():
        lines.append(f"| {name} | {d.get('frames_received')} | {d.get('frames_processed')} | "
                     f"{d.get('frames_dropped')} | {d.get('processed_rate_hz')} | "
                     f"{d.get('latency_p50_ms')} |")
    lines += ["", f"- wall time: {s['wall_time_s']} s", ""]
    return "\n".join(lines)
