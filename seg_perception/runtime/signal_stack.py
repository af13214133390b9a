"""A signal stack big enough for the signal frames of a CPU with AMX.

OpenVINO's CPU plugin gives the thread that compiles a model an alternate signal stack of
about 20 KB (``sigaltstack``). CPython installs its handlers with ``SA_ONSTACK``, so every
SIGINT or SIGTERM is then delivered on that stack, and on a CPU with AMX one signal frame
takes about 12 KB (the kernel's ``AT_MINSIGSTKSZ`` was 11,952 bytes on this project's Xeon):
a second signal that arrives while the first one's C handler runs (a SIGINT right after a
SIGTERM) no longer fits, and the kernel kills the process with SIGSEGV (``si_code``
SI_KERNEL, the crash inside CPython's ``signal_handler``). Measured with ``process`` and a
SIGTERM plus a SIGINT every millisecond: SIGSEGV in 2 of 3 runs, none in 10 with a larger
stack. No library sets the stack's size from Python, hence this small ctypes call.
"""

from __future__ import annotations

import ctypes
import sys
import threading

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
    if threading.current_thread() is not threading.main_thread():
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


__all__ = ["STACK_BYTES", "current_signal_stack", "ensure_signal_stack"]
