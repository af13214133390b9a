"""A chain of generator steps run in threads, with bounded queues between them.

``process`` reads and decodes, runs the network, draws and maps, and writes: work that
releases the GIL for most of its time (OpenVINO, torch, OpenCV, numpy, file I/O), so the
stages overlap on separate cores when each runs in its own thread. :func:`overlapped` runs

    source -> step_1 -> ... -> step_k -> the caller

with ``source`` (any iterable) iterated in a thread of its own, each step in a thread of
its own, and the last step's items handed to the caller's thread, which consumes them (in
``process``: writes them, so the writes stay in the main thread, where signals land).

A *step* is a function from an iterator of items to an iterator of items (usually a
generator), so a step may be one-to-one, drop items, or hold several back and emit one for
them (cycles of cameras). Items keep their order: each link is a FIFO queue.

Errors are never dropped: an exception raised by the source or a step reaches the next step
as the exception raised by its input iterator, after every item before it (exactly what a
chain of plain generators does), and finally the caller, as the same exception object. A
step that holds items back may catch it to emit what it holds first, then re-raise.

Stopping: leaving the ``with`` block (the caller is done, or an exception or Ctrl-C stops
it) stops every thread: a step blocked on its input sees :class:`Cancelled` raised there, a
step blocked on its output gives up; both end after the item in hand. The block waits for
the threads to end (each finishes the item it works on, e.g. one forward pass), so nothing
runs on after it: the engine and the bag reader can be reused or closed at once.

``depth`` 0 runs the same chain as plain generators in the caller's thread (no threads):
the same items in the same order, the same errors.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)

#: A step of the chain: items in, items out, in order.
Step = Callable[[Iterator[Any]], Iterable[Any]]

#: Seconds between looks at the stop flag while blocked on a queue.
POLL_S = 0.05
#: Seconds :func:`overlapped` waits for its threads to end after a stop.
JOIN_TIMEOUT_S = 60.0


class Cancelled(BaseException):  # not an error: the chain was stopped
    """Raised from a step's input iterator when the chain stops before its input ended.

    A BaseException, so ``except Exception`` in a step does not swallow it."""


class _End:
    """The last item of a queue: the producer finished normally."""


class _Failure:
    """The producer raised ``exc``; the consumer raises it after the items before it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = _End()


class _Link:
    """One bounded FIFO between two threads; every wait gives way to the stop flag."""

    def __init__(self, depth: int, stop: threading.Event) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = stop

    def put(self, item: Any) -> bool:
        """Hand ``item`` on; False when the chain stopped first (the item is dropped)."""
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def items(self) -> Iterator[Any]:
        """The producer's items until it ends; its exception raised in their place;
        :class:`Cancelled` when the chain stops first."""
        while True:
            try:
                item = self._q.get(timeout=POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    raise Cancelled from None
                continue
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item


def _pump(items: Callable[[], Iterable[Any]], out: _Link) -> None:
    """Thread body: every item of ``items()`` into ``out``, then the end or the failure.

    A generator left part-way (the chain stopped) is closed here, in the thread that ran
    it, so its ``finally`` blocks (a bag reader's cursor) run before :func:`overlapped`
    returns, not whenever it is collected."""
    it = iter(items())
    try:
        for item in it:
            if not out.put(item):
                return
    except Cancelled:
        return
    except BaseException as exc:  # handed on to the consumer, never dropped
        out.put(_Failure(exc))
        return
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # the chain stopped: no consumer left to hand this to
                log.warning("closing a stopped stage failed", exc_info=True)
    out.put(_END)


@contextlib.contextmanager
def overlapped(source: Iterable[Any], steps: Sequence[Step], depth: int = 2, name: str = "stage",
               join_timeout: float = JOIN_TIMEOUT_S) -> Iterator[Iterator[Any]]:
    """The items of ``source`` passed through ``steps``, each in a thread of its own, with
    at most ``depth`` items waiting between two of them (``depth`` 0: no threads).

    Use as ``with overlapped(src, [a, b]) as items: for item in items: ...``; see the module
    docstring for order, errors and stopping.
    """
    if depth <= 0:
        chain: Iterable[Any] = source
        for step in steps:
            chain = step(iter(chain))
        chain = iter(chain)
        try:
            yield chain
        finally:
            if hasattr(chain, "close"):
                chain.close()
        return

    stop = threading.Event()
    links = [_Link(depth, stop) for _ in range(len(steps) + 1)]
    bodies: list[Callable[[], Iterable[Any]]] = [lambda: source]
    for k, step in enumerate(steps):
        bodies.append(lambda step=step, link=links[k]: step(link.items()))
    names = ["read"] + [getattr(s, "__name__", f"step{k + 1}") for k, s in enumerate(steps)]
    threads = [threading.Thread(target=_pump, args=(body, links[k]), daemon=True,
                                name=f"{name}-{names[k]}")
               for k, body in enumerate(bodies)]
    for thread in threads:
        thread.start()
    try:
        yield links[-1].items()
    finally:
        stop.set()
        deadline = time.monotonic() + join_timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            log.warning("%s: thread(s) %s did not stop within %.0f s; left running",
                        name, ", ".join(alive), join_timeout)


__all__ = ["JOIN_TIMEOUT_S", "POLL_S", "Cancelled", "Step", "overlapped"]
