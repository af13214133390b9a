"""runtime.overlap: a chain of generator steps in threads keeps order, surfaces errors, stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from seg_perception.runtime.overlap import overlapped


def _double(items: Iterator[Any]) -> Iterator[Any]:
    for x in items:
        yield 2 * x


def _pairs(items: Iterator[Any]) -> Iterator[Any]:
    """Holds one item back and emits pairs: a many-to-one step (as a cycle of cameras)."""
    held = None
    for x in items:
        if held is None:
            held = x
        else:
            yield (held, x)
            held = None
    if held is not None:
        yield (held,)


def _slow(items: Iterator[Any]) -> Iterator[Any]:
    for x in items:
        time.sleep(0.001 * (x % 3))  # uneven work: order must not depend on timing
        yield x


def _workers(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-")]


@pytest.mark.parametrize("depth", [0, 1, 2, 8])
def test_same_items_in_the_same_order_at_every_depth(depth: int) -> None:
    with overlapped(range(101), [_slow, _double, _pairs], depth, name="order") as items:
        got = list(items)
    want = list(_pairs(_double(iter(range(101)))))
    assert got == want
    assert not _workers("order")


class BoomError(Exception):
    pass


def _fail_at(k: int) -> Callable[[Iterator[Any]], Iterator[Any]]:
    def step(items: Iterator[Any]) -> Iterator[Any]:
        for x in items:
            if x == k:
                raise BoomError(f"step failed at {x}")
            yield x
    return step


def _failing_source(k: int) -> Iterator[int]:
    yield from range(k)
    raise BoomError("source failed")


@pytest.mark.parametrize("depth", [0, 2])
@pytest.mark.parametrize("where", ["source", "first", "last"])
def test_an_error_arrives_after_every_item_before_it(depth: int, where: str) -> None:
    steps = [_double, _slow]
    source: Any = range(20)
    if where == "source":
        source = _failing_source(7)
    elif where == "first":
        steps = [_fail_at(7), *steps]
    else:
        steps = [*steps, _fail_at(14)]
    got: list[int] = []
    t0 = time.monotonic()
    with pytest.raises(BoomError), overlapped(source, steps, depth, name="err") as items:
        for x in items:
            got.append(x)
    assert time.monotonic() - t0 < 30  # no hang
    assert got == [2 * i for i in range(7)]
    assert not _workers("err")


def test_a_step_that_holds_items_may_flush_them_before_the_error() -> None:
    def flush_on_error(items: Iterator[Any]) -> Iterator[Any]:
        held = []
        try:
            for x in items:
                held.append(x)
        except BoomError:
            yield ("flushed", held)
            raise

    got = []
    with pytest.raises(BoomError), overlapped(_failing_source(3), [flush_on_error], 2) as items:
        for item in items:
            got.append(item)
    assert got == [("flushed", [0, 1, 2])]


@pytest.mark.parametrize("depth", [0, 2])
def test_leaving_early_stops_and_joins_every_thread(depth: int) -> None:
    produced: list[int] = []
    closed = threading.Event()

    def endless() -> Iterator[int]:
        k = 0
        try:
            while True:
                produced.append(k)
                yield k
                k += 1
        finally:
            closed.set()

    with overlapped(endless(), [_double, _double], depth, name="early") as items:
        for x in items:
            if x == 40:
                break
    assert not _workers("early")
    assert closed.is_set()  # closed by its thread before the block ended, not by the GC
    # bounded queues: the reader ran at most a few items ahead of the consumer
    assert len(produced) <= 11 + 3 * (depth + 2)


def test_an_error_in_the_consumer_stops_the_threads() -> None:
    with pytest.raises(KeyboardInterrupt), \
            overlapped(iter(range(10**9)), [_double], 2, name="ctrlc") as items:
        for x in items:
            if x > 10:
                raise KeyboardInterrupt
    assert not _workers("ctrlc")


def test_the_work_overlaps() -> None:
    """Two steps that sleep (release the GIL) run at the same time in their threads: some
    item's first step sleeps while an earlier item's second step does (never with depth 0).
    Checked on the intervals themselves, not on wall time, so a loaded machine passes."""
    def sleepy(tag: str, spans: list[tuple[str, float, float]]) -> Any:
        def step(items: Iterator[Any]) -> Iterator[Any]:
            for x in items:
                t0 = time.perf_counter()
                time.sleep(0.02)
                spans.append((tag, t0, time.perf_counter()))
                yield x
        return step

    def overlaps(spans: list[tuple[str, float, float]]) -> int:
        a = [(s, e) for tag, s, e in spans if tag == "a"]
        b = [(s, e) for tag, s, e in spans if tag == "b"]
        return sum(s0 < e1 and s1 < e0 for s0, e0 in a for s1, e1 in b)

    n = 25
    for depth, overlapping in ((0, False), (2, True)):
        spans: list[tuple[str, float, float]] = []
        with overlapped(range(n), [sleepy("a", spans), sleepy("b", spans)], depth) as items:
            assert list(items) == list(range(n))
        assert (overlaps(spans) > 0) == overlapping, (depth, spans)
