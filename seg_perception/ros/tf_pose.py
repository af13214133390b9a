"""Camera poses from tf2_ros for the node: a buffer, its listener, and lookups the core's
:func:`~seg_perception.core.pipeline.resolve_pose` can call.

tf2_ros is optional: without it (a pip-only install without the ROS 2 kit) :func:`make`
returns None and a reason, and the camera.* parameters give the pose.
"""

from __future__ import annotations

import contextlib
from typing import Any

from rclpy.duration import Duration
from rclpy.exceptions import InvalidHandle
from rclpy.node import Node
from rclpy.time import Time

from ..core.geometry import Transform
from ..core.tf import ExtrapolationError, FrameUnknownError, TransformError

try:  # pragma: no branch - depends on the install
    import tf2_ros

    HAVE_TF2 = True
except ImportError:  # pip-only install without tf2_ros
    tf2_ros = None
    HAVE_TF2 = False


class TfPoses:
    """A tf2_ros buffer filled by a listener on ``node``; :meth:`lookup` is a
    :data:`~seg_perception.core.pipeline.TransformLookup` (safe from a worker thread while
    the node's executor delivers /tf)."""

    def __init__(self, node: Node) -> None:
        assert tf2_ros is not None
        self.node = node
        self.buffer = tf2_ros.Buffer(node=node)  # also serves `tf2_frames` on the node
        self.listener: Any = None
        try:
            self.listener = tf2_ros.TransformListener(self.buffer, node, spin_thread=False)
        except BaseException:
            self.close()  # the buffer is already hooked to the node's clock
            raise

    def lookup(self, target: str, source: str, stamp_ns: int, timeout_s: float) -> Transform:
        """Transform mapping ``source`` into ``target`` at ``stamp_ns``, waiting up to
        ``timeout_s`` for it; raises the core's TransformError kinds."""
        sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
        when = Time(seconds=sec, nanoseconds=nsec)
        try:
            ts = self.buffer.lookup_transform(target, source, when,
                                              timeout=Duration(seconds=float(timeout_s)))
        except tf2_ros.ExtrapolationException as exc:
            raise ExtrapolationError(str(exc).strip()) from None
        except (tf2_ros.LookupException, tf2_ros.ConnectivityException) as exc:
            raise FrameUnknownError(str(exc).strip()) from None
        except tf2_ros.TransformException as exc:
            raise TransformError(str(exc).strip()) from None
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


def make(node: Node) -> tuple[TfPoses | None, str]:
    """A :class:`TfPoses` for ``node``, or None and why not (tf2_ros absent)."""
    if not HAVE_TF2:
        return None, "tf2_ros is not installed"
    return TfPoses(node), ""


__all__ = ["HAVE_TF2", "TfPoses", "make"]
