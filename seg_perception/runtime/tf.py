"""A ROS-free transform buffer for recordings: ``/tf_static`` and ``/tf`` of a bag, looked up
like tf2's ``lookup_transform(target, source, time)``.

Static transforms hold at every time. A moving transform is interpolated between the two
samples around the requested time (linear in translation, slerp in rotation, as tf2 does);
outside the span of its samples the lookup fails (tf2's extrapolation error), except that
a transform with a single sample holds only at that stamp. Time 0 asks for the latest
common time, as in tf2. Frames are joined through their common ancestor in the tree.

``seg-perception process`` builds one from a bag, where the whole recording is known before
the first frame. The node uses tf2_ros where it is installed, else this buffer filled from
``/tf`` and ``/tf_static`` live (:class:`~seg_perception.ros.tf_pose.TopicTfPoses`): then it
is bounded (``max_history_s`` of samples per moving transform, as tf2's 10 s cache), cleared
of moving transforms when their stamps jump back (a bag restarted), and :meth:`wait_lookup`
waits for data that has not arrived yet. All methods are thread-safe: /tf callbacks fill it
on the executor thread while the frame worker looks up.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seg_perception.runtime.geometry.transform import Transform, quaternion_matrix, slerp

log = logging.getLogger(__name__)

#: Samples of a moving transform whose intervals estimate its period (the median of them).
PERIOD_SAMPLES = 9


class TransformError(LookupError):
    """No transform between two frames at a time; the message names both frames."""


class FrameUnknownError(TransformError):
    """A frame that no transform in the buffer mentions, or two frames not connected."""


class ExtrapolationError(TransformError):
    """The frames are connected, but a moving transform on the way has no data at that time;
    ``future`` when the time is after its newest sample (waiting may bring it)."""

    def __init__(self, message: str, future: bool = False) -> None:
        super().__init__(message)
        self.future = future


@dataclass
class _Edge:
    """parent <- child: static, or samples sorted by time (ns)."""

    parent: str
    static: Transform | None = None
    times: list[int] = field(default_factory=list)
    translations: list[tuple[float, float, float]] = field(default_factory=list)
    rotations: list[tuple[float, float, float, float]] = field(default_factory=list)

    def at(self, t: int, child: str, where: str = "the recording") -> Transform:
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
                f"({where} has it {span})", future=k == len(times))
        t0, t1 = times[k - 1], times[k]
        f = (t - t0) / (t1 - t0)
        p0, p1 = np.asarray(self.translations[k - 1]), np.asarray(self.translations[k])
        q = slerp(self.rotations[k - 1], self.rotations[k], f)
        return Transform.from_matrix(quaternion_matrix(*q), p0 + f * (p1 - p0))



def median_period_ns(times: list[int]) -> int | None:
    """The median interval between the newest :data:`PERIOD_SAMPLES` stamps (sorted ns)."""
    recent = times[-PERIOD_SAMPLES:]
    gaps = [b - a for a, b in itertools.pairwise(recent) if b > a]
    return int(statistics.median(gaps)) if gaps else None


def joining_children(chain: Callable[[str], list[str]], target: str, source: str
                     ) -> list[str] | None:
    """The child frames of the transforms joining ``source`` and ``target`` up to their
    common ancestor (``chain(frame)``: the frame and its ancestors, root last); None when
    the two are not joined."""
    up_s, up_t = chain(source), chain(target)
    common = next((f for f in up_s if f in set(up_t)), None)
    if common is None:
        return None
    return up_s[:up_s.index(common)] + up_t[:up_t.index(common)]


def chain_summary(moving: Sequence[Sequence[int]]) -> tuple[int | None, int | None]:
    """(newest common stamp, period) in ns of moving transforms given by their sample
    times: the oldest of their newest samples and the longest of their periods (the period
    None unless every one has one; (None, None) without moving transforms)."""
    if not moving:
        return None, None
    periods = [median_period_ns(list(t)) for t in moving]
    newest = min(t[-1] for t in moving)
    return newest, (None if None in periods else max(p for p in periods if p is not None))


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a builtin_interfaces/Time (any type system's)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class TransformBuffer:
    """Transforms by child frame (a tree, as tf2 keeps it); fill it, then look up.

    The defaults keep everything (``process``: the whole recording). For live use,
    ``max_history_s`` drops samples of a moving transform older than its newest by more than
    that, and ``jump_back_s`` clears every moving transform (static ones stay) when a new
    sample is older than its transform's newest by more than that (time went backwards: a
    bag restarted or looped), with one info line. ``where`` names the source in messages.
    """

    def __init__(self, max_history_s: float | None = None, jump_back_s: float | None = None,
                 where: str = "the recording") -> None:
        self._edges: dict[str, _Edge] = {}
        self.messages = 0
        self.max_history_ns = None if max_history_s is None else int(max_history_s * 1e9)
        self.jump_back_ns = None if jump_back_s is None else int(jump_back_s * 1e9)
        self.where = where
        self.jumps = 0  # times moving transforms were cleared by a jump back in time
        self._cond = threading.Condition(threading.RLock())  # notified on every insert

    # -- filling ------------------------------------------------------------------------------
    def set_transform(self, parent: str, child: str, transform: Transform,
                      stamp_ns: int | None) -> None:
        """Add one transform parent <- child; ``stamp_ns`` None makes it static."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            return
        with self._cond:
            self._set(parent, child, transform, stamp_ns)
            self._cond.notify_all()

    def _set(self, parent: str, child: str, transform: Transform, stamp_ns: int | None
             ) -> None:
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent:
            edge = self._edges[child] = _Edge(parent)
        if stamp_ns is None:
            edge.static = transform
            return
        edge.static = None
        t = int(stamp_ns)
        if (self.jump_back_ns is not None and edge.times
                and t < edge.times[-1] - self.jump_back_ns):
            self._clear_moving(parent, child, edge.times[-1], t)
            edge = self._edges[child] = _Edge(parent)
        k = bisect.bisect_left(edge.times, t)
        sample_t = transform.translation
        sample_q = transform.quaternion
        if k < len(edge.times) and edge.times[k] == t:
            edge.translations[k], edge.rotations[k] = sample_t, sample_q
            return
        edge.times.insert(k, t)
        edge.translations.insert(k, sample_t)
        edge.rotations.insert(k, sample_q)
        if self.max_history_ns is not None:
            old = bisect.bisect_left(edge.times, edge.times[-1] - self.max_history_ns)
            if old:
                del edge.times[:old], edge.translations[:old], edge.rotations[:old]

    def _clear_moving(self, parent: str, child: str, newest: int, t: int) -> None:
        """Time went backwards: drop every moving transform (tf2 clears its buffer too)."""
        self.jumps += 1
        moving = [c for c, e in self._edges.items() if e.static is None]
        for c in moving:
            del self._edges[c]
        log.info("%s: time jumped back %.3f s (transform %s <- %s stamped %.3f s after "
                 "%.3f s): cleared %d moving transform(s), static ones kept", self.where,
                 (newest - t) * 1e-9, parent, child, t * 1e-9, newest * 1e-9, len(moving))

    def add_message(self, msg: Any, static: bool) -> None:
        """Add a tf2_msgs/TFMessage (any message type with the standard field names)."""
        with self._cond:
            self.messages += 1
            for ts in msg.transforms:
                tr, rot = ts.transform.translation, ts.transform.rotation
                try:
                    transform = Transform.from_quaternion((tr.x, tr.y, tr.z),
                                                          (rot.x, rot.y, rot.z, rot.w))
                except ValueError:
                    continue  # a zero quaternion: tf2 rejects it too
                parent = ts.header.frame_id.lstrip("/")
                child = ts.child_frame_id.lstrip("/")
                if parent and child and parent != child:
                    self._set(parent, child, transform,
                              None if static else stamp_to_ns(ts.header.stamp))
            self._cond.notify_all()

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
        with self._cond:
            return self._frames()

    def _frames(self) -> set[str]:
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
        with self._cond:
            return bool(set(self._chain(target)) & set(self._chain(source))) and (
                target in self._frames() and source in self._frames())

    def lookup(self, target: str, source: str, stamp_ns: int = 0) -> Transform:
        """The transform mapping points of ``source`` into ``target`` at ``stamp_ns``.

        Raises :class:`FrameUnknownError` or :class:`ExtrapolationError`.
        """
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return Transform.identity()
        with self._cond:
            return self._lookup(target, source, stamp_ns)

    def wait_lookup(self, target: str, source: str, stamp_ns: int, timeout_s: float
                    ) -> Transform:
        """:meth:`lookup`, waiting up to ``timeout_s`` (wall clock) for the data to arrive:
        woken by every insert, so it returns as soon as the transform is known. An
        extrapolation into the past fails at once (waiting cannot bring older samples)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while True:
                try:
                    return self.lookup(target, source, stamp_ns)
                except ExtrapolationError as exc:
                    if not exc.future:
                        raise
                except FrameUnknownError:
                    pass
                left = deadline - time.monotonic()
                if left <= 0:
                    return self.lookup(target, source, stamp_ns)  # raises the last error
                self._cond.wait(left)

    def chain_state(self, target: str, source: str) -> tuple[int | None, int | None]:
        """(newest common stamp, period) of the moving transforms joining the two frames, ns:
        the oldest of their newest samples and the longest of their periods (None, None when
        only static transforms join them or they are not joined)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._cond:
            children = joining_children(self._chain, target, source)
            if children is None:
                return None, None
            edges = [self._edges[c] for c in children]
            return chain_summary([e.times for e in edges if e.static is None and e.times])

    def _lookup(self, target: str, source: str, stamp_ns: int) -> Transform:
        known = self._frames()
        for name in (target, source):
            if name not in known:
                raise FrameUnknownError(
                    f"frame {name!r} is in no transform of {self.where} (looking up "
                    f"{target} <- {source}; frames: {', '.join(sorted(known)) or 'none'})")
        up_s, up_t = self._chain(source), self._chain(target)
        common = next((f for f in up_s if f in set(up_t)), None)
        if common is None:
            raise FrameUnknownError(
                f"frames {target} and {source} are not connected by the transforms of "
                f"{self.where} ({source} leads to {up_s[-1]}, {target} to {up_t[-1]})")
        t = stamp_ns
        if t == 0:
            t = self._latest_common(up_s[:up_s.index(common)] + up_t[:up_t.index(common)])
        root_from_source = Transform.identity()
        for child in up_s[:up_s.index(common)]:
            root_from_source = self._edges[child].at(t, child, self.where) @ root_from_source
        root_from_target = Transform.identity()
        for child in up_t[:up_t.index(common)]:
            root_from_target = self._edges[child].at(t, child, self.where) @ root_from_target
        return root_from_target.inverse() @ root_from_source

    def _latest_common(self, children: list[str]) -> int:
        latest = [self._edges[c].times[-1] for c in children if self._edges[c].static is None]
        return min(latest) if latest else 0


#: Longest wait (s) of a lookup for the next sample of a moving transform: bounds how long
#: one frame holds the node's output thread (tf at 5 Hz or faster is waited for in full).
TF_WAIT_CAP = 0.3
#: A lookup past the newest sample of a moving transform waits this many of its periods
#: for the next one (it is due within one; the rest is jitter).
TF_WAIT_PERIODS = 1.5


class TfWait:
    """How long a lookup waits: ``tf_timeout`` (the floor) for static transforms and times
    already covered; for a time after the newest sample of a moving transform, up to
    :data:`TF_WAIT_PERIODS` of its measured period (at most :data:`TF_WAIT_CAP`). A chain whose
    long wait timed out waits only the floor until a newer sample arrives, so a transform
    that stopped does not hold every frame. Thread-safe."""

    def __init__(self, cap_s: float = TF_WAIT_CAP) -> None:
        self.cap_s = cap_s
        self._stalled: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def timeout(self, key: tuple[str, str], stamp_ns: int, floor_s: float,
                newest_ns: int | None, period_ns: int | None) -> tuple[float, float | None]:
        """(seconds to wait, the period in s it was sized on; None: the floor)."""
        if newest_ns is None or period_ns is None or stamp_ns == 0 or stamp_ns <= newest_ns:
            return floor_s, None
        with self._lock:
            if self._stalled.get(key) == newest_ns:
                return floor_s, None
        period_s = period_ns * 1e-9
        return max(floor_s, min(self.cap_s, TF_WAIT_PERIODS * period_s)), period_s

    def done(self, key: tuple[str, str], timed_out: bool, newest_ns: int | None) -> None:
        """Note how a long wait ended (``newest_ns``: the newest sample when it ended)."""
        with self._lock:
            if timed_out and newest_ns is not None:
                self._stalled[key] = newest_ns
            else:
                self._stalled.pop(key, None)


def waited_note(waited_s: float, period_s: float | None) -> str:
    """What a failed lookup into the future waited for, for the warning."""
    if period_s is None:
        return f"extrapolation into the future after waiting {waited_s:.3f} s (tf_timeout)"
    return (f"extrapolation into the future after waiting {waited_s:.3f} s for the next /tf "
            f"at ~{1.0 / period_s:.1f} Hz")


__all__ = ["TF_WAIT_CAP", "TF_WAIT_PERIODS", "ExtrapolationError", "FrameUnknownError",
           "TfWait", "TransformBuffer", "TransformError", "chain_summary", "joining_children",
           "median_period_ns", "stamp_to_ns", "waited_note"]
