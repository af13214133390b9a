"""The node's two worker threads over the runtime's cycle runner.

``seg_worker`` takes the latest frame of each camera's slot (several cameras: waiting up to
``fusion.sync_window`` for the others once one is there), decodes them and starts the
cycle's one batched forward pass (:meth:`~seg_perception.runtime.pipeline.CycleRunner.
start`); ``seg_outputs`` finishes the previous cycle meanwhile: image outputs at once, then
each camera's grid and the fused grid. The first takes new frames only once the second has
taken the previous cycle, so at most one finished forward pass waits and a slow model drops
stale frames (counted) instead of queueing latency.

What stays here, not in the runner, is what only a live node has: the slots and the
wall-clock cycle window, publishing, the statistics /diagnostics reports, time jumps on
live stamps, and the calibration wait: neither thread ever waits for a camera_info; a frame
whose camera_info may still come keeps its drivable mask and its cycle's grid step (and
fused grid) is deferred until it comes, at most :data:`INFO_WAIT` s, while later frames go
on; a camera whose camera_info did not come in time, or is unusable (an all-zero K), has
its frames' grids made at once or not at all.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage

from seg_perception.ros import tf_pose
from seg_perception.ros.camera_io import CameraChannel, Frame, FrameRef, FusedOutputs, frame_ref
from seg_perception.ros.conversions import compressed_to_rgb, imgmsg_to_rgb
from seg_perception.ros.node_sink import NodeSink
from seg_perception.ros.params import ParameterBridge
from seg_perception.runtime.geometry import CameraCalibration, Transform
from seg_perception.runtime.image_codec import ImageDecodeError
from seg_perception.runtime.pipeline import (
    JUMP_BACK_S,
    FramePipeline,
    GridFusion,
    PoseResult,
    resolve_pose,
)
from seg_perception.runtime.pipeline.cycle import Cycle, CycleFrame, CycleRunner
from seg_perception.runtime.stats import Percentiles, RateMeter, problem_kind
from seg_perception.runtime.tf import TransformError

#: Longest time (s) a frame's grid step is deferred for its camera_info after its image
#: outputs went out (only while none stamped at or after the frame has arrived); no thread
#: waits meanwhile.
INFO_WAIT = 0.25
#: After a camera's grid waited in vain, its frames' grids do not wait for this long (s): a
#: camera whose camera_info stopped costs the fused grid one deferral this often, no more.
INFO_WAIT_RETRY = 2.0
#: Cycles whose grid step waits at most; beyond, the oldest is finished without waiting more.
DEFERRED_MAX = 32


class FrameWorker:
    """The worker threads of a node (see the module docstring) and their statistics.

    With ``fused`` (a node of several named cameras) each cycle also publishes the surround
    grid and boundary fused from all cameras (:class:`~seg_perception.runtime.pipeline.
    GridFusion`); with one camera (``fused`` None) the camera's own grid is the node's.
    The worker is the runner's context (calibration from the cameras' buffers, pose from
    tf2 or the parameters) and its sink (publishing).
    """

    def __init__(self, node: Node, params: ParameterBridge, pipeline: FramePipeline,
                 tf: tf_pose.TfPoses | None, tf_reason: str,
                 warn: Callable[..., None], fused: FusedOutputs | None = None) -> None:
        self.node = node
        self.params = params
        self.tf = tf
        self.tf_reason = tf_reason
        self.warn = warn
        self.fused = fused
        self.runner = CycleRunner(pipeline, self, NodeSink(self), GridFusion())
        self.map_pub: Any = None  # drivable/map (open_cameras makes it)
        self.map_published = 0
        self.channels: list[CameraChannel] = []
        self.ready = threading.Condition()
        self.done = RateMeter()
        self.latency = Percentiles()
        self.stage_ms = {k: Percentiles() for k in ("decode", "inference", "publish", "grid",
                                                    "boundary", "map")}
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
        self._handoff: Cycle | None = None  # a forward pass done, its outputs not started
        #: cycles (in order) whose image outputs are out and whose grid step waits for a
        #: camera_info (or for an earlier cycle that does); seg_outputs' own
        self._deferred: deque[Cycle] = deque()
        self.lookup_builds = 0
        self.time_jumps = 0

    @property
    def pipeline(self) -> FramePipeline:
        return self.runner.pipeline

    @property
    def fusion(self) -> GridFusion:
        return self.runner.fusion

    # -- threads --------------------------------------------------------------------------
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

    def busy_where(self) -> str:
        """Where each thread still running is (its innermost calls), for a stop that waits."""
        frames = sys._current_frames()
        out = []
        for thread in self._threads:
            frame = frames.get(thread.ident or -1)
            if thread.is_alive() and frame is not None:
                calls = traceback.extract_stack(frame)[-4:]
                out.append(f"{thread.name} in " + " <- ".join(
                    f"{c.name} ({c.filename.rsplit('/', 1)[-1]}:{c.lineno})"
                    for c in reversed(calls)))
        return "; ".join(out)

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
                frames = cycle.frames if cycle is not None else []
                if not self._failed([frame_ref(f).channel for f in frames] or list(self.channels),
                                    exc):
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

    # -- one cycle ------------------------------------------------------------------------
    def process(self, channel: CameraChannel, frame: Frame) -> None:
        """One frame of one camera as a cycle of its own."""
        self.process_cycle([(channel, frame)])

    def process_cycle(self, todo: list[tuple[CameraChannel, Frame]]) -> None:
        """The frames of one cycle (one per camera), start to end in the calling thread
        (with the camera_infos there are: nothing is deferred)."""
        cycle = self.start_cycle(todo)
        if cycle is not None:
            self.finish_cycle(cycle, defer=False)

    def start_cycle(self, todo: list[tuple[CameraChannel, Frame]]) -> Cycle | None:
        """A cycle up to the end of its forward pass: one parameter snapshot, the frames
        decoded (bad ones reported and left out); None when no frame is wanted."""
        configs = self.params.configs  # one snapshot for the whole cycle
        gconfig = self.params.config
        fused_want = self.fused.wanted() if self.fused is not None else set()
        map_want = self.map_pub is not None and self.map_pub.get_subscription_count() > 0
        frames: list[CycleFrame] = []
        limit = self.params["max_image_pixels"]
        for channel, frame in todo:
            config = configs.get(channel.name, gconfig)
            want = channel.wanted()
            if fused_want or map_want:
                want.add("drivable/grid")  # the camera's grid feeds the fused one and the map
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
            frames.append(CycleFrame(
                channel.name, rgb, int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec),
                msg.header.frame_id, config, want, config.rectified(channel.image_topic),
                FrameRef(channel, frame)))
        return self.runner.start(frames, gconfig, fused_want,
                                 fuse=self.fused is not None and bool(fused_want or map_want),
                                 map_key="" if map_want else None)

    def finish_cycle(self, cycle: Cycle, defer: bool = True) -> None:
        """The rest of a cycle: image outputs published, then each camera's grid and the
        fused grid, at once or, where a frame's camera_info may still come (and ``defer``),
        once it has come or :data:`INFO_WAIT` is up (:meth:`_drain`); the statistics."""
        self.runner.finish_images(cycle)
        self.stage_ms["inference"].add(cycle.timings["inference"])
        self.stage_ms["publish"].add(cycle.timings["images"])
        self._check_time_jumps(cycle.frames)
        now = time.monotonic()
        for f in cycle.frames:
            frame_ref(f).waits = defer and f.wants_grid and self._may_wait(f, now)
        if any(frame_ref(f).waits for f in cycle.frames):
            cycle.deadline = now + INFO_WAIT
        if cycle.deadline or self._deferred:
            self._deferred.append(cycle)  # after the cycles before it, in order
            self._drain()
        else:
            self._finish_grids(cycle)
        now_s = self.node.get_clock().now().nanoseconds * 1e-9
        for f in cycle.frames:
            channel = frame_ref(f).channel
            channel.done.tick()
            self.done.tick()
            stamp = f.stamp_ns * 1e-9
            if stamp > 0:
                lat = (now_s - stamp) * 1e3
                self.latency.add(lat)
                channel.latency.add(lat)
        self.cycles.tick()
        self.cycle_ms.add((time.perf_counter() - cycle.t_start) * 1e3)
        self.batch.add(len(cycle.frames))
        self.last_batch = len(cycle.frames)

    # -- calibration: never waited for ----------------------------------------------------
    def _may_wait(self, f: CycleFrame, now: float) -> bool:
        """Whether ``f``'s grid step is to wait for its camera_info: one may still come, the
        camera's camera_infos are usable and the last wait was not in vain (lately)."""
        ch = frame_ref(f).channel
        if ch.info_problem is not None or now < ch.info_wait_until:
            return False
        return ch.infos.may_still_come(f.stamp_ns, f.config.camera_info_tolerance)

    def _waiting(self, cycle: Cycle) -> bool:
        """A frame of ``cycle`` still waits for its camera_info (none came that matches or
        follows it, and its camera has not waited in vain since)."""
        now = time.monotonic()
        return any(frame_ref(f).waits and now >= frame_ref(f).channel.info_wait_until
                   and frame_ref(f).channel.info_problem is None
                   and frame_ref(f).channel.infos.may_still_come(f.stamp_ns,
                                                            f.config.camera_info_tolerance)
                   for f in cycle.frames)

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

    def _finish_grids(self, cycle: Cycle) -> None:
        """The cycle's grids with the camera_infos there are now; a camera that waited in
        vain does not wait again for a while."""
        now = time.monotonic()
        for f in cycle.frames:
            ref = frame_ref(f)
            if not f.wants_grid:
                continue
            if ref.channel.infos.match(f.stamp_ns, f.config.camera_info_tolerance) is not None:
                ref.channel.info_wait_until = 0.0
            elif ref.waits and now >= cycle.deadline:
                ref.channel.info_wait_until = now + INFO_WAIT_RETRY
        self.runner.finish_grids(cycle)
        for cam, count in self.fusion.left_out.items():
            for c in self.channels:
                if c.name == cam:
                    c.left_out = count

    def _check_time_jumps(self, frames: list[CycleFrame]) -> None:
        """Time going back on a camera's images (more than JUMP_BACK_S before the newest):
        its camera_infos from before the jump, the fused grid's grids from before it and the
        latency statistics are dropped, with one info line."""
        bound = round(JUMP_BACK_S * 1e9)
        for f in frames:
            ch, stamp = frame_ref(f).channel, f.stamp_ns
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

    # -- the runner's context -------------------------------------------------------------
    def calibration(self, frame: CycleFrame) -> tuple[CameraCalibration | None, str | None]:
        ch = frame_ref(frame).channel
        calibration = ch.infos.match(frame.stamp_ns, frame.config.camera_info_tolerance)
        if calibration is not None:
            return calibration, None
        if ch.info_problem is not None:
            return None, f"{ch.info_topic}: camera_info unusable: {ch.info_problem}"
        if ch.infos.count == 0:
            return None, (f"no valid camera_info on {ch.info_topic} yet (none received): "
                          "drivable/grid and drivable/boundary are published once it arrives")
        return None, f"{ch.info_topic}: " + ch.infos.describe_miss(
            frame.stamp_ns, frame.config.camera_info_tolerance)

    def pose(self, frame: CycleFrame) -> PoseResult:
        return resolve_pose(frame.config, frame.frame_id, frame.stamp_ns,
                            self.tf.lookup if self.tf is not None else None, self.tf_reason)

    def map_transform(self, target: str, source: str, stamp_ns: int, timeout: float
                      ) -> tuple[Transform | None, str | None]:
        why = f"drivable/map needs the transform {target} <- {source}"
        if self.tf is None:
            return None, f"{why}, and tf is off ({self.tf_reason or 'no tf'})"
        try:
            return self.tf.lookup(target, source, stamp_ns, timeout), None
        except TransformError as exc:
            return None, f"{why} at {stamp_ns * 1e-9:.3f} s: {exc}; the map is not updated"
