"""Camera poses from tf2_ros for the node: a buffer, its listener, and lookups the core's
:func:`~seg_perception.core.pipeline.resolve_pose` can call.

tf2_ros is optional: without it (a pip-only install without the ROS 2 kit) :func:`make`
returns None and a reason, and the camera.* parameters give the pose.
"""

from __future__ import annotations

import contextlib

from rclpy.duration import Duration
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
        self.listener = tf2_ros.TransformListener(self.buffer, node, spin_thread=False)

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
        """Remove the listener's subscriptions and the buffer's service from the node (a
        lifecycle node makes a new TfPoses at each configure)."""
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
