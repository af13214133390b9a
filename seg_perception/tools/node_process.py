"""``seg_node`` (or another node module) as a child process: start, wait for ready, stop.

The demo, the soak benchmark, the GPU check and the tests all run the node the way a user
does, as its own process, so that DDS, parameters and signals are the real ones. This is the
one place that builds its command line, watches its output for the ``ready`` line (with a
clear error and the node's last lines when it dies first) and stops it the way Ctrl-C does:
a ROS 2 node finishes its work, prints its last lines and leaves DDS cleanly on SIGINT, so
SIGKILL is only the fallback when it hangs.

No rclpy here: the node is a command line, not an object of this process.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

#: What ``seg_node`` logs once it subscribes and serves (``ready: listening on <topics>``).
READY = "ready: listening on"
NODE_MODULE = "seg_perception.ros.node"


class NodeError(RuntimeError):
    """The node exited, or never said it was ready; the message carries its last lines."""


class NodeTimeoutError(NodeError, TimeoutError):
    """The node still runs but did not print the awaited line within the deadline."""


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


def fastdds_profile() -> Path:
    """The Fast DDS shared-memory profile, installed (colcon) or in the source tree (pip -e)."""
    here = Path(__file__).resolve().parent.parent.parent / "config" / "fastdds_shm.xml"
    if here.is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("seg_perception")) / "config" / "fastdds_shm.xml"
    except Exception:  # no ament index: the source path is all there is
        return here


def use_fastdds_profile(env: MutableMapping[str, str] = os.environ) -> str:
    """Give ``env`` the shared-memory profile unless it names one already (images are too
    large for UDP fragments); the profile in effect. Both ends of a topic need it, so a caller
    with its own DDS participant sets it in ``os.environ`` before rclpy starts."""
    return env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(fastdds_profile()))


def param_text(value: Any) -> str:
    """A value as ``-p name:=VALUE`` takes it (YAML): lists as ``[a,b]``."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def node_command(params: Mapping[str, Any] | None = None, namespace: str = "",
                 remaps: Mapping[str, str] | None = None, params_file: Path | None = None,
                 module: str = NODE_MODULE) -> list[str]:
    """``python -m module --ros-args ...``: the namespace and remaps as ``-r``, the params file
    first and then each parameter as ``-p`` (so a ``-p`` overrides the file)."""
    cmd = [sys.executable, "-m", module, "--ros-args"]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    for name, value in (params or {}).items():
        cmd += ["-p", f"{name}:={param_text(value)}"]
    return cmd


class NodeProcess:
    """A node in its own process, its output (stdout and stderr) kept for reading.

    Output goes to ``log_path`` when given (the child writes the file itself); with no
    ``log_path``, or with ``echo`` (a stream every line is also written to, as it comes), it
    comes through a pipe that a thread drains, so a chatty node never blocks on a full pipe.
    The last ``keep_lines`` lines are kept in memory in that case. The environment is the
    caller's (``ROS_DOMAIN_ID``, ``FASTDDS_DEFAULT_PROFILES_FILE``...) or ``env``, unbuffered
    and uncoloured. Use as a context manager, or call :meth:`stop`.
    """

    #: SIGINT grace before SIGKILL in :meth:`stop`.
    stop_timeout = 20.0
    #: Lines of output an error message quotes.
    tail_lines = 60

    def __init__(self, log_path: Path | None = None, params: Mapping[str, Any] | None = None,
                 namespace: str = "", remaps: Mapping[str, str] | None = None,
                 module: str = NODE_MODULE, *, params_file: Path | None = None,
                 env: Mapping[str, str] | None = None, echo: IO[str] | None = None,
                 keep_lines: int = 10_000, stop_timeout: float | None = None) -> None:
        self.command = node_command(params, namespace, remaps, params_file, module)
        self.name = module.rsplit(".", 1)[-1]
        self.log_path = Path(log_path) if log_path is not None else None
        if stop_timeout is not None:
            self.stop_timeout = stop_timeout
        child_env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1",
                         RCUTILS_COLORIZED_OUTPUT="0")
        self._lines: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self._echo = echo
        self._drain: threading.Thread | None = None
        self._log: IO[str] | None = None
        if self.log_path is not None:
            self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        if self._log is not None and echo is None:
            self.proc = subprocess.Popen(self.command, stdout=self._log,
                                         stderr=subprocess.STDOUT, env=child_env)
        else:
            self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, env=child_env)
            self._drain = threading.Thread(target=self._read_pipe, daemon=True,
                                           name=f"{self.name}-output")
            self._drain.start()

    def _read_pipe(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            self._lines.append(line)
            for stream in (self._log, self._echo):
                if stream is not None and not stream.closed:
                    with contextlib.suppress(ValueError):  # closed by stop() meanwhile
                        stream.write(line)
                        stream.flush()
        self.proc.stdout.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        """All its output so far (from the file, or the lines kept); readable after stop."""
        if self.log_path is None:
            return "".join(list(self._lines))
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int | None = None) -> str:
        """Its last ``lines`` lines of output (``tail_lines`` by default)."""
        n = self.tail_lines if lines is None else lines
        return "\n".join(self.log().splitlines()[-n:])

    def _where(self) -> str:
        return f" ({self.log_path})" if self.log_path is not None else ""

    def wait_for_log(self, text: str, timeout: float = 300.0, poll: float = 0.2) -> None:
        """Return once ``text`` is in its output; :class:`NodeError` with its last lines when
        it exits first, :class:`NodeTimeoutError` when ``timeout`` s pass."""
        deadline = time.monotonic() + timeout
        while True:
            if text in self.log():
                return
            if not self.alive():
                if self._drain is not None:  # the pipe may still hold the last lines
                    self._drain.join(timeout=5)
                    if text in self.log():
                        return
                raise NodeError(f"{self.name} exited with {self.proc.returncode} before "
                                f"printing {text!r}; its last lines{self._where()}:\n"
                                f"{self.tail()}")
            if time.monotonic() >= deadline:
                raise NodeTimeoutError(f"{self.name} did not print {text!r} within "
                                       f"{timeout:.0f} s; its last lines{self._where()}:\n"
                                       f"{self.tail()}")
            time.sleep(poll)

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Wait for the node's ``ready: listening on`` line (see :meth:`wait_for_log`)."""
        self.wait_for_log(READY, timeout)

    def stop(self, timeout: float | None = None) -> int:
        """SIGINT, as Ctrl-C and ``ros2 launch`` do; SIGKILL after ``timeout`` s (default
        ``stop_timeout``). Its exit code; its output stays readable."""
        interrupt(self.proc, self.stop_timeout if timeout is None else timeout)
        if self._drain is not None:
            self._drain.join(timeout=5)  # a grandchild may hold the pipe open: not forever
        if self._log is not None:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
