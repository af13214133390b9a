"""Pairing images with their camera_info by header stamp, as image_transport's
CameraSubscriber does (exact stamps), or with the nearest one within a tolerance."""

from __future__ import annotations

import bisect
import threading
import time

from ..geometry import CameraCalibration


class CameraInfoBuffer:
    """Recent calibrations by stamp (ns), bounded; thread-safe (a subscription callback adds,
    a worker matches). Consecutive equal calibrations share one object."""

    def __init__(self, size: int | None = 64) -> None:
        self.size = size
        self._stamps: list[int] = []
        self._infos: list[CameraCalibration] = []
        self._cv = threading.Condition()
        self.count = 0

    def add(self, stamp_ns: int, calibration: CameraCalibration) -> None:
        with self._cv:
            self.count += 1
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
        """Why no calibration matched (for warnings)."""
        with self._cv:
            if not self._stamps:
                return "no camera_info received yet"
            k = bisect.bisect_left(self._stamps, stamp_ns)
            near = [self._stamps[j] for j in (k - 1, k) if 0 <= j < len(self._stamps)]
            d = min(abs(s - stamp_ns) for s in near) * 1e-9
        want = "the same stamp" if tolerance_s == 0 else f"a stamp within {tolerance_s:g} s"
        return (f"no camera_info with {want} (nearest is {d:.3f} s away; raise "
                "camera_info_tolerance to pair them)")


__all__ = ["CameraInfoBuffer"]
