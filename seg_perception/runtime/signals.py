"""How the offline jobs and the node take SIGINT and SIGTERM, in one place.

Three regimes, because what must not be cut short differs:

- ``process`` (:func:`stop_signals`): the first SIGINT or SIGTERM stops the job after the
  frame being written and the output bag is finished; later ones are ignored with one line
  on stderr. A frame's outputs are written under :func:`hold_stop_signals` (whole or not
  at all), the bag is closed under :func:`ignore_stop_signals`.
- ``process-many`` (:func:`interrupt_on_sigterm`): while its Ray pool is up, SIGTERM stops
  the run as Ctrl-C does (``ray.init`` makes it exit at once), so the manifest records the
  bags done and the one in progress.
- the node (:func:`note_sigint`): Ctrl-C is noted (:data:`SIGINT_SEEN`) before it becomes
  a KeyboardInterrupt, since rclpy can turn that into another error while shutting down.

All install handlers from the main thread only (elsewhere signals do not arrive).

The alternate signal stack (:func:`ensure_signal_stack`). OpenVINO's CPU plugin gives the
thread that compiles a model an alternate signal stack of
about 20 KB (``sigaltstack``). CPython installs its handlers with ``SA_ONSTACK``, so every
SIGINT or SIGTERM is then delivered on that stack, and on a CPU with AMX one signal frame
takes about 12 KB (the kernel's ``AT_MINSIGSTKSZ`` was 11,952 bytes on this project's Xeon):
a second signal that arrives while the first one's C handler runs (a SIGINT right after a
SIGTERM) no longer fits, and the kernel kills the process with SIGSEGV (``si_code``
SI_KERNEL, the crash inside CPython's ``signal_handler``). Measured with ``process`` and a
SIGTERM plus a SIGINT every millisecond: SIGSEGV in 2 of 3 runs, none in 10 with a larger
stack. No library sets the stack's size from Python, hence a small ctypes call.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# --- the alternate signal stack ------------------------------------------------------------

#: Room for several nested signal frames with AMX state and the handlers' C frames.
STACK_BYTES = 256 * 1024
_SS_ONSTACK, _SS_DISABLE = 1, 2
_KEPT: list[ctypes.Array] = []  # the stacks installed: alive for the whole process


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int),
                ("ss_size", ctypes.c_size_t)]


def ensure_signal_stack(size: int = STACK_BYTES) -> bool:
    """Replace the calling thread's alternate signal stack with one of ``size`` bytes where
    a smaller one is installed (call it after building an OpenVINO model, in the thread
    that handles signals: Python's main thread). Returns True when it replaced one; no
    alternate stack (signals run on the thread's own stack), a large enough one, or
    another platform leave everything as it is."""
    if not sys.platform.startswith("linux"):
        return False
    if not _on_main_thread():
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        old = _StackT()
        if libc.sigaltstack(None, ctypes.byref(old)) != 0:
            return False
        if old.ss_flags & (_SS_DISABLE | _SS_ONSTACK) or old.ss_size >= size:
            return False
        buf = ctypes.create_string_buffer(size)
        new = _StackT(ctypes.cast(buf, ctypes.c_void_p), 0, size)
        if libc.sigaltstack(ctypes.byref(new), None) != 0:
            return False
    except (OSError, AttributeError):  # no libc symbol: leave it
        return False
    _KEPT.append(buf)
    return True


def current_signal_stack() -> tuple[bool, int]:
    """(enabled, size in bytes) of the calling thread's alternate signal stack (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    old = _StackT()
    if libc.sigaltstack(None, ctypes.byref(old)) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack failed")
    return not old.ss_flags & _SS_DISABLE, int(old.ss_size)



# --- the stop regimes ------------------------------------------------------------------------

#: The signals that stop a job: Ctrl-C, and what ``kill``, ``timeout`` and systemd send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _deliver(signum: int, previous: Any) -> None:
    """Act on a held-back signal as ``previous`` (the handler before the block) would."""
    if callable(previous):
        previous(signum, None)
    elif previous == signal.SIG_IGN:
        return
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:  # SIG_DFL of SIGTERM: terminate, as without us
        signal.raise_signal(signum)


@contextlib.contextmanager
def hold_stop_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block has run, then deliver the first one
    (main thread only): a frame's outputs are written whole or not at all."""
    if not _on_main_thread():
        yield
        return
    caught: list[int] = []

    def catch(signum: int, _frame: Any) -> None:
        caught.append(signum)

    previous = {s: signal.signal(s, catch) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        _deliver(caught[0], previous[caught[0]])


@contextlib.contextmanager
def ignore_stop_signals() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM for the block (main thread only; elsewhere signals do not
    arrive): closing a bag is never cut short."""
    if not _on_main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@dataclass
class StopState:
    """What :func:`stop_signals` saw: the first stop signal (None: none) and how many."""

    signum: int | None = None
    count: int = 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


@contextlib.contextmanager
def stop_signals(finishing: str = "finishing the output") -> Iterator[StopState]:
    """SIGTERM handled like Ctrl-C, and no second signal cuts the finishing short.

    Inside the block the first SIGINT or SIGTERM raises KeyboardInterrupt (the job stops
    after its current step and finishes its output, as after Ctrl-C); every later one is
    ignored, with one line on stderr saying that the output is being finished. Without it,
    SIGTERM kills the process on the spot (an .mcap without summary) and a second Ctrl-C
    raises inside the code that closes the bag. Main thread only. The handlers in place
    before are restored after the block, unless a stop signal came: then the process is on
    its way out and further ones stay ignored, so none can cut its exit short (a traceback
    from interpreter shutdown, or death by SIGTERM instead of the exit status).
    """
    state = StopState()
    if not _on_main_thread():
        yield state
        return
    ensure_signal_stack()  # after the engine's build: OpenVINO's is too small (see above)

    def handler(signum: int, _frame: Any) -> None:
        state.count += 1
        if state.count == 1:
            state.signum = signum
            raise KeyboardInterrupt
        if state.count == 2:  # os.write: no lock a signal handler could deadlock on
            with contextlib.suppress(OSError):
                os.write(2, f"{signal.Signals(signum).name} again: still {finishing}, "
                            "one moment (ignored)\n".encode())

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield state
    finally:
        for s, old in previous.items():
            signal.signal(s, old if state.count == 0 else signal.SIG_IGN)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_sigterm() -> Callable[[], None]:
    """SIGTERM raises KeyboardInterrupt from here on, as Ctrl-C does (main thread only; call
    it after ``ray.init``, which sets SIGTERM to exit at once). Returns what puts the
    handler before back (nothing to do off the main thread)."""
    if not _on_main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


#: Set by the SIGINT handler :func:`note_sigint` installs: Ctrl-C reached this process.
SIGINT_SEEN = threading.Event()


def note_sigint() -> None:
    """Note Ctrl-C before it becomes KeyboardInterrupt (the node: call before
    ``rclpy.init``, which chains its own handler to this one). rclpy shuts its context down
    from a thread of its own after the signal, so the KeyboardInterrupt, turned into a
    RuntimeError when it lands inside a pybind11 call (``Unable to convert call argument``),
    can come while ``rclpy.ok()`` is still True. A handler someone else installed is left
    alone."""
    if not _on_main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return

    def handler(signum: int, frame: Any) -> None:
        SIGINT_SEEN.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


__all__ = [
    "SIGINT_SEEN",
    "STACK_BYTES",
    "STOP_SIGNALS",
    "StopState",
    "current_signal_stack",
    "ensure_signal_stack",
    "hold_stop_signals",
    "ignore_stop_signals",
    "interrupt_on_sigterm",
    "note_sigint",
    "stop_signals",
]
