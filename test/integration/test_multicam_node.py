"""seg_node with four cameras: one model, one batched forward pass per cycle, per-camera
outputs under X/, one fused surround grid, per-camera diagnostics, a silent camera."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PolygonStamped, TransformStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.parameter import Parameter
from ros_harness import NodeProcess, Probe
from ros_msgs import image, info, key, transforms
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from seg_perception.runtime.geometry import Transform
from seg_perception.runtime.geometry.fusion import fuse_grids
from seg_perception.runtime.messages import grid_from_message, polygon_from_message
from seg_perception.sim.demo_report import agreement
from seg_perception.sim.rig import SURROUND_GRID, render_rig, surround_rig
from seg_perception.sim.scene import drive_sequence

pytestmark = pytest.mark.integration

CAMERAS = ["front", "left", "right", "rear"]
GRID = {"grid.resolution": SURROUND_GRID.resolution, "grid.x_min": SURROUND_GRID.x_min,
        "grid.x_max": SURROUND_GRID.x_max, "grid.y_min": SURROUND_GRID.y_min,
        "grid.y_max": SURROUND_GRID.y_max}
T0 = 1_700_000_000


def odom_tf(msg: Any) -> TransformStamped:
    """A bag's (rosbags) TransformStamped as rclpy's, stamp and all."""
    t, q = msg.transform.translation, msg.transform.rotation
    tr = Transform.from_quaternion((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
    return transforms([(msg.header.frame_id, msg.child_frame_id, tr)],
                      Time(sec=msg.header.stamp.sec, nanosec=msg.header.stamp.nanosec))[0]


def rig_tf(rig: Any) -> list[TransformStamped]:
    return transforms(list(rig.transforms()))


# --- in process: one model, topics, parameters ----------------------------------------------

def test_a_four_camera_node_holds_one_model_and_names_every_camera(monkeypatch) -> None:
    from seg_perception.ros.node import SegNode
    from seg_perception.runtime.models import checkpoint

    loads: list[int] = []
    real = checkpoint.load_model

    def counting(name: str = "default", ckpt: Any = None, **kwargs: Any) -> Any:
        loaded = real(name, ckpt, **kwargs)
        loads.append(sum(p.numel() for p in loaded.model.parameters()))
        return loaded

    monkeypatch.setattr(checkpoint, "load_model", counting)
    owned = not rclpy.ok()
    if owned:
        rclpy.init()
    node = SegNode(namespace="/it_multi_inproc", parameter_overrides=[
        Parameter("cameras", value=CAMERAS), Parameter("model", value="tiny_seg"),
        Parameter("device", value="cpu"), Parameter("cpu_threads", value=1),
        Parameter("front.input_transport", value="compressed"),
        Parameter("rear.image_type", value="rectified"),
        Parameter("rear.camera.yaw", value=3.0)])
    try:
        tiny = sum(p.numel() for p in
                   __import__("seg_perception.runtime.models", fromlist=["x"])
                   .create_model("tiny_seg").parameters())
        assert loads == [tiny]  # the network's parameters were loaded once, for four cameras
        assert node.pipeline.engine is node.engine
        assert node.worker.pipeline is node.pipeline and len(node.worker.channels) == 4
        # warm-up compiled (OpenVINO) or ran every batch size a cycle can have
        if node.info.backend == "openvino":
            assert node.engine.model.batch_sizes == (1, 2, 3, 4)
        topics = [c.image_topic for c in node.cameras]
        assert topics == ["/it_multi_inproc/front/image/compressed",
                          "/it_multi_inproc/left/image", "/it_multi_inproc/right/image",
                          "/it_multi_inproc/rear/image"]
        assert [c.info_topic for c in node.cameras][3] == "/it_multi_inproc/rear/camera_info"
        pubs = {n for n, _ in node.get_publisher_names_and_types_by_node(
            "seg_node", "/it_multi_inproc")}
        for cam in CAMERAS:
            for t in ("labels", "labels_color", "overlay", "confidence", "drivable/mask",
                      "drivable/grid", "drivable/boundary"):
                assert f"/it_multi_inproc/{cam}/{t}" in pubs, (cam, t)
        assert {"/it_multi_inproc/drivable/grid", "/it_multi_inproc/drivable/boundary"} <= pubs
        assert "/it_multi_inproc/labels" not in pubs  # no unprefixed camera
        configs = node.params.configs
        assert configs["rear"].image_type == "rectified" and configs["front"].image_type == "auto"
        assert configs["rear"].mounting.yaw == 3.0 and configs["left"].mounting.yaw == 0.0
        d = node.describe_parameter("front.input_transport")
        assert d.read_only and d.description.startswith("Camera front:")
        assert not node.describe_parameter("rear.camera.pitch").read_only
        assert node.describe_parameter("cameras").read_only
        # a camera's own value is validated with the others, and named as its own
        res = node.set_parameters([Parameter("rear.camera.z", value=0.0)])[0]
        assert not res.successful and "rear.camera.z = 0.0" in res.reason
        assert node.set_parameters([Parameter("rear.camera.z", value=2.0)])[0].successful
        assert node.params.configs["rear"].mounting.z == 2.0
        assert node.params.configs["front"].mounting.z == 1.5
        statuses = [node.diagnostics_status(), *node.camera_statuses()]
        assert [s.name.rsplit(": ", 1)[1] for s in statuses] == [
            "segmentation", "camera front", "camera left", "camera right", "camera rear"]
        values = {kv.key: kv.value for kv in statuses[0].values}
        assert values["cameras"] == "4" and "cycle_time_p50_ms" in values
    finally:
        node.close()
        node.destroy_node()
        if owned:
            rclpy.try_shutdown()


@pytest.mark.parametrize(("cameras", "expect"), [
    ("[front,front]", "front listed more than once"),
    ("[front,grid]", "'grid' is also the name of a parameter"),
    # without tf, cameras at one camera.* pose would all see the same ground
    ("[front,rear] use_tf", "front and rear have the same camera.* pose"),
])
def test_bad_camera_lists_stop_the_node_with_one_line(tmp_path: Path, cameras: str,
                                                     expect: str) -> None:
    extra = {"use_tf": False} if cameras.endswith(" use_tf") else {}
    node = NodeProcess(tmp_path / "bad.log", {"model": "tiny_seg", "device": "cpu",
                                              "cameras": cameras.split()[0], **extra},
                       namespace="/it_bad_cams")
    node.proc.wait(timeout=120)
    log = node.log()
    node.stop()
    assert node.proc.returncode != 0
    lines = [line for line in log.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and expect in lines[0], log
    assert "Traceback" not in log


# --- over DDS: batches, fused grid, silent camera, diagnostics -------------------------------

@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    p = Probe("seg_multicam_probe")
    yield p
    p.close()
    rclpy.try_shutdown()


def test_four_cameras_over_dds_one_batch_per_cycle_and_a_fused_grid(tmp_path: Path,
                                                                   probe: Probe) -> None:
    pytest.importorskip("tf2_ros", reason="tf2_ros is not installed (the ROS 2 kit "
                        "of ../shared/ros2 or a full ROS 2 install provides it)")
    ns = "/it_multi"
    rig = surround_rig(width=320, height=240)
    scenes = [render_rig(spec, rig, SURROUND_GRID, np.random.default_rng(i))
              for i, spec in enumerate(drive_sequence(3, rng=np.random.default_rng(3)))]
    node = NodeProcess(tmp_path / "node.log", {
        "cameras": "[front,left,right,rear]", "device": "cpu", "cpu_threads": 1,
        "fusion.max_age": 0.25, "fusion.sync_window": 3.0, **GRID}, namespace=ns)
    node.wait_for_log("ready: listening on", timeout=240)
    topics = {f"{ns}/drivable/grid": OccupancyGrid, f"{ns}/drivable/boundary": PolygonStamped,
              "/diagnostics": DiagnosticArray}
    for cam in CAMERAS:
        topics[f"{ns}/{cam}/labels"] = Image
        topics[f"{ns}/{cam}/drivable/grid"] = OccupancyGrid
    for topic, typ in topics.items():
        probe.subscribe(typ, topic)
    try:
        with probe.static_tf(rig_tf(rig)):
            pubs = {c: probe.publisher(Image, f"{ns}/{c}/image") for c in CAMERAS}
            info_pubs = {c: probe.publisher(CameraInfo, f"{ns}/{c}/camera_info") for c in CAMERAS}
            probe.wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()),
                             timeout=30, what="the node's subscriptions")

            def cycle(i: int, scene: Any, cams: list[str], stamp: tuple[int, int]) -> Any:
                hdrs = {c: Header(stamp=Time(sec=stamp[0], nanosec=stamp[1]),
                                  frame_id=rig.camera(c).optical_frame) for c in cams}

                def tick() -> None:
                    for c in cams:
                        info_pubs[c].publish(info(hdrs[c], rig.camera(c).model))
                    for c in cams:
                        pubs[c].publish(image(scene.views[c].rgb, hdrs[c]))

                def fused() -> list[Any]:
                    return [m for m in probe.messages(f"{ns}/drivable/grid") if key(m) == stamp]

                def grids_of_all() -> bool:  # every camera's own grid for this stamp is out
                    return all(any(key(m) == stamp for m in probe.messages(
                        f"{ns}/{c}/drivable/grid")) for c in cams)

                # A camera_info that reached a loaded node after its image leaves that frame
                # without a grid (never waited for): the tick sends the cycle again.
                probe.wait_until(lambda: bool(fused()) and grids_of_all(), timeout=120,
                                 what=f"fused grid {i} and every camera's grid", tick=tick,
                                 period=4.0)
                # A fused grid made once every camera's grid of this stamp was in: sent again.
                before = len(fused())
                probe.wait_until(lambda: len(fused()) > before, timeout=120,
                                 what=f"fused grid {i} of all cameras", tick=tick, period=4.0)
                return fused()[-1]

            agreements = []
            for i, scene in enumerate(scenes):
                stamp = (T0 + i, 1000)
                fused_msg = cycle(i, scene, CAMERAS, stamp)
                fused, spec = grid_from_message(fused_msg)
                assert fused.shape == SURROUND_GRID.shape
                assert spec.x_min == pytest.approx(SURROUND_GRID.x_min)
                assert fused_msg.header.frame_id == "base_footprint"
                # the fused grid is the conservative fusion of the cameras' own grids
                own = [grid_from_message(next(m for m in probe.messages(f"{ns}/{c}/drivable/grid")
                                              if key(m) == stamp))[0] for c in CAMERAS]
                np.testing.assert_array_equal(fused, fuse_grids(own))
                for c in CAMERAS:
                    lab = next(m for m in probe.messages(f"{ns}/{c}/labels") if key(m) == stamp)
                    assert lab.header.frame_id == rig.camera(c).optical_frame
                    assert (lab.width, lab.height) == (320, 240)
                a, n = agreement(fused, scene.fused)
                agreements.append(a)
                assert n > 10000
            boundary = next(m for m in probe.messages(f"{ns}/drivable/boundary")
                            if key(m) == (T0 + 2, 1000))
            assert len(polygon_from_message(boundary)) >= 3
            print("\nnode, default model, 4 cameras: fused grid agrees with the exact fused "
                  f"truth on {', '.join(f'{a:.2%}' for a in agreements)} of the seen cells")
            # a CamVid model on synthetic frames (exact: test_multicam)
            assert min(agreements) >= 0.9
            # one batch of four per cycle, per-camera statistics
            log = node.log()
            assert "4 cameras (front, left, right, rear), one batched forward pass" in log

            def diag() -> dict[str, dict[str, str]]:
                out = {}
                for msg in probe.messages("/diagnostics"):
                    for s in msg.status:
                        if s.name.startswith(f"{ns}/seg_node"):
                            out[s.name.rsplit(": ", 1)[1]] = {kv.key: kv.value for kv in s.values}
                return out

            probe.wait_until(lambda: int(diag().get("segmentation", {}).get(
                "frames_processed", 0)) >= 12, timeout=30, what="diagnostics")
            d = diag()
            assert d["segmentation"]["batch_size_last"] == "4"
            assert float(d["segmentation"]["batch_size_p50"]) == 4.0
            assert float(d["segmentation"]["cycle_time_p50_ms"]) > 0
            for c in CAMERAS:
                assert int(d[f"camera {c}"]["frames_processed"]) >= 3, d[f"camera {c}"]
                assert d[f"camera {c}"]["image_topic"] == f"{ns}/{c}/image"
            # the rear camera goes silent: within fusion.max_age its grid still counts, after it
            # the cells only it sees are unknown
            per_cam = {c: v.grid for c, v in zip(
                rig.names, [scenes[2].views[c] for c in rig.names], strict=True)}
            only_rear = (per_cam["rear"] >= 0) & np.all(
                [per_cam[c] < 0 for c in ("front", "left", "right")], axis=0)
            last, _ = grid_from_message(next(m for m in probe.messages(f"{ns}/drivable/grid")
                                             if key(m) == (T0 + 2, 1000)))
            assert (last[only_rear] >= 0).all()
            soon, _ = grid_from_message(cycle(3, scenes[2], CAMERAS[:3], (T0 + 2, 200_001_000)))
            np.testing.assert_array_equal(soon[only_rear], last[only_rear])
            late, _ = grid_from_message(cycle(4, scenes[2], CAMERAS[:3], (T0 + 2, 300_001_000)))
            assert np.all(late[only_rear] == -1)
            np.testing.assert_array_equal(late[~only_rear], last[~only_rear])
            node.wait_for_log("fused drivable/grid without cameras whose latest grid is older "
                              "than fusion.max_age = 0.25 s: rear 0.30 s", timeout=30)
            # /diagnostics counts it for the rear camera, and per camera rates and latency
            probe.wait_until(lambda: int(diag().get("camera rear", {}).get(
                "fusion_left_out", 0)) >= 1, timeout=30, what="rear left out in /diagnostics")
            d = diag()
            assert d["camera front"]["fusion_left_out"] == "0"
            assert int(d["segmentation"]["fusion_left_out"]) >= 1
            assert int(d["segmentation"]["fused_grids_published"]) >= 5
            for c in CAMERAS:
                assert float(d[f"camera {c}"]["latency_p50_ms"]) > 0, d[f"camera {c}"]
                assert int(d[f"camera {c}"]["frames_received"]) >= int(
                    d[f"camera {c}"]["frames_processed"]) >= 3
            assert node.alive() and "Traceback" not in node.log()
    finally:
        assert node.stop() == 0, node.log()


def test_per_camera_parameters_from_a_params_file_and_the_ros2_cli(tmp_path: Path,
                                                                  probe: Probe) -> None:
    """The YAML layout users write (a camera's own values nested under its name), read by
    rcl, listed and changed with the real `ros2 param`."""
    import os
    import subprocess
    import sys

    ns = "/it_multi_yaml"
    params = tmp_path / "cams.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n    model: tiny_seg\n    device: cpu\n    cpu_threads: 1\n"
        "    warmup: false\n    cameras: [front, rear]\n    front:\n"
        "      input_transport: compressed\n    rear:\n      image_type: rectified\n"
        "      camera:\n        yaw: 3.1416\n        z: 1.2\n")
    node = NodeProcess(tmp_path / "yaml.log", namespace=ns, params_file=params)
    try:
        node.wait_ready(timeout=120)
        assert (f"ready: listening on {ns}/front/image/compressed, {ns}/rear/image"
                in node.log())

        def node_subs() -> dict[str, list[str]]:
            try:  # the probe may not have discovered the node yet (a loaded machine)
                return dict(probe.node.get_subscriber_names_and_types_by_node("seg_node", ns))
            except RuntimeError:  # rclpy NodeNameNonExistentError
                return {}

        probe.wait_until(lambda: f"{ns}/front/image/compressed" in node_subs(), timeout=60,
                         what="subscriptions")
        subs = node_subs()
        assert subs[f"{ns}/front/image/compressed"] == ["sensor_msgs/msg/CompressedImage"]
        assert subs[f"{ns}/rear/image"] == ["sensor_msgs/msg/Image"]
        assert f"{ns}/rear/camera_info" in subs
        ros2 = Path(sys.executable).parent / "ros2"
        if not ros2.exists():
            pytest.skip("the ros2 command is not installed (ROS 2 kit of ../shared/ros2)")

        def cli(*args: str) -> subprocess.CompletedProcess:
            wait = ["--timeout", "30"] if args[0] != "list" else ["--spin-time", "5"]
            return subprocess.run([str(ros2), "param", args[0], "--no-daemon", *wait,
                                   f"{ns}/seg_node", *args[1:]], capture_output=True,
                                  text=True, timeout=120, env=dict(os.environ))

        out = cli("get", "cameras")
        assert "String values are: ['front', 'rear']" in out.stdout, out.stdout + out.stderr
        out = cli("get", "rear.camera.yaw")
        assert "Double value is: 3.1416" in out.stdout, out.stdout + out.stderr
        out = cli("describe", "front.input_transport")
        assert "Camera front:" in out.stdout and "Read only: true" in out.stdout, out.stdout
        out = cli("set", "rear.camera.pitch", "0.1")
        assert "Set parameter successful" in out.stdout, out.stdout + out.stderr
        out = cli("set", "rear.camera.z", "0")
        assert "rear.camera.z = 0.0" in out.stdout + out.stderr, out.stdout + out.stderr
        # `param list` looks for nodes for a fixed --spin-time: asked again until it finds ours
        deadline = time.monotonic() + 120
        while "front.image_type" not in (out := cli("list")).stdout:
            assert time.monotonic() < deadline, out.stdout + out.stderr
        for name in ("front.image_type", "rear.camera.x", "fusion.max_age",
                     "fusion.sync_window"):
            assert name in out.stdout, out.stdout
        assert "front.camera.yaw" in out.stdout
    finally:
        assert node.stop(timeout=30) == 0, node.log()


@pytest.mark.parametrize("tf_source", ["tf2_ros", "topics"])
def test_node_and_process_give_the_same_fused_grids_for_the_same_bag(
        tmp_path: Path, probe: Probe, tf_source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A generated 4-camera bag (the rear camera silent from its third frame on) through
    ``process_bag`` with ``cameras``, and its frames through seg_node over DDS one cycle at a
    time: the same fused grid and boundary, stamp by stamp, the rear camera taking part
    while within fusion.max_age and left out after, in both; with the drive's odometry on
    /tf, the same persistent drivable/map bytes after every cycle. ``topics``: the node as
    without tf2_ros (a pip-only install), reading /tf and /tf_static itself: each camera its
    own pose, the same grids and maps."""
    pytest.importorskip("tf2_ros", reason="tf2_ros is not installed (the ROS 2 kit "
                        "of ../shared/ros2 or a full ROS 2 install provides it)")
    if tf_source == "topics":
        from seg_perception.ros import tf_pose

        monkeypatch.setenv(tf_pose.WITHOUT_TF2_ROS_ENV, "1")  # inherited by the node
    from seg_perception.offline.job import ProcessOptions
    from seg_perception.offline.process import process_bag
    from seg_perception.offline.reader import iter_frames, open_bag
    from seg_perception.offline.topics import typestore
    from seg_perception.offline.writer import BagWriter
    from seg_perception.runtime.config import PipelineConfig
    from seg_perception.runtime.engine import build_engine
    from seg_perception.sim.demo_report import write_surround_drive

    rig = surround_rig(width=160, height=120)
    full, bag = tmp_path / "full", tmp_path / "in"
    write_surround_drive(full, 5, 10.0, 160, 120, rig, SURROUND_GRID)
    with open_bag(full) as reader, BagWriter(bag) as writer:
        seen: dict[str, int] = {}
        for conn, log_time, raw in reader.messages():
            seen[conn.topic] = seen.get(conn.topic, -1) + 1
            if conn.topic.startswith("/rear/") and seen[conn.topic] >= 2:
                continue
            writer.write_raw(conn.topic, conn.msgtype, raw, log_time,
                             qos=conn.ext.offered_qos_profiles or None)
    fusion = {"fusion.max_age": 0.25, "fusion.sync_window": 3.0}
    engine, _ = build_engine("default", None, "cpu", "auto", threads=1)
    options = ProcessOptions(
        config=PipelineConfig.from_params({**GRID, **fusion, "cameras": CAMERAS}),
        cameras=tuple(CAMERAS))
    summary = process_bag(bag, tmp_path / "out", engine, options=options,
                          progress=False)
    assert (summary.cycles, summary.fused, dict(summary.left_out)) == (5, 5, {"/rear": 1})
    store = typestore()
    offline: dict[tuple[int, int], tuple[Any, Any]] = {}
    with open_bag(tmp_path / "out") as reader:
        msgs = [(c.topic, store.deserialize_cdr(raw, c.msgtype))
                for c, _, raw in reader.messages()
                if c.topic in ("/drivable/grid", "/drivable/boundary", "/drivable/map")]
    with open_bag(bag) as reader:  # the drive's odometry, to send with each cycle
        odom = {key(m.transforms[0]): m.transforms[0] for c, _, raw in reader.messages()
                if c.topic == "/tf" for m in [store.deserialize_cdr(raw, c.msgtype)]}
    offline_maps = {key(m): m for topic, m in msgs if topic == "/drivable/map"}
    for topic, msg in msgs:
        k = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        grid, boundary = offline.get(k, (None, None))
        if topic != "/drivable/map":
            offline[k] = (msg, boundary) if topic == "/drivable/grid" else (grid, msg)
    frames: dict[tuple[int, int], list[Any]] = {}
    for f in iter_frames(bag):
        frames.setdefault((f.header.stamp.sec, f.header.stamp.nanosec), []).append(f)
    assert sorted(frames) == sorted(offline) == sorted(offline_maps) and len(frames) == 5

    ns = f"/it_bag_vs_node_{tf_source}"  # its own: the probe keeps the other run's messages
    node = NodeProcess(tmp_path / "node.log", {
        "cameras": "[front,left,right,rear]", "device": "cpu", "cpu_threads": 1, **fusion,
        **GRID}, namespace=ns)
    node.wait_for_log("ready: listening on", timeout=240)
    if tf_source == "topics":
        assert "reading /tf and /tf_static directly" in node.log()
    for topic, typ in ((f"{ns}/drivable/grid", OccupancyGrid),
                       (f"{ns}/drivable/boundary", PolygonStamped)):
        probe.subscribe(typ, topic)
    probe.subscribe(OccupancyGrid, f"{ns}/drivable/map")
    import tf2_ros

    odom_pub = tf2_ros.TransformBroadcaster(probe.node)
    try:
        with probe.static_tf(rig_tf(rig)):
            pubs = {c: probe.publisher(Image, f"{ns}/{c}/image") for c in CAMERAS}
            info_pubs = {c: probe.publisher(CameraInfo, f"{ns}/{c}/camera_info") for c in CAMERAS}
            probe.wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()),
                             timeout=30, what="the node's subscriptions")
            for i, stamp in enumerate(sorted(frames)):
                cycle = frames[stamp]

                def tick(cycle: list[Any] = cycle, stamp: tuple[int, int] = stamp) -> None:
                    odom_pub.sendTransform(odom_tf(odom[stamp]))
                    for f in cycle:
                        cam = f.topic.split("/")[1]
                        hdr = Header(stamp=Time(sec=f.header.stamp.sec,
                                                nanosec=f.header.stamp.nanosec),
                                     frame_id=f.header.frame_id)
                        info_pubs[cam].publish(info(hdr, rig.camera(cam).model))
                    for f in cycle:
                        cam = f.topic.split("/")[1]
                        pubs[cam].publish(image(f.rgb, Header(
                            stamp=Time(sec=f.header.stamp.sec, nanosec=f.header.stamp.nanosec),
                            frame_id=f.header.frame_id)))

                def both(stamp: tuple[int, int] = stamp) -> bool:
                    return all(any(key(m) == stamp for m in probe.messages(t)) for t in (
                        f"{ns}/drivable/grid", f"{ns}/drivable/boundary",
                        f"{ns}/drivable/map"))

                probe.wait_until(both, timeout=120, what=f"fused grid {i}", tick=tick, period=4.0)
                live = next(m for m in probe.messages(f"{ns}/drivable/grid") if key(m) == stamp)
                live_b = next(m for m in probe.messages(f"{ns}/drivable/boundary")
                              if key(m) == stamp)
                grid_msg, boundary_msg = offline[stamp]
                grid = np.asarray(grid_msg.data, np.int8).reshape(grid_msg.info.height,
                                                                  grid_msg.info.width)
                assert (grid == 0).sum() > 100 and (grid == 100).sum() > 100  # not trivial
                np.testing.assert_array_equal(grid_from_message(live)[0], grid)
                assert live.header.frame_id == grid_msg.header.frame_id
                np.testing.assert_array_equal(
                    polygon_from_message(live_b).astype(np.float32).reshape(-1, 2),
                    np.array([(p.x, p.y) for p in boundary_msg.polygon.points],
                             np.float32).reshape(-1, 2))
                live_m = next(m for m in probe.messages(f"{ns}/drivable/map") if key(m) == stamp)
                want_m = offline_maps[stamp]
                assert live_m.header.frame_id == want_m.header.frame_id == "odom"
                assert (live_m.info.origin.position.x, live_m.info.origin.position.y) == (
                    want_m.info.origin.position.x, want_m.info.origin.position.y)
                assert bytes(np.asarray(live_m.data, np.int8)) == bytes(
                    np.asarray(want_m.data, np.int8)), f"drivable/map differs at cycle {i}"
            node.wait_for_log("fused drivable/grid without cameras whose latest grid is older "
                              "than fusion.max_age = 0.25 s: rear 0.30 s", timeout=30)
            assert node.alive() and "Traceback" not in node.log()
    finally:
        assert node.stop() == 0, node.log()
