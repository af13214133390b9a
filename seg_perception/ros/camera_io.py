"""One camera's topics on a node: image and camera_info in, image outputs out.

A :class:`CameraChannel` owns the subscriptions and publishers of one camera (relative names,
under an optional camera prefix), a latest-frame slot that a worker takes frames from, the
camera's recent camera_infos by stamp, and its counters. It is created from a host node's
parameters and destroyed with :meth:`destroy`, so a plain node, a lifecycle node
(activate / deactivate) and a node with several cameras build on the same piece.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from geometry_msgs.msg import PolygonStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from seg_perception.runtime.config import SINGLE_CAMERA
from seg_perception.runtime.geometry import CameraCalibration
from seg_perception.runtime.image_codec import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    check_pixels,
    compressed_header,
    validate_raw,
)
from seg_perception.runtime.pipeline import IMAGE_OUTPUTS, JUMP_BACK_S, CameraInfoBuffer
from seg_perception.runtime.stats import ChangeMonitor, Percentiles, RateMeter, problem_kind

if TYPE_CHECKING:
    from seg_perception.ros.params import ParameterBridge

#: camera_info messages kept for pairing by stamp (a few seconds at camera rates).
INFO_HISTORY = 64
#: A camera whose grid is wanted but that has made none for this long (s) is WARN on
#: /diagnostics, with the reason (long enough for a camera_info or /tf_static that comes a
#: little after the first images; short enough to be seen at once).
NO_GRID_WARN_S = 5.0
#: A camera's grid counts as wanted while its frames tried to make one this recently (s).
GRID_WANTED_S = 5.0


def qos(reliability: str, depth: int) -> QoSProfile:
    """Keep-last, volatile QoS with the given reliability (``best_effort`` or ``reliable``)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=(ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
                     else ReliabilityPolicy.RELIABLE),
        durability=DurabilityPolicy.VOLATILE,
    )


@dataclass
class Frame:
    """A received image message and its monotonic arrival time."""

    msg: Any
    received: float


Warn = Callable[[str, str], None]


class CameraChannel:
    """Topics and state of one camera on ``node``.

    ``name`` prefixes every relative topic (``""``: the names of CONTRACT.md, ``front``:
    ``front/image``, ``front/labels`` ...). ``grid_outputs`` adds this camera's
    ``drivable/grid`` and ``drivable/boundary`` publishers. ``ready`` is notified when a
    frame lands in the slot; ``warn(key, text)`` reports problems rate-limited.

    Per-camera statistics for /diagnostics: ``rx`` (received), ``done`` (processed),
    ``latency`` (stamp to publish, ms), ``dropped`` (replaced in the slot before the worker
    took it), ``lost``, ``bad``, ``no_grid``, ``idle`` (nobody subscribed) and ``left_out``
    (cycles whose fused grid this camera's latest grid was too old for). ``expected`` says
    whether a multi-camera cycle waits for this camera (it was on time last cycle, or has
    sent a frame since).

    Calibration: ``infos`` (the camera_infos by stamp; time going back clears them, see
    :class:`~seg_perception.runtime.pipeline.CameraInfoBuffer`), ``info_problem`` (why the
    latest camera_info was unusable, e.g. an all-zero K; None when it was fine) and
    ``info_wait_until`` (monotonic time before which a frame's grid does not wait for its
    camera_info: one waited in vain). :meth:`grid_problem` says why the camera has made no
    grid for :data:`NO_GRID_WARN_S` while it was wanted.
    """

    def __init__(self, node: Node, name: str, transport: str, in_qos: QoSProfile,
                 out_qos: QoSProfile, ready: threading.Condition, warn: Warn,
                 grid_outputs: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.node = node
        self.name = name
        self.max_pixels = max_pixels
        self._ready = ready
        self._warn = warn
        prefix = f"{name}/" if name else ""
        self.compressed = transport == "compressed"
        rel_image = prefix + ("image/compressed" if self.compressed else "image")
        self.pubs = {t: node.create_publisher(Image, prefix + t, out_qos) for t in IMAGE_OUTPUTS}
        self.grid_pub = self.boundary_pub = None
        if grid_outputs:
            self.grid_pub = node.create_publisher(OccupancyGrid, prefix + "drivable/grid",
                                                  out_qos)
            self.boundary_pub = node.create_publisher(PolygonStamped,
                                                      prefix + "drivable/boundary", out_qos)
        # Frames the middleware loses (e.g. fragments of large images over UDP) are counted.
        events = SubscriptionEventCallbacks(message_lost=self._on_message_lost)
        self.image_sub = node.create_subscription(
            CompressedImage if self.compressed else Image, rel_image, self._on_image, in_qos,
            event_callbacks=events)
        info_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                              reliability=in_qos.reliability,
                              durability=DurabilityPolicy.VOLATILE)
        self.info_sub = node.create_subscription(CameraInfo, prefix + "camera_info",
                                                 self._on_camera_info, info_qos)
        self.image_topic = self.image_sub.topic_name
        self.info_topic = self.info_sub.topic_name
        self.infos = CameraInfoBuffer(INFO_HISTORY, jump_back_s=JUMP_BACK_S)
        self.info_problem: str | None = None
        self.infos_rejected = 0
        self.info_wait_until = 0.0
        #: newest image stamp (ns) the worker has seen (time going back is detected on it)
        self.newest_stamp_ns: int | None = None
        # grid health: since when no grid was made (None: the last try made one), the last
        # try, and why the last try made none
        self.grid_failing_since: float | None = None
        self.grid_last_try = 0.0
        self.no_grid_reason: str | None = None
        self._slot: Frame | None = None
        self.rx = RateMeter()
        self.done = RateMeter()
        self.latency = Percentiles()
        self.idle = 0
        self.left_out = 0
        self.expected = True
        self.dropped = 0
        self.lost = 0
        self.bad = 0
        self.no_grid = 0
        self.pose_source = ""
        # Two cameras publishing on one camera_info topic make every frame rebuild the
        # ground lookup: say so once instead of logging each rebuild.
        self.model_changes = ChangeMonitor(max_changes=4, window_s=10.0)

    # -- callbacks (executor thread) ------------------------------------------------------
    def reject(self, exc: Exception) -> None:
        """Count and report (per kind of problem) a frame that is skipped."""
        self.bad += 1
        self._warn(f"decode.{self.name}.{problem_kind(exc)}",
                   f"{self.image_topic}: frame skipped: {exc}")

    def _on_image(self, msg: Any) -> None:
        self.rx.tick()
        # Header checks are cheap: a malformed or oversized frame is reported now and never
        # takes the slot from a good one.
        try:
            if isinstance(msg, Image):
                validate_raw(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                             self.max_pixels)
            else:
                head = compressed_header(msg.data)
                if head is not None:
                    check_pixels(head.width, head.height, self.max_pixels,
                                 f"{head.codec} image")
        except ImageDecodeError as exc:
            self.reject(exc)
            return
        frame = Frame(msg, time.monotonic())
        with self._ready:
            if self._slot is not None:
                self.dropped += 1
            self._slot = frame
            self.expected = True
            self._ready.notify_all()

    def _on_message_lost(self, info: Any) -> None:
        self.lost += int(info.total_count_change)
        self._warn(f"transport.lost.{self.name}",
                   f"{self.image_topic}: {self.lost} frames lost in transport so far (large "
                   "images over UDP? use the shared-memory profile config/fastdds_shm.xml on "
                   "both sides)")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            calibration = CameraCalibration.from_msg(msg)
        except ValueError as exc:
            self.infos_rejected += 1
            self.info_problem = str(exc)
            self._warn(f"camera_info.{self.name}.{problem_kind(exc)}",
                       f"{self.info_topic}: camera_info ignored: {exc}")
            return
        self.info_problem = None
        if self.model_changes.update(calibration) and self.model_changes.take_warning():
            self._warn(f"camera_info.changing.{self.name}",
                       f"{self.info_topic}: the camera model keeps changing "
                       f"({self.model_changes.total_changes} changes so far): every change "
                       "rebuilds the ground lookup and slows the grid. Do two cameras publish "
                       "on this topic?")
        stamp = msg.header.stamp
        self.infos.add(int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec), calibration)
        with self._ready:  # a frame's grid may be waiting for this camera_info
            self._ready.notify_all()

    # -- worker side ----------------------------------------------------------------------
    def has_frame(self) -> bool:
        return self._slot is not None

    def take(self) -> Frame | None:
        """The waiting frame, if any (call with ``ready`` held)."""
        frame, self._slot = self._slot, None
        return frame

    def note_grid(self, made: bool, reason: str | None, now: float) -> None:
        """Record a grid try (the worker): made, or not and why (for :meth:`grid_problem`)."""
        self.grid_last_try = now
        if made:
            self.grid_failing_since, self.no_grid_reason = None, None
            return
        if self.grid_failing_since is None:
            self.grid_failing_since = now
        self.no_grid_reason = reason

    def grid_problem(self, now: float | None = None, after_s: float | None = None
                     ) -> str | None:
        """Why this camera has made no grid for ``after_s`` seconds (default
        :data:`NO_GRID_WARN_S`) while it was wanted (its frames kept trying), or None."""
        now = time.monotonic() if now is None else now
        after_s = NO_GRID_WARN_S if after_s is None else after_s
        since = self.grid_failing_since
        if since is None or now - since < after_s \
                or now - self.grid_last_try > GRID_WANTED_S:
            return None
        return f"no drivable/grid for {now - since:.0f} s: {self.no_grid_reason or 'unknown'}"

    def wanted(self) -> set[str]:
        """Outputs somebody subscribes to (only those are computed)."""
        wanted = {t for t, pub in self.pubs.items() if pub.get_subscription_count() > 0}
        if self.grid_pub is not None and self.grid_pub.get_subscription_count() > 0:
            wanted.add("drivable/grid")
        if self.boundary_pub is not None and self.boundary_pub.get_subscription_count() > 0:
            wanted.add("drivable/boundary")
        return wanted

    def destroy(self) -> None:
        """Remove this camera's subscriptions and publishers from the node."""
        node = self.node
        for sub in (self.image_sub, self.info_sub):
            node.destroy_subscription(sub)
        for pub in [*self.pubs.values(), self.grid_pub, self.boundary_pub]:
            if pub is not None:
                node.destroy_publisher(pub)




@dataclass
class FrameRef:
    """The node's own part of a cycle frame (:class:`~seg_perception.runtime.pipeline.
    CycleFrame.ref`): its camera's topics, its message, whether its
    grid step waits for its camera_info."""

    channel: CameraChannel
    frame: Frame
    waits: bool = False


def frame_ref(frame: Any) -> FrameRef:
    """The node's part of a runner's cycle frame."""
    return frame.ref


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


def map_qos() -> QoSProfile:
    """``drivable/map``: reliable, transient local, depth 1 (like a map server's map): a
    planner that subscribes late gets the latest map at once."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class CameraUser(Protocol):
    """What the cameras are attached to (the node's worker): frames arrive under ``ready``
    into ``channels``; ``fused`` holds the fused outputs' publishers of a camera rig,
    ``map_pub`` the persistent map's."""

    ready: threading.Condition
    channels: list[CameraChannel]
    fused: FusedOutputs | None
    map_pub: Any


def open_cameras(node: Node, params: ParameterBridge, worker: CameraUser,
                 warn: Callable[..., None]) -> list[CameraChannel]:
    """The topics of every camera of ``params.cameras`` (a :class:`CameraChannel` each, its
    own ``input_transport``), attached to ``worker``; with named cameras also the fused
    ``drivable/grid`` and ``drivable/boundary`` publishers (``worker.fused``); the
    persistent ``drivable/map`` publisher (``worker.map_pub``). Undo with
    :func:`close_cameras`."""
    in_qos = qos(params["image_qos.reliability"], params["image_qos.depth"])
    out_qos = qos(params["output_qos.reliability"], params["output_qos.depth"])
    if params.cameras != SINGLE_CAMERA:  # the node's own grid and boundary: all cameras fused
        worker.fused = FusedOutputs(
            node.create_publisher(OccupancyGrid, "drivable/grid", out_qos),
            node.create_publisher(PolygonStamped, "drivable/boundary", out_qos))
    worker.map_pub = node.create_publisher(OccupancyGrid, "drivable/map", map_qos())
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


def close_cameras(node: Node, worker: CameraUser, channels: list[CameraChannel]) -> None:
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
    if worker.map_pub is not None:
        node.destroy_publisher(worker.map_pub)
        worker.map_pub = None


__all__ = [
    "CameraChannel",
    "CameraUser",
    "Frame",
    "FrameRef",
    "FusedOutputs",
    "close_cameras",
    "frame_ref",
    "map_qos",
    "open_cameras",
    "qos",
]
