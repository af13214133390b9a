"""``seg_node``: camera images in; labels, overlays, drivable mask, grid, boundary out.

The node is an adapter: it converts messages to and from the ROS-free frame pipeline
(:mod:`seg_perception.runtime.pipeline`), which ``seg-perception process`` runs on bags too.
The cycle itself (one batched forward pass, image outputs, grids, the fused grid) is the
runtime's :class:`~seg_perception.runtime.pipeline.CycleRunner`, the one ``process`` runs;
:class:`.worker.FrameWorker` feeds it from a latest-frame slot per camera in two threads
and publishes what it makes, so the executor stays free to take new frames and a slow
model drops stale frames (counted) instead of queueing latency.

Per frame the worker reads one immutable parameter snapshot, publishes the image outputs,
then pairs the frame with its camera_info (same stamp, or nearest within
``camera_info_tolerance``) and its camera pose (tf2: the image's ``frame_id`` in
``grid_frame`` at the image stamp; else the ``camera.*`` parameters) and publishes the grid
and boundary, or says why not; it never waits for a camera_info (see :mod:`.worker`).

Time going back (a looped or restarted bag, a reset simulation) is seen on the image and
camera_info stamps (more than :data:`~seg_perception.runtime.pipeline.JUMP_BACK_S` before the
newest): the camera's calibration history, the fused grid's camera ages and the latency
statistics start afresh, with one info line.

Several cameras (parameter ``cameras``): one :class:`.camera_io.CameraChannel` per camera
(``X/image`` ... ``X/drivable/mask``), one model; each cycle the worker takes the latest
frame of every camera (waiting up to ``fusion.sync_window`` for the others once one is
there), runs them as ONE batch, publishes each camera's outputs, and the surround grid and
boundary fused from all cameras on ``drivable/grid`` and ``drivable/boundary``.

Pieces a lifecycle node reuses: :class:`.params.ParameterBridge` (the parameters),
:class:`.camera_io.CameraChannel` (one camera's topics), :class:`.tf_pose` (tf2 lookups),
:func:`load_engine` and :class:`.worker.FrameWorker` (the worker and its statistics).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PolygonStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from seg_perception.ros import log_bridge, node_common, tf_pose
from seg_perception.ros.camera_io import CameraChannel, qos
from seg_perception.ros.label_info import publish_label_info
from seg_perception.ros.params import ParameterBridge, StartupError
from seg_perception.ros.worker import FrameWorker, FusedOutputs
from seg_perception.runtime.config import SINGLE_CAMERA
from seg_perception.runtime.engine import EngineConfigError, EngineInfo, build_engine
from seg_perception.runtime.pipeline import (
    IMAGE_ENCODINGS,
    FramePipeline,
)
from seg_perception.runtime.signal_stack import ensure_signal_stack
from seg_perception.runtime.stats import WarningLimiter

OUTPUT_TOPICS = tuple(IMAGE_ENCODINGS)


def load_engine(params: ParameterBridge) -> tuple[Any, EngineInfo]:
    """The engine the parameters ask for; StartupError (one line) when it cannot be built."""
    try:
        built = build_engine(params["model"], params["checkpoint"] or None, params["device"],
                             params["precision"], threads=params["cpu_threads"])
    except KeyError as exc:  # unknown model: the message lists the registered ones
        raise StartupError(exc.args[0] if exc.args else str(exc)) from None
    except (EngineConfigError, ValueError, FileNotFoundError, OSError) as exc:
        raise StartupError(str(exc)) from None
    ensure_signal_stack()  # OpenVINO's is too small for Ctrl-C twice on AMX: see signal_stack
    return built


def open_cameras(node: Node, params: ParameterBridge, worker: FrameWorker,
                 warn: Callable[..., None]) -> list[CameraChannel]:
    """The topics of every camera of ``params.cameras`` (a :class:`CameraChannel` each, its
    own ``input_transport``), attached to ``worker``; with named cameras also the fused
    ``drivable/grid`` and ``drivable/boundary`` publishers (``worker.fused``). Undo with
    :func:`close_cameras`."""
    in_qos = qos(params["image_qos.reliability"], params["image_qos.depth"])
    out_qos = qos(params["output_qos.reliability"], params["output_qos.depth"])
    if params.cameras != SINGLE_CAMERA:  # the node's own grid and boundary: all cameras fused
        worker.fused = FusedOutputs(
            node.create_publisher(OccupancyGrid, "drivable/grid", out_qos),
            node.create_publisher(PolygonStamped, "drivable/boundary", out_qos))
    channels: list[CameraChannel] = []
    try:
        for name in params.cameras:
            channels.append(CameraChannel(node, name, params.camera_value(name, "input_transport"),
                                          in_qos, out_qos, worker.ready, warn,
                                          max_pixels=params["max_image_pixels"]))
    except BaseException:  # leave no half-made topics behind (a lifecycle node retries)
        close_cameras(node, worker, channels)
        raise
    with worker.ready:
        worker.channels.extend(channels)
    return channels


def close_cameras(node: Node, worker: FrameWorker, channels: list[CameraChannel]) -> None:
    """Undo :func:`open_cameras` (the worker stopped first): topics gone, worker detached."""
    with worker.ready:
        for channel in channels:
            if channel in worker.channels:
                worker.channels.remove(channel)
    for channel in channels:
        channel.destroy()
    if worker.fused is not None:
        worker.fused.destroy(node)
        worker.fused = None


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
        node_common.log_engine(self.get_logger(), self.info)
        self.pipeline = FramePipeline(self.engine)
        self.tf, tf_reason = tf_pose.make(self)
        node_common.log_pose_source(self.get_logger(), p.config, self.tf, tf_reason)
        self.multi = p.cameras != SINGLE_CAMERA
        self.worker = FrameWorker(self, p, self.pipeline, self.tf, tf_reason, self._warn)
        self.cameras = open_cameras(self, p, self.worker, self._warn)
        self.camera = self.cameras[0]
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Class id -> name, once and transient local (vision_msgs/LabelInfo where installed).
        self.label_info_pub = publish_label_info(self, self.engine.meta)
        if p["warmup"]:
            self._warmup()
        self.worker.start()
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        node_common.log_ready(self.get_logger(), self.worker, self.cameras)

    # -- convenience for tests and tools --------------------------------------------------
    @property
    def image_topic(self) -> str:
        return self.camera.image_topic

    def _warn(self, key: str, message: str, level: str = "warning") -> None:
        """Log ``message`` at most every few seconds per ``key`` (a kind of problem)."""
        node_common.log_limited(self.get_logger(), self._warn_limiter, key, message, level)

    # -- start-up, shutdown ---------------------------------------------------------------
    def _warmup(self) -> None:
        """Exercise the model (every batch size a cycle can have) and the message path once
        so the first real frames are not slow."""
        node_common.warm_up(self.engine, self.get_logger(), len(self.cameras))

    def stop(self) -> None:
        self.worker.stop()
        if self.tf is not None:
            self.tf.close()
        log_bridge.unroute(self._log_handler)

    # -- diagnostics ----------------------------------------------------------------------
    def diagnostics_status(self) -> DiagnosticStatus:
        """The node's status: rates, latency percentiles, drops (all cameras together),
        batch size and cycle time, and what runs where."""
        return node_common.segmentation_status(self.get_fully_qualified_name(), self.worker,
                                               self.cameras, self.info,
                                               self.params.config.grid_frame)

    def camera_statuses(self) -> list[DiagnosticStatus]:
        """One status per camera of a multi-camera node (none for the single camera)."""
        return node_common.camera_statuses(self.get_fully_qualified_name(), self.worker,
                                           self.cameras, self.info)

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics_status(), *self.camera_statuses()]
        self.diag_pub.publish(msg)


#: Set by the SIGINT handler :func:`_note_sigint` installs: Ctrl-C reached this process.
SIGINT_SEEN = threading.Event()


def _note_sigint() -> None:
    """Note Ctrl-C before it becomes KeyboardInterrupt (call before ``rclpy.init``, which
    chains its own handler to this one). rclpy shuts its context down from a thread of its
    own after the signal, so the KeyboardInterrupt, turned into a RuntimeError when it lands
    inside a pybind11 call (``Unable to convert call argument``), can come while
    ``rclpy.ok()`` is still True. A handler someone else installed is left alone."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return

    def handler(signum: int, frame: Any) -> None:
        SIGINT_SEEN.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


def run_node(name: str, make: Callable[[], Any], spin: Callable[[Any], None],
             close: Callable[[Any], None], args: list[str] | None = None) -> int:
    """The executables' main (``seg_node``, ``seg_lifecycle_node``): a start-up error is one
    fatal line and exit 1, never a traceback; Ctrl-C and an external shutdown are a clean
    exit; ``close`` and ``destroy_node`` run whatever happened."""
    _note_sigint()
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make()
        spin(node)
    except (StartupError, ParameterException) as exc:
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok() and not SIGINT_SEEN.is_set():
            raise
        # Shutting down (SIGINT): rclpy can raise from a message take that races the
        # context's shutdown under load, or the KeyboardInterrupt itself can come out of a
        # pybind11 call as a RuntimeError; that is a clean exit, not an error.
    finally:
        if node is not None:
            close(node)
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``seg_node`` executable."""
    return run_node("seg_node", SegNode, rclpy.spin, SegNode.stop, args)


if __name__ == "__main__":
    raise SystemExit(main())
