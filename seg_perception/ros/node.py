"""``seg_node``: camera images in; labels, overlays, drivable mask, grid, boundary out.

The node is an adapter: it converts messages to and from the ROS-free frame pipeline
(:mod:`seg_perception.core.pipeline`), which ``seg-perception process`` runs on bags too.
Inference runs on a worker thread fed by a latest-frame slot, so the executor stays free to
take new frames and a slow model drops stale frames (counted) instead of queueing latency.

Per frame the worker reads one immutable parameter snapshot, publishes the image outputs,
then pairs the frame with its camera_info (same stamp, or nearest within
``camera_info_tolerance``) and its camera pose (tf2: the image's ``frame_id`` in
``grid_frame`` at the image stamp; else the ``camera.*`` parameters) and publishes the grid
and boundary, or says why not.

Pieces a lifecycle node or a multi-camera node reuse: :class:`.params.ParameterBridge` (the
parameters), :class:`.camera_io.CameraChannel` (one camera's topics), :class:`.tf_pose`
(tf2 lookups) and :class:`FrameWorker` (the worker and its statistics).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage

from ..core import messages
from ..core.config import PipelineConfig
from ..core.engine import EngineConfigError, EngineInfo, build_engine
from ..core.image_codec import ImageDecodeError
from ..core.pipeline import (
    GRID_OUTPUTS,
    IMAGE_ENCODINGS,
    CameraFrame,
    FramePipeline,
    FrameResult,
    resolve_pose,
)
from ..core.stats import Percentiles, RateMeter, WarningLimiter, problem_kind
from . import log_bridge, node_common, tf_pose
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


class FrameWorker:
    """The worker thread of a node: takes frames from its cameras' slots, runs the pipeline,
    publishes, and keeps the statistics /diagnostics reports."""

    def __init__(self, node: Node, params: ParameterBridge, pipeline: FramePipeline,
                 tf: tf_pose.TfPoses | None, tf_reason: str,
                 warn: Callable[..., None]) -> None:
        self.node = node
        self.params = params
        self.pipeline = pipeline
        self.tf = tf
        self.tf_reason = tf_reason
        self.warn = warn
        self.channels: list[CameraChannel] = []
        self.ready = threading.Condition()
        self.done = RateMeter()
        self.latency = Percentiles()
        self.stage_ms = {k: Percentiles() for k in ("decode", "inference", "publish", "grid",
                                                    "boundary")}
        self.idle = 0
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

    def _loop(self) -> None:
        while True:
            with self.ready:
                while self._running and not any(c.has_frame() for c in self.channels):
                    self.ready.wait(timeout=0.5)
                if not self._running:
                    return
                todo = [(c, f) for c in self.channels if (f := c.take()) is not None]
            for channel, frame in todo:
                try:
                    self.process(channel, frame)
                except Exception as exc:  # the node must outlive any single bad frame
                    if not rclpy.ok():
                        return  # shutting down: publishers are gone, nothing to report
                    channel.bad += 1
                    self.warn(f"process.{problem_kind(exc)}",
                              f"{channel.image_topic}: frame skipped, "
                              f"{type(exc).__name__}: {exc}")

    # -- one frame ------------------------------------------------------------------------
    def process(self, channel: CameraChannel, frame: Frame) -> None:
        msg = frame.msg
        config = self.params.config  # one snapshot for the whole frame
        wanted = channel.wanted()
        if not wanted:
            self.idle += 1
            return
        t0 = time.perf_counter()
        limit = self.params["max_image_pixels"]
        try:
            rgb = compressed_to_rgb(msg, limit) if isinstance(msg, CompressedImage) \
                else imgmsg_to_rgb(msg, limit)
        except ImageDecodeError as exc:
            channel.reject(exc)
            return
        t1 = time.perf_counter()
        image = CameraFrame(rgb, camera=channel.name,
                            rectified=config.rectified(channel.image_topic))
        result, drivable = self.pipeline.segment(image, config, wanted)
        t2 = time.perf_counter()
        self._publish_images(channel, msg.header, result)
        t3 = time.perf_counter()
        if drivable is not None and wanted & set(GRID_OUTPUTS):
            self._grid(channel, msg.header, image, drivable, config, wanted, result)
        self.stage_ms["decode"].add((t1 - t0) * 1e3)
        self.stage_ms["inference"].add((t2 - t1) * 1e3)
        self.stage_ms["publish"].add((t3 - t2) * 1e3)
        self.done.tick()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        now = self.node.get_clock().now().nanoseconds * 1e-9
        if stamp > 0:
            self.latency.add((now - stamp) * 1e3)

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
        self.pipeline.map(frame, drivable, config, wanted, result)
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
        if "drivable/grid" in wanted and channel.grid_pub is not None:
            channel.grid_pub.publish(
                messages.grid_message(KIT, result.grid, result.grid_spec, ghdr))
        if "drivable/boundary" in wanted and channel.boundary_pub is not None \
                and result.boundary is not None:
            channel.boundary_pub.publish(messages.polygon_message(KIT, result.boundary, ghdr))
        for stage in ("grid", "boundary"):
            if stage in result.timings:
                self.stage_ms[stage].add(result.timings[stage])


class SegNode(Node):
    """Segmentation node for one camera (relative topic names; remap or namespace them)."""

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
        self.worker = FrameWorker(self, p, self.pipeline, self.tf, tf_reason, self._warn)
        in_qos = qos(p["image_qos.reliability"], p["image_qos.depth"])
        out_qos = qos(p["output_qos.reliability"], p["output_qos.depth"])
        self.camera = CameraChannel(self, "", p["input_transport"], in_qos, out_qos,
                                    self.worker.ready, self._warn,
                                    max_pixels=p["max_image_pixels"])
        self.worker.channels.append(self.camera)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Class id -> name, once and transient local (vision_msgs/LabelInfo where installed).
        self.label_info_pub = publish_label_info(self, self.engine.meta)
        if p["warmup"]:
            self._warmup()
        self.worker.start()
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        self.get_logger().info(f"ready: listening on {self.camera.image_topic}")

    # -- convenience for tests and tools --------------------------------------------------
    @property
    def image_topic(self) -> str:
        return self.camera.image_topic

    def _warn(self, key: str, message: str, level: str = "warning") -> None:
        """Log ``message`` at most every few seconds per ``key`` (a kind of problem)."""
        node_common.log_limited(self.get_logger(), self._warn_limiter, key, message, level)

    # -- start-up, shutdown ---------------------------------------------------------------
    def _warmup(self) -> None:
        """Exercise the model and the message path once so the first frame is not slow."""
        node_common.warm_up(self.engine, self.get_logger())

    def stop(self) -> None:
        self.worker.stop()
        if self.tf is not None:
            self.tf.close()
        log_bridge.unroute(self._log_handler)

    # -- diagnostics ----------------------------------------------------------------------
    def diagnostics_status(self) -> DiagnosticStatus:
        """One status with rates, latency percentiles, drops and what runs where."""
        return node_common.segmentation_status(self.get_fully_qualified_name(), self.worker,
                                               self.camera, self.info,
                                               self.params.config.grid_frame)

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
