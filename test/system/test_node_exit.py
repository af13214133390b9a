"""How the node executables end on Ctrl-C (``run_node``), in a process of their own."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("rclpy")

SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import rclpy
    from seg_perception.ros.node_common import run_node

    class Node:
        def destroy_node(self):
            print("destroyed")

    def spin(node):
        # As seen under load: Ctrl-C lands inside a pybind11 call of the executor, which
        # turns the KeyboardInterrupt into a RuntimeError, before rclpy's own thread has shut
        # the context down (rclpy.ok() still True).
        rclpy.ok = lambda *a, **k: True
        try:
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the handler raises in here
                time.sleep(0.01)
        except KeyboardInterrupt:
            raise RuntimeError("Unable to convert call argument '0' to Python object") from None
        raise AssertionError("SIGINT did not interrupt")

    sys.exit(run_node("exit_test", Node, spin, lambda node: print("closed")))
""")


@pytest.mark.parametrize("error_without_sigint", [False, True])
def test_ctrl_c_that_surfaces_as_an_rclpy_error_is_a_clean_exit(error_without_sigint: bool
                                                                ) -> None:
    script = SCRIPT
    if error_without_sigint:  # the same error without Ctrl-C is a real one: it propagates
        script = script.replace("os.kill(os.getpid(), signal.SIGINT)",
                                "raise KeyboardInterrupt")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert "closed" in done.stdout and "destroyed" in done.stdout, done.stdout + done.stderr
    if error_without_sigint:
        assert done.returncode == 1 and "Unable to convert call argument" in done.stderr
    else:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
