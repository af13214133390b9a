"""NodeProcess: the command line callers pass, the ready line, a node that dies or hangs, a
chatty node on a pipe, and stopping it the way Ctrl-C does.

A stand-in node (a module written to tmp_path, started as ``python -m``) replaces seg_node:
no ROS here, only the process handling.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from seg_perception.tools.node_process import (
    READY,
    NodeError,
    NodeProcess,
    NodeTimeoutError,
    node_command,
)

FAKE_NODE = '''
import os, signal, sys
args = sys.argv[sys.argv.index("--ros-args") + 1:]
params = dict(v.split(":=", 1) for k, v in zip(args, args[1:]) if k == "-p")
mode = params.get("mode", "ready")
print("args", " ".join(args))
print("domain", os.environ.get("ROS_DOMAIN_ID"), "profile",
      os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"))
if mode == "die":
    for i in range(100):
        print(f"line {i}")
    sys.exit(3)
if mode == "chatty":  # far more than a pipe holds (64 KiB) before the ready line
    sys.stdout.write(("x" * 99 + "\\n") * 3000)
if mode == "deaf":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
if mode != "silent":
    print("ready: listening on /fake/image")
try:
    while True:
        signal.pause()
except KeyboardInterrupt:
    print("bye")
'''


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The stand-in node's module name, importable by the child (PYTHONPATH)."""
    (tmp_path / "fake_seg_node.py").write_text(FAKE_NODE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("ROS_DOMAIN_ID", "77")
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/some/profile.xml")
    return "fake_seg_node"


def test_the_command_line_callers_pass() -> None:
    cmd = node_command({"cameras": ["front", "rear"], "use_tf": False, "grid.x_min": 0.5},
                       namespace="/ns", remaps={"image": "/cam/image_raw"},
                       params_file=Path("/p.yaml"))
    assert cmd == [sys.executable, "-m", "seg_perception.ros.node", "--ros-args",
                   "-r", "__ns:=/ns", "-r", "image:=/cam/image_raw", "--params-file", "/p.yaml",
                   "-p", "cameras:=[front,rear]", "-p", "use_tf:=False", "-p", "grid.x_min:=0.5"]
    assert node_command(module="m") == [sys.executable, "-m", "m", "--ros-args"]


def test_ready_then_sigint_in_a_log_file_with_the_callers_environment(tmp_path: Path,
                                                                      fake: str) -> None:
    log = tmp_path / "node.log"
    with NodeProcess(log, {"mode": "ready"}, namespace="/fake", module=fake) as node:
        node.wait_ready(timeout=60)
        assert node.alive()
    assert node.returncode == 0 and node.stop() == 0  # a second stop is harmless
    text = log.read_text()
    assert "args -r __ns:=/fake -p mode:=ready" in text
    assert "domain 77 profile /some/profile.xml" in text
    assert READY in text and text.rstrip().endswith("bye")
    assert node.log() == text


def test_a_chatty_node_on_a_pipe_does_not_block(fake: str) -> None:
    echo = io.StringIO()
    node = NodeProcess(None, {"mode": "chatty"}, module=fake, echo=echo)
    try:
        node.wait_ready(timeout=60)
    finally:
        assert node.stop() == 0
    assert node.log().count("x" * 99) == 3000 and "bye" in node.log()
    assert echo.getvalue() == node.log()


def test_a_log_file_and_an_echo_both_get_every_line(tmp_path: Path, fake: str) -> None:
    echo = io.StringIO()
    with NodeProcess(tmp_path / "n.log", {"mode": "ready"}, module=fake, echo=echo) as node:
        node.wait_ready(timeout=60)
    assert (tmp_path / "n.log").read_text() == echo.getvalue()
    assert READY in echo.getvalue() and "bye" in echo.getvalue()


def test_a_node_that_dies_before_ready_says_so_with_its_last_lines(tmp_path: Path,
                                                                  fake: str) -> None:
    log = tmp_path / "die.log"
    node = NodeProcess(log, {"mode": "die"}, module=fake)
    with pytest.raises(NodeError, match=r"fake_seg_node exited with 3 before printing") as exc:
        node.wait_ready(timeout=60)
    message = str(exc.value)
    assert str(log) in message and "line 99" in message
    assert "line 0\n" not in message  # the last lines, not the whole log
    assert not isinstance(exc.value, TimeoutError)
    assert node.stop() == 3


def test_a_node_that_never_gets_ready_times_out(fake: str) -> None:
    node = NodeProcess(None, {"mode": "silent"}, module=fake)
    try:
        with pytest.raises(NodeTimeoutError, match="did not print") as exc:
            node.wait_for_log(READY, timeout=1.0)
        assert isinstance(exc.value, TimeoutError) and "domain 77" in str(exc.value)
        assert node.alive()
    finally:
        assert node.stop() == 0


def test_a_node_deaf_to_sigint_is_killed_after_the_timeout(fake: str) -> None:
    node = NodeProcess(None, {"mode": "deaf"}, module=fake, stop_timeout=1.0)
    node.wait_ready(timeout=60)
    assert node.stop() == -9 and not node.alive()
