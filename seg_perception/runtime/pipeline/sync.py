"""Pairing images with their camera_info by header stamp, as image_transport's
CameraSubscriber does (exact stamps), or with the nearest one within a tolerance.

Time can go back: ``ros2 bag play --loop``, a restarted bag, a reset simulation. A bounded
history keeps the newest stamps, so after such a jump every new camera_info would be older
than all it holds and thrown away on arrival. A buffer made with ``jump_back_s`` therefore
treats a camera_info stamped more than that before the newest one held as time going back
and starts its history afresh (:data:`JUMP_BACK_S`, 1 s: far beyond the milliseconds by which
messages arrive out of order, far below the seconds a looped bag jumps).
"""

from __future__ import annotations

import bisect
import threading
import time

from seg_perception.runtime.geometry import CameraCalibration

#: A camera_info (or image) stamped more than this (s) before the newest one means that time
#: went back (a looped or restarted bag, a reset simulation), not a late message.
JUMP_BACK_S = 1.0


class CameraInfoBuffer:
    """Recent calibrations by stamp (ns), bounded; thread-safe (a subscription callback adds,
    a worker matches). Consecutive equal calibrations share one object.

    With ``jump_back_s`` (the node: live streams), a calibration stamped more than that
    before the newest one held clears the history first (time went back, see the module
    docstring); ``jumps`` counts these. Without it (``process``: a whole recording, whose
    stamps may go back and forth) every stamp is kept.
    """

    def __init__(self, size: int | None = 64, jump_back_s: float | None = None) -> None:
        self.size = size
        self.jump_back_ns = None if jump_back_s is None else round(jump_back_s * 1e9)
        self._stamps: list[int] = []
        self._infos: list[CameraCalibration] = []
        self._cv = threading.Condition()
        self.count = 0
        self.jumps = 0

    def add(self, stamp_ns: int, calibration: CameraCalibration) -> float | None:
        """Keep ``calibration`` stamped ``stamp_ns``; returns how far (s) time went back
        when this stamp cleared the history (see the class docstring), else None."""
        jumped = None
        with self._cv:
            self.count += 1
            if self.jump_back_ns is not None and self._stamps \
                    and self._stamps[-1] - stamp_ns > self.jump_back_ns:
                jumped = (self._stamps[-1] - stamp_ns) * 1e-9
                self._stamps.clear()
                self._infos.clear()
                self.jumps += 1
            k = bisect.bisect_left(self._stamps, stamp_ns)
            if k > 0 and self._infos[k - 1] == calibration:
                calibration = self._infos[k - 1]
            if k < len(self._stamps) and self._stamps[k] == stamp_ns:
                self._infos[k] = calibration
            else:
                self._stamps.insert(k, stamp_ns)
                self._infos.insert(k, calibration)
            if self.size is not None and len(self._stamps) > self.size:
                del self._stamps[0], self._infos[0]
            self._cv.notify_all()
        return jumped

    def forget_after(self, stamp_ns: int) -> int:
        """Drop the calibrations stamped after ``stamp_ns`` (the node's worker, when an
        image's stamp shows time went back before a camera_info did: those are from before
        the jump and would hide the new ones); how many were dropped."""
        with self._cv:
            k = bisect.bisect_right(self._stamps, stamp_ns)
            dropped = len(self._stamps) - k
            del self._stamps[k:], self._infos[k:]
            return dropped

    def clear(self) -> None:
        """Forget every calibration (``count`` and ``jumps`` stay)."""
        with self._cv:
            self._stamps.clear()
            self._infos.clear()

    def may_still_come(self, stamp_ns: int, tolerance_s: float) -> bool:
        """No calibration matches ``stamp_ns`` yet but one may still come: nothing stamped
        at or after ``stamp_ns + tolerance`` has arrived (camera_infos come in order)."""
        tol = round(tolerance_s * 1e9)
        with self._cv:
            if self._match(stamp_ns, tol) is not None:
                return False
            return not self._stamps or self._stamps[-1] < stamp_ns + tol

    @property
    def latest_stamp(self) -> int | None:
        with self._cv:
            return self._stamps[-1] if self._stamps else None

    @property
    def latest(self) -> CameraCalibration | None:
        with self._cv:
            return self._infos[-1] if self._infos else None

    def _match(self, stamp_ns: int, tolerance_ns: int) -> CameraCalibration | None:
        k = bisect.bisect_left(self._stamps, stamp_ns)
        best, best_d = None, None
        for j in (k - 1, k):
            if 0 <= j < len(self._stamps):
                d = abs(self._stamps[j] - stamp_ns)
                if d <= tolerance_ns and (best_d is None or d < best_d):
                    best, best_d = self._infos[j], d
        return best

    def match(self, stamp_ns: int, tolerance_s: float = 0.0) -> CameraCalibration | None:
        """The calibration stamped ``stamp_ns`` (or the nearest within ``tolerance_s``)."""
        with self._cv:
            return self._match(stamp_ns, round(tolerance_s * 1e9))

    def wait_match(self, stamp_ns: int, tolerance_s: float, timeout_s: float
                   ) -> CameraCalibration | None:
        """:meth:`match`, waiting up to ``timeout_s`` while a matching one may still come
        (nothing stamped at or after ``stamp_ns`` has arrived yet)."""
        tol = round(tolerance_s * 1e9)
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while True:
                hit = self._match(stamp_ns, tol)
                if hit is not None:
                    return hit
                newest = self._stamps[-1] if self._stamps else None
                left = deadline - time.monotonic()
                if left <= 0 or (newest is not None and newest >= stamp_ns + tol):
                    return None
                self._cv.wait(left)

    def describe_miss(self, stamp_ns: int, tolerance_s: float) -> str:
        """Why no calibration matched (for warnings): the real cause, so that the advice
        (raise ``camera_info_tolerance``) is only given where it helps."""
        with self._cv:
            if not self._stamps:
                return "no camera_info received yet" if self.count == 0 else (
                    "no camera_info since time went back (the history was cleared)")
            full = self.size is not None and len(self._stamps) >= self.size
            oldest, newest = self._stamps[0], self._stamps[-1]
            k = bisect.bisect_left(self._stamps, stamp_ns)
            near = [self._stamps[j] for j in (k - 1, k) if 0 <= j < len(self._stamps)]
            d = min(abs(s - stamp_ns) for s in near) * 1e-9
        want = "the same stamp" if tolerance_s == 0 else f"a stamp within {tolerance_s:g} s"
        if full and stamp_ns < oldest:
            return (f"no camera_info with {want}: the image is {(oldest - stamp_ns) * 1e-9:.3f}"
                    f" s older than the {self.size} camera_infos kept (a late frame, or time "
                    "went back)")
        if d > JUMP_BACK_S:
            side = "after" if stamp_ns < newest else "before"
            return (f"no camera_info with {want}: the nearest is {d:.3f} s {side} the image "
                    "(do the image and camera_info carry stamps of different clocks?)")
        return (f"no camera_info with {want} (nearest is {d:.3f} s away; raise "
                "camera_info_tolerance to pair them)")


__all__ = ["JUMP_BACK_S", "CameraInfoBuffer"]
