"""``seg-perception play``: bag messages on live topics with their timing, and /clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from ros_harness import NodeProcess, Probe
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from shared_data import REPO

from seg_perception.offline.topics import camera_info_msg, image_msg, make_header
from seg_perception.offline.writer import BagWriter
from seg_perception.ros.player import BagPlayer, PlayOptions, message_class, qos_for
from seg_perception.runtime.geometry import CameraModel

pytestmark = pytest.mark.integration

W, H = 160, 120
START = 1_600_000_000 * 10**9  # bag time of the first message (ns)
PERIOD = 200_000_000  # 5 Hz


def frame(i: int) -> np.ndarray:
    img = np.full((H, W, 3), (90, 90, 95), np.uint8)
    img[: H // 3] = (120, 160, 220)
    img[H // 2:, (10 * i) % W:] = (200, 30, 30)
    return img


def make_bag(path: Path, topic: str = "/image", n: int = 5) -> list[tuple[int, int]]:
    """``n`` frames on ``topic`` (+ camera_info) at 5 Hz; header stamp = log time + 1 ms.

    Returns the recorded header stamps (sec, nanosec).
    """
    ns = topic.rsplit("/", 1)[0]
    model = CameraModel.from_fov(W, H, 90.0)
    stamps = []
    with BagWriter(path) as bag:
        for i in range(n):
            log_time = START + i * PERIOD
            stamp = log_time + 1_000_000
            header = make_header(stamp // 10**9, stamp % 10**9, "camera_optical")
            bag.write(topic, image_msg(frame(i), "rgb8", header), log_time)
            bag.write(f"{ns}/camera_info", camera_info_msg(model, header), log_time)
            stamps.append((stamp // 10**9, stamp % 10**9))
    return stamps


def ns_of(t: object) -> int:
    return t.sec * 10**9 + t.nanosec


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    p = Probe("play_test_probe")
    yield p
    p.close()
    rclpy.try_shutdown()


def test_message_class_and_qos() -> None:
    assert message_class("sensor_msgs/msg/Image") is Image
    assert message_class("sensor_msgs/CameraInfo") is CameraInfo
    with pytest.raises(ImportError, match="not installed"):
        message_class("no_such_msgs/msg/Thing")
    zero = QosTime(0, 0)

    def recorded(rel: QosReliability, dur: QosDurability, depth: int = 5) -> Qos:
        return Qos(QosHistory.KEEP_LAST, depth, rel, dur, zero, zero, QosLiveliness.AUTOMATIC,
                   zero, False)

    camera = qos_for("/cam/image_raw", [recorded(QosReliability.BEST_EFFORT,
                                                 QosDurability.VOLATILE)])
    assert camera.reliability == ReliabilityPolicy.BEST_EFFORT
    assert camera.durability == DurabilityPolicy.VOLATILE
    latched = qos_for("/map", [recorded(QosReliability.RELIABLE,
                                        QosDurability.TRANSIENT_LOCAL, 1)])
    assert latched.durability == DurabilityPolicy.TRANSIENT_LOCAL
    mixed = qos_for("/x", [recorded(QosReliability.RELIABLE, QosDurability.VOLATILE),
                           recorded(QosReliability.BEST_EFFORT, QosDurability.VOLATILE)])
    assert mixed.reliability == ReliabilityPolicy.RELIABLE
    unknown = qos_for("/image", [])
    assert (unknown.reliability, unknown.depth) == (ReliabilityPolicy.RELIABLE, 10)
    assert qos_for("/tf_static", []).durability == DurabilityPolicy.TRANSIENT_LOCAL


def test_timing_rate_remap_topics_and_loop(tmp_path: Path, probe: Probe) -> None:
    """In-process player: messages keep their spacing / rate; /clock is bag time."""
    make_bag(tmp_path / "bag", "/cam/image_raw", n=5)
    arrivals: list[tuple[float, int]] = []
    probe.node.create_subscription(
        Image, "/timing/image", lambda m: arrivals.append((time.monotonic(),
                                                           ns_of(m.header.stamp))), 50)
    probe.subscribe(Clock, "/clock")
    node = Node("player_under_test")
    try:
        options = PlayOptions(rate=2.0, topics=["/cam/image_raw"], delay=1.0,
                              remap={"/cam/image_raw": "/timing/image"})
        player = BagPlayer(node, tmp_path / "bag", options)
        assert player.topics == ["/timing/image"]  # camera_info left out by --topics
        stats = player.play()
        assert stats.published == {"/timing/image": 5} and stats.loops == 1
        probe.wait_until(lambda: len(arrivals) == 5, timeout=60, what="5 frames")
        gaps = np.diff([t for t, _ in arrivals])
        # 200 ms recorded at rate 2: 100 ms apart; never faster (a loaded machine may be
        # slower: no upper bound)
        assert float(np.median(gaps)) > 0.05, gaps
        clocks = [ns_of(m.clock) for m in probe.messages("/clock")]
        assert clocks and min(clocks) >= START and max(clocks) <= START + 4 * PERIOD
        assert clocks == sorted(clocks)  # time never runs backwards within a loop
        assert stats.clock_messages >= len(clocks)

        # --loop plays again until stopped.
        looped = BagPlayer(node, tmp_path / "bag", PlayOptions(rate=8.0, loop=True, delay=0,
                                                               clock=False))
        def stop_after_two_loops() -> None:
            deadline = time.monotonic() + 120
            while looped.stats.loops < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            looped.stop()

        stopper = threading.Thread(target=stop_after_two_loops)
        stopper.start()
        stats = looped.play()
        stopper.join()
        assert stats.loops >= 2 and stats.clock_messages == 0
    finally:
        node.destroy_node()


def test_cli_errors(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    base = [sys.executable, "-m", "seg_perception", "play"]
    out = subprocess.run([*base, "--help"], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=60)
    assert out.returncode == 0 and "--rate" in out.stdout and "/clock" in out.stdout
    (tmp_path / "junk.mcap").write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 100)
    out = subprocess.run([*base, str(tmp_path / "junk.mcap")], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=60)
    assert out.returncode == 2 and "cannot read bag" in out.stderr
    assert "Traceback" not in out.stderr
    make_bag(tmp_path / "bag")
    out = subprocess.run([*base, str(tmp_path / "bag"), "--topics", "/nope"],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert out.returncode == 2 and "/nope" in out.stderr and "/image" in out.stderr


def test_play_drives_seg_node_on_bag_time(tmp_path: Path, probe: Probe) -> None:
    """seg_node with use_sim_time: outputs carry the recorded stamps; its clock is the bag's."""
    from diagnostic_msgs.msg import DiagnosticArray

    ns = "/play_it"
    stamps = make_bag(tmp_path / "bag", f"{ns}/image", n=10)
    outputs = ("labels", "labels_color", "overlay", "confidence", "drivable/mask")
    for name in outputs:
        probe.subscribe(Image, f"{ns}/{name}")
    probe.subscribe(Clock, "/clock")
    probe.subscribe(DiagnosticArray, "/diagnostics")
    node = NodeProcess(tmp_path / "node.log",
                       {"model": "tiny_seg", "device": "cpu", "use_sim_time": True,
                        "diagnostics_period": 0.5}, namespace=ns)
    try:
        node.wait_for_log("ready: listening on")

        def play() -> None:
            done = subprocess.run(
                [sys.executable, "-m", "seg_perception", "play", str(tmp_path / "bag"),
                 "--delay", "2.0"],
                capture_output=True, text=True, cwd=REPO, timeout=120,
                env=dict(os.environ, PYTHONUNBUFFERED="1"))
            assert done.returncode == 0, done.stderr
            assert "20 messages published" in done.stderr

        # A loaded machine may discover the player after its frames went out: the bag is
        # played again until every output has come.
        probe.wait_until(lambda: all(probe.messages(f"{ns}/{n}") for n in outputs),
                         timeout=300, what="outputs of seg_node", tick=play, period=1.0)
        recorded = set(stamps)
        for name in outputs:
            got = {(m.header.stamp.sec, m.header.stamp.nanosec)
                   for m in probe.messages(f"{ns}/{name}")}
            assert got and got <= recorded, name  # header stamps = the recorded ones
        clocks = [ns_of(m.clock) for m in probe.messages("/clock")]
        end = START + 9 * PERIOD
        assert clocks and all(START <= c <= end for c in clocks)
        # The node's own clock ran on bag time: its diagnostics are stamped inside the bag.
        diag = [ns_of(m.header.stamp) for m in probe.messages("/diagnostics")
                if any(ns.strip("/") in s.name for s in m.status)]
        assert any(START <= t <= end + 10**9 for t in diag), (diag, node.log())
    finally:
        assert node.stop() == 0, node.log()


def test_ctrl_c_stops_cleanly(tmp_path: Path, probe: Probe) -> None:
    make_bag(tmp_path / "bag")
    probe.subscribe(Image, "/image", reliable=False)
    before = len(probe.messages("/image"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "seg_perception", "play", str(tmp_path / "bag"), "--loop",
         "--rate", "4", "--delay", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    first = b""
    while b"playing" not in first and proc.poll() is None:  # started (logs "playing ...")
        first += proc.stdout.readline()
    # a few loops (5 frames each) have come out
    probe.wait_until(lambda: len(probe.messages("/image")) - before > 10 or proc.poll()
                     is not None, timeout=120, what="more than two loops of frames")
    assert proc.poll() is None, first.decode()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    text = (first + out).decode()
    assert proc.returncode == 0, text
    assert "stopped" in text and "messages published" in text and "Traceback" not in text
