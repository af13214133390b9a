"""seg_node as a separate process over real DDS (isolated domain, see conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from images import driving_frames
from ros_harness import NodeProcess, Probe
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from seg_perception.runtime.image_codec import encode_compressed, encode_raw

pytestmark = pytest.mark.integration

IMAGE_OUTPUTS = {
    "labels": "mono8", "labels_color": "rgb8", "overlay": "rgb8", "confidence": "mono8",
    "drivable/mask": "mono8",
}
NODE_PARAMS = {"model": "tiny_seg", "device": "cpu"}


def header(i: int, frame_id: str = "camera_optical") -> Header:
    return Header(stamp=Time(sec=1_700_000_000 + i, nanosec=250_000_000 + i), frame_id=frame_id)


def raw_msg(rgb: np.ndarray, i: int, encoding: str = "rgb8", padding: int = 0) -> Image:
    data, step = encode_raw(rgb, encoding, row_padding=padding)
    return Image(header=header(i), height=rgb.shape[0], width=rgb.shape[1], encoding=encoding,
                 is_bigendian=0, step=step, data=bytes(data))


def stamps(probe: Probe, topic: str) -> set[tuple[int, int]]:
    return {(m.header.stamp.sec, m.header.stamp.nanosec) for m in probe.messages(topic)}


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    p = Probe("seg_test_probe")
    yield p
    p.close()
    rclpy.try_shutdown()


def start_node(tmp_path: Path, probe: Probe, ns: str, **params: object) -> NodeProcess:
    node = NodeProcess(tmp_path / f"{ns.strip('/')}.log", {**NODE_PARAMS, **params},
                       namespace=ns)
    for topic in IMAGE_OUTPUTS:
        probe.subscribe(Image, f"{ns}/{topic}")
    node.wait_for_log("ready: listening on")
    return node


def send_until_processed(probe: Probe, ns: str, pub: object, msg: object,
                         timeout: float = 60.0) -> None:
    """Publish ``msg`` (re-publishing while the node discovers us) until all outputs arrive."""
    key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
    probe.wait_until(
        lambda: all(key in stamps(probe, f"{ns}/{t}") for t in IMAGE_OUTPUTS),
        timeout=timeout, what=f"outputs for stamp {key}", tick=lambda: pub.publish(msg),
        period=1.0)


def check_outputs(probe: Probe, ns: str, msg: object, width: int, height: int) -> None:
    key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
    for topic, encoding in IMAGE_OUTPUTS.items():
        out = next(m for m in probe.messages(f"{ns}/{topic}")
               if (m.header.stamp.sec, m.header.stamp.nanosec) == key)
        assert out.header.frame_id == msg.header.frame_id, topic
        assert (out.width, out.height) == (width, height), topic
        assert out.encoding == encoding, topic
        channels = 3 if encoding == "rgb8" else 1
        assert out.step == width * channels and len(out.data) == out.step * height, topic
        arr = np.frombuffer(out.data, np.uint8)
        if topic == "labels":
            assert arr.max() < 11
        if topic == "drivable/mask":
            assert set(np.unique(arr)) <= {0, 255}


def test_raw_frames_and_malformed_input(tmp_path: Path, probe: Probe) -> None:
    ns = "/it_raw"
    probe.subscribe(DiagnosticArray, "/diagnostics")
    node = start_node(tmp_path, probe, ns)
    try:
        pub = probe.publisher(Image, f"{ns}/image")
        info_pub = probe.publisher(CameraInfo, f"{ns}/camera_info")
        frames = driving_frames(3)
        for i, rgb in enumerate(frames):
            msg = raw_msg(rgb, i)
            send_until_processed(probe, ns, pub, msg)
            check_outputs(probe, ns, msg, rgb.shape[1], rgb.shape[0])
        # Other encodings, with padded rows, reach the same outputs.
        for j, (enc, pad) in enumerate([("bgr8", 16), ("mono8", 3), ("yuv422", 8),
                                        ("bayer_rggb8", 0), ("mono16", 4)]):
            msg = raw_msg(frames[0], 10 + j, enc, pad)
            send_until_processed(probe, ns, pub, msg)
            check_outputs(probe, ns, msg, frames[0].shape[1], frames[0].shape[0])

        # Malformed messages: each is warned about and skipped; the node keeps going.
        good = frames[1]
        bad_encoding = raw_msg(good, 100)
        bad_encoding.encoding = "rgb_fancy42"
        short = raw_msg(good, 101)
        short.data = bytes(short.data)[: len(short.data) // 2]
        empty = Image(header=header(102), height=0, width=0, encoding="rgb8", step=0)
        info = CameraInfo(header=header(103), width=480, height=360,
                          k=[0.0, 0, 240, 0, 0.0, 180, 0, 0, 1])
        # The subscription keeps only the newest message, so each goes alone until warned.
        for bad_pub, bad, text in ((pub, bad_encoding, "rgb_fancy42"),
                                   (pub, short, "fewer than step*height"),
                                   (pub, empty, "zero size"),
                                   (info_pub, info, "focal length")):
            probe.wait_until(lambda text=text: text in node.log(), timeout=120,
                             what=f"warning {text!r}", tick=lambda p=bad_pub, m=bad: p.publish(m),
                             period=1.0)
        assert node.alive()
        after = raw_msg(good, 104)
        send_until_processed(probe, ns, pub, after)
        check_outputs(probe, ns, after, good.shape[1], good.shape[0])

        def latest() -> dict[str, str]:  # this node's newest /diagnostics report
            status = [s for m in probe.messages("/diagnostics") for s in m.status
                      if ns.strip("/") in s.name]
            return {kv.key: kv.value for kv in status[-1].values} if status else {}

        # Published once a second: wait for a report that has counted the bad frames.
        probe.wait_until(lambda: int(latest().get("frames_bad", 0)) >= 3, timeout=60,
                         what=f"/diagnostics of {ns} counting the bad frames")
        values = latest()
        for key in ("input_rate_hz", "processed_rate_hz", "latency_p50_ms", "latency_p95_ms",
                    "frames_dropped", "model", "device"):
            assert key in values
        assert values["model"] == "tiny_seg" and values["device"] == "cpu"
        assert int(values["frames_bad"]) >= 3
        assert "RANDOM weights" in node.log()  # it says what it runs
    finally:
        assert node.stop() == 0, node.log()


def test_compressed_frames(tmp_path: Path, probe: Probe) -> None:
    ns = "/it_compressed"
    node = start_node(tmp_path, probe, ns, input_transport="compressed")
    try:
        pub = probe.publisher(CompressedImage, f"{ns}/image/compressed")
        frames = driving_frames(2)
        for i, (rgb, fmt) in enumerate(zip(frames, ("jpeg", "png"), strict=True)):
            data, fmt_str = encode_compressed(rgb, fmt)
            msg = CompressedImage(header=header(200 + i), format=fmt_str, data=bytes(data))
            send_until_processed(probe, ns, pub, msg)
            check_outputs(probe, ns, msg, rgb.shape[1], rgb.shape[0])
        data, fmt_str = encode_compressed(frames[0], "jpeg")
        corrupt = CompressedImage(header=header(210), format=fmt_str,
                                  data=bytes(data[:20]) + b"\x00" * 200)
        text = "/it_compressed/image/compressed: frame skipped"
        probe.wait_until(lambda: text in node.log(), timeout=120, what="corrupt JPEG warning",
                         tick=lambda: pub.publish(corrupt), period=1.0)
        data, fmt_str = encode_compressed(frames[1], "jpeg")
        after = CompressedImage(header=header(211), format=fmt_str, data=bytes(data))
        send_until_processed(probe, ns, pub, after)
        assert node.alive()
    finally:
        assert node.stop() == 0, node.log()


def test_invalid_parameter_is_refused_naming_valid_values(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "bad.log", {"device": "gpu0"}, namespace="/it_bad")
    node.proc.wait(timeout=60)
    log = node.log()
    node.stop()
    assert node.proc.returncode != 0
    assert "gpu0" in log and "auto" in log and "cuda" in log


def test_grid_and_boundary_follow_parameters_and_camera_info(tmp_path: Path,
                                                              probe: Probe) -> None:
    from geometry_msgs.msg import PolygonStamped
    from nav_msgs.msg import OccupancyGrid

    from seg_perception.runtime.geometry import CameraModel, CameraMounting, GridSpec
    from seg_perception.sim.scene import SceneSpec, render_scene

    ns = "/it_grid"
    camera = CameraModel.from_fov(480, 270, 75.0)
    mounting = CameraMounting(x=0.5, y=0.0, z=1.6, roll=0.0, pitch=0.08, yaw=0.0)
    spec = GridSpec(0.2, -2.0, 30.0, -8.0, 8.0)
    scene = render_scene(SceneSpec(), camera, mounting, spec)
    # The camera.* parameters give the pose (no tf here: use_tf false); camera_info is paired
    # with each image by stamp, as drivers stamp them.
    params = {"grid_frame": "ego", "use_tf": False, "camera.x": 0.5, "camera.z": 1.6,
              "camera.pitch": 0.08, "grid.resolution": 0.2, "grid.x_min": -2.0,
              "grid.x_max": 30.0, "grid.y_min": -8.0, "grid.y_max": 8.0}
    probe.subscribe(OccupancyGrid, f"{ns}/drivable/grid")
    probe.subscribe(PolygonStamped, f"{ns}/drivable/boundary")
    node = start_node(tmp_path, probe, ns, **params)
    try:
        pub = probe.publisher(Image, f"{ns}/image")
        info_pub = probe.publisher(CameraInfo, f"{ns}/camera_info")
        # Before any camera_info: image outputs flow, the grid waits with a warning.
        first = raw_msg(scene.rgb, 300)
        send_until_processed(probe, ns, pub, first)
        node.wait_for_log("no valid camera_info", timeout=120)
        msg = raw_msg(scene.rgb, 302)
        info = CameraInfo(header=msg.header, width=camera.width, height=camera.height,
                          distortion_model="plumb_bob", d=[0.0] * 5, k=list(camera.K))
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)

        def tick() -> None:
            info_pub.publish(info)
            pub.publish(msg)

        probe.wait_until(lambda: key in stamps(probe, f"{ns}/drivable/grid")
                         and key in stamps(probe, f"{ns}/drivable/boundary"),
                         timeout=60, what="grid and boundary", tick=tick, period=1.0)
        grid = next(m for m in probe.messages(f"{ns}/drivable/grid")
                    if (m.header.stamp.sec, m.header.stamp.nanosec) == key)
        assert grid.header.frame_id == "ego"
        assert abs(grid.info.resolution - 0.2) < 1e-6
        assert (grid.info.width, grid.info.height) == (spec.width, spec.height) == (160, 80)
        assert grid.info.origin.position.x == -2.0 and grid.info.origin.position.y == -8.0
        assert grid.info.origin.orientation.w == 1.0
        cells = np.asarray(grid.data, dtype=np.int8).reshape(spec.height, spec.width)
        assert set(np.unique(cells)) <= {-1, 0, 100}
        # What the camera can see depends only on the camera and its mounting.
        np.testing.assert_array_equal(cells == -1, scene.grid == -1)
        boundary = next(m for m in probe.messages(f"{ns}/drivable/boundary")
                        if (m.header.stamp.sec, m.header.stamp.nanosec) == key)
        assert boundary.header.frame_id == "ego"
        assert len(boundary.polygon.points) <= 64

        # Run-time changes: a camera below the ground is refused, a coarser grid applies.
        from rclpy.parameter import Parameter
        from rclpy.parameter_client import AsyncParameterClient

        client = AsyncParameterClient(probe.node, f"{ns}/seg_node")
        assert client.wait_for_services(timeout_sec=30)

        def set_param(name: str, value: float) -> object:
            future = client.set_parameters([Parameter(name, value=value)])
            probe.wait_until(future.done, timeout=120, what=f"set {name}")
            return future.result().results[0]

        refused = set_param("camera.z", -1.0)
        assert not refused.successful and "camera.z" in refused.reason
        assert set_param("grid.resolution", 0.4).successful
        coarse = raw_msg(scene.rgb, 303)
        coarse_info = CameraInfo(header=coarse.header, width=camera.width,
                                 height=camera.height, k=list(camera.K))
        key2 = (coarse.header.stamp.sec, coarse.header.stamp.nanosec)

        def tick2() -> None:
            info_pub.publish(coarse_info)
            pub.publish(coarse)

        probe.wait_until(lambda: key2 in stamps(probe, f"{ns}/drivable/grid"), timeout=60,
                         what="grid after the change", tick=tick2, period=1.0)
        grid2 = next(m for m in probe.messages(f"{ns}/drivable/grid")
                     if (m.header.stamp.sec, m.header.stamp.nanosec) == key2)
        assert abs(grid2.info.resolution - 0.4) < 1e-6 and grid2.info.width == 80
        assert node.alive()
    finally:
        assert node.stop() == 0, node.log()


def test_inconsistent_grid_parameters_are_refused(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "grid_bad.log",
                       {**NODE_PARAMS, "grid.x_min": 10.0, "grid.x_max": 5.0},
                       namespace="/it_grid_bad")
    node.proc.wait(timeout=60)
    log = node.log()
    node.stop()
    assert node.proc.returncode != 0
    assert "grid.x_min" in log, log


def test_official_twinlitenet_checkpoint_runs_in_the_node(tmp_path: Path, probe: Probe) -> None:
    from shared_data import BDD, TWINLITENET_WEIGHTS, require

    weights = require(TWINLITENET_WEIGHTS)
    frame_path = sorted(require(BDD).glob("*.jpg"))[0]
    rgb = cv2.cvtColor(cv2.imread(str(frame_path)), cv2.COLOR_BGR2RGB)
    ns = "/it_twinlite"
    node = start_node(tmp_path, probe, ns, model="twinlitenet", checkpoint=str(weights))
    try:
        assert "twinlitenet" in node.log() and str(weights) in node.log()
        pub = probe.publisher(Image, f"{ns}/image")
        msg = raw_msg(rgb, 400)
        send_until_processed(probe, ns, pub, msg, timeout=90)
        check_outputs(probe, ns, msg, rgb.shape[1], rgb.shape[0])
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        out = next(m for m in probe.messages(f"{ns}/drivable/mask")
                   if (m.header.stamp.sec, m.header.stamp.nanosec) == key)
        mask = np.frombuffer(out.data, np.uint8).reshape(out.height, out.width) == 255
        h = mask.shape[0]
        # A road ahead: drivable pixels in the lower half, none in the top third (sky).
        assert mask[h // 2:].mean() > 0.15 and mask[: h // 3].mean() < 0.01
    finally:
        assert node.stop() == 0, node.log()
