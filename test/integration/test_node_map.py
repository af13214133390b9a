"""seg_node's drivable/map: made only while subscribed, never without its odom transform
(a warning naming both frames), cleared with one info line when time goes back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from rclpy.parameter import Parameter
from ros_harness import spinning
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from waiting import wait_until

from seg_perception.runtime.geometry import CameraModel
from seg_perception.runtime.image_codec import encode_raw

pytestmark = pytest.mark.integration

H, W = 48, 64
T0 = 1_700_000_000


class FakeMapPublisher:
    """Stands in for drivable/map's publisher: one subscriber, messages kept."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def get_subscription_count(self) -> int:
        return 1

    def publish(self, msg: Any) -> None:
        self.sent.append(msg)


def _odom(node: Any, sec: int, x: float) -> None:
    ts = TransformStamped()
    ts.header.stamp = Time(sec=sec, nanosec=0)
    ts.header.frame_id, ts.child_frame_id = "odom", "base_footprint"
    ts.transform.translation.x = x
    ts.transform.rotation.w = 1.0
    node.tf.buffer.set_transform(ts, "test")


def test_the_map_needs_odom_and_clears_when_time_goes_back() -> None:
    pytest.importorskip("tf2_ros", reason="the test puts odom into the node's tf2 buffer")
    from seg_perception.ros import tf_pose
    from seg_perception.ros.node import SegNode

    if not rclpy.ok():
        rclpy.init()  # spinning() shuts it down again
    node = SegNode(namespace="/it_map", parameter_overrides=[
        Parameter("model", value="tiny_seg"), Parameter("device", value="cpu"),
        Parameter("cpu_threads", value=1), Parameter("warmup", value=False),
        Parameter("use_tf", value=False), Parameter("camera.pitch", value=0.3)])
    if not isinstance(node.tf, tf_pose.TfPoses):
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
        pytest.skip("tf2_ros is not used here")
    model = CameraModel.from_fov(W, H, 90.0)
    k = list(map(float, np.asarray(model.K).ravel()))
    data, step = encode_raw(np.full((H, W, 3), 90, np.uint8), "rgb8")
    with spinning(node):
        worker = node.worker
        real_pub, fake = worker.map_pub, FakeMapPublisher()
        worker.map_pub = fake
        warned: list[tuple[str, str]] = []
        real_warn = worker.warn

        def warn(key: str, message: str, level: str = "warning") -> None:
            warned.append((key, message))
            real_warn(key, message, level)

        worker.warn = warn
        channel = node.cameras[0]

        def send(sec: int) -> None:
            hdr = Header(stamp=Time(sec=sec, nanosec=0), frame_id="camera_optical")
            channel._on_camera_info(CameraInfo(
                header=hdr, width=W, height=H, k=k, d=[0.0] * 5, distortion_model="plumb_bob",
                r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                p=[*k[:3], 0.0, *k[3:6], 0.0, *k[6:], 0.0]))
            channel._on_image(Image(header=hdr, height=H, width=W, encoding="rgb8",
                                    step=step, data=bytes(data)))

        def warned_of(key: str) -> bool:
            return any(k == key for k, _ in warned)

        try:
            send(T0)  # no odom yet: no map, a warning naming both frames
            wait_until(lambda: warned_of("map.transform"), "the missing odom warning")
            assert fake.sent == []
            message = next(m for k, m in warned if k == "map.transform")
            assert "odom <- base_footprint" in message
            _odom(node, T0 + 1, 0.0)
            send(T0 + 1)
            wait_until(lambda: len(fake.sent) == 1, "the first map")
            first = fake.sent[0]
            assert first.header.frame_id == "odom" and first.header.stamp.sec == T0 + 1
            assert (first.info.width, first.info.height) == (300, 300)
            assert first.info.origin.position.x == pytest.approx(-30.0)
            node.tf.buffer.clear()  # what tf2 does itself when /clock goes back
            _odom(node, T0 - 10, 5.0)
            send(T0 - 10)  # a bag played again: time went back by 11 s
            wait_until(lambda: warned_of("map.cleared"), "the map cleared")
            wait_until(lambda: len(fake.sent) == 2, "the map after the jump")
            assert fake.sent[1].info.origin.position.x == pytest.approx(-25.0)
        finally:
            worker.map_pub = real_pub
            worker.warn = real_warn

