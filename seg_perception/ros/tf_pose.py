"""Camera poses from /tf for the node: lookups the core's
:func:`~seg_perception.runtime.pipeline.resolve_pose` can call.

:class:`TfPoses` is tf2_ros's buffer and listener. Without tf2_ros (not on PyPI),
:class:`TopicTfPoses` subscribes to ``/tf`` and ``/tf_static`` itself (tf2_ros's QoS) into
the ROS-free :class:`~seg_perception.runtime.tf.TransformBuffer` that ``process`` uses, so both
installs give the same poses; it needs tf2_msgs. Without either, :class:`NoTfPoses` fails
every lookup with the reason: the ``camera.*`` parameters hold only with ``use_tf`` false.

Both real sources wait longer for a moving transform (:class:`~seg_perception.runtime.tf.
TfWait`): a lookup past its newest sample waits up to 1.5 of its measured periods for the
next one (``tf_timeout`` is the floor), and the warning says so.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

from rclpy.duration import Duration
from rclpy.exceptions import InvalidHandle
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time

from seg_perception.runtime.geometry import Transform
from seg_perception.runtime.tf import (
    ExtrapolationError,
    FrameUnknownError,
    TfWait,
    TransformBuffer,
    TransformError,
    chain_summary,
    joining_children,
    waited_note,
)

try:  # pragma: no branch - depends on the install
    import tf2_ros

    HAVE_TF2 = True
except ImportError:  # pip-only install without tf2_ros
    tf2_ros = None
    HAVE_TF2 = False

#: For tests: ``1`` in the environment makes :func:`make` act as if tf2_ros were not
#: installed (the pip-only path), on a machine that has it. Not for production use.
WITHOUT_TF2_ROS_ENV = "SEG_PERCEPTION_WITHOUT_TF2_ROS"
#: The live buffer's history per moving transform (tf2's default cache time).
TF_HISTORY_S = 10.0
#: A sample this much older than its transform's newest means time went back (a bag
#: restarted): moving transforms are cleared. tf2_ros clears on a clock jump of 1 s back.
TF_JUMP_BACK_S = 1.0


def tf_qos() -> QoSProfile:
    """/tf as tf2_ros's TransformListener subscribes to it: reliable, volatile, depth 100."""
    return QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def tf_static_qos() -> QoSProfile:
    """/tf_static as tf2_ros's listener: reliable, transient local (latched), depth 100."""
    return QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def tf_message_type() -> type | None:
    """tf2_msgs/TFMessage where its Python messages are installed (a ROS 2 install or the
    kit: no wheel on PyPI), else None."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    return TFMessage


def _future_note(exc: Exception, waited_s: float, period_s: float | None) -> str:
    return f"{str(exc).strip()} ({waited_note(waited_s, period_s)})"


class _Rates:
    """Stamps of the newest samples of each moving transform as tf2_ros's buffer receives
    them (its Python API does not expose them), for :class:`TfWait`; child -> parent."""

    def __init__(self) -> None:
        self.parents: dict[str, str] = {}
        self.times: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def note(self, ts: Any, static: bool) -> None:
        with self._lock:
            self._note(ts, static)

    def _note(self, ts: Any, static: bool) -> None:
        child, parent = ts.child_frame_id.lstrip("/"), ts.header.frame_id.lstrip("/")
        self.parents[child] = parent
        if static:
            self.times.pop(child, None)
            return
        t = int(ts.header.stamp.sec) * 1_000_000_000 + int(ts.header.stamp.nanosec)
        times = self.times.setdefault(child, [])
        if times and t < times[-1] - int(TF_JUMP_BACK_S * 1e9):
            times.clear()  # time went back: tf2_ros clears too
        if not times or t > times[-1]:
            times.append(t)
            del times[:-10]

    def chain_state(self, target: str, source: str) -> tuple[int | None, int | None]:
        """As :meth:`TransformBuffer.chain_state`, from the noted stamps."""
        with self._lock:
            return self._chain_state(target, source)

    def _chain_state(self, target: str, source: str) -> tuple[int | None, int | None]:
        def up(frame: str) -> list[str]:
            chain = [frame]
            while chain[-1] in self.parents and len(chain) < 64:
                chain.append(self.parents[chain[-1]])
            return chain

        children = joining_children(up, target.lstrip("/"), source.lstrip("/"))
        if children is None:
            return None, None
        return chain_summary([list(self.times[c]) for c in children if self.times.get(c)])


class TfPoses:
    """A tf2_ros buffer filled by a listener on ``node``; :meth:`lookup` is a
    :data:`~seg_perception.runtime.pipeline.TransformLookup` (safe from a worker thread while
    the node's executor delivers /tf)."""

    def __init__(self, node: Node) -> None:
        assert tf2_ros is not None
        self.node = node
        self.rates = _Rates()
        self.wait = TfWait()
        self.buffer = _buffer_noting(self.rates)(node=node)  # also serves `tf2_frames`
        self.listener: Any = None
        try:
            self.listener = tf2_ros.TransformListener(self.buffer, node, spin_thread=False)
        except BaseException:
            self.close()  # the buffer is already hooked to the node's clock
            raise

    def lookup(self, target: str, source: str, stamp_ns: int, timeout_s: float) -> Transform:
        """Transform mapping ``source`` into ``target`` at ``stamp_ns``, waiting up to
        ``timeout_s`` for it, or longer for a moving transform's next sample (:class:`TfWait`);
        raises the core's TransformError kinds."""
        sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
        when = Time(seconds=sec, nanoseconds=nsec)
        key = (target, source)
        wait_s, period_s = self.wait.timeout(key, stamp_ns, float(timeout_s),
                                             *self.rates.chain_state(target, source))
        t0 = time.monotonic()
        try:
            ts = self.buffer.lookup_transform(target, source, when,
                                              timeout=Duration(seconds=wait_s))
        except tf2_ros.ExtrapolationException as exc:
            future = "future" in str(exc)
            if period_s is not None:
                self.wait.done(key, True, self.rates.chain_state(target, source)[0])
            if future:
                raise ExtrapolationError(_future_note(exc, time.monotonic() - t0, period_s),
                                         future=True) from None
            raise ExtrapolationError(str(exc).strip()) from None
        except (tf2_ros.LookupException, tf2_ros.ConnectivityException) as exc:
            raise FrameUnknownError(str(exc).strip()) from None
        except tf2_ros.TransformException as exc:
            raise TransformError(str(exc).strip()) from None
        if period_s is not None:
            self.wait.done(key, False, None)
        tr, rot = ts.transform.translation, ts.transform.rotation
        try:
            return Transform.from_quaternion((tr.x, tr.y, tr.z), (rot.x, rot.y, rot.z, rot.w))
        except ValueError as exc:
            raise TransformError(f"unusable transform {target} <- {source}: {exc}") from None

    def close(self) -> None:
        """Detach everything the buffer and listener hooked onto the node (a lifecycle node
        makes a new TfPoses at each configure): the buffer's clock-jump callback, the
        listener's subscriptions, the buffer's service. Idempotent.

        The jump callback matters most: the node's clock keeps only a raw pointer to it, so
        once Python frees a buffer left registered, the next time jump (a clock going back,
        ``use_sim_time`` switched) calls freed memory and the process dies with SIGSEGV.
        """
        handle = getattr(self.buffer, "jump_handle", None)
        if handle is not None:
            with contextlib.suppress(InvalidHandle):  # a destroyed clock calls nothing
                handle.unregister()  # idempotent: it forgets its clock
        if self.listener is not None:
            with contextlib.suppress(Exception):  # shutting down: subscriptions may be gone
                self.listener.unregister()
        srv = getattr(self.buffer, "srv", None)
        if srv is not None:
            with contextlib.suppress(Exception):
                self.node.destroy_service(srv)


def _buffer_noting(rates: _Rates) -> Any:
    """tf2_ros.Buffer that also notes each sample's stamp in ``rates`` (the listener calls
    ``set_transform`` per transform on the executor thread)."""
    assert tf2_ros is not None

    class _Buffer(tf2_ros.Buffer):  # type: ignore[misc, name-defined]
        def set_transform(self, transform: Any, authority: str) -> None:
            rates.note(transform, static=False)
            super().set_transform(transform, authority)

        def set_transform_static(self, transform: Any, authority: str) -> None:
            rates.note(transform, static=True)
            super().set_transform_static(transform, authority)

    return _Buffer


class TopicTfPoses:
    """Without tf2_ros: ``/tf`` and ``/tf_static`` subscribed on ``node`` (tf2_ros's QoS)
    into a thread-safe :class:`~seg_perception.runtime.tf.TransformBuffer` (10 s of history,
    cleared of moving transforms when time jumps back); :meth:`lookup` as :class:`TfPoses`.
    """

    def __init__(self, node: Node, msg_type: type) -> None:
        self.node = node
        self.buffer = TransformBuffer(max_history_s=TF_HISTORY_S, jump_back_s=TF_JUMP_BACK_S,
                                      where="/tf")
        self.wait = TfWait()
        buf = self.buffer
        self.subscriptions = [
            node.create_subscription(msg_type, "/tf", lambda m: buf.add_message(m, False),
                                     tf_qos()),
            node.create_subscription(msg_type, "/tf_static", lambda m: buf.add_message(m, True),
                                     tf_static_qos())]

    def lookup(self, target: str, source: str, stamp_ns: int, timeout_s: float) -> Transform:
        """Transform mapping ``source`` into ``target`` at ``stamp_ns``, waiting up to
        ``timeout_s`` for it, or longer for a moving transform's next sample (:class:`TfWait`);
        raises the core's TransformError kinds."""
        key = (target, source)
        wait_s, period_s = self.wait.timeout(key, stamp_ns, float(timeout_s),
                                             *self.buffer.chain_state(target, source))
        t0 = time.monotonic()
        try:
            transform = self.buffer.wait_lookup(target, source, stamp_ns, wait_s)
        except ExtrapolationError as exc:
            if period_s is not None:
                self.wait.done(key, True, self.buffer.chain_state(target, source)[0])
            if exc.future:
                raise ExtrapolationError(_future_note(exc, time.monotonic() - t0, period_s),
                                         future=True) from None
            raise
        if period_s is not None:
            self.wait.done(key, False, None)
        return transform

    def close(self) -> None:
        """Remove the subscriptions from the node (a lifecycle node makes a new one at each
        configure)."""
        for sub in self.subscriptions:
            with contextlib.suppress(Exception):  # shutting down: may be gone already
                self.node.destroy_subscription(sub)
        self.subscriptions = []


class NoTfPoses:
    """Neither tf2_ros nor tf2_msgs: /tf cannot be read, so every lookup fails with
    ``reason`` (the frame gets no grid and the warning says why)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def lookup(self, target: str, source: str, stamp_ns: int, timeout_s: float) -> Transform:
        raise TransformError(f"{self.reason}; set use_tf false and give the pose with the "
                             "camera.* parameters (X.camera.* per camera)")

    def close(self) -> None:
        """Nothing to release."""


Poses = TfPoses | TopicTfPoses | NoTfPoses


def make(node: Node) -> tuple[Poses, str]:
    """The pose source for ``node`` and a note on it ("" for tf2_ros): tf2_ros's where it
    imports (and :data:`WITHOUT_TF2_ROS_ENV` is not set), else /tf read directly where
    tf2_msgs imports, else none (every lookup fails with the reason)."""
    forced = os.environ.get(WITHOUT_TF2_ROS_ENV, "") not in ("", "0")
    if HAVE_TF2 and not forced:
        return TfPoses(node), ""
    why = (f"tf2_ros not used ({WITHOUT_TF2_ROS_ENV} is set, for tests)" if HAVE_TF2
           else "tf2_ros not installed")
    msg_type = tf_message_type()
    if msg_type is None:
        return NoTfPoses(f"{why}, nor tf2_msgs: /tf and /tf_static cannot be read"), \
            f"{why}, nor tf2_msgs: /tf cannot be read, no camera pose with use_tf true"
    return TopicTfPoses(node, msg_type), f"{why}: reading /tf and /tf_static directly"


__all__ = ["HAVE_TF2", "TF_HISTORY_S", "TF_JUMP_BACK_S", "WITHOUT_TF2_ROS_ENV", "NoTfPoses",
           "Poses", "TfPoses", "TopicTfPoses", "make", "tf_message_type", "tf_qos",
           "tf_static_qos"]
