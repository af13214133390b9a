"""``seg_node``: camera images in; labels, overlays, drivable mask and diagnostics out.

The node is thin: it converts messages, hands frames to the ROS-free engine and publishes.
Inference runs on a worker thread fed by a latest-frame slot, so the executor stays free to
take new frames and a slow model drops stale frames (counted) instead of queueing latency.
"""

from __future__ import annotations

import array
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point32, PolygonStamped
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..core.engine import EngineConfigError, build_engine
from ..core.geometry import CameraModel, CameraMounting, DrivableAreaMapper, GridSpec
from ..core.image_codec import ImageDecodeError, validate_raw
from ..core.render import colorize, overlay, palette_lut
from ..core.stats import Percentiles, RateMeter, WarningLimiter
from .conversions import compressed_to_rgb, imgmsg_to_rgb, numpy_to_imgmsg
from .label_info import publish_label_info
from .params import PARAMS, PARAMS_BY_NAME, ParamSpec

# Parameter groups that define the ground projection; changing one rebuilds the lookup.
GEOMETRY_GROUPS = ("camera", "grid", "mask", "boundary")

OUTPUT_TOPICS = (
    "labels", "labels_color", "overlay", "confidence", "drivable/mask",
)


@dataclass
class _Frame:
    msg: Any
    received: float  # monotonic time of arrival


def _qos(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=(ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
                     else ReliabilityPolicy.RELIABLE),
        durability=DurabilityPolicy.VOLATILE,
    )


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    desc = spec.description
    if spec.choices:
        desc += f" Valid values: {', '.join(spec.choices)}."
    d = ParameterDescriptor(description=desc, read_only=spec.read_only)
    if spec.min is not None and spec.max is not None:
        if isinstance(spec.default, float):
            d.floating_point_range = [
                FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max))
            ]
        elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
            d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max),
                                            step=1)]
    return d


class StartupError(RuntimeError):
    """The node cannot start with its parameters (message says why and what is valid)."""


class SegNode(Node):
    """Segmentation node for one camera (relative topic names; remap or namespace them)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("seg_node", **kwargs)
        self.p = self._declare_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._warn_limiter = WarningLimiter(5.0)

        try:
            self.engine, self.info = build_engine(
                self.p["model"], self.p["checkpoint"] or None, self.p["device"],
                self.p["precision"], threads=self.p["cpu_threads"])
        except (EngineConfigError, KeyError, ValueError, FileNotFoundError) as exc:
            raise StartupError(str(exc)) from exc
        self.get_logger().info(
            f"model {self.info.model}, weights: {self.info.weights}, device {self.info.device}, "
            f"backend {self.info.backend}, precision {self.info.precision} "
            f"({self.info.precision_reason})")
        if not self.info.trained:
            self.get_logger().warning(
                f"model {self.info.model} runs with RANDOM weights: its labels are meaningless. "
                "Pass `checkpoint` or use a model with shipped weights.")
        self._palette = palette_lut(self.engine.meta.palette)
        self.mapper = self._make_mapper()
        self._camera_model: CameraModel | None = None  # written by callback, read by worker
        self._warned_no_info = False

        in_qos = _qos(self.p["image_qos.reliability"], self.p["image_qos.depth"])
        out_qos = _qos(self.p["output_qos.reliability"], self.p["output_qos.depth"])
        self.pubs = {t: self.create_publisher(Image, t, out_qos) for t in OUTPUT_TOPICS}
        self.grid_pub = self.create_publisher(OccupancyGrid, "drivable/grid", out_qos)
        self.boundary_pub = self.create_publisher(PolygonStamped, "drivable/boundary", out_qos)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Class id -> name, once and transient local (vision_msgs/LabelInfo where installed).
        self.label_info_pub = publish_label_info(self, self.engine.meta)
        # Frames the middleware loses (e.g. fragments of large images over UDP) are counted.
        events = SubscriptionEventCallbacks(message_lost=self._on_message_lost)
        if self.p["input_transport"] == "compressed":
            self.image_topic = "image/compressed"
            msg_type: Any = CompressedImage
        else:
            self.image_topic = "image"
            msg_type = Image
        self.create_subscription(msg_type, self.image_topic, self._on_image, in_qos,
                                 event_callbacks=events)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                 _qos(self.p["image_qos.reliability"], 1))

        # Latest-frame slot shared with the worker thread.
        self._slot: _Frame | None = None
        self._cv = threading.Condition()
        self._running = True
        self.rx = RateMeter()
        self.done = RateMeter()
        self.latency = Percentiles()
        self.stage_ms = {k: Percentiles() for k in ("decode", "inference", "publish", "grid")}
        self.dropped = 0
        self.lost = 0
        self.bad = 0
        self.idle = 0

        if self.p["warmup"]:
            self._warmup()
        self._worker = threading.Thread(target=self._work_loop, name="seg_worker", daemon=True)
        self._worker.start()
        self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics)
        topic = self.resolve_topic_name(self.image_topic)
        self.get_logger().info(f"ready: listening on {topic}")

    # ----------------------------------------------------------------- parameters
    def _declare_parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for spec in PARAMS:
            value = self.declare_parameter(spec.name, spec.default, _descriptor(spec)).value
            problem = spec.check(value)
            if problem:
                raise StartupError(problem)
            values[spec.name] = value
        return values

    def _make_mapper(self, p: dict[str, Any] | None = None) -> DrivableAreaMapper:
        """Grid geometry from the parameters; inconsistent values stop the start-up."""
        p = p or self.p
        try:
            return DrivableAreaMapper(
                GridSpec(p["grid.resolution"], p["grid.x_min"], p["grid.x_max"],
                         p["grid.y_min"], p["grid.y_max"]),
                CameraMounting(p["camera.x"], p["camera.y"], p["camera.z"],
                               p["camera.roll"], p["camera.pitch"], p["camera.yaw"]),
                max_range=p["grid.max_range"],
                max_pixel_footprint=p["grid.max_pixel_footprint"],
                speckle_area=p["mask.speckle_area"],
                max_vertices=p["boundary.max_vertices"],
                min_region_area=p["boundary.min_region_area"],
            )
        except ValueError as exc:
            raise StartupError(f"invalid drivable-area parameters: {exc}") from exc

    def _on_set_parameters(self, params: list[rclpy.parameter.Parameter]) -> SetParametersResult:
        """Validate run-time changes; a new mounting or grid swaps in a rebuilt mapper."""
        for param in params:
            spec = PARAMS_BY_NAME.get(param.name)
            if spec is None:
                continue
            problem = spec.check(param.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        if not hasattr(self, "mapper"):  # declarations during start-up
            return SetParametersResult(successful=True)
        changed = {p.name: p.value for p in params if p.name in self.p}
        if any(name.split(".")[0] in GEOMETRY_GROUPS for name in changed):
            try:
                mapper = self._make_mapper({**self.p, **changed})
            except StartupError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            self.mapper = mapper  # the worker picks it up on the next frame
            self.get_logger().info(f"drivable-area geometry updated: {changed}")
        self.p.update(changed)
        return SetParametersResult(successful=True)

    # ----------------------------------------------------------------- callbacks
    def _warn(self, key: str, message: str) -> None:
        suppressed = self._warn_limiter.check(key)
        if suppressed is None:
            return
        more = f" ({suppressed} more since the last warning)" if suppressed else ""
        self.get_logger().warning(message + more)

    def _reject(self, exc: Exception) -> None:
        """Count and (rate-limited, per kind of problem) report a frame that is skipped."""
        self.bad += 1
        kind = re.sub(r"\d+", "#", str(exc))[:80]  # same problem, other sizes: one key
        self._warn("decode." + kind,
                   f"{self.resolve_topic_name(self.image_topic)}: frame skipped: {exc}")

    def _on_image(self, msg: Any) -> None:
        self.rx.tick()
        if isinstance(msg, Image):
            # Header checks are cheap: a malformed frame is reported now and never takes
            # the slot from a good one.
            try:
                validate_raw(msg.encoding, msg.width, msg.height, msg.step, msg.data)
            except ImageDecodeError as exc:
                self._reject(exc)
                return
        frame = _Frame(msg, time.monotonic())
        with self._cv:
            if self._slot is not None:
                self.dropped += 1
            self._slot = frame
            self._cv.notify()

    def _on_message_lost(self, info: Any) -> None:
        self.lost += int(info.total_count_change)
        self._warn("transport.lost",
                   f"{self.resolve_topic_name(self.image_topic)}: {self.lost} frames lost in "
                   "transport so far (large images over UDP? use the shared-memory profile "
                   "config/fastdds_shm.xml on both sides)")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        topic = self.resolve_topic_name("camera_info")
        if msg.width == 0 or msg.height == 0:
            self._warn("camera_info.size", f"{topic}: camera_info with zero width or height "
                       f"({msg.width}x{msg.height}) ignored")
            return
        if msg.k[0] <= 0.0 or msg.k[4] <= 0.0:
            self._warn("camera_info.focal", f"{topic}: camera_info with a non-positive focal "
                       f"length (fx={msg.k[0]}, fy={msg.k[4]}) ignored")
            return
        try:
            model = CameraModel.from_camera_info_fields(
                msg.width, msg.height, msg.k, msg.d, msg.distortion_model).validate()
        except ValueError as exc:
            self._warn("camera_info.invalid", f"{topic}: camera_info ignored: {exc}")
            return
        self._camera_model = model  # the worker rebuilds its lookup when this changes

    # ----------------------------------------------------------------- worker
    def _work_loop(self) -> None:
        while True:
            with self._cv:
                while self._slot is None and self._running:
                    self._cv.wait(timeout=0.5)
                if not self._running:
                    return
                frame, self._slot = self._slot, None
            try:
                self._process(frame)
            except Exception as exc:  # the node must outlive any single bad frame
                self.bad += 1
                self._warn(f"process.{type(exc).__name__}",
                           f"{self.resolve_topic_name(self.image_topic)}: frame skipped, "
                           f"{type(exc).__name__}: {exc}")

    def _wanted(self) -> set[str]:
        wanted = {t for t, pub in self.pubs.items() if pub.get_subscription_count() > 0}
        if self.grid_pub.get_subscription_count() > 0:
            wanted.add("drivable/grid")
        if self.boundary_pub.get_subscription_count() > 0:
            wanted.add("drivable/boundary")
        return wanted

    def _process(self, frame: _Frame) -> None:
        msg = frame.msg
        wanted = self._wanted()
        if not wanted:
            self.idle += 1
            return
        t0 = time.perf_counter()
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_to_rgb(msg)
            else:
                rgb = imgmsg_to_rgb(msg)
        except ImageDecodeError as exc:
            self._reject(exc)
            return
        t1 = time.perf_counter()
        result = self.engine(rgb, want_confidence="confidence" in wanted)
        t2 = time.perf_counter()
        self._publish_outputs(msg.header, rgb, result, wanted)
        t3 = time.perf_counter()
        if wanted & {"drivable/grid", "drivable/boundary"}:
            self._publish_grid(msg.header, result.drivable, wanted)
            self.stage_ms["grid"].add((time.perf_counter() - t3) * 1e3)
        self.stage_ms["decode"].add((t1 - t0) * 1e3)
        self.stage_ms["inference"].add((t2 - t1) * 1e3)
        self.stage_ms["publish"].add((t3 - t2) * 1e3)
        self.done.tick()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        now = self.get_clock().now().nanoseconds * 1e-9
        if stamp > 0:
            self.latency.add((now - stamp) * 1e3)

    def _publish_outputs(self, header: Any, rgb: np.ndarray, result: Any,
                         wanted: set[str]) -> None:
        pubs = self.pubs
        if "labels" in wanted:
            pubs["labels"].publish(numpy_to_imgmsg(result.labels, "mono8", header))
        if "drivable/mask" in wanted:
            pubs["drivable/mask"].publish(numpy_to_imgmsg(result.drivable, "mono8", header))
        if "confidence" in wanted and result.confidence is not None:
            pubs["confidence"].publish(numpy_to_imgmsg(result.confidence, "mono8", header))
        if wanted & {"labels_color", "overlay"}:
            color = colorize(result.labels, self._palette)
            if "labels_color" in wanted:
                pubs["labels_color"].publish(numpy_to_imgmsg(color, "rgb8", header))
            if "overlay" in wanted:
                blended = overlay(rgb, color, float(self.p["overlay_alpha"]))
                pubs["overlay"].publish(numpy_to_imgmsg(blended, "rgb8", header))

    def _publish_grid(self, header: Any, drivable: np.ndarray, wanted: set[str]) -> None:
        """Bird's-eye grid and free-space boundary in grid_frame, once camera_info is known."""
        model = self._camera_model
        if model is None:
            if not self._warned_no_info:
                self._warned_no_info = True
                self.get_logger().warning(
                    f"no valid camera_info on {self.resolve_topic_name('camera_info')} yet: "
                    "drivable/grid and drivable/boundary are published once it arrives")
            return
        if self.mapper.set_camera(model):
            self.get_logger().info(
                f"camera model {model.width}x{model.height} fx={model.K[0]:.1f}: "
                "ground lookup rebuilt")
        grid = self.mapper.grid_from_mask(drivable)
        frame_id = str(self.p["grid_frame"])
        if "drivable/grid" in wanted:
            spec = self.mapper.grid
            msg = OccupancyGrid()
            msg.header.stamp = header.stamp
            msg.header.frame_id = frame_id
            msg.info.map_load_time = header.stamp
            msg.info.resolution = float(spec.resolution)
            msg.info.width = spec.width
            msg.info.height = spec.height
            msg.info.origin.position.x = float(spec.x_min)
            msg.info.origin.position.y = float(spec.y_min)
            msg.info.origin.orientation.w = 1.0
            msg.data = array.array("b", grid.tobytes())
            self.grid_pub.publish(msg)
        if "drivable/boundary" in wanted:
            poly = PolygonStamped()
            poly.header.stamp = header.stamp
            poly.header.frame_id = frame_id
            poly.polygon.points = [Point32(x=float(x), y=float(y), z=0.0)
                                   for x, y in self.mapper.boundary_from_grid(grid)]
            self.boundary_pub.publish(poly)

    # ----------------------------------------------------------------- start-up, shutdown
    def _warmup(self) -> None:
        """Exercise the model and the message path once so the first frame is not slow."""
        t0 = time.perf_counter()
        w, h = self.engine.input_size
        self.engine.warmup(w, h)
        from rclpy.serialization import deserialize_message, serialize_message

        dummy = numpy_to_imgmsg(np.zeros((h, w, 3), np.uint8), "rgb8", Image().header)
        deserialize_message(serialize_message(dummy), Image)
        self.get_logger().info(f"warm-up done in {(time.perf_counter() - t0) * 1e3:.0f} ms")

    def stop(self) -> None:
        with self._cv:
            self._running = False
            self._cv.notify_all()
        self._worker.join(timeout=5.0)

    # ----------------------------------------------------------------- diagnostics
    def diagnostics_status(self) -> DiagnosticStatus:
        """One status with rates, latency percentiles, drops and what runs where."""
        processed = self.done.rate()
        values = {
            "input_rate_hz": f"{self.rx.rate():.2f}",
            "processed_rate_hz": f"{processed:.2f}",
            "latency_p50_ms": f"{self.latency.percentile(50):.1f}",
            "latency_p95_ms": f"{self.latency.percentile(95):.1f}",
            "frames_received": str(self.rx.total),
            "frames_processed": str(self.done.total),
            "frames_dropped": str(self.dropped),
            "frames_lost_in_transport": str(self.lost),
            "frames_bad": str(self.bad),
            "frames_without_subscribers": str(self.idle),
            "model": self.info.model,
            "weights": self.info.weights,
            "device": self.info.device,
            "precision": self.info.precision,
            "precision_reason": self.info.precision_reason,
            "backend": self.info.backend,
            "cpu_threads": str(torch.get_num_threads()),
        }
        for stage, pct in self.stage_ms.items():
            values[f"{stage}_p50_ms"] = f"{pct.percentile(50):.1f}"
        level, message = DiagnosticStatus.OK, "ok"
        if not self.info.trained:
            level, message = DiagnosticStatus.WARN, "model has random weights"
        elif self.rx.total == 0:
            level, message = DiagnosticStatus.WARN, "no images received yet"
        return DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: segmentation",
            message=message,
            hardware_id=self.info.device,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics_status()]
        self.diag_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``seg_node`` executable."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = SegNode()
        rclpy.spin(node)
    except StartupError as exc:
        rclpy.logging.get_logger("seg_node").fatal(f"cannot start: {exc}")
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
