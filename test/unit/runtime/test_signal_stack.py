"""The alternate signal stack: OpenVINO's small one is replaced by one that holds nested
signal frames with AMX state (see seg_perception.runtime.signals)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

_SCRIPT = textwrap.dedent("""
    import ctypes
    from seg_perception.runtime import signals as ss

    print("before", *ss.current_signal_stack())
    small = ctypes.create_string_buffer(20144)  # OpenVINO's CPU plugin installs this size
    st = ss._StackT(ctypes.cast(small, ctypes.c_void_p), 0, 20144)
    assert ctypes.CDLL(None).sigaltstack(ctypes.byref(st), None) == 0
    print("small", *ss.current_signal_stack())
    print("replaced", ss.ensure_signal_stack())
    print("after", *ss.current_signal_stack())
    print("again", ss.ensure_signal_stack())
""")


def test_a_small_alternate_signal_stack_is_replaced_once() -> None:
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split("\n")
    assert "small True 20144" in out
    assert "replaced True" in out
    assert f"after True {256 * 1024}" in out
    assert "again False" in out  # large enough now: left alone


def test_no_alternate_stack_is_left_alone() -> None:
    script = ("from seg_perception.runtime import signals as ss\n"
              "print(ss.ensure_signal_stack(), *ss.current_signal_stack())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    assert out.startswith("False False")  # signals run on the thread's own stack: fine


def test_an_openvino_model_leaves_a_stack_that_ensure_replaces() -> None:
    """What the fix is for: after OpenVINO compiles a model in the main thread its stack is
    smaller than nested AMX signal frames need; ensure_signal_stack makes it large."""
    pytest.importorskip("openvino")
    script = textwrap.dedent("""
        from seg_perception.runtime import signals as ss
        from seg_perception.runtime.engine import build_engine
        engine = build_engine("tiny_seg", None, "cpu", "auto", threads=1)  # kept alive
        enabled, size = ss.current_signal_stack()
        print("openvino", enabled, size)
        ss.ensure_signal_stack()
        print("after", *ss.current_signal_stack())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, check=True).stdout.split("\n")
    line = next(x for x in out if x.startswith("openvino"))
    _, enabled, size = line.split()
    if enabled == "True":
        assert f"after True {max(int(size), 256 * 1024)}" in out
    else:  # this OpenVINO release installs none: nothing to replace
        assert "after False 0" in out
