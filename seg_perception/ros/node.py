"""``seg_node``: camera images in; labels, overlays, drivable mask, grid, boundary out.

The node is an adapter: it converts messages to and from the ROS-free frame pipeline
(:mod:`seg_perception.core.pipeline`), which ``seg-perception process`` runs on bags too.
Inference runs on a worker thread fed by a latest-frame slot per camera, so the executor
stays free to take new frames and a slow model drops stale frames (counted) instead of
queueing latency.

Per frame the worker reads one immutable parameter snapshot, publishes the image outputs,
then pairs the frame with its camera_info (same stamp, or nearest within
``camera_info_tolerance``) and its camera pose (tf2: the image's ``frame_id`` in
``grid_frame`` at the image stamp; else the ``camera.*`` parameters) and publishes the grid
and boundary, or says why not.

Several cameras (parameter ``cameras``): one :class:`.camera_io.CameraChannel` per camera
(``X/image`` ... ``X/drivable/mask``), one model; each cycle the worker takes the latest
frame of every camera (waiting up to ``fusion.sync_window`` for the others once one is
there), runs them as ONE batch, publishes each camera's outputs, and the surround grid and
boundary fused from all cameras on ``drivable/grid`` and ``drivable/boundary``.

Pieces a lifecycle node reuses: :class:`.params.ParameterBridge` (the parameters),
:class:`.camera_io.CameraChannel` (one camera's topics), :class:`.tf_pose` (tf2 lookups),
:func:`load_engine` and :class:`FrameWorker` (the worker and its statistics).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PolygonStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from ..core import messages
from ..core.config import SINGLE_CAMERA, PipelineConfig
from ..core.engine import EngineConfigError, EngineInfo, build_engine
from ..core.image_codec import ImageDecodeError
from ..core.pipeline import (
    GRID_OUTPUTS,
    IMAGE_ENCODINGS,
    CameraFrame,
    FramePipeline,
    FrameResult,
    GridFusion,
    resolve_pose,
)
from ..core.stats import Percentiles, RateMeter, WarningLimiter, problem_kind
from . import log_bridge, tf_pose
from .camera_io import CameraChannel, Frame, qos
from .conversions import KIT, compressed_to_rgb, imgmsg_to_rgb, numpy_to_imgmsg
from .label_info import publish_label_info
from .params import ParameterBridge, StartupError

#: Longest wait (s) of the worker for a frame's camera_info after the image outputs went out
#: (only while none stamped at or after the frame has arrived, and not after a timeout).
INFO_WAIT = 0.1

OUTPUT_TOPICS = tuple(IMAGE_ENCODINGS)


def load_engine(params: ParameterBridge) -> tuple[Any, EngineInfo]:
    """The engine the parameters ask for; StartupError (one line) when it cannot be built."""
    try:
        return build_engine(params["model"], params["checkpoint"] or None, params["device"],
                            params["precision"], threads=params["cpu_threads"])
    except KeyError as exc:  # unknown model: the message lists the registered ones
        raise StartupError(exc.args[0] if exc.args else str(exc)) from None
    except (EngineConfigError, ValueError, FileNotFoundError, OSError) as exc:
        raise StartupError(str(exc)) from None


@dataclass
class FusedOutputs:
    """The publishers of the fused surround grid and boundary of a multi-camera node."""

    grid: Any
    boundary: Any

    def wanted(self) -> set[str]:
        out = set()
        if self.grid.get_subscription_count() > 0:
            out.add("drivable/grid")
        if self.boundary.get_subscription_count() > 0:
            out.add("drivable/boundary")
        return out


@dataclass
class _Item:
    """One camera's frame in a cycle, as the cycle goes on."""

    channel: CameraChannel
    frame: Frame
    config: PipelineConfig
    want: set[str]
    image: CameraFrame | None = None
    result: FrameResult | None = None
    drivable: np.ndarray | None = None
    stamp_ns: int = 0


class FrameWorker:
    """The worker thread of a node: takes the frames of its cameras' slots, one cycle at a
    time, runs the pipeline on them (one batched forward pass per cycle), publishes, and
    keeps the statistics /diagnostics reports.

    With ``fused`` (a node of several named cameras) each cycle also publishes the surround
    grid and boundary fused from all cameras (:class:`~seg_perception.core.pipeline.
    GridFusion`); with one camera (``fused`` None) the camera's own grid is the node's.
    """

    def __init__(self, node: Node, params: ParameterBridge, pipeline: FramePipeline,
                 tf: tf_pose.TfPoses | None, tf_reason: str,
                 warn: Callable[..., None], fused: FusedOutputs | None = None) -> None:
        self.node = node
        self.params = params
        self.pipeline = pipeline
        self.tf = tf
        self.tf_reason = tf_reason
        self.warn = warn
        self.fused = fused
        self.fusion = GridFusion()
        self.channels: list[CameraChannel] = []
        self.ready = threading.Condition()
        self.done = RateMeter()
        self.latency = Percentiles()
        self.stage_ms = {k: Percentiles() for k in ("decode", "inference", "publish", "grid",
                                                    "boundary")}
        self.idle = 0
        #: cycles run, their wall time (ms, taking the frames to the last publish), their
        #: batch sizes (frames through the network at once), fused grids published
        self.cycles = RateMeter()
        self.cycle_ms = Percentiles()
        self.batch = Percentiles()
        self.last_batch = 0
        self.fused_published = 0
        self._running = False
        self._thread: threading.Thread | None = None
        self._lookup_builds = 0

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="seg_worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self.ready:
            self._running = False
            self.ready.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _gather(self) -> list[tuple[CameraChannel, Frame]]:
        """The frames of one cycle (call with ``ready`` held, a frame waiting): with several
        cameras, wait up to ``fusion.sync_window`` for every camera that is expected."""
        if len(self.channels) > 1:
            window = self.params.config.sync_window
            deadline = time.monotonic() + window
            while self._running:
                if all(c.has_frame() for c in self.channels if c.expected):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.ready.wait(left)
        todo = [(c, f) for c in self.channels if (f := c.take()) is not None]
        if len(self.channels) > 1:
            for c in self.channels:  # late this time: not waited for until it sends again
                c.expected = any(c is t for t, _ in todo)
        return todo

    def _loop(self) -> None:
        while True:
            with self.ready:
                while self._running and not any(c.has_frame() for c in self.channels):
                    self.ready.wait(timeout=0.5)
                if not self._running:
                    return
                todo = self._gather()
            if not todo:
                continue
            try:
                self.process_cycle(todo)
            except Exception as exc:  # the node must outlive any single bad cycle
                if not rclpy.ok():
                    return  # shutting down: publishers are gone, nothing to report
                for channel, _ in todo:
                    channel.bad += 1
                topics = ", ".join(c.image_topic for c, _ in todo)
                self.warn(f"process.{problem_kind(exc)}",
                          f"{topics}: frame skipped, {type(exc).__name__}: {exc}")

    # -- one frame, one cycle -------------------------------------------------------------
    def process(self, channel: CameraChannel, frame: Frame) -> None:
        """One frame of one camera as a cycle of its own."""
        self.process_cycle([(channel, frame)])

    def process_cycle(self, todo: list[tuple[CameraChannel, Frame]]) -> None:
        """The frames of one cycle (one per camera): decode, one batched forward pass,
        image outputs, each camera's grid, and the fused grid."""
        t_start = time.perf_counter()
        configs = self.params.configs  # one snapshot for the whole cycle
        gconfig = self.params.config
        fused_want = self.fused.wanted() if self.fused is not None else set()
        items: list[_Item] = []
        limit = self.params["max_image_pixels"]
        for channel, frame in todo:
            config = configs.get(channel.name, gconfig)
            want = channel.wanted()
            if fused_want:
                want.add("drivable/grid")  # the camera's grid feeds the fused one
            if not want:
                self.idle += 1
                channel.idle += 1
                continue
            msg = frame.msg
            t0 = time.perf_counter()
            try:
                rgb = compressed_to_rgb(msg, limit) if isinstance(msg, CompressedImage) \
                    else imgmsg_to_rgb(msg, limit)
            except ImageDecodeError as exc:
                channel.reject(exc)
                continue
            self.stage_ms["decode"].add((time.perf_counter() - t0) * 1e3)
            stamp = msg.header.stamp
            items.append(_Item(channel, frame, config, want,
                               CameraFrame(rgb, camera=channel.name,
                                           rectified=config.rectified(channel.image_topic)),
                               stamp_ns=int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)))
        if not items:
            return
        t1 = time.perf_counter()
        segs = self.pipeline.segment_batch([it.image for it in items],
                                           [it.config for it in items],
                                           [it.want for it in items])
        t2 = time.perf_counter()
        self.stage_ms["inference"].add((t2 - t1) * 1e3)
        for it, (result, drivable) in zip(items, segs, strict=True):
            it.result, it.drivable = result, drivable
            self._publish_images(it.channel, it.frame.msg.header, result)
        t3 = time.perf_counter()
        self.stage_ms["publish"].add((t3 - t2) * 1e3)
        for it in items:
            if it.drivable is not None and it.want & set(GRID_OUTPUTS):
                self._grid(it.channel, it.frame.msg.header, it.image, it.drivable, it.config,
                           it.want, it.result)
        if self.fused is not None and fused_want:
            self._fuse([it.result for it in items], [it.stamp_ns for it in items], gconfig,
                       fused_want)
        now = self.node.get_clock().now().nanoseconds * 1e-9
        for it in items:
            it.channel.done.tick()
            self.done.tick()
            stamp = it.stamp_ns * 1e-9
            if stamp > 0:
                lat = (now - stamp) * 1e3
                self.latency.add(lat)
                it.channel.latency.add(lat)
        for cam, count in self.fusion.left_out.items():
            for c in self.channels:
                if c.name == cam:
                    c.left_out = count
        self.cycles.tick()
        self.cycle_ms.add((time.perf_counter() - t_start) * 1e3)
        self.batch.add(len(items))
        self.last_batch = len(items)

    def _publish_images(self, channel: CameraChannel, header: Any, result: FrameResult
                        ) -> None:
        for name, encoding in IMAGE_ENCODINGS.items():
            arr = result.image(name)
            if arr is not None:
                channel.pubs[name].publish(numpy_to_imgmsg(arr, encoding, header))

    def _grid(self, channel: CameraChannel, header: Any, image: CameraFrame,
              drivable: np.ndarray, config: PipelineConfig, wanted: set[str],
              result: FrameResult) -> None:
        stamp_ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        pose = resolve_pose(config, header.frame_id, stamp_ns,
                            self.tf.lookup if self.tf is not None else None, self.tf_reason)
        source = f"{pose.source} ({pose.detail})" if pose.detail else pose.source
        if pose.mounting is not None and source != channel.pose_source:
            channel.pose_source = source
            self.node.get_logger().info(
                f"{channel.image_topic}: camera pose from {source}")
        wait = 0.0 if channel.info_wait_timed_out else INFO_WAIT
        calibration = channel.infos.wait_match(stamp_ns, config.camera_info_tolerance, wait)
        channel.info_wait_timed_out = calibration is None and channel.infos.count > 0
        problems = [pose.problem] if pose.problem else []
        if calibration is None:
            problems.append(
                f"no valid camera_info on {channel.info_topic} yet: drivable/grid and "
                "drivable/boundary are published once it arrives" if channel.infos.count == 0
                else f"{channel.info_topic}: "
                + channel.infos.describe_miss(stamp_ns, config.camera_info_tolerance))
        no_grid = "; ".join(problems) or None
        frame = dataclasses.replace(image, calibration=calibration, pose=pose.mounting,
                                    no_grid=no_grid)
        # The camera's boundary only where its own topic is subscribed.
        own = wanted - ({"drivable/boundary"} if channel.boundary_pub is None
                        or channel.boundary_pub.get_subscription_count() == 0 else set())
        self.pipeline.map(frame, drivable, config, own, result)
        if result.grid is None or result.grid_spec is None:
            channel.no_grid += 1
            reason = result.no_grid or "unknown"
            key = "no_grid." + channel.name + "." + "".join(
                ch for ch in reason[:40] if not ch.isdigit())
            self.warn(key, f"{channel.image_topic}: no drivable/grid for this frame (image "
                      f"outputs were published): {reason}")
            return
        if result.lookup_built:
            self._lookup_builds += 1
            view = frame.calibration
            self.warn("lookup." + channel.name,
                      f"{channel.image_topic}: ground lookup built for a "
                      f"{view.image_size[0]}x{view.image_size[1]} "
                      f"{'rectified' if frame.rectified else 'raw'} camera at pose "
                      f"{frame.pose} ({self._lookup_builds} builds so far)", "info")
        ghdr = messages.header(KIT, header.stamp.sec, header.stamp.nanosec, result.grid_frame)
        if channel.grid_pub is not None and channel.grid_pub.get_subscription_count() > 0:
            channel.grid_pub.publish(
                messages.grid_message(KIT, result.grid, result.grid_spec, ghdr))
        if "drivable/boundary" in own and channel.boundary_pub is not None \
                and result.boundary is not None:
            channel.boundary_pub.publish(messages.polygon_message(KIT, result.boundary, ghdr))
        for stage in ("grid", "boundary"):
            if stage in result.timings:
                self.stage_ms[stage].add(result.timings[stage])

    def _fuse(self, results: list[FrameResult], stamps_ns: list[int],
              config: PipelineConfig, want: set[str]) -> None:
        fused = self.pipeline.fuse(self.fusion, results, stamps_ns, config, want)
        if fused is None:
            return
        if fused.left_out:
            ages = ", ".join(f"{c} {a:.2f} s" for c, a in fused.left_out.items())
            self.warn("fusion.left_out", f"fused drivable/grid without cameras whose latest "
                      f"grid is older than fusion.max_age = {config.fusion_max_age:g} s: "
                      f"{ages}", "info")
        sec, nsec = divmod(fused.stamp_ns, 1_000_000_000)
        ghdr = messages.header(KIT, sec, nsec, fused.grid_frame)
        assert self.fused is not None
        if "drivable/grid" in want:
            self.fused.grid.publish(messages.grid_message(KIT, fused.grid, fused.spec, ghdr))
        if "drivable/boundary" in want and fused.boundary is not None:
            self.fused.boundary.publish(messages.polygon_message(KIT, fused.boundary, ghdr))
        self.fused_published += 1


class SegNode(Node):
    """Segmentation node for one camera, or several (parameter ``cameras``) sharing one
    model, one batched forward pass per cycle and one fused surround grid (relative topic
    names; remap or namespace them)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("seg_node", **kwargs)
        # The core logs through `logging`: its records (and Python warnings) go to this
        # node's logger, with level and node name, rate-limited.
        self._log_handler = log_bridge.route_to(self.get_logger())
        self._warn_limiter = WarningLimiter(5.0)
        self.params = ParameterBridge(self)
        p = self.params
        self.engine, self.info = load_engine(p)
        self.get_logger().info(
            f"model {self.info.model}, weights: {self.info.weights}, device {self.info.device}, "
            f"backend {self.info.backend}, precision {self.info.precision} "
            f"({self.info.precision_reason})")
        if not self.info.trained:
            self.get_logger().warning(
                f"model {self.info.model} runs with RANDOM weights: its labels are meaningless. "
                "Pass `checkpoint` or use a model with shipped weights.")
        self.pipeline = FramePipeline(self.engine)
        self.tf, tf_reason = tf_pose.make(self)
        config = p.config
        if config.use_tf and self.tf is not None:
            self.get_logger().info(f"camera pose from tf2: the image's frame_id in "
                                   f"{config.grid_frame} (use_tf)")
        else:
            why = "use_tf is false" if not config.use_tf else tf_reason
            self.get_logger().info(f"camera pose from the camera.* parameters ({why})")
        in_qos = qos(p["image_qos.reliability"], p["image_qos.depth"])
        out_qos = qos(p["output_qos.reliability"], p["output_qos.depth"])
        self.multi = p.cameras != SINGLE_CAMERA
        fused = None
        if self.multi:  # the node's own drivable/grid and boundary: all cameras fused
            fused = FusedOutputs(
                self.create_publisher(OccupancyGrid, "drivable/grid", out_qos),
                self.create_publisher(PolygonStamped, "drivable/boundary", out_qos))
        self.worker = FrameWorker(self, p, self.pipeline, self.tf, tf_reason, self._warn,
                                  fused)
        self.cameras: list[CameraChannel] = []
        for name in p.cameras:
            channel = CameraChannel(self, name, p.camera_value(name, "input_transport"),
                                    in_qos, out_qos, self.worker.ready, self._warn,
                                    max_pixels=p["max_image_pixels"])
            self.cameras.append(channel)
            self.worker.channels.append(channel)
        self.camera = self.cameras[0]
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Class id -> name, once and transient local (vision_msgs/LabelInfo where installed).
        self.label_info_pub = publish_label_info(self, self.engine.meta)
        if p["warmup"]:
            self._warmup()
        self.worker.start()
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        if self.multi:
            self.get_logger().info(
                f"{len(self.cameras)} cameras ({', '.join(p.cameras)}), one batched forward "
                f"pass per cycle; fused grid on {fused.grid.topic_name}")
        topics = ", ".join(c.image_topic for c in self.cameras)
        self.get_logger().info(f"ready: listening on {topics}")

    # -- convenience for tests and tools --------------------------------------------------
    @property
    def image_topic(self) -> str:
        return self.camera.image_topic

    def _warn(self, key: str, message: str, level: str = "warning") -> None:
        """Log ``message`` at most every few seconds per ``key`` (a kind of problem)."""
        suppressed = self._warn_limiter.check(key)
        if suppressed is None:
            return
        more = f" ({suppressed} more since the last one)" if suppressed else ""
        # (rclpy fixes a call site's severity: one call per level)
        if level == "info":
            self.get_logger().info(message + more)
        else:
            self.get_logger().warning(message + more)

    # -- start-up, shutdown ---------------------------------------------------------------
    def _warmup(self) -> None:
        """Exercise the model (every batch size a cycle can have) and the message path once
        so the first real frames are not slow."""
        t0 = time.perf_counter()
        w, h = self.engine.input_size
        sizes = range(1, len(self.cameras) + 1)
        run_batch = getattr(self.engine, "run_batch", None)
        if run_batch is not None:
            self.engine.warmup(w, h, batch_sizes=sizes)
        else:
            self.engine.warmup(w, h)
        from rclpy.serialization import deserialize_message, serialize_message

        dummy = numpy_to_imgmsg(np.zeros((h, w, 3), np.uint8), "rgb8", Image().header)
        deserialize_message(serialize_message(dummy), Image)
        batches = f" (batch sizes 1-{len(self.cameras)})" if len(self.cameras) > 1 else ""
        self.get_logger().info(
            f"warm-up done in {(time.perf_counter() - t0) * 1e3:.0f} ms{batches}")

    def stop(self) -> None:
        self.worker.stop()
        if self.tf is not None:
            self.tf.close()
        log_bridge.unroute(self._log_handler)

    # -- diagnostics ----------------------------------------------------------------------
    def _camera_values(self, cam: CameraChannel) -> dict[str, str]:
        return {
            "image_topic": cam.image_topic,
            "input_rate_hz": f"{cam.rx.rate():.2f}",
            "processed_rate_hz": f"{cam.done.rate():.2f}",
            "latency_p50_ms": f"{cam.latency.percentile(50):.1f}",
            "latency_p95_ms": f"{cam.latency.percentile(95):.1f}",
            "frames_received": str(cam.rx.total),
            "frames_processed": str(cam.done.total),
            "frames_dropped": str(cam.dropped),
            "frames_lost_in_transport": str(cam.lost),
            "frames_bad": str(cam.bad),
            "frames_without_subscribers": str(cam.idle),
            "frames_without_grid": str(cam.no_grid),
            "fusion_left_out": str(cam.left_out),
            "camera_infos_received": str(cam.infos.count),
            "camera_pose": cam.pose_source or "not yet known",
        }

    def diagnostics_status(self) -> DiagnosticStatus:
        """The node's status: rates, latency percentiles, drops (all cameras together),
        batch size and cycle time, and what runs where."""
        import torch

        w, cams = self.worker, self.cameras
        values = {
            "input_rate_hz": f"{sum(c.rx.rate() for c in cams):.2f}",
            "processed_rate_hz": f"{w.done.rate():.2f}",
            "latency_p50_ms": f"{w.latency.percentile(50):.1f}",
            "latency_p95_ms": f"{w.latency.percentile(95):.1f}",
            "frames_received": str(sum(c.rx.total for c in cams)),
            "frames_processed": str(w.done.total),
            "frames_dropped": str(sum(c.dropped for c in cams)),
            "frames_lost_in_transport": str(sum(c.lost for c in cams)),
            "frames_bad": str(sum(c.bad for c in cams)),
            "frames_without_subscribers": str(w.idle),
            "frames_without_grid": str(sum(c.no_grid for c in cams)),
            "camera_infos_received": str(sum(c.infos.count for c in cams)),
        }
        if not self.multi:
            values["camera_pose"] = self.camera.pose_source or "not yet known"
        values.update({
            "cameras": str(len(cams)),
            "cycle_rate_hz": f"{w.cycles.rate():.2f}",
            "cycle_time_p50_ms": f"{w.cycle_ms.percentile(50):.1f}",
            "cycle_time_p95_ms": f"{w.cycle_ms.percentile(95):.1f}",
            "batch_size_p50": f"{w.batch.percentile(50):.1f}",
            "batch_size_last": str(w.last_batch),
            "grid_frame": self.params.config.grid_frame,
            "model": self.info.model,
            "weights": self.info.weights,
            "device": self.info.device,
            "precision": self.info.precision,
            "precision_reason": self.info.precision_reason,
            "backend": self.info.backend,
            "cpu_threads": str(torch.get_num_threads()),
        })
        if self.multi:
            values["fused_grids_published"] = str(w.fused_published)
            values["fusion_left_out"] = str(sum(c.left_out for c in cams))
        for stage, pct in w.stage_ms.items():
            values[f"{stage}_p50_ms"] = f"{pct.percentile(50):.1f}"
        level, message = DiagnosticStatus.OK, "ok"
        silent = [c.name for c in cams if c.rx.total == 0]
        if not self.info.trained:
            level, message = DiagnosticStatus.WARN, "model has random weights"
        elif len(silent) == len(cams):
            level, message = DiagnosticStatus.WARN, "no images received yet"
        elif silent:
            level, message = DiagnosticStatus.WARN, f"no images yet from {', '.join(silent)}"
        return DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: segmentation",
            message=message,
            hardware_id=self.info.device,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )

    def camera_statuses(self) -> list[DiagnosticStatus]:
        """One status per camera of a multi-camera node (rates, drops, latency); none for the
        single unprefixed camera, whose figures are the node's."""
        if not self.multi:
            return []
        out = []
        for cam in self.cameras:
            level, message = DiagnosticStatus.OK, "ok"
            if cam.rx.total == 0:
                level, message = DiagnosticStatus.WARN, "no images received yet"
            elif cam.rx.rate() == 0.0 and cam.done.rate() == 0.0:
                level, message = DiagnosticStatus.WARN, "silent: no images in the last seconds"
            out.append(DiagnosticStatus(
                level=level, name=f"{self.get_fully_qualified_name()}: camera {cam.name}",
                message=message, hardware_id=self.info.device,
                values=[KeyValue(key=k, value=v) for k, v in self._camera_values(cam).items()]))
        return out

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics_status(), *self.camera_statuses()]
        self.diag_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``seg_node`` executable."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = SegNode()
        rclpy.spin(node)
    except (StartupError, ParameterException) as exc:
        rclpy.logging.get_logger("seg_node").fatal(f"cannot start: {exc}")
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # Shutting down (SIGINT): rclpy can raise from a message take that races the
        # context's shutdown under load; that is a clean exit, not an error.
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
