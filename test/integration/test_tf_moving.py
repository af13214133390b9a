"""seg_node over DDS with a camera that moves on /tf at 10 Hz, its samples not in step with
30 Hz images: a lookup past the newest sample waits for the next /tf message (sized on the
measured period), so every frame gets its grid; with tf2_ros and without it (/tf read
directly)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import NodeProcess, Probe
from ros_msgs import transforms
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from seg_perception.runtime.geometry import BODY_FROM_OPTICAL, CameraModel, Transform
from seg_perception.runtime.image_codec import encode_raw

pytestmark = pytest.mark.integration

pytest.importorskip("tf2_ros", reason="tf2_ros is not installed (the ROS 2 kit of "
                    "../shared/ros2 or a full ROS 2 install provides it)")
from tf2_msgs.msg import TFMessage  # noqa: E402 - after the skip: comes with tf2_ros

CAM = CameraModel.from_fov(160, 120, 80.0)
GRID = {"grid.resolution": 0.25, "grid.x_min": 0.0, "grid.x_max": 20.0, "grid.y_min": -5.0,
        "grid.y_max": 5.0}
LEAD_NS = 50_000_000  # image stamps lead the clock by 50 ms (a half tf period)


def _ts(parent: str, child: str, tr: Transform, stamp: Any = None) -> TransformStamped:
    return transforms([(parent, child, tr)], stamp)[0]


def _info(hdr: Header) -> CameraInfo:
    p = np.zeros(12)
    p[[0, 1, 2, 4, 5, 6, 10]] = np.asarray(CAM.K)[[0, 1, 2, 3, 4, 5, 8]]
    return CameraInfo(header=hdr, width=CAM.width, height=CAM.height, k=list(CAM.K),
                      d=list(CAM.D), distortion_model="plumb_bob", r=list(np.eye(3).ravel()),
                      p=list(p))


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    p = Probe("seg_tf_moving_probe")
    yield p
    p.close()
    rclpy.try_shutdown()


@pytest.mark.parametrize("tf_source", ["tf2_ros", "topics"])
def test_moving_camera_on_tf_at_10_hz_every_frame_gets_its_grid(
        tmp_path: Path, probe: Probe, tf_source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """base_footprint -> pan_link on /tf at 10 Hz (a camera panning), pan_link -> optical on
    /tf_static; images at 30 Hz stamped half a tf period ahead, so most need the /tf
    sample after the one the node has (the 0.05 s tf_timeout alone lost most of them)."""
    from seg_perception.ros import tf_pose

    if tf_source == "topics":
        monkeypatch.setenv(tf_pose.WITHOUT_TF2_ROS_ENV, "1")  # inherited by the node
    ns = f"/it_tf_moving_{tf_source}"
    optical = f"pan_optical_{tf_source}"
    link = f"pan_link_{tf_source}"
    node = NodeProcess(tmp_path / "node.log", {"model": "tiny_seg", "device": "cpu",
                                               "cpu_threads": 1, **GRID}, namespace=ns)
    node.wait_for_log("ready: listening on", timeout=240)
    if tf_source == "topics":
        assert "reading /tf and /tf_static directly" in node.log()
    probe.subscribe(Image, f"{ns}/labels")
    probe.subscribe(OccupancyGrid, f"{ns}/drivable/grid")
    img_pub = probe.publisher(Image, f"{ns}/image")
    info_pub = probe.publisher(CameraInfo, f"{ns}/camera_info")
    tf_pub = probe.node.create_publisher(TFMessage, "/tf", QoSProfile(
        depth=100, reliability=ReliabilityPolicy.RELIABLE))
    clock = probe.node.get_clock()
    rgb = np.random.default_rng(0).integers(0, 255, (CAM.height, CAM.width, 3), np.uint8)
    data, step = encode_raw(rgb, "rgb8")
    sent: list[tuple[int, int]] = []
    timers: list[Any] = []
    enough = threading.Event()  # set once 40 frames are labelled: no more frames then

    def send_tf() -> None:
        now = clock.now()
        yaw = 0.05 * math.sin(now.nanoseconds * 1e-9)
        pan = Transform.from_quaternion((0.0, 0.0, 1.5), (0.0, math.sin(0.05), 0.0,
                                                          math.cos(0.05)))
        turn = Transform.from_quaternion((0.0, 0.0, 0.0), (0.0, 0.0, math.sin(yaw / 2),
                                                           math.cos(yaw / 2)))
        tf_pub.publish(TFMessage(transforms=[_ts("base_footprint", link, turn @ pan,
                                                 now.to_msg())]))

    def send_image() -> None:
        if enough.is_set():  # at least 150 frames (5 s), and on until 40 are labelled
            return
        ns_ = clock.now().nanoseconds + LEAD_NS
        sec, nsec = divmod(ns_, 1_000_000_000)
        hdr = Header(frame_id=optical)
        hdr.stamp.sec, hdr.stamp.nanosec = sec, nsec
        info_pub.publish(_info(hdr))
        img_pub.publish(Image(header=hdr, height=CAM.height, width=CAM.width, encoding="rgb8",
                              step=step, data=bytes(data)))
        sent.append((sec, nsec))

    try:
        with probe.static_tf([_ts(link, optical, Transform.from_matrix(BODY_FROM_OPTICAL,
                                                                       (0, 0, 0)))]):
            probe.wait_until(lambda: img_pub.get_subscription_count() > 0
                             and tf_pub.get_subscription_count() > 0, timeout=30,
                             what="the node's subscriptions")
            timers.append(probe.node.create_timer(0.1, send_tf))
            probe.wait_until(lambda: tf_pub.get_subscription_count() > 0, timeout=30)
            # the first grid: the node has the static chain and a few /tf samples
            probe.wait_until(lambda: len(probe.messages(f"{ns}/drivable/grid")) > 0,
                             timeout=60, what="a first grid", tick=send_image, period=0.1)
            first = len(sent)
            timers.append(probe.node.create_timer(1.0 / 30.0, send_image))
            probe.wait_until(lambda: len(sent) >= 150, timeout=120, what="150 frames sent")

            def labels() -> set[tuple[int, int]]:
                return {(m.header.stamp.sec, m.header.stamp.nanosec)
                        for m in probe.messages(f"{ns}/labels")} & set(sent[first:])

            def grids() -> set[tuple[int, int]]:
                return {(m.header.stamp.sec, m.header.stamp.nanosec)
                        for m in probe.messages(f"{ns}/drivable/grid")}

            # the frames the node processed (labels out; a slow node drops some, counted)
            probe.wait_until(lambda: len(labels()) >= 40, timeout=180,
                             what=f"labels of 40 frames; node log:\n{node.log()[-3000:]}")
            enough.set()
            done = labels()
            # their grids follow the labels (the last ones may still be on their way)
            probe.wait_until(lambda: len(done - grids()) <= 0.05 * len(done), timeout=120,
                             what=f"grids for >= 95% of {len(done)} frames (missing "
                             f"{len(done - grids())} when the wait began); node log:\n"
                             f"{node.log()[-3000:]}")
    finally:
        for t in timers:
            probe.node.destroy_timer(t)
        probe.node.destroy_publisher(tf_pub)
        assert node.stop() == 0, node.log()
