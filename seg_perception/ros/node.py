"""``seg_node``: camera images in; labels, overlays, drivable mask, grid, boundary out.

The node is an adapter: it converts messages to and from the ROS-free frame pipeline
(:mod:`seg_perception.runtime.pipeline`), which ``seg-perception process`` runs on bags too.
Inference runs on a worker thread fed by a latest-frame slot per camera, so the executor
stays free to take new frames and a slow model drops stale frames (counted) instead of
queueing latency. A second thread does everything after the network's forward pass
(labels and confidence, images, grid, boundary, publishing) while the first runs the next
frame's network; the first takes a new frame only once the second has taken the previous
one, so at most one finished forward pass waits and latency does not grow.

Per frame the worker reads one immutable parameter snapshot, publishes the image outputs,
then pairs the frame with its camera_info (same stamp, or nearest within
``camera_info_tolerance``) and its camera pose (tf2: the image's ``frame_id`` in
``grid_frame`` at the image stamp; else the ``camera.*`` parameters) and publishes the grid
and boundary, or says why not. Neither thread ever waits for a camera_info: a frame whose
camera_info may still come keeps its drivable mask and its cycle's grid step (and fused
grid) is deferred until it comes, at most :data:`INFO_WAIT` s, while later frames go on;
a camera whose camera_info did not come in time, or is unusable (an all-zero K), has its
frames' grids made at once or not at all.

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
:func:`load_engine` and :class:`FrameWorker` (the worker and its statistics).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PolygonStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage

from seg_perception.ros import log_bridge, node_common, tf_pose
from seg_perception.ros.camera_io import CameraChannel, Frame, qos
from seg_perception.ros.conversions import KIT, compressed_to_rgb, imgmsg_to_rgb, numpy_to_imgmsg
from seg_perception.ros.label_info import publish_label_info
from seg_perception.ros.params import ParameterBridge, StartupError
from seg_perception.runtime import messages
from seg_perception.runtime.config import SINGLE_CAMERA, PipelineConfig
from seg_perception.runtime.engine import EngineConfigError, EngineInfo, build_engine
from seg_perception.runtime.image_codec import ImageDecodeError
from seg_perception.runtime.pipeline import (
    GRID_OUTPUTS,
    IMAGE_ENCODINGS,
    JUMP_BACK_S,
    CameraFrame,
    FramePipeline,
    FrameResult,
    GridFusion,
    PendingInference,
    resolve_pose,
)
from seg_perception.runtime.signals import SIGINT_SEEN, ensure_signal_stack, note_sigint
from seg_perception.runtime.stats import Percentiles, RateMeter, WarningLimiter, problem_kind

#: Longest time (s) a frame's grid step is deferred for its camera_info after its image
#: outputs went out (only while none stamped at or after the frame has arrived); no thread
#: waits meanwhile.
INFO_WAIT = 0.25
#: After a camera's grid waited in vain, its frames' grids do not wait for this long (s): a
#: camera whose camera_info stopped costs the fused grid one deferral this often, no more.
INFO_WAIT_RETRY = 2.0
#: Cycles whose grid step waits at most; beyond, the oldest is finished without waiting more.
DEFERRED_MAX = 32

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
    ensure_signal_stack()  # OpenVINO's is too small for Ctrl-C twice on AMX: see signals
    return built


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

    def destroy(self, node: Node) -> None:
        node.destroy_publisher(self.grid)
        node.destroy_publisher(self.boundary)


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
    grid: bool = False  # its grid is to be made
    waits: bool = False  # its grid step waits for its camera_info


@dataclass
class _Cycle:
    """A cycle between the worker's two threads: its frames, the global snapshot and fused
    outputs wanted when it was taken, the forward pass in flight and when it began."""

    items: list[_Item]
    gconfig: PipelineConfig
    fused_want: set[str]
    pending: PendingInference
    t_start: float
    deadline: float = 0.0  # (monotonic) its grid step waits for camera_info until then


class FrameWorker:
    """The worker threads of a node: ``seg_worker`` takes the frames of its cameras' slots,
    one cycle at a time, decodes them and runs one batched forward pass per cycle;
    ``seg_outputs`` turns the scores into outputs and publishes them, meanwhile. Keeps the
    statistics /diagnostics reports.

    With ``fused`` (a node of several named cameras) each cycle also publishes the surround
    grid and boundary fused from all cameras (:class:`~seg_perception.runtime.pipeline.
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
        self._threads: list[threading.Thread] = []
        self._handoff: _Cycle | None = None  # a forward pass done, its outputs not started
        #: cycles (in order) whose image outputs are out and whose grid step waits for a
        #: camera_info (or for an earlier cycle that does); seg_outputs' own
        self._deferred: deque[_Cycle] = deque()
        self._lookup_builds = 0
        self.time_jumps = 0

    def start(self) -> None:
        self._running = True
        self._handoff = None
        self._deferred.clear()
        self._threads = [threading.Thread(target=target, name=name, daemon=True)
                         for target, name in ((self._loop, "seg_worker"),
                                              (self._outputs_loop, "seg_outputs"))]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both threads (a cycle between them is dropped); waits up to ``timeout``."""
        with self.ready:
            self._running = False
            self.ready.notify_all()
        self.join(timeout)

    def alive(self) -> bool:
        """Both threads run (between :meth:`start` and :meth:`stop`)."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the threads to end; True when none runs."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

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
        """``seg_worker``: cycles up to their forward pass, handed to ``seg_outputs``."""
        while True:
            with self.ready:
                while self._running and (self._handoff is not None
                                         or not any(c.has_frame() for c in self.channels)):
                    self.ready.wait(timeout=0.5)
                if not self._running:
                    return
                todo = self._gather()
            if not todo:
                continue
            try:
                cycle = self.start_cycle(todo)
            except Exception as exc:  # the node must outlive any single bad cycle
                if not self._failed([c for c, _ in todo], exc):
                    return
                continue
            if cycle is None:
                continue
            with self.ready:
                self._handoff = cycle
                self.ready.notify_all()

    def _outputs_loop(self) -> None:
        """``seg_outputs``: each handed cycle's outputs, while the next forward pass runs;
        and the deferred grid steps, as their camera_infos come (a camera_info's arrival
        notifies ``ready``) or their time is up."""
        while True:
            with self.ready:
                while self._running and self._handoff is None and not self._deferred_due():
                    self.ready.wait(timeout=self._deferred_wait())
                if not self._running:
                    return
                cycle, self._handoff = self._handoff, None
                if cycle is not None:
                    self.ready.notify_all()  # seg_worker may take the next frames
            try:
                if cycle is not None:
                    self.finish_cycle(cycle)
                else:
                    self._drain()
            except Exception as exc:  # the node must outlive any single bad cycle
                items = cycle.items if cycle is not None else []
                if not self._failed([it.channel for it in items] or list(self.channels), exc):
                    return

    def _failed(self, channels: list[CameraChannel], exc: Exception) -> bool:
        """Count and report a cycle that failed; False when shutting down (stop quietly)."""
        if not rclpy.ok():
            return False  # shutting down: publishers are gone, nothing to report
        for channel in channels:
            channel.bad += 1
        topics = ", ".join(c.image_topic for c in channels)
        self.warn(f"process.{problem_kind(exc)}",
                  f"{topics}: frame skipped, {type(exc).__name__}: {exc}")
        return True

    # -- one frame, one cycle -------------------------------------------------------------
    def process(self, channel: CameraChannel, frame: Frame) -> None:
        """One frame of one camera as a cycle of its own."""
        self.process_cycle([(channel, frame)])

    def process_cycle(self, todo: list[tuple[CameraChannel, Frame]]) -> None:
        """The frames of one cycle (one per camera), start to end in the calling thread:
        decode, one batched forward pass, image outputs, each camera's grid, the fused grid
        (with the camera_infos there are: nothing is deferred).
        """
        cycle = self.start_cycle(todo)
        if cycle is not None:
            self.finish_cycle(cycle, defer=False)

    def start_cycle(self, todo: list[tuple[CameraChannel, Frame]]) -> _Cycle | None:
        """A cycle up to the end of its forward pass: one parameter snapshot, the frames
        decoded (bad ones reported and left out); None when no frame is wanted."""
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
            return None
        pending = self.pipeline.infer_start([it.image for it in items],
                                            [it.want for it in items])
        return _Cycle(items, gconfig, fused_want, pending, t_start)

    def finish_cycle(self, cycle: _Cycle, defer: bool = True) -> None:
        """The rest of a cycle: labels and confidence from the scores, image outputs
        published, then each camera's grid and the fused grid, at once or, where a frame's
        camera_info may still come (and ``defer``), once it has come or
        :data:`INFO_WAIT` is up (:meth:`_drain`); the cycle's statistics."""
        items = cycle.items
        t1 = time.perf_counter()
        segs = self.pipeline.infer_finish(cycle.pending)
        for it, seg in zip(items, segs, strict=True):
            it.result, it.drivable = self.pipeline.render(it.image, seg, it.config, it.want)
        t2 = time.perf_counter()
        self.stage_ms["inference"].add(cycle.pending.ms + (t2 - t1) * 1e3)
        for it in items:
            self._publish_images(it.channel, it.frame.msg.header, it.result)
        t3 = time.perf_counter()
        self.stage_ms["publish"].add((t3 - t2) * 1e3)
        self._check_time_jumps(items)
        now = time.monotonic()
        for it in items:
            it.grid = it.drivable is not None and bool(it.want & set(GRID_OUTPUTS))
            it.waits = defer and it.grid and self._may_wait(it, now)
        if any(it.waits for it in items):
            cycle.deadline = now + INFO_WAIT
        if cycle.deadline or self._deferred:
            self._deferred.append(cycle)  # after the cycles before it, in order
            self._drain()
        else:
            self._finish_grids(cycle)
        now_s = self.node.get_clock().now().nanoseconds * 1e-9
        for it in items:
            it.channel.done.tick()
            self.done.tick()
            stamp = it.stamp_ns * 1e-9
            if stamp > 0:
                lat = (now_s - stamp) * 1e3
                self.latency.add(lat)
                it.channel.latency.add(lat)
        self.cycles.tick()
        self.cycle_ms.add((time.perf_counter() - cycle.t_start) * 1e3)
        self.batch.add(len(items))
        self.last_batch = len(items)

    # -- calibration: never waited for ----------------------------------------------------
    def _may_wait(self, it: _Item, now: float) -> bool:
        """Whether ``it``'s grid step is to wait for its camera_info: one may still come, the
        camera's camera_infos are usable and the last wait was not in vain (lately)."""
        ch = it.channel
        if ch.info_problem is not None or now < ch.info_wait_until:
            return False
        return ch.infos.may_still_come(it.stamp_ns, it.config.camera_info_tolerance)

    def _waiting(self, cycle: _Cycle) -> bool:
        """A frame of ``cycle`` still waits for its camera_info (none came that matches or
        follows it, and its camera has not waited in vain since)."""
        now = time.monotonic()
        return any(it.waits and now >= it.channel.info_wait_until
                   and it.channel.info_problem is None
                   and it.channel.infos.may_still_come(it.stamp_ns,
                                                       it.config.camera_info_tolerance)
                   for it in cycle.items)

    def _deferred_due(self) -> bool:
        """The oldest deferred cycle's grid step can run (its camera_infos came, or its time
        is up)."""
        if not self._deferred:
            return False
        head = self._deferred[0]
        return time.monotonic() >= head.deadline or not self._waiting(head)

    def _deferred_wait(self) -> float:
        """How long ``seg_outputs`` may sleep: until the oldest deferred cycle's time is up."""
        if not self._deferred:
            return 0.5
        return min(0.5, max(0.001, self._deferred[0].deadline - time.monotonic()))

    def _drain(self) -> None:
        """The grid steps of the deferred cycles that can run, oldest first (a cycle waits for
        those before it, so grids and fused grids go out in order); beyond
        :data:`DEFERRED_MAX` cycles the oldest runs without waiting more."""
        while self._deferred:
            head = self._deferred[0]
            if len(self._deferred) <= DEFERRED_MAX and time.monotonic() < head.deadline \
                    and self._waiting(head):
                return
            self._deferred.popleft()
            self._finish_grids(head)

    def _finish_grids(self, cycle: _Cycle) -> None:
        """Each camera's grid of ``cycle`` with the camera_info there is now, and the fused
        grid."""
        now = time.monotonic()
        for it in cycle.items:
            if not it.grid:
                continue
            calibration = it.channel.infos.match(it.stamp_ns, it.config.camera_info_tolerance)
            if calibration is not None:
                it.channel.info_wait_until = 0.0
            elif it.waits and now >= cycle.deadline:  # waited in vain: not again for a while
                it.channel.info_wait_until = now + INFO_WAIT_RETRY
            self._grid(it.channel, it.frame.msg.header, it.image, it.drivable, it.config,
                       it.want, it.result, calibration)
        if self.fused is not None and cycle.fused_want:
            self._fuse([it.result for it in cycle.items], [it.stamp_ns for it in cycle.items],
                       cycle.gconfig, cycle.fused_want)
        for cam, count in self.fusion.left_out.items():
            for c in self.channels:
                if c.name == cam:
                    c.left_out = count

    def _check_time_jumps(self, items: list[_Item]) -> None:
        """Time going back on a camera's images (more than JUMP_BACK_S before the newest):
        its camera_infos from before the jump, the fused grid's grids from before it and the
        latency statistics are dropped, with one info line."""
        bound = round(JUMP_BACK_S * 1e9)
        for it in items:
            ch, stamp = it.channel, it.stamp_ns
            newest = ch.newest_stamp_ns
            if newest is None or stamp >= newest:
                ch.newest_stamp_ns = stamp
                continue
            if newest - stamp <= bound:
                continue
            ch.newest_stamp_ns = stamp
            self.time_jumps += 1
            # camera_infos run at most half the bound ahead of their image: the ones after
            # that are from before the jump (the buffer clears itself when a camera_info
            # shows the jump first)
            ch.infos.forget_after(stamp + bound // 2)
            self.fusion.forget_after(stamp + bound // 2)
            self.latency = Percentiles()
            for c in self.channels:
                c.latency = Percentiles()
            self.warn("time_jump." + ch.name,
                      f"time jumped back by {(newest - stamp) * 1e-9:.3f} s on "
                      f"{ch.image_topic}: calibration history and fused-grid ages cleared",
                      "info")

    def _publish_images(self, channel: CameraChannel, header: Any, result: FrameResult
                        ) -> None:
        for name, encoding in IMAGE_ENCODINGS.items():
            arr = result.image(name)
            if arr is not None:
                channel.pubs[name].publish(numpy_to_imgmsg(arr, encoding, header))

    def _grid(self, channel: CameraChannel, header: Any, image: CameraFrame,
              drivable: np.ndarray, config: PipelineConfig, wanted: set[str],
              result: FrameResult, calibration: Any) -> None:
        stamp_ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        pose = resolve_pose(config, header.frame_id, stamp_ns,
                            self.tf.lookup if self.tf is not None else None, self.tf_reason)
        source = f"{pose.source} ({pose.detail})" if pose.detail else pose.source
        if pose.mounting is not None and source != channel.pose_source:
            channel.pose_source = source
            self.node.get_logger().info(
                f"{channel.image_topic}: camera pose from {source}")
        problems = [pose.problem] if pose.problem else []
        if calibration is None:
            if channel.info_problem is not None:
                problems.append(f"{channel.info_topic}: camera_info unusable: "
                                f"{channel.info_problem}")
            elif channel.infos.count == 0:
                problems.append(f"no valid camera_info on {channel.info_topic} yet (none "
                                "received): drivable/grid and drivable/boundary are published "
                                "once it arrives")
            else:
                problems.append(f"{channel.info_topic}: " + channel.infos.describe_miss(
                    stamp_ns, config.camera_info_tolerance))
        no_grid = "; ".join(problems) or None
        frame = dataclasses.replace(image, calibration=calibration, pose=pose.mounting,
                                    no_grid=no_grid)
        # The camera's boundary only where its own topic is subscribed.
        own = wanted - ({"drivable/boundary"} if channel.boundary_pub is None
                        or channel.boundary_pub.get_subscription_count() == 0 else set())
        self.pipeline.map(frame, drivable, config, own, result)
        made = result.grid is not None and result.grid_spec is not None
        channel.note_grid(made, result.no_grid, time.monotonic())
        if not made:
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


def run_node(name: str, make: Callable[[], Any], spin: Callable[[Any], None],
             close: Callable[[Any], None], args: list[str] | None = None) -> int:
    """The executables' main (``seg_node``, ``seg_lifecycle_node``): a start-up error is one
    fatal line and exit 1, never a traceback; Ctrl-C and an external shutdown are a clean
    exit; ``close`` and ``destroy_node`` run whatever happened."""
    note_sigint()
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
