"""Child processes that must end the way Ctrl-C ends them.

A ROS 2 node (and ``ros2 launch``, ``ros2 topic hz``) finishes its bag, prints its last
lines and leaves DDS cleanly on SIGINT; SIGKILL is only the fallback when it hangs.
"""

from __future__ import annotations

import signal
import subprocess


def interrupt(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGINT ``proc`` if it still runs, wait up to ``timeout`` s, then kill it; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
