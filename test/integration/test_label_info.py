"""``label_info`` (vision_msgs/LabelInfo): the class map, once, to subscribers that join late."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros2_tools import require_vision_msgs
from ros_harness import NodeProcess, Probe

from seg_perception.ros.label_info import build_label_info, label_info_qos, label_info_type
from seg_perception.runtime.models import get_entry
from seg_perception.runtime.models.zoo import DEFAULT_MODEL

CAMVID_NAMES = get_entry(DEFAULT_MODEL).meta.class_names  # what `model: default` runs


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    p = Probe("label_info_probe")
    yield p
    p.close()
    rclpy.try_shutdown()


def test_message_maps_every_class_id_to_its_name() -> None:
    require_vision_msgs()
    meta = get_entry("pidnet_s").meta
    msg = build_label_info(meta)
    assert [(c.class_id, c.class_name) for c in msg.class_map] == list(
        enumerate(meta.class_names))
    assert len(msg.class_map) == 19 and msg.class_map[0].class_name == "road"
    assert msg.threshold == 0.0  # labels are the arg-max: nothing is cut off
    assert build_label_info(meta, threshold=0.5).threshold == 0.5
    with pytest.raises(ValueError, match="threshold"):
        build_label_info(meta, threshold=1.5)
    qos = label_info_qos()
    assert qos.reliability == ReliabilityPolicy.RELIABLE
    assert qos.durability == DurabilityPolicy.TRANSIENT_LOCAL and qos.depth == 1


def test_without_vision_msgs_one_info_line(monkeypatch: pytest.MonkeyPatch,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    """Simulated absence (import of vision_msgs fails): one info line, no publisher."""
    monkeypatch.setitem(sys.modules, "vision_msgs", None)
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", None)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("label_info_absent", namespace="/cam0", context=context)
    try:
        assert label_info_type(node) is None
        topics = [t for t, _ in node.get_publisher_names_and_types_by_node(
            "label_info_absent", "/cam0")]
        assert "/cam0/label_info" not in topics
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
    lines = [line for line in capfd.readouterr().err.splitlines() if "vision_msgs" in line]
    assert len(lines) == 1 and "[INFO]" in lines[0], lines
    assert "/cam0/label_info" in lines[0] and "not published" in lines[0]


@pytest.mark.integration
def test_late_subscriber_gets_the_class_map_once(tmp_path: Path, probe: Probe) -> None:
    """Over DDS: a transient-local subscriber created after start-up still gets the map."""
    require_vision_msgs()
    from vision_msgs.msg import LabelInfo

    probe.subscribe(DiagnosticArray, "/diagnostics")

    def diagnostics() -> list[DiagnosticArray]:
        return [m for m in probe.messages("/diagnostics")
                if any(st.name.startswith("/li/seg_node") for st in m.status)]

    node = NodeProcess(tmp_path / "node.log", {"device": "cpu", "warmup": False},
                       namespace="/li")
    try:
        # The map was published before the ready line: both subscriptions below come late.
        node.wait_for_log("ready: listening on")
        late: list[LabelInfo] = []
        volatile: list[LabelInfo] = []
        lock = threading.Lock()

        def keep(into: list[LabelInfo]) -> object:
            def cb(msg: LabelInfo) -> None:
                with lock:
                    into.append(msg)
            return cb

        probe.node.create_subscription(LabelInfo, "/li/label_info", keep(late),
                                       label_info_qos())
        live = probe.node.create_subscription(
            LabelInfo, "/li/label_info", keep(volatile),
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE))
        probe.wait_until(lambda: bool(late), timeout=60, what="label_info (transient local)")
        # Published once per model: nothing more arrives while the node runs on for three of
        # its diagnostics periods (1 s) with the volatile subscription matched.
        probe.wait_until(lambda: live.get_publisher_count() > 0, timeout=60,
                         what="the volatile subscription matched")
        start = len(diagnostics())
        probe.wait_until(lambda: len(diagnostics()) >= start + 3, timeout=120,
                         what="three more /diagnostics from the node")
        with lock:
            assert len(late) == 1 and volatile == [], (len(late), len(volatile))
        msg = late[0]
        assert [(c.class_id, c.class_name) for c in msg.class_map] == list(
            enumerate(CAMVID_NAMES))
        assert msg.threshold == 0.0
        assert msg.header.stamp.sec > 0  # stamped when published (wall clock here)
    finally:
        assert node.stop() == 0, node.log()
