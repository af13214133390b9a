"""Diagnostics statistics, the warning rate limiter (keyed on the kind of problem, bounded in
memory) and the monitor that notices camera models flapping."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np

from seg_perception.runtime.image_codec import ImageDecodeError, decode_raw
from seg_perception.runtime.stats import (
    ChangeMonitor,
    Percentiles,
    RateMeter,
    WarningLimiter,
    problem_kind,
)


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_rate_meter_measures_events_per_second() -> None:
    clock = FakeClock()
    meter = RateMeter(window_s=5.0, clock=clock)
    for _ in range(11):
        meter.tick()
        clock.t += 0.1
    assert abs(meter.rate() - 10.0) < 1.0
    clock.t += 10
    assert meter.rate() == 0.0 and meter.total == 11


def test_percentiles() -> None:
    p = Percentiles(size=100)
    assert math.isnan(p.percentile(50))
    for v in range(1, 101):
        p.add(float(v))
    assert abs(p.percentile(50) - 50.5) < 1e-9 and p.percentile(95) > 94


def test_warning_limiter_counts_suppressed() -> None:
    clock = FakeClock()
    lim = WarningLimiter(period_s=5.0, clock=clock)
    assert lim.check("a") == 0
    assert lim.check("a") is None and lim.check("a") is None
    assert lim.check("b") == 0  # independent problem
    clock.t = 6.0
    assert lim.check("a") == 2


def test_375_distinct_encodings_give_a_handful_of_warnings() -> None:
    clock = FakeClock(1000.0)
    limiter = WarningLimiter(5.0, clock=clock)
    rng = np.random.default_rng(3)
    shown = 0
    kinds = set()
    for _ in range(375):
        enc = "".join(rng.choice(list("abcdefxyz0123456789_"), rng.integers(3, 12)))
        try:
            decode_raw(enc, 4, 4, 12, 0, bytes(48))
        except ImageDecodeError as exc:
            key = problem_kind(exc)
        kinds.add(key)
        # text-only messages (a cv_bridge error, a message without kind) reduce alike
        kinds.add(problem_kind(f"unsupported image encoding '{enc}'; supported: rgb8, bgr8"))
        if limiter.check(key) is not None:
            shown += 1
        clock.t += 0.04  # 375 frames in 15 s
    assert len(kinds) == 2, kinds
    assert shown == 3  # once per 5 s
    assert len(limiter) == 1


def test_problem_kind_drops_values() -> None:
    same = [
        "rgb8 image data has 100 bytes, fewer than step*height = 30*4 = 120",
        "bgra8 image data has 7 bytes, fewer than step*height = 3*4 = 12",
    ]
    assert len({problem_kind(t) for t in same}) == 1
    assert problem_kind("cv_bridge cannot convert [yuv9]: bad") == \
        problem_kind("cv_bridge cannot convert [x]: bad")
    assert problem_kind(ValueError("camera focal length fx=0.0, fy=12 must be > 0")) == \
        problem_kind(ValueError("camera focal length fx=-3, fy=0.5 must be > 0"))
    assert problem_kind(ImageDecodeError("whatever 123", kind="data.short")) == \
        "ImageDecodeError:data.short"
    assert len(problem_kind("x " * 10_000)) <= 80


def test_limiter_memory_is_bounded_after_200k_distinct_keys() -> None:
    clock = FakeClock(1000.0)
    limiter = WarningLimiter(5.0, clock=clock, max_keys=256)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(200_000):
        limiter.check(f"decode.unsupported image encoding 'enc{i}'")
        clock.t += 0.001
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(limiter) == 256
    assert used < 1_000_000, used  # a limiter keeping every key grew to 40 MB
    # Over all keys at most max_per_period warnings per period came through.
    clock2 = FakeClock(1000.0)
    capped = WarningLimiter(5.0, clock=clock2, max_per_period=20)
    assert sum(capped.check(f"k{i}") is not None for i in range(1000)) == 20
    clock2.t += 5.0
    assert capped.check("k5") == 0 and capped.check("k999") == 1  # held back: told next time


def test_limiter_counts_suppressed_per_key() -> None:
    clock = FakeClock(1000.0)
    limiter = WarningLimiter(5.0, clock=clock)
    assert limiter.check("a") == 0
    assert limiter.check("a") is None and limiter.check("a") is None
    assert limiter.check("b") == 0
    clock.t += 5.0
    assert limiter.check("a") == 2 and limiter.check("b") == 0


def test_change_monitor_warns_once_when_camera_models_alternate() -> None:
    clock = FakeClock(1000.0)
    mon = ChangeMonitor(max_changes=4, window_s=10.0, clock=clock)
    assert mon.update("A") and not mon.update("A")
    warnings_given = 0
    for i in range(378):  # two CameraInfos alternating for 30 s
        mon.update("B" if i % 2 else "A")
        warnings_given += mon.take_warning()
        clock.t += 30.0 / 378
    assert warnings_given == 1 and mon.total_changes >= 377
    clock.t += 11.0  # quiet for a window: a later episode warns again
    mon.update("A")
    for i in range(6):
        mon.update("B" if i % 2 == 0 else "A")
    assert mon.take_warning()
    steady = ChangeMonitor(clock=clock)
    for i in range(20):  # a recalibration now and then is not flapping
        steady.update(i // 10)
        clock.t += 1.0
    assert not steady.take_warning()
