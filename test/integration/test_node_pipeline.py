"""seg_node over DDS: parameters as users type them, camera pose from tf2, and the same
outputs as ``seg-perception process`` for the same frames."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PolygonStamped, TransformStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from ros_harness import NodeProcess, Probe
from ros_msgs import image, info, key, transforms
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from seg_perception.runtime.geometry import (
    BODY_FROM_OPTICAL,
    CameraModel,
    CameraMounting,
    GridSpec,
    Transform,
)
from seg_perception.sim.scene import SceneSpec, render_scene

pytestmark = pytest.mark.integration

tf2_ros = pytest.importorskip("tf2_ros", reason="tf2_ros is not installed (the ROS 2 kit of "
                              "../shared/ros2 or a full ROS 2 install provides it)")

GRID = {"grid.resolution": 0.2, "grid.x_min": 0.0, "grid.x_max": 24.0, "grid.y_min": -6.0,
        "grid.y_max": 6.0}
SPEC = GridSpec(0.2, 0.0, 24.0, -6.0, 6.0)
CAM = CameraModel.from_fov(320, 240, 80.0)
OPTICAL = "agree_optical"  # a frame no other test of the module latches on /tf_static
T0 = 1_700_000_000


def header(i: int, frame_id: str = "cam_optical") -> Header:
    return Header(stamp=Time(sec=T0 + i, nanosec=500 + i), frame_id=frame_id)


def tf_chain(mounting: CameraMounting, optical: str = "cam_optical") -> list[TransformStamped]:
    """base_footprint -> camera_link (the mounting) -> the optical frame (REP 103), as a
    robot_state_publisher sends them on /tf_static."""
    return transforms([
        ("base_footprint", "camera_link",
         Transform.from_matrix(mounting.rotation_body, mounting.position)),
        ("camera_link", optical, Transform.from_matrix(BODY_FROM_OPTICAL, (0, 0, 0)))])


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    p = Probe("seg_pipeline_probe")
    yield p
    p.close()
    rclpy.try_shutdown()


def start(tmp_path: Path, ns: str, **params: object) -> NodeProcess:
    node = NodeProcess(tmp_path / f"{ns.strip('/')}.log",
                       {"model": "tiny_seg", "device": "cpu", **params}, namespace=ns)
    node.wait_for_log("ready: listening on")
    return node


def client(probe: Probe, ns: str) -> AsyncParameterClient:
    c = AsyncParameterClient(probe.node, f"{ns}/seg_node")
    assert c.wait_for_services(timeout_sec=30)
    return c


def done(probe: Probe, future: Any) -> Any:
    probe.wait_until(future.done, timeout=120, what="parameter service")
    return future.result()


# --- parameters ---------------------------------------------------------------------------------

def test_parameters_as_users_type_them_and_validated_together(tmp_path: Path,
                                                             probe: Probe) -> None:
    ns = "/it_params"
    node = start(tmp_path, ns, **{"camera.x": 1, "use_tf": False})
    try:
        c = client(probe, ns)
        [x] = done(probe, c.get_parameters(["camera.x"])).values
        assert (x.type, x.double_value) == (Parameter.Type.DOUBLE.value, 1.0)  # -p camera.x:=1
        res = done(probe, c.set_parameters([Parameter("camera.y", Parameter.Type.INTEGER, 2)]))
        assert res.results[0].successful
        [y] = done(probe, c.get_parameters(["camera.y"])).values
        assert (y.type, y.double_value) == (Parameter.Type.DOUBLE.value, 2.0)
        # non-finite and absurd values: refused with the reason, the node lives on
        for name, value in (("boundary.min_region_area", math.inf), ("grid.x_min", -1e308),
                            ("grid.y_max", 1e308), ("camera.z", math.nan)):
            [r] = done(probe, c.set_parameters([Parameter(name, value=value)])).results
            assert not r.successful and name in r.reason, (name, r.reason)
        # grid.x_min and grid.x_max moved together: each alone would be refused
        [r] = done(probe, c.set_parameters([Parameter("grid.x_min", value=50.0)])).results
        assert not r.successful and "grid.x_max" in r.reason
        both = [Parameter("grid.x_min", value=50.0), Parameter("grid.x_max", value=60.0)]
        assert done(probe, c.set_parameters_atomically(both)).result.successful
        # SetParameters (ros2 param load's service) validates a request together as well
        res = done(probe, c.set_parameters([Parameter("grid.x_min", value=70.0),
                                            Parameter("grid.x_max", value=80.0)]))
        assert all(r.successful for r in res.results)
        res = done(probe, c.set_parameters([Parameter("grid.x_min", value=95.0),
                                            Parameter("grid.x_max", value=90.0)]))
        assert not any(r.successful for r in res.results)
        assert "grid.x_min = 95.0 must be < grid.x_max = 90.0" in res.results[0].reason
        values = done(probe, c.get_parameters(["grid.x_min", "grid.x_max"])).values
        assert [v.double_value for v in values] == [70.0, 80.0]  # nothing half-applied
        # the real CLI: a YAML load with a read-only parameter in it, and an integer set
        ros2 = Path(sys.executable).parent / "ros2"
        if ros2.exists():
            yaml_file = tmp_path / "load.yaml"
            # (this ros2param reads the file's "/**" section; seg.yaml has one)
            yaml_file.write_text("/**:\n  ros__parameters:\n    model: default\n"
                                 "    grid.x_min: 100.0\n    grid.x_max: 110.0\n")
            # --no-daemon: leave no ros2 daemon behind
            cli = [str(ros2), "param"]
            opts = ["--no-daemon", "--timeout", "30", f"{ns}/seg_node"]
            out = subprocess.run([*cli, "load", *opts, str(yaml_file)], capture_output=True,
                                 text=True, timeout=120, env=dict(os.environ))
            assert "Set parameter grid.x_min successful" in out.stdout, out.stdout + out.stderr
            assert "Set parameter model failed" in out.stderr
            out = subprocess.run([*cli, "set", *opts, "camera.x", "3"], capture_output=True,
                                 text=True, timeout=120, env=dict(os.environ))
            assert "Set parameter successful" in out.stdout, out.stdout + out.stderr
            values = done(probe, c.get_parameters(["grid.x_min", "camera.x"])).values
            assert [v.double_value for v in values] == [100.0, 3.0]
        assert node.alive()
        assert "Traceback" not in node.log()
    finally:
        assert node.stop() == 0, node.log()


@pytest.mark.parametrize(("params", "expect"), [
    ({"camera.x": "abc"}, "camera.x must be a double, got str 'abc'"),
    ({"model": "no_such_net"}, "unknown model 'no_such_net'; registered models:"),
    ({"grid.x_min": -1e308}, "grid.x_min=-1e+308 is below its minimum"),
    ({"boundary.min_region_area": ".inf"}, "boundary.min_region_area=inf is not a finite"),
    ({"grid.x_min": 30.0, "grid.x_max": 20.0}, "grid.x_min = 30.0 must be < grid.x_max"),
    ({"image_type": "rect"}, "valid values: auto, raw, rectified"),
])
def test_bad_start_up_parameters_print_one_line(tmp_path: Path, params: dict,
                                               expect: str) -> None:
    node = NodeProcess(tmp_path / "bad.log", {"model": "tiny_seg", "device": "cpu", **params},
                       namespace="/it_bad_start")
    node.proc.wait(timeout=120)
    log = node.log()
    node.stop()
    assert node.proc.returncode != 0
    lines = [line for line in log.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and expect in lines[0], log
    assert "Traceback" not in log


def test_grid_is_consistent_while_parameters_change(tmp_path: Path, probe: Probe) -> None:
    """The worker reads one snapshot per frame: header and data of a grid always agree."""
    ns = "/it_snapshot"
    mount = CameraMounting(0.5, 0.0, 1.5, 0.0, 0.1, 0.0)
    node = start(tmp_path, ns, use_tf=False, **{"camera.x": 0.5, "camera.z": 1.5,
                                                "camera.pitch": 0.1}, **GRID)
    probe.subscribe(OccupancyGrid, f"{ns}/drivable/grid")
    probe.subscribe(PolygonStamped, f"{ns}/drivable/boundary")
    try:
        c = client(probe, ns)
        pub = probe.publisher(Image, f"{ns}/image")
        info_pub = probe.publisher(CameraInfo, f"{ns}/camera_info")
        rgb = render_scene(SceneSpec(), CAM, mount).rgb
        settings = [(0.2, 24.0), (0.4, 16.0), (0.25, 20.0)]
        sent = itertools.count()

        def send() -> None:  # a parameter change, then a frame
            i = next(sent)
            res, x_max = settings[i % 3]
            done(probe, c.set_parameters_atomically([
                Parameter("grid.resolution", value=res), Parameter("grid.x_max", value=x_max)]))
            hdr = header(1000 + i)
            info_pub.publish(info(hdr, CAM))
            pub.publish(image(rgb, hdr))

        for _ in range(30):
            send()
        # A loaded node keeps only the newest frame: more are sent until 5 grids came.
        probe.wait_until(lambda: len(probe.messages(f"{ns}/drivable/grid")) >= 5, timeout=180,
                         what="grids", tick=send, period=0.5)
        grids = probe.messages(f"{ns}/drivable/grid")
        # each grid's boundary follows it on a topic of its own: wait for those of these grids
        probe.wait_until(lambda: {key(g) for g in grids} <= {
            key(p) for p in probe.messages(f"{ns}/drivable/boundary")}, timeout=120,
            what="the boundaries of the grids received")
        for g in grids:
            res = round(g.info.resolution, 6)
            assert len(g.data) == g.info.width * g.info.height
            assert (res, g.info.width) in {(0.2, 120), (0.4, 40), (0.25, 80)}, (res, g.info.width)
        polys = {key(p): p for p in probe.messages(f"{ns}/drivable/boundary")}
        for g in grids:  # each polygon lies in its own frame's grid
            pts = np.array([(p.x, p.y) for p in polys[key(g)].polygon.points])
            x_max = g.info.origin.position.x + g.info.width * g.info.resolution
            assert len(pts) == 0 or pts[:, 0].max() <= x_max + 1e-4
    finally:
        assert node.stop() == 0, node.log()


# --- camera pose from tf2 -------------------------------------------------------------------

def _grid_for(probe: Probe, ns: str, pub: Any, info_pub: Any, rgb: np.ndarray, i: int,
              frame: str = "cam_optical", timeout: float = 60) -> np.ndarray:
    hdr = header(i, frame)
    k = (hdr.stamp.sec, hdr.stamp.nanosec)

    def tick() -> None:
        info_pub.publish(info(hdr, CAM))
        pub.publish(image(rgb, hdr))

    probe.wait_until(lambda: any(key(m) == k for m in probe.messages(f"{ns}/drivable/grid")),
                     timeout=timeout, what=f"grid {i}", tick=tick, period=1.0)
    g = next(m for m in probe.messages(f"{ns}/drivable/grid") if key(m) == k)
    assert g.header.frame_id == "base_footprint"
    return np.asarray(g.data, np.int8).reshape(g.info.height, g.info.width)


def test_grid_follows_the_static_transform(tmp_path: Path, probe: Probe) -> None:
    ns = "/it_tf"
    low = CameraMounting(0.5, 0.0, 1.3, 0.0, 0.06, 0.0)
    high = CameraMounting(0.8, 0.4, 2.4, 0.0, 0.22, 0.15)
    # camera.* say something else: with tf2 present they must not be used
    node = start(tmp_path, ns, **{"camera.z": 3.0, "camera.pitch": 0.5}, **GRID)
    for t in ("labels", "drivable/grid"):
        probe.subscribe(Image if t == "labels" else OccupancyGrid, f"{ns}/{t}")
    try:
        pub = probe.publisher(Image, f"{ns}/image")
        info_pub = probe.publisher(CameraInfo, f"{ns}/camera_info")
        rgb = render_scene(SceneSpec(), CAM, low).rgb
        # no transform yet: image outputs go out, the grid does not, and the log says why
        hdr = header(1)
        k = (hdr.stamp.sec, hdr.stamp.nanosec)
        probe.wait_until(lambda: any(key(m) == k for m in probe.messages(f"{ns}/labels")),
                         timeout=60, what="labels without tf",
                         tick=lambda: (info_pub.publish(info(hdr, CAM)),
                                       pub.publish(image(rgb, hdr))),
                         period=1.0)
        node.wait_for_log("no transform from cam_optical to base_footprint", timeout=120)
        assert not any(key(m) == k for m in probe.messages(f"{ns}/drivable/grid"))
        with probe.static_tf(tf_chain(low)):
            g_low = _grid_for(probe, ns, pub, info_pub, rgb, 2)
            np.testing.assert_array_equal(g_low == -1, render_scene(SceneSpec(), CAM, low,
                                                                    SPEC).grid == -1)
            node.wait_for_log("camera pose from tf (base_footprint <- cam_optical)")
        # the transform changes, so does the grid (tf2_ros' Python StaticTransformBroadcaster
        # keeps the first transform of a child frame: a new one announces the change)
        with probe.static_tf(tf_chain(high)):

            def moved() -> bool:
                i = 3 + len(probe.messages(f"{ns}/drivable/grid"))
                g = _grid_for(probe, ns, pub, info_pub, rgb, i)
                return bool(((g == -1) != (g_low == -1)).any())

            probe.wait_until(moved, timeout=120, what="grid after the transform changed")
            g_high = _grid_for(probe, ns, pub, info_pub, rgb, 200)
            truth = render_scene(SceneSpec(), CAM, high, SPEC).grid
            np.testing.assert_array_equal(g_high == -1, truth == -1)
            # an image from a frame tf does not know: a warning naming both frames
            hdr = header(300, "other_optical")
            pub.publish(image(rgb, hdr))
            node.wait_for_log("no transform from other_optical to base_footprint", timeout=120)
            assert node.alive()
    finally:
        assert node.stop() == 0, node.log()


# --- the node and process agree -----------------------------------------------------------------

def test_node_and_process_give_identical_labels_grid_and_polygon(tmp_path: Path,
                                                                probe: Probe) -> None:
    from images import driving_frames

    from seg_perception.cli import main as cli_main
    from seg_perception.offline.reader import open_bag
    from seg_perception.offline.topics import (
        camera_info_msg,
        image_msg,
        make_header,
        tf_msg,
        tf_static_qos,
        typestore,
    )
    from seg_perception.offline.writer import BagWriter
    from seg_perception.runtime.messages import grid_from_message, polygon_from_message

    mount = CameraMounting(0.3, 0.0, 1.4, 0.0, 0.05, 0.0)
    frames = driving_frames(3)
    h, w = frames[0].shape[:2]
    model = CameraModel.from_fov(w, h, 60.0)
    # the bag: frames, their camera_info (same stamps) and the camera on /tf_static
    bag = tmp_path / "in"
    optical = Transform.from_matrix(mount.rotation, mount.position)  # a single static edge
    with BagWriter(bag) as writer:
        writer.write("/tf_static", tf_msg([("base_footprint", OPTICAL, optical)]),
                     10, qos=tf_static_qos())
        for i, rgb in enumerate(frames):
            hdr = make_header(T0 + i, 500 + i, OPTICAL)
            writer.write("/cam/image_raw", image_msg(rgb, "rgb8", hdr), 100 + i)
            writer.write("/cam/camera_info", camera_info_msg(model, hdr), 100 + i)
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    cpu_threads: 1\n    boundary.max_vertices:"
                      " 32\n")
    assert cli_main(["process", str(bag), str(tmp_path / "out"), "--device", "cpu",
                     "--no-progress", "--params-file", str(params)]) == 0
    offline: dict[str, dict[tuple[int, int], Any]] = {}
    with open_bag(tmp_path / "out") as reader:
        for conn, _, raw in reader.messages():
            msg = typestore().deserialize_cdr(raw, conn.msgtype)
            offline.setdefault(conn.topic.removeprefix("/cam/"), {})[key(msg)] = msg

    ns = "/cam"
    node = NodeProcess(tmp_path / "node.log", {"device": "cpu", "cpu_threads": 1,
                                               "boundary.max_vertices": 32}, namespace=ns,
                       remaps={"image": f"{ns}/image_raw"})
    node.wait_for_log("ready: listening on", timeout=180)
    for t, typ in (("labels", Image), ("drivable/grid", OccupancyGrid),
                   ("drivable/boundary", PolygonStamped)):
        probe.subscribe(typ, f"{ns}/{t}")
    ts = TransformStamped()
    ts.header.frame_id, ts.child_frame_id = "base_footprint", OPTICAL
    (ts.transform.translation.x, ts.transform.translation.y,
     ts.transform.translation.z) = optical.translation
    (ts.transform.rotation.x, ts.transform.rotation.y, ts.transform.rotation.z,
     ts.transform.rotation.w) = optical.quaternion
    try:
        with probe.static_tf(ts):
            pub = probe.publisher(Image, f"{ns}/image_raw")
            info_pub = probe.publisher(CameraInfo, f"{ns}/camera_info")
            for i, rgb in enumerate(frames):
                hdr = Header(stamp=Time(sec=T0 + i, nanosec=500 + i), frame_id=OPTICAL)
                k = (T0 + i, 500 + i)

                def tick(hdr: Header = hdr, rgb: np.ndarray = rgb) -> None:
                    info_pub.publish(info(hdr, model))
                    pub.publish(image(rgb, hdr))

                probe.wait_until(lambda k=k: all(
                    any(key(m) == k for m in probe.messages(f"{ns}/{t}"))
                    for t in ("labels", "drivable/grid", "drivable/boundary")),
                    timeout=90, what=f"frame {i}", tick=tick, period=1.0)
                live = {t: next(m for m in probe.messages(f"{ns}/{t}") if key(m) == k)
                        for t in ("labels", "drivable/grid", "drivable/boundary")}
                assert bytes(live["labels"].data) == bytes(offline["labels"][k].data.tobytes())
                g_live, spec_live = grid_from_message(live["drivable/grid"])
                g_off, spec_off = grid_from_message(offline["drivable/grid"][k])
                assert spec_live == spec_off
                np.testing.assert_array_equal(g_live, g_off)
                assert (g_live == 0).any()
                p_live = polygon_from_message(live["drivable/boundary"]).astype(np.float32)
                p_off = polygon_from_message(offline["drivable/boundary"][k]).astype(np.float32)
                np.testing.assert_array_equal(p_live, p_off)
                assert len(p_live) >= 3
            assert f"camera pose from tf (base_footprint <- {OPTICAL})" in node.log()
    finally:
        assert node.stop() == 0, node.log()
