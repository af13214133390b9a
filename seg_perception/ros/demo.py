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

The DDS side is here; the plan and the report, read from the bags, are in
:mod:`seg_perception.sim.demo_summary`, the node's process in
:mod:`seg_perception.tools.node_process`.
"""

from __future__ import annotations

import json
import logging
import struct
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

from seg_perception.offline.topics import (
    GRID_OUTPUTS,
    IMAGE_OUTPUTS,
    BagError,
    camera_namespace,
    output_topic,
)
from seg_perception.offline.writer import BagWriter
from seg_perception.ros.player import BagPlayer, PlayOptions, message_class
from seg_perception.ros.tf_pose import tf_message_type
from seg_perception.runtime.config import PipelineConfig
from seg_perception.sim.demo_report import write_synthetic_drive
from seg_perception.sim.demo_summary import (
    COMPRESSED_IMAGE,
    RAW_IMAGE,
    SURROUND_NAMES,
    latency_ms,
    markdown,
    pose_params,
    read_diagnostics,
    render_report,
    render_surround,
    surround_markdown,
    tf_topics,
)
from seg_perception.sim.demo_summary import image_topic as find_image_topic
from seg_perception.tools.node_process import NodeProcess, use_fastdds_profile

log = logging.getLogger(__name__)


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


def _start_node(ns: str, remaps: dict[str, str], params: dict[str, Any], log_path: Path
                ) -> NodeProcess:
    """``seg_node`` in its own process, its output in ``log_path``."""
    node = NodeProcess(log_path, params, namespace=ns, remaps=remaps)
    log.info("starting seg_node: %s", " ".join(node.command[1:]))
    return node


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
        params.update(pose_params(drive.mounting))
        if tf_message_type() is None:  # /tf_static cannot be played: the same pose by hand
            params["use_tf"] = False
    else:
        input_bag = Path(opts.bag)
        image_topic, msgtype = find_image_topic(input_bag, opts.image_topic)
        info_topic = opts.camera_info_topic or output_topic(camera_namespace(image_topic),
                                                            "camera_info")
    params.update(opts.node_params)
    ns = camera_namespace(image_topic) or "/"
    node_log = out / "seg_node.log"

    remaps = {"image": image_topic}
    if msgtype == COMPRESSED_IMAGE:
        remaps = {"image/compressed": image_topic}
        params["input_transport"] = "compressed"
    remaps["camera_info"] = info_topic
    # Player, node and recorder share shared-memory transport with segments that fit images.
    use_fastdds_profile()
    seg_node = _start_node(ns, remaps, params, node_log)
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
            seg_node.wait_ready(opts.startup_timeout)
            labels_topic = output_topic(ns, "labels")
            deadline = time.monotonic() + 30
            while not rec.matched() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # let the node see our subscriptions too
            player = BagPlayer(node, input_bag, PlayOptions(
                rate=opts.rate, topics=[image_topic, info_topic, *tf_topics(input_bag)],
                delay=1.0))
            log.info("playing %s at rate %.2f", input_bag, opts.rate)
            stats = _play_through(player, rec, image_topic, labels_topic)
    finally:
        seg_node.stop()
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
    summary["video"] = str(render_report(input_bag, output_bag, image_topic, ns, spec, report,
                                         opts.fps))
    summary["wall_time_s"] = round(time.perf_counter() - t_start, 1)
    (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (report / "summary.md").write_text(markdown(summary))
    return summary


def _summarise(rec: _Recorder, stats: Any, image_topic: str, outputs: dict[str, str], ns: str,
               node_log: Path) -> dict[str, Any]:
    """Counts, whole-path latency (input arrival -> output arrival) and the node's figures."""
    return {
        "frames_played": stats.published.get(image_topic, 0) if stats else 0,
        "outputs_recorded": {t: rec.count(t) for t in outputs},
        "latency_input_to_labels_ms": latency_ms(
            rec.arrivals.get(output_topic(ns, "labels"), {}), rec.arrivals.get(image_topic, {})),
        "node_diagnostics": read_diagnostics(rec.writer.path).get("segmentation", {}),
    }


# --- several cameras -----------------------------------------------------------------------------

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
            params.update(pose_params(rig.camera(n).mounting, f"{n}."))
    params.update(opts.node_params)
    remaps = {f"{n}/image": drive.image_topics[n] for n in names}
    remaps.update({f"{n}/camera_info": drive.info_topics[n] for n in names})
    node_log = out / "seg_node.log"
    use_fastdds_profile()
    seg_node = _start_node("/", remaps, params, node_log)
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
            seg_node.wait_ready(opts.startup_timeout)
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
        seg_node.stop()
        observer.close()

    diag = read_diagnostics(output_bag)
    video, scores = render_surround(input_bag, output_bag, drive, names, report, opts.fps)
    agree = [a for a, _ in scores.values()]
    summary: dict[str, Any] = {
        "cameras": names,
        "frames_played": stats.published.get(drive.image_topics[names[0]], 0) if stats else 0,
        "outputs_recorded": {t: rec.count(t) for t in outputs},
        "latency_input_to_fused_grid_ms": latency_ms(
            rec.arrivals.get(fused_topic, {}), rec.arrivals.get(drive.image_topics[names[0]], {})),
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
    (report / "summary.md").write_text(surround_markdown(summary))
    return summary
