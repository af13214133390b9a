"""A ROS-free transform buffer for recordings: ``/tf_static`` and ``/tf`` of a bag, looked up
like tf2's ``lookup_transform(target, source, time)``.

Static transforms hold at every time. A moving transform is interpolated between the two
samples around the requested time (linear in translation, slerp in rotation, as tf2 does);
outside the span of its samples the lookup fails (tf2's extrapolation error), except that
a transform with a single sample holds only at that stamp. Time 0 asks for the latest
common time, as in tf2. Frames are joined through their common ancestor in the tree.

The live node uses tf2_ros itself; this buffer is what ``seg-perception process`` builds
from a bag, where the whole recording is known before the first frame.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .geometry.transform import Transform, quaternion_matrix, slerp


class TransformError(LookupError):
    """No transform between two frames at a time; the message names both frames."""


class FrameUnknownError(TransformError):
    """A frame that no transform in the buffer mentions, or two frames not connected."""


class ExtrapolationError(TransformError):
    """The frames are connected, but a moving transform on the way has no data at that time."""


@dataclass
class _Edge:
    """parent <- child: static, or samples sorted by time (ns)."""

    parent: str
    static: Transform | None = None
    times: list[int] = field(default_factory=list)
    translations: list[tuple[float, float, float]] = field(default_factory=list)
    rotations: list[tuple[float, float, float, float]] = field(default_factory=list)

    def at(self, t: int, child: str) -> Transform:
        if self.static is not None:
            return self.static
        times = self.times
        if t == 0:
            k = len(times) - 1
            return Transform.from_quaternion(self.translations[k], self.rotations[k])
        k = bisect.bisect_left(times, t)
        if k < len(times) and times[k] == t:
            return Transform.from_quaternion(self.translations[k], self.rotations[k])
        if k == 0 or k == len(times):
            span = (f"{times[0] * 1e-9:.3f} .. {times[-1] * 1e-9:.3f} s" if len(times) > 1
                    else f"only at {times[0] * 1e-9:.3f} s")
            raise ExtrapolationError(
                f"transform {self.parent} <- {child} is not known at {t * 1e-9:.3f} s "
                f"(the recording has it {span})")
        t0, t1 = times[k - 1], times[k]
        f = (t - t0) / (t1 - t0)
        p0, p1 = np.asarray(self.translations[k - 1]), np.asarray(self.translations[k])
        q = slerp(self.rotations[k - 1], self.rotations[k], f)
        return Transform.from_matrix(quaternion_matrix(*q), p0 + f * (p1 - p0))


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class TransformBuffer:
    """Transforms by child frame (a tree, as tf2 keeps it); fill it, then look up."""

    def __init__(self) -> None:
        self._edges: dict[str, _Edge] = {}
        self.messages = 0

    # -- filling ------------------------------------------------------------------------------
    def set_transform(self, parent: str, child: str, transform: Transform,
                      stamp_ns: int | None) -> None:
        """Add one transform parent <- child; ``stamp_ns`` None makes it static."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            return
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent:
            edge = self._edges[child] = _Edge(parent)
        if stamp_ns is None:
            edge.static = transform
            return
        edge.static = None
        t = int(stamp_ns)
        k = bisect.bisect_left(edge.times, t)
        sample_t = transform.translation
        sample_q = transform.quaternion
        if k < len(edge.times) and edge.times[k] == t:
            edge.translations[k], edge.rotations[k] = sample_t, sample_q
            return
        edge.times.insert(k, t)
        edge.translations.insert(k, sample_t)
        edge.rotations.insert(k, sample_q)

    def add_message(self, msg: Any, static: bool) -> None:
        """Add a tf2_msgs/TFMessage (any message type with the standard field names)."""
        self.messages += 1
        for ts in msg.transforms:
            tr, rot = ts.transform.translation, ts.transform.rotation
            try:
                transform = Transform.from_quaternion((tr.x, tr.y, tr.z),
                                                      (rot.x, rot.y, rot.z, rot.w))
            except ValueError:
                continue  # a zero quaternion: tf2 rejects it too
            self.set_transform(ts.header.frame_id, ts.child_frame_id, transform,
                               None if static else _stamp_ns(ts.header.stamp))

    @classmethod
    def from_messages(cls, messages: Iterable[tuple[Any, bool]]) -> TransformBuffer:
        """From (TFMessage, is_static) pairs."""
        buf = cls()
        for msg, static in messages:
            buf.add_message(msg, static)
        return buf

    # -- looking up ---------------------------------------------------------------------------
    @property
    def frames(self) -> set[str]:
        out = set(self._edges)
        out.update(e.parent for e in self._edges.values())
        return out

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        seen = {frame}
        while chain[-1] in self._edges:
            parent = self._edges[chain[-1]].parent
            if parent in seen:
                break  # a loop in the recording: stop rather than spin
            chain.append(parent)
            seen.add(parent)
        return chain

    def can_connect(self, target: str, source: str) -> bool:
        """Whether the tree joins the two frames (at some time)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return True
        return bool(set(self._chain(target)) & set(self._chain(source))) and (
            target in self.frames and source in self.frames)

    def lookup(self, target: str, source: str, stamp_ns: int = 0) -> Transform:
        """The transform mapping points of ``source`` into ``target`` at ``stamp_ns``.

        Raises :class:`FrameUnknownError` or :class:`ExtrapolationError`.
        """
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return Transform.identity()
        known = self.frames
        for name in (target, source):
            if name not in known:
                raise FrameUnknownError(
                    f"frame {name!r} is in no transform of the recording (looking up "
                    f"{target} <- {source}; frames: {', '.join(sorted(known)) or 'none'})")
        up_s, up_t = self._chain(source), self._chain(target)
        common = next((f for f in up_s if f in set(up_t)), None)
        if common is None:
            raise FrameUnknownError(
                f"frames {target} and {source} are not connected by the recording's "
                f"transforms ({source} leads to {up_s[-1]}, {target} to {up_t[-1]})")
        t = stamp_ns
        if t == 0:
            t = self._latest_common(up_s[:up_s.index(common)] + up_t[:up_t.index(common)])
        root_from_source = Transform.identity()
        for child in up_s[:up_s.index(common)]:
            root_from_source = self._edges[child].at(t, child) @ root_from_source
        root_from_target = Transform.identity()
        for child in up_t[:up_t.index(common)]:
            root_from_target = self._edges[child].at(t, child) @ root_from_target
        return root_from_target.inverse() @ root_from_source

    def _latest_common(self, children: list[str]) -> int:
        latest = [self._edges[c].times[-1] for c in children if self._edges[c].static is None]
        return min(latest) if latest else 0


__all__ = ["ExtrapolationError", "FrameUnknownError", "TransformBuffer", "TransformError"]
