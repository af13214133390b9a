"""Diagnostics statistics and the warning rate limiter."""

from __future__ import annotations

import math

from seg_perception.runtime.stats import Percentiles, RateMeter, WarningLimiter


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

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
