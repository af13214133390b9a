"""The real ROS 2 tools for tests: find them, build the package with colcon, run `ros2 launch`.

The tools come from ../shared/ros2/install.sh built into this venv (`make test` does that when
../shared is there) or from a sourced ROS 2 install (/opt/ros/<distro>: its `ros2` on PATH
and its Python packages on PYTHONPATH). Where neither is present the tests that need them
skip, naming what is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from shared_data import REPO
from waiting import python_stacks

VENV_BIN = Path(sys.executable).parent
KIT_HINT = ("run `make test` with ../shared beside the checkout (it builds ../shared/ros2 into "
            ".venv), or source a ROS 2 install")
PID_LINE = re.compile(r"\[INFO\] \[([^\]]+)\]: process started with pid \[(\d+)\]")


def missing_modules(*names: str) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


def ros2_executable() -> Path | None:
    """`ros2` of this venv (the kit) or of a sourced ROS 2 install."""
    local = VENV_BIN / "ros2"
    if local.exists():
        return local
    found = shutil.which("ros2")
    return Path(found) if found else None


def require_ros2_launch() -> Path:
    """Skip unless `ros2 launch`, launch_ros and colcon are all here; the `ros2` path."""
    ros2 = ros2_executable()
    missing = missing_modules("launch", "launch_ros", "ros2launch", "ros2param", "ros2topic")
    if ros2 is None or missing:
        what = ", ".join((["the `ros2` command"] if ros2 is None else []) + missing)
        pytest.skip(f"real ROS 2 launch tools absent ({what}): {KIT_HINT}")
    if not (VENV_BIN / "colcon").exists() and shutil.which("colcon") is None:
        pytest.skip("colcon is not installed (it is in requirements.txt)")
    return ros2


def require_ros2_lifecycle() -> Path:
    """Skip unless `ros2 lifecycle` and `ros2 param` are here; the `ros2` path."""
    ros2 = ros2_executable()
    missing = missing_modules("ros2cli", "ros2lifecycle", "ros2param")
    if ros2 is None or missing:
        what = ", ".join((["the `ros2` command"] if ros2 is None else []) + missing)
        pytest.skip(f"real ROS 2 lifecycle tools absent ({what}): {KIT_HINT}")
    return ros2


def require_vision_msgs() -> None:
    if missing_modules("vision_msgs"):
        pytest.skip(f"vision_msgs (LabelInfo) is not installed: {KIT_HINT}")


def ros_env(drop: Sequence[str] = ()) -> dict[str, str]:
    """This process's environment (DDS isolation from conftest) plus the kit's ament prefix."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    prefix = Path(sys.prefix)
    if (prefix / "share" / "ament_index").is_dir():  # what .venv/ros2_env.sh adds
        env["AMENT_PREFIX_PATH"] = os.pathsep.join(
            p for p in (str(prefix), env.get("AMENT_PREFIX_PATH", "")) if p)
    for name in drop:
        env.pop(name, None)
    return env


def colcon_build(workspace: Path) -> Path:
    """`colcon build` of a copy of this checkout in ``workspace``; the install folder."""
    src = workspace / "src" / "seg_perception"
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "install", "log", "runs",
                                    "demo_out", "__pycache__", "*.egg-info", ".pytest_cache",
                                    "test")
    shutil.copytree(REPO, src, ignore=ignore)
    colcon = VENV_BIN / "colcon" if (VENV_BIN / "colcon").exists() else Path(
        shutil.which("colcon") or "colcon")
    proc = subprocess.run(
        [str(colcon), "build", "--base-paths", "src", "--build-base", "build",
         "--install-base", "install", "--event-handlers", "console_direct-"],
        cwd=workspace, env=ros_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    install = workspace / "install"
    assert (install / "setup.bash").is_file()
    return install


_SESSION_INSTALL: dict[str, Path] = {}


def session_install(factory: pytest.TempPathFactory) -> Path:
    """:func:`colcon_build` once per test session (the launch and lifecycle tests share it);
    skips like :func:`require_ros2_launch`."""
    require_ros2_launch()
    if "install" not in _SESSION_INSTALL:
        _SESSION_INSTALL["install"] = colcon_build(factory.mktemp("colcon_ws"))
    return _SESSION_INSTALL["install"]


def process_env(pid: int) -> dict[str, str]:
    """The environment a running process was started with (Linux /proc)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                if "=" in item)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie has exited; its parent just has not reaped it yet
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class RosLaunch:
    """`ros2 launch ARGS` exactly as a user types it, after `. install/setup.bash`.

    Output (stdout and stderr) goes to a log file the test reads. :meth:`interrupt` sends
    SIGINT (Ctrl-C); :meth:`close` makes sure nothing it started outlives the test.
    """

    def __init__(self, install: Path, args: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        quoted = " ".join(_quote(a) for a in args)
        script = f". {_quote(str(install / 'setup.bash'))} && exec ros2 launch {quoted}"
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        env = dict(env or ros_env())
        env.setdefault("ROS_LOG_DIR", str(log_path.parent / "ros_log"))  # not in ~/.ros
        self.proc = subprocess.Popen(["bash", "-c", script], stdin=subprocess.DEVNULL,
                                     stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self._seen_pids: dict[str, int] = {}

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """Processes launch reported starting: {'seg_node-1': pid, ...}."""
        self._seen_pids.update({name: int(pid) for name, pid in PID_LINE.findall(self.log())})
        return dict(self._seen_pids)

    def wait_for(self, pattern: str, timeout: float = 240.0, exited_ok: bool = False) -> str:
        """Wait until ``pattern`` (a regular expression) appears in the output; the match."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log())
            if found:
                return found.group(0)
            if self.proc.poll() is not None and not exited_ok:
                raise AssertionError(f"ros2 launch exited ({self.proc.returncode}) before "
                                     f"{pattern!r}:\n{self.log()}")
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {pattern!r}:\n{self.log()}")

    def wait_exit(self, timeout: float = 120.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"ros2 launch did not exit in {timeout} s:\n{self.log()}\n"
                                 + python_stacks(self.proc.pid)) from exc

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl-C: SIGINT to `ros2 launch`, which forwards it to what it started."""
        self.pids()
        self.proc.send_signal(signal.SIGINT)
        return self.wait_exit(timeout)

    def stop_cleanly(self, executable: str) -> None:
        """Ctrl-C: `ros2 launch` and ``executable`` (e.g. seg_node) end without error or
        traceback, and no process it started is left."""
        pids = self.pids()
        code = self.interrupt()
        log = self.log()
        assert code == 0, log
        assert re.search(rf"\[{executable}-\d+\]: process has finished cleanly", log), log
        assert "Traceback" not in log, log
        deadline = time.monotonic() + 60
        while any(pid_alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [n for n, p in pids.items() if pid_alive(p)], log

    def close(self) -> None:
        """Stop `ros2 launch` and every process it reported, whatever state the test left."""
        pids = self.pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for pid in pids.values():
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        # Anything else still in its session (it was started in a new one).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def run_ros2(args: Sequence[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    """One `ros2 ...` command line, the CLI a user debugs with (pass --no-daemon where the
    verb has it: a spawned daemon would outlive the test)."""
    ros2 = ros2_executable()
    assert ros2 is not None
    return subprocess.run([str(ros2), *args], env=ros_env(), capture_output=True, text=True,
                          timeout=timeout)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
