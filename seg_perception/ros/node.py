"""``seg_node`` and ``seg_lifecycle_node``: one managed (lifecycle) node, two entry points.

Camera images in; labels, overlays, drivable mask, grid, boundary (and, with several
cameras, the fused grid) out. The node is an adapter: the cycle itself (one batched forward
pass, image outputs, grids, the fused grid) is the runtime's
:class:`~seg_perception.runtime.pipeline.CycleRunner`, the one ``process`` runs;
:class:`.worker.FrameWorker` feeds it from a latest-frame slot per camera and publishes
what it makes (calibration is never waited for: see :mod:`.worker`).

``seg_node`` (:func:`main`, ``SegNode(autostart=True)``) configures and activates itself at
start-up: a start-up parameter (``model``, ``device``, ...) is read-only and one that cannot
work stops the process with one line. ``seg_lifecycle_node`` (:mod:`.lifecycle`) starts
unconfigured, for systems brought up by a lifecycle manager (Nav2's
``lifecycle_manager``, yolo_ros) or by ``ros2 lifecycle set``. What the states mean:

- *unconfigured* (at start): parameters declared with descriptors and validated (a wrong
  type or value exits with one line). The start-up parameters can be set in this state
  only (lifecycle entry); they apply at the next configure. ``cameras`` stays read-only:
  each camera's own parameters (``front.input_transport``, ...) are declared from it.
- *configure*: loads and warms the model, creates the tf2 listener and the ``/diagnostics``
  and ``label_info`` lifecycle publishers. A model that cannot load fails the transition
  with one error line; the node stays unconfigured (fix the parameter, configure again).
- *activate*: creates the cameras' subscriptions and output publishers (every camera of
  ``cameras``, and the fused ``drivable/grid`` and ``drivable/boundary`` for named
  cameras), starts the worker, publishes ``label_info`` (once per loaded model: reliable,
  transient local, so the writer keeps it for subscribers that join later) and logs
  ``ready: listening on <topics>``.
- *deactivate*: stops the worker and removes the subscriptions and output publishers, so
  frames sent while inactive are not even received; the model stays loaded and the next
  activate is immediate.
- *cleanup*: frees the model (and the CUDA cache), the tf2 listener and buffer (with the
  buffer's clock-jump callback: one left on the node's clock is called after the buffer is
  freed, a SIGSEGV at the next time jump) and the publishers. Every way out of a
  configuration (cleanup, shutdown, an error) releases the same.
- *shutdown* (from any state): releases whatever exists; *finalized* is terminal, so the
  process then exits (status 0).
- An exception in a transition is logged with its traceback and returns ERROR; ``on_error``
  releases everything and returns the node to unconfigured.

Time going back (a looped or restarted bag, a reset simulation) is seen on the image and
camera_info stamps (more than :data:`~seg_perception.runtime.pipeline.JUMP_BACK_S` before the
newest): the camera's calibration history, the fused grid's camera ages and the latency
statistics start afresh, with one info line.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import time
import traceback
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.parameter import Parameter

from seg_perception.ros import log_bridge, node_common, tf_pose
from seg_perception.ros.camera_io import CameraChannel, close_cameras, open_cameras
from seg_perception.ros.label_info import TOPIC as LABEL_INFO_TOPIC
from seg_perception.ros.label_info import build_label_info, label_info_qos, label_info_type
from seg_perception.ros.node_common import load_engine, run_node
from seg_perception.ros.params import ParameterBridge, StartupError, descriptor
from seg_perception.ros.worker import FrameWorker
from seg_perception.runtime.config import ParamSpec, describe
from seg_perception.runtime.engine import EngineInfo
from seg_perception.runtime.pipeline import FramePipeline
from seg_perception.runtime.stats import WarningLimiter

NODE_NAME = "seg_node"
SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
ERROR = TransitionCallbackReturn.ERROR
#: How long the process keeps spinning after it is finalized, so the response to the
#: shutdown request (and the transition event) reaches the caller before the node goes.
FINALIZED_GRACE_S = 1.0
#: At the process's exit, the longest wait (s) for a frame in progress (a transition waits
#: as long as it takes): longer than any sane frame, and the process still exits on its own
#: before `ros2 launch` kills it (SIGKILL 15 s after Ctrl-C; its SIGTERM at 5 s only shuts
#: rclpy down, which the exit is doing anyway).
EXIT_WAIT_S = 10.0
#: Start-up parameters that stay read-only in the lifecycle node too.
FIXED_AT_START = frozenset({"cameras"})
FIXED_WHILE_CONFIGURED = (" Fixed once configured: set it while the node is unconfigured; it "
                          "applies at the next configure.")


def lifecycle_descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """``seg_node``'s descriptor, except that start-up parameters are not read-only: the
    node accepts them while unconfigured (and refuses them in the other states). ``cameras``
    stays read-only: the per-camera parameters are declared from it at start-up."""
    if not spec.read_only or spec.name in FIXED_AT_START:
        return descriptor(spec)
    d = descriptor(dataclasses.replace(spec, read_only=False))
    d.description = describe(spec).removesuffix(" Read-only.") + FIXED_WHILE_CONFIGURED
    return d


def guarded(transition: str) -> Callable[[Callable[..., TransitionCallbackReturn]],
                                         Callable[..., TransitionCallbackReturn]]:
    """A transition callback whose exceptions are logged with their traceback and return
    ERROR (rclpy would swallow them silently), which sends the node to ``on_error``."""
    def wrap(fn: Callable[..., TransitionCallbackReturn]
             ) -> Callable[..., TransitionCallbackReturn]:
        @functools.wraps(fn)
        def call(self: SegNode, state: LifecycleState, *args: Any
                 ) -> TransitionCallbackReturn:
            try:
                return fn(self, state, *args)
            except Exception as exc:
                self.get_logger().error(
                    f"{transition} failed with {type(exc).__name__}: {exc}\n"
                    + traceback.format_exc().rstrip())
                return ERROR
        return call
    return wrap


class SegNode(LifecycleNode):
    """Segmentation node for one camera, or several (``cameras``) sharing one model, one
    batched forward pass per cycle and one fused surround grid (relative topic names; remap
    or namespace them). ``autostart``: configure and activate now (``seg_node``; a failure
    raises :class:`~.params.StartupError`), else wait unconfigured for a lifecycle manager
    (see the module docstring)."""

    def __init__(self, autostart: bool = True, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.autostart = autostart
        self._log_handler = log_bridge.route_to(self.get_logger())
        self._warn_limiter = WarningLimiter(5.0)
        try:
            self.params = ParameterBridge(
                self, descriptors=descriptor if autostart else lifecycle_descriptor)
        except Exception:
            log_bridge.unroute(self._log_handler)
            raise
        self.add_on_set_parameters_callback(self._startup_parameters_while_unconfigured)
        #: Primary state as this node's callbacks last left it (for logs and diagnostics).
        self.stage = "unconfigured"
        self.finalized = False
        #: Models loaded since start (a configure after a cleanup loads again; an activate
        #: after a deactivate does not).
        self.model_loads = 0
        self.engine: Any | None = None
        self.info: EngineInfo | None = None
        self.pipeline: FramePipeline | None = None
        self.worker: FrameWorker | None = None
        #: The cameras' topics while active (empty otherwise).
        self.cameras: list[CameraChannel] = []
        self.tf: tf_pose.TfPoses | None = None
        self.tf_reason = ""
        self.diag_pub: Any | None = None
        self.label_info_pub: Any | None = None
        self._label_info_due = False
        self._diag_timer: Any | None = None
        self._label_info_msg = label_info_type(self)
        #: why the last configure failed (one line), for seg_node's start-up error
        self._configure_error = ""
        if autostart:
            self._start()
        else:
            self.get_logger().info(
                f"unconfigured: `ros2 lifecycle set {self.get_fully_qualified_name()} "
                "configure` loads the model, `activate` starts processing")

    def _start(self) -> None:
        """seg_node: configure and activate at once; a failure is one StartupError line."""
        try:
            if self.trigger_configure() != SUCCESS:
                raise StartupError(self._configure_error or "configure failed")
            if self.trigger_activate() != SUCCESS:
                raise StartupError("activate failed (see the error above)")
        except BaseException:
            self.close()
            raise

    # -- helpers --------------------------------------------------------------------------
    def _warn(self, key: str, message: str, level: str = "warning") -> None:
        node_common.log_limited(self.get_logger(), self._warn_limiter, key, message, level)

    @property
    def camera(self) -> CameraChannel | None:
        """The first camera's topics while active, else None."""
        return self.cameras[0] if self.cameras else None

    @property
    def image_topic(self) -> str | None:
        """The (first camera's) image topic while active, else None."""
        return self.cameras[0].image_topic if self.cameras else None

    def _startup_parameters_while_unconfigured(self, params: list[Parameter]
                                               ) -> SetParametersResult:
        """Start-up parameters (read-only in seg_node) change only while unconfigured:
        the model, the device and the topics' settings are in use once configured."""
        if self.engine is None and not self.finalized:
            return SetParametersResult(successful=True)
        specs = self.params.specs  # the per-camera entries too (front.input_transport)
        fixed = [p.name for p in params
                 if (spec := specs.get(p.name)) is not None and spec.read_only]
        if not fixed:
            return SetParametersResult(successful=True)
        return SetParametersResult(
            successful=False,
            reason=f"{', '.join(fixed)} can only be set while the node is unconfigured (it is "
                   f"{self.stage}): deactivate and clean up first; the value applies at the "
                   "next configure")

    # -- transitions ----------------------------------------------------------------------
    @guarded("configure")
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and warm the model; FAILURE (one line, still unconfigured) if it cannot."""
        log = self.get_logger()
        p = self.params
        if not self.autostart:
            log.info(f"configuring: loading model {p['model']!r} on device {p['device']!r}")
        t0 = time.perf_counter()
        engine = info = None
        try:
            engine, info = load_engine(p)
            if p["warmup"]:
                node_common.warm_up(engine, log, len(p.cameras))
        except Exception as exc:  # whatever stops the model from loading or running
            self._configure_error = str(exc) if isinstance(exc, StartupError) else (
                f"model {p['model']!r} cannot load: {type(exc).__name__}: {exc}")
            if not self.autostart:  # seg_node says it once, as its start-up error
                log.error(f"configure failed, still unconfigured: {self._configure_error}")
            log.debug(traceback.format_exc())
            engine = info = None
        if engine is None or info is None:
            self._free_memory(p["device"])  # a model that loaded but failed its warm-up
            return FAILURE
        self.model_loads += 1
        self.engine, self.info = engine, info
        node_common.log_engine(log, info)
        return self._configure_rest(state, time.perf_counter() - t0)

    def _configure_rest(self, state: LifecycleState, load_s: float) -> TransitionCallbackReturn:
        assert self.engine is not None and self.info is not None
        self.pipeline = FramePipeline(self.engine)
        self.tf, self.tf_reason = tf_pose.make(self)
        node_common.log_pose_source(self.get_logger(), self.params.config, self.tf,
                                    self.tf_reason)
        self.worker = FrameWorker(self, self.params, self.pipeline, self.tf, self.tf_reason,
                                  self._warn)
        self.diag_pub = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        if self._label_info_msg is not None:
            self.label_info_pub = self.create_lifecycle_publisher(
                self._label_info_msg, LABEL_INFO_TOPIC, label_info_qos())
            self._label_info_due = True
        self.stage = "inactive"
        if not self.autostart:
            self.get_logger().info(
                f"configured (inactive): model {self.info.model} loaded in {load_s:.1f} s "
                f"(model loads so far: {self.model_loads}); activate to start processing")
        return SUCCESS

    @guarded("activate")
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscriptions and output publishers, the worker, label_info, diagnostics."""
        assert self.worker is not None and self.engine is not None
        p = self.params
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result != SUCCESS:
            return result
        if self.label_info_pub is not None and self._label_info_due:
            self.label_info_pub.publish(build_label_info(self.engine.meta,
                                                         self.get_clock().now().to_msg()))
            self._label_info_due = False
        self.cameras = open_cameras(self, p, self.worker, self._warn)
        self.worker.start()
        self._diag_timer = self.create_timer(p["diagnostics_period"],
                                             self._publish_diagnostics)
        self.stage = "active"
        node_common.log_ready(self.get_logger(), self.worker, self.cameras)
        return SUCCESS

    @guarded("deactivate")
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop processing; the model stays loaded."""
        self._stop_processing()
        result = super().on_deactivate(state)
        self.stage = "inactive"
        self.get_logger().info("deactivated (inactive): not listening; the model stays loaded")
        return result

    @guarded("cleanup")
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model and what configure created."""
        self._release()
        self.get_logger().info("cleaned up (unconfigured): model unloaded")
        return SUCCESS

    @guarded("shutdown")
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any primary state: release everything; the process exits once finalized."""
        self._release()
        self.stage = "finalized"
        self.finalized = True
        self.get_logger().info(f"shut down from {state.label}: finalized, exiting")
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """After an exception in a transition: release everything, back to unconfigured
        (configure retries); if even that fails, finalized."""
        log = self.get_logger()
        try:
            self._release()
        except Exception as exc:
            log.error(f"error handling failed ({type(exc).__name__}: {exc}): finalized\n"
                      + traceback.format_exc().rstrip())
            self.stage = "finalized"
            self.finalized = True
            return FAILURE
        log.error(f"a transition from {state.label} failed: model and topics released, the "
                  "node is unconfigured (configure to retry)")
        return SUCCESS

    # -- releasing ------------------------------------------------------------------------
    def _stop_processing(self, give_up_s: float | None = None) -> None:
        """Undo activate (idempotent): no timer, no worker thread, no camera topics.

        A slow frame may outlast the worker's stop; its publishers must outlive it and a later
        activate must not run beside it, so a transition waits for it, saying where it is.
        Only the process's exit (``give_up_s``) stops waiting after that long: the threads
        are daemons, and a Ctrl-C that never ends the process is worse than a lost frame.
        """
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        worker = self.worker
        if worker is not None:
            # the bound counts from here: worker.stop() itself waits for the threads
            deadline = None if give_up_s is None else time.monotonic() + give_up_s
            worker.stop(timeout=5.0 if give_up_s is None else min(5.0, give_up_s))
            while not worker.join(timeout=0.0):
                where = worker.busy_where()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self.get_logger().warning(
                        f"the frame in progress did not finish in {give_up_s:g} s ({where}): "
                        "exiting without it")
                    break
                self.get_logger().info(f"waiting for the frame in progress to finish: {where}")
                worker.join(timeout=5.0 if left is None else min(5.0, left))
        if self.cameras:
            if worker is not None:
                close_cameras(self, worker, self.cameras)
            else:
                for channel in self.cameras:
                    channel.destroy()
            self.cameras = []
        if self.stage == "active":
            self.stage = "inactive"

    def _release(self, give_up_s: float | None = None) -> None:
        """Undo activate and configure (idempotent): back to what the constructor made
        (``give_up_s``: see :meth:`_stop_processing`)."""
        self._stop_processing(give_up_s)
        for pub in (self.diag_pub, self.label_info_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self.diag_pub = self.label_info_pub = None
        self._label_info_due = False
        if self.tf is not None:
            self.tf.close()
            self.tf = None
        device = self.info.device if self.info is not None else ""
        self.worker = self.pipeline = self.engine = self.info = None
        self._free_memory(device)
        if self.stage != "finalized":
            self.stage = "unconfigured"

    @staticmethod
    def _free_memory(device: str) -> None:
        """Collect the dropped model now, and return CUDA's cached blocks to the driver."""
        gc.collect()
        if str(device).startswith("cuda"):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def close(self) -> None:
        """Before destroy_node (process exit): release everything, stop routing the core's
        logging."""
        try:
            self._release(give_up_s=EXIT_WAIT_S)
        finally:
            log_bridge.unroute(self._log_handler)

    # -- diagnostics ----------------------------------------------------------------------
    def diagnostics_status(self) -> DiagnosticStatus:
        """The node's status: rates, latency percentiles, drops (all cameras together),
        batch size and cycle time, what runs where, the lifecycle state (while active)."""
        assert self.worker is not None and self.info is not None
        return node_common.segmentation_status(
            self.get_fully_qualified_name(), self.worker, self.cameras, self.info,
            self.params.config.grid_frame,
            {"lifecycle_state": self.stage, "model_loads": str(self.model_loads)})

    def camera_statuses(self) -> list[DiagnosticStatus]:
        """One status per camera of a multi-camera node (none for the single camera)."""
        assert self.worker is not None and self.info is not None
        return node_common.camera_statuses(self.get_fully_qualified_name(), self.worker,
                                           self.cameras, self.info)

    def _publish_diagnostics(self) -> None:
        if self.diag_pub is None or self.worker is None or not self.cameras \
                or self.info is None:
            return
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics_status(), *self.camera_statuses()]
        self.diag_pub.publish(msg)


def spin_until_finalized(node: SegNode) -> None:
    """Spin until the context shuts down (Ctrl-C) or the node is finalized."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while node.context.ok() and not node.finalized:
            executor.spin_once(timeout_sec=0.2)
        deadline = time.monotonic() + FINALIZED_GRACE_S
        while node.context.ok() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``seg_node`` executable: configured and active at start-up."""
    return run_node(NODE_NAME, SegNode, spin_until_finalized, SegNode.close, args)


def lifecycle_main(args: list[str] | None = None) -> int:
    """Entry point of the ``seg_lifecycle_node`` executable: unconfigured at start-up."""
    return run_node(NODE_NAME, functools.partial(SegNode, autostart=False),
                    spin_until_finalized, SegNode.close, args)


if __name__ == "__main__":
    raise SystemExit(main())
