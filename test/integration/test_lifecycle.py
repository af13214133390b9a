"""``seg_lifecycle_node``: the managed node's states, in process and under the real tools.

In process (rclpy only): the transitions, what each state holds (model, topics, worker), the
model kept across deactivate and freed by cleanup (weak references), start-up parameters
only while unconfigured, a model that cannot load, an exception sent to on_error.

Over DDS with the real `ros2 lifecycle` / `ros2 param` (from ../shared/ros2 built into
.venv, or a sourced ROS 2 install; else those tests skip, saying so): labels flow only while
active, the model loads once per configure, a bad model fails configure with one line and no
traceback, shutdown ends the process cleanly; and `ros2 launch seg_perception seg.launch.py
lifecycle:=true` from a colcon build, with and without autostart.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import itertools
import os
import re
import signal
import subprocess
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import rclpy
import rclpy.time
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros2_tools import (
    RosLaunch,
    missing_modules,
    require_ros2_lifecycle,
    ros_env,
    run_ros2,
    session_install,
)
from ros_harness import NodeProcess, Probe
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from seg_perception.ros import camera_io, node_common, tf_pose
from seg_perception.ros import node as node_module
from seg_perception.ros.label_info import label_info_qos
from seg_perception.ros.node import SegNode
from seg_perception.runtime.image_codec import encode_raw
from seg_perception.runtime.models import get_entry
from seg_perception.runtime.models.zoo import DEFAULT_MODEL
from seg_perception.sim.rig import SURROUND_GRID, render_rig, surround_rig
from seg_perception.sim.scene import SceneSpec

pytestmark = pytest.mark.integration

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
ERROR = TransitionCallbackReturn.ERROR
W, H = 160, 120
LIFECYCLE_MODULE = "seg_perception.ros.lifecycle"
LOADED = "configured (inactive): model"
READY = "ready: listening on"


# -- in process ---------------------------------------------------------------------------
@pytest.fixture
def context() -> Iterator[rclpy.Context]:
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


@pytest.fixture
def make_node(context: rclpy.Context) -> Iterator[Callable[..., SegNode]]:
    made: list[SegNode] = []

    def make(namespace: str = "/lc_unit", **params: object) -> SegNode:
        values = {"model": "tiny_seg", "device": "cpu", "warmup": False, **params}
        node = SegNode(autostart=False, context=context, namespace=namespace,
                                parameter_overrides=[Parameter(k, value=v)
                                                     for k, v in values.items()])
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()
        node.destroy_node()


def state(node: SegNode) -> str:
    return node._state_machine.current_state[1]


def sub_topics(node: SegNode) -> set[str]:
    return {s.topic_name for s in node.subscriptions}


def pub_topics(node: SegNode) -> set[str]:
    return {p.topic_name for p in node.publishers}


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "[ERROR]" in line]


def test_states_hold_what_they_should(make_node: Callable[..., SegNode]) -> None:
    """configure loads, activate subscribes, deactivate keeps the model, cleanup frees it."""
    node = make_node()
    assert state(node) == "unconfigured"
    assert node.engine is None and node.model_loads == 0
    assert "/lc_unit/image" not in sub_topics(node)
    assert "/lc_unit/labels" not in pub_topics(node)

    assert node.trigger_configure() == SUCCESS
    assert state(node) == "inactive" and node.model_loads == 1
    engine = node.engine
    assert engine is not None
    assert "/lc_unit/image" not in sub_topics(node)  # not listening while inactive
    assert "/lc_unit/labels" not in pub_topics(node)
    assert "/diagnostics" in pub_topics(node)  # lifecycle publishers, still disabled
    assert not node.diag_pub.is_activated
    if tf_pose.HAVE_TF2:  # the tf2 buffer's service and its listener's subscriptions
        assert "tf2_frames" in {s.srv_name.rsplit("/", 1)[-1] for s in node.services}
        assert {"/tf", "/tf_static"} <= sub_topics(node)

    assert node.trigger_activate() == SUCCESS
    assert state(node) == "active"
    assert {"/lc_unit/image", "/lc_unit/camera_info"} <= sub_topics(node)
    assert {"/lc_unit/labels", "/lc_unit/drivable/grid"} <= pub_topics(node)
    assert node.diag_pub.is_activated and node.image_topic == "/lc_unit/image"
    assert node.worker.alive()

    assert node.trigger_deactivate() == SUCCESS
    assert state(node) == "inactive"
    assert "/lc_unit/image" not in sub_topics(node)
    assert "/lc_unit/labels" not in pub_topics(node)
    assert not node.worker.alive() and not node.diag_pub.is_activated
    assert node.engine is engine and node.model_loads == 1  # kept

    assert node.trigger_activate() == SUCCESS  # no reload
    assert node.engine is engine and node.model_loads == 1
    assert "/lc_unit/image" in sub_topics(node)
    assert node.trigger_deactivate() == SUCCESS

    engine_ref, net_ref = weakref.ref(engine), weakref.ref(engine.model)
    del engine
    assert node.trigger_cleanup() == SUCCESS
    assert state(node) == "unconfigured"
    gc.collect()
    assert engine_ref() is None and net_ref() is None  # nothing keeps the model alive
    assert node.engine is None and node.worker is None and node.tf is None
    assert "/diagnostics" not in pub_topics(node)
    assert "tf2_frames" not in {s.srv_name.rsplit("/", 1)[-1] for s in node.services}
    assert not {"/tf", "/tf_static"} & sub_topics(node)

    assert node.trigger_configure() == SUCCESS  # a configure after a cleanup loads again
    assert node.model_loads == 2
    assert node.trigger_shutdown() == SUCCESS
    assert state(node) == "finalized" and node.finalized and node.engine is None


def test_shutdown_from_active_releases_everything(
        make_node: Callable[..., SegNode]) -> None:
    node = make_node()
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    worker = node.worker
    engine_ref = weakref.ref(node.engine)
    assert node.trigger_shutdown() == SUCCESS
    assert state(node) == "finalized"
    assert not worker.alive()
    del worker
    gc.collect()
    assert engine_ref() is None
    assert "/lc_unit/image" not in sub_topics(node)
    assert "/lc_unit/labels" not in pub_topics(node)


def test_startup_parameters_change_only_while_unconfigured(
        make_node: Callable[..., SegNode]) -> None:
    node = make_node(model="no_such_model")
    desc = node.describe_parameter("model")
    assert not desc.read_only and "Fixed once configured" in desc.description
    assert node.describe_parameter("overlay_alpha").description.endswith(
        "Can be changed at run time.")
    assert node.trigger_configure() == FAILURE
    assert state(node) == "unconfigured"

    assert node.set_parameters([Parameter("model", value="tiny_seg")])[0].successful
    assert node.trigger_configure() == SUCCESS
    result = node.set_parameters([Parameter("model", value="default")])[0]
    assert not result.successful
    assert "only be set while the node is unconfigured (it is inactive)" in result.reason
    assert node.get_parameter("model").value == "tiny_seg"
    assert node.set_parameters([Parameter("overlay_alpha", value=0.2)])[0].successful
    assert node.set_parameters([Parameter("camera.x", value=1)])[0].successful  # int: double
    assert node.params.config.overlay_alpha == 0.2

    assert node.trigger_cleanup() == SUCCESS  # unconfigured again: the model can change
    assert node.set_parameters([Parameter("device", value="cpu")])[0].successful


@pytest.mark.parametrize("kind", ["unknown model", "corrupt checkpoint", "missing checkpoint"])
def test_model_that_cannot_load_fails_configure_with_one_line(
        make_node: Callable[..., SegNode], tmp_path: Path,
        capfd: pytest.CaptureFixture[str], kind: str) -> None:
    bad = tmp_path / "weights.safetensors"
    bad.write_bytes(b"this is not a safetensors file" * 10)
    params = {"unknown model": {"model": "no_such_model"},
              "corrupt checkpoint": {"model": "lightfpn", "checkpoint": str(bad)},
              "missing checkpoint": {"model": "lightfpn",
                                     "checkpoint": str(tmp_path / "absent.pt")}}[kind]
    node = make_node(**params)
    capfd.readouterr()
    assert node.trigger_configure() == FAILURE
    assert state(node) == "unconfigured" and node.engine is None and node.model_loads == 0
    err = capfd.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert "configure failed, still unconfigured" in lines[0]
    assert {"unknown model": "no_such_model", "corrupt checkpoint": str(bad),
            "missing checkpoint": "absent.pt"}[kind] in lines[0], lines[0]
    assert "Traceback" not in err
    if kind == "unknown model":
        assert "registered models:" in lines[0] and "tiny_seg" in lines[0]
    assert node.trigger_shutdown() == SUCCESS  # the node is alive and manageable


def test_exception_in_a_transition_goes_to_on_error(
        make_node: Callable[..., SegNode], monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    """An unexpected exception is logged with its traceback; on_error releases the model and
    returns the node to unconfigured, from where it configures again."""
    node = make_node()
    assert node.trigger_configure() == SUCCESS
    engine_ref = weakref.ref(node.engine)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("camera channel exploded")

    monkeypatch.setattr(camera_io, "CameraChannel", broken)  # open_cameras makes them
    capfd.readouterr()
    assert node.trigger_activate() == ERROR
    assert state(node) == "unconfigured"
    gc.collect()
    assert node.engine is None and engine_ref() is None
    assert not node.diag_pub and "/diagnostics" not in pub_topics(node)
    err = capfd.readouterr().err
    assert "activate failed with RuntimeError: camera channel exploded" in err
    assert "Traceback" in err  # a bug: the traceback says where
    assert "a transition from inactive failed: model and topics released" in err

    monkeypatch.undo()
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    assert state(node) == "active"


def test_several_cameras_as_seg_node_does(make_node: Callable[..., SegNode]) -> None:
    """cameras: [front, rear]: activate opens both cameras' topics and the fused grid, a cycle
    runs both frames as one batch and publishes the fused grid and per-camera diagnostics;
    deactivate removes them all; `cameras` and a camera's read-only entries stay fixed."""
    node = make_node("/lc_multi", cameras=["front", "rear"], use_tf=False,
                     **{"fusion.sync_window": 5.0, "rear.input_transport": "compressed",
                        "rear.camera.yaw": 3.1416,  # use_tf false: each camera its own pose
                        **{f"grid.{k}": getattr(SURROUND_GRID, k) for k in (
                            "resolution", "x_min", "x_max", "y_min", "y_max")}})
    assert node.describe_parameter("cameras").read_only  # per-camera entries declared from it
    assert not node.describe_parameter("front.input_transport").read_only  # while unconfigured
    assert node.trigger_configure() == SUCCESS
    assert not node.set_parameters([Parameter("front.input_transport",
                                              value="compressed")])[0].successful
    assert node.set_parameters([Parameter("rear.camera.pitch", value=0.05)])[0].successful
    assert node.trigger_activate() == SUCCESS
    assert {"/lc_multi/front/image", "/lc_multi/rear/image/compressed",
            "/lc_multi/rear/camera_info"} <= sub_topics(node)
    assert "/lc_multi/image" not in sub_topics(node)
    assert {"/lc_multi/front/labels", "/lc_multi/rear/drivable/grid", "/lc_multi/drivable/grid",
            "/lc_multi/drivable/boundary"} <= pub_topics(node)
    assert node.image_topic == "/lc_multi/front/image"
    worker = node.worker
    assert worker is not None and worker.fused is not None and len(worker.channels) == 2

    published: list[object] = []
    worker.fused.wanted = lambda: {"drivable/grid"}  # as if a planner subscribed
    worker.fused.grid.publish = published.append
    own_grids: list[object] = []  # X/drivable/grid: only on request, and nobody asks here
    for channel in node.cameras:
        channel.grid_pub.publish = own_grids.append
    rig = surround_rig(width=W, height=H)
    scene = render_rig(SceneSpec(), rig, SURROUND_GRID)
    hdr = Header(stamp=Time(sec=1_700_000_000, nanosec=5), frame_id="cam")
    for channel, name in zip(node.cameras, ("front", "rear"), strict=True):
        model = rig.camera(name).model
        k = list(map(float, np.asarray(model.K).ravel()))
        channel._on_camera_info(CameraInfo(
            header=hdr, width=W, height=H, k=k, d=[0.0] * 5, distortion_model="plumb_bob",
            r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], p=[*k[:3], 0.0, *k[3:6], 0.0, *k[6:], 0.0]))
    rgb = {n: scene.views[n].rgb for n in ("front", "rear")}
    data, step = encode_raw(rgb["front"], "rgb8")
    older = Header(stamp=Time(sec=1_699_999_999, nanosec=5), frame_id="cam")
    for h in (older, hdr):  # the cycle waits for rear: the newer front frame replaces the first
        node.cameras[0]._on_image(Image(header=h, height=H, width=W, encoding="rgb8",
                                        step=step, data=bytes(data)))
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb["rear"], cv2.COLOR_RGB2BGR))
    assert ok
    node.cameras[1]._on_image(CompressedImage(header=hdr, format="png", data=png.tobytes()))
    deadline = time.monotonic() + 120
    while not published:
        assert time.monotonic() < deadline, "no fused grid"
        time.sleep(0.05)
    grid = published[0]
    assert (grid.header.stamp.sec, grid.header.stamp.nanosec) == (1_700_000_000, 5)
    assert (grid.info.width, grid.info.height) == SURROUND_GRID.shape[::-1]
    assert worker.last_batch == 2 and worker.fused_published == 1  # one batch of two
    assert own_grids == []
    statuses = [node_common.segmentation_status("/lc_multi/seg_node", worker, node.cameras,
                                                node.info, "base_footprint"),
                *node_common.camera_statuses("/lc_multi/seg_node", worker, node.cameras,
                                             node.info)]
    assert [s.name.rsplit(": ", 1)[1] for s in statuses] == [
        "segmentation", "camera front", "camera rear"]
    for s, dropped in zip(statuses[1:], ("1", "0"), strict=True):  # drops per camera
        values = {kv.key: kv.value for kv in s.values}
        assert values["frames_processed"] == "1" and values["frames_dropped"] == dropped
        assert values["frames_received"] == str(1 + int(dropped))
        assert float(values["latency_p50_ms"]) > 0
    assert {kv.key: kv.value for kv in statuses[0].values}["batch_size_last"] == "2"

    assert node.trigger_deactivate() == SUCCESS
    assert not {"/lc_multi/front/image", "/lc_multi/rear/image/compressed"} & sub_topics(node)
    assert not {"/lc_multi/drivable/grid", "/lc_multi/front/labels"} & pub_topics(node)
    assert worker.fused is None and not worker.channels and not node.cameras
    assert node.trigger_activate() == SUCCESS  # and back, the model kept
    assert "/lc_multi/drivable/grid" in pub_topics(node) and node.model_loads == 1


def stamped(buffer: object, stamp_s: int) -> bool:
    """Put a transform a -> b at ``stamp_s`` into a tf2 buffer; whether it can be read back."""
    from geometry_msgs.msg import TransformStamped
    from rclpy.time import Time as RclTime

    ts = TransformStamped()
    ts.header.stamp.sec, ts.header.frame_id, ts.child_frame_id = stamp_s, "a", "b"
    ts.transform.rotation.w = 1.0
    buffer.set_transform(ts, "test")
    return buffer.can_transform("a", "b", RclTime(seconds=stamp_s))


def switch_clock(node: SegNode) -> None:
    """A time jump on the node's clock: use_sim_time switched on and off at run time (what
    makes tf2 buffers still hooked to the clock clear themselves, or crash once freed)."""
    for value in (True, False):
        assert node.set_parameters([Parameter("use_sim_time", value=value)])[0].successful


@pytest.mark.parametrize("exit_path", ["cleanup", "shutdown", "error", "configure error"])
def test_every_exit_unhooks_the_tf_buffer_from_the_clock(
        make_node: Callable[..., SegNode], monkeypatch: pytest.MonkeyPatch,
        exit_path: str) -> None:
    """A configuration's tf2 buffer registers a jump callback on the node's
    clock; every way out of the configuration unregisters it. One left behind is called at
    the next clock jump: while Python holds the buffer it clears it (seen here, the buffer
    is kept alive), once freed the process dies with SIGSEGV (the test over DDS below)."""
    if not tf_pose.HAVE_TF2:
        pytest.skip("tf2_ros is not installed: no tf2 buffer to hook to the clock")
    made: list[tf_pose.TfPoses] = []
    make_tf = tf_pose.make

    def recording_make(node: SegNode) -> tuple[tf_pose.TfPoses | None, str]:
        tf, reason = make_tf(node)
        assert tf is not None
        made.append(tf)
        return tf, reason

    monkeypatch.setattr(tf_pose, "make", recording_make)
    node = make_node()
    if exit_path == "configure error":  # after the tf buffer exists: on_error releases it
        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("worker exploded")

        monkeypatch.setattr(node_module, "FrameWorker", broken)
        assert node.trigger_configure() == ERROR
    else:
        assert node.trigger_configure() == SUCCESS
        live = made[-1].buffer
        assert stamped(live, 100)
        switch_clock(node)  # the live buffer hears the jump: it is cleared
        assert not live.can_transform("a", "b", rclpy.time.Time(seconds=100))
        if exit_path == "cleanup":
            assert node.trigger_cleanup() == SUCCESS
        elif exit_path == "shutdown":
            assert node.trigger_shutdown() == SUCCESS
        else:
            monkeypatch.setattr(camera_io, "CameraChannel", lambda *a, **k: 1 / 0)
            assert node.trigger_activate() == ERROR
    assert state(node) == ("finalized" if exit_path == "shutdown" else "unconfigured")
    assert node.tf is None and len(made) == 1
    old = made[0].buffer  # kept alive by this test, so a stray callback clears, not crashes
    assert stamped(old, 200)
    switch_clock(node)
    assert old.can_transform("a", "b", rclpy.time.Time(seconds=200)), \
        f"the tf2 buffer is still hooked to the node's clock after {exit_path}"
    made[0].close()  # idempotent


def test_wrong_parameter_type_at_start_is_one_line(context: rclpy.Context) -> None:
    """As seg_node: a value of the wrong type cannot construct the node (main prints it)."""
    from seg_perception.ros.params import StartupError

    with pytest.raises(StartupError, match="cpu_threads must be an integer"):
        SegNode(autostart=False, context=context,
                         parameter_overrides=[Parameter("cpu_threads", value="many")])


# -- over DDS with the real ros2 CLI --------------------------------------------------------
def frame(i: int) -> np.ndarray:
    img = np.full((H, W, 3), (90, 90, 95), np.uint8)
    img[: H // 3] = (120, 160, 220)
    img[H // 2:, (10 * i) % W:] = (200, 30, 30)
    return img


def image_msg(i: int) -> Image:
    return Image(header=Header(stamp=Time(sec=1_700_000_000 + i, nanosec=500), frame_id="cam"),
                 height=H, width=W, encoding="rgb8", step=3 * W, data=frame(i).tobytes())


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    p = Probe("lifecycle_test_probe")
    yield p
    p.close()
    rclpy.try_shutdown()


def ros2_lifecycle(*args: str, timeout: float = 180.0) -> str:
    """`ros2 lifecycle VERB ...` (no daemon); retried while discovery has not found the node
    yet (a loaded machine can take longer than one --spin-time). Its stdout and stderr, and
    its exit status where it said nothing."""
    deadline = time.monotonic() + timeout
    while True:
        out = run_ros2(["lifecycle", args[0], "--no-daemon", "--spin-time", "2", *args[1:]],
                       timeout=timeout)
        text = out.stdout + out.stderr
        if not text.strip():
            text = f"(`ros2 lifecycle {' '.join(args)}` said nothing; exit {out.returncode})"
        if "Node not found" not in text or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def lifecycle_set(node: str, transition: str) -> str:
    return ros2_lifecycle("set", node, transition)


def lifecycle_get(node: str) -> str:
    return ros2_lifecycle("get", node).strip()


class Frames:
    """Publishes numbered frames to ``topic`` and tells which ``labels`` came back."""

    def __init__(self, probe: Probe, ns: str) -> None:
        self.probe = probe
        self.labels = f"{ns}/labels"
        probe.subscribe(Image, self.labels)
        self.pub = probe.publisher(Image, f"{ns}/image")
        self.count = itertools.count()
        self.sent: dict[tuple[int, int], float] = {}

    def publish(self) -> None:
        msg = image_msg(next(self.count))
        self.sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.monotonic()
        self.pub.publish(msg)

    def received(self) -> list[tuple[int, int]]:
        return [(m.header.stamp.sec, m.header.stamp.nanosec)
                for m in self.probe.messages(self.labels)]

    def publish_for(self, seconds: float) -> list[tuple[int, int]]:
        """Publish at 4 Hz for ``seconds``; the stamps sent."""
        before = set(self.sent)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.publish()
            time.sleep(0.25)
        return sorted(set(self.sent) - before)

    def wait_for_last(self, timeout: float = 120.0) -> None:
        """Wait for the labels of the newest frame sent: then none is in flight (the node
        keeps the newest frame and its outputs go out in order)."""
        last = next(reversed(self.sent))
        self.probe.wait_until(lambda: last in self.received(), timeout=timeout,
                              what=f"the labels of the last frame sent on {self.labels}")

    def wait_for_labels(self, n: int, timeout: float = 120.0) -> None:
        start = len(self.received())
        self.probe.wait_until(lambda: len(self.received()) >= start + n, timeout=timeout,
                              what=f"{n} labels on {self.labels}", tick=self.publish,
                              period=0.25)


def wait_graph(probe: Probe, topic: str, subscribers: int, timeout: float = 60.0) -> None:
    probe.wait_until(lambda: probe.node.count_subscribers(topic) == subscribers,
                     timeout=timeout, what=f"{subscribers} subscribers on {topic}")


@pytest.fixture
def processes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for proc in started:
        proc.stop()


def start_lifecycle_node(tmp_path: Path, processes: list[NodeProcess], ns: str,
                         **params: object) -> NodeProcess:
    node = NodeProcess(tmp_path / f"{ns.strip('/')}.log",
                       {"device": "cpu", **params}, namespace=ns, module=LIFECYCLE_MODULE)
    processes.append(node)
    node.wait_for_log("unconfigured: `ros2 lifecycle set")
    return node


@pytest.mark.slow
def test_ros2_lifecycle_drives_the_node(tmp_path: Path, probe: Probe,
                                        processes: list[NodeProcess]) -> None:
    """`ros2 lifecycle set/get/list` on the node over DDS; labels only while active."""
    require_ros2_lifecycle()
    ns, name = "/lc", "/lc/seg_node"
    node = start_lifecycle_node(tmp_path, processes, ns)
    frames = Frames(probe, ns)
    probe.subscribe(DiagnosticArray, "/diagnostics")

    def diagnostics() -> list[dict[str, str]]:
        return [{kv.key: kv.value for kv in s.values}
                for m in probe.messages("/diagnostics") for s in m.status
                if s.name == f"{name}: segmentation"]
    label_info: list[object] = []
    if not missing_modules("vision_msgs"):
        from vision_msgs.msg import LabelInfo

        probe.node.create_subscription(LabelInfo, f"{ns}/label_info", label_info.append,
                                       label_info_qos())

    assert lifecycle_get(name) == "unconfigured [1]"
    listed = ros2_lifecycle("list", name)
    assert "- configure [1]" in listed and "- shutdown [5]" in listed, listed
    assert probe.node.count_subscribers(f"{ns}/image") == 0
    assert frames.publish_for(1.5) and frames.received() == []

    assert "Transitioning successful" in lifecycle_set(name, "configure")
    assert lifecycle_get(name) == "inactive [2]"
    assert "- activate [3]" in ros2_lifecycle("list", name)
    assert probe.node.count_subscribers(f"{ns}/image") == 0  # not listening yet
    frames.publish_for(1.5)
    assert frames.received() == [] and label_info == [] and diagnostics() == []

    assert "Transitioning successful" in lifecycle_set(name, "activate")
    assert lifecycle_get(name) == "active [3]"
    node.wait_for_log(f"{READY} {ns}/image")
    frames.wait_for_labels(3)
    assert set(frames.received()) <= set(frames.sent)
    if not missing_modules("vision_msgs"):
        probe.wait_until(lambda: bool(label_info), timeout=60, what="label_info")
        names = get_entry(DEFAULT_MODEL).meta.class_names
        assert [c.class_name for c in label_info[0].class_map] == list(names)

    probe.wait_until(lambda: bool(diagnostics()), timeout=30, what="/diagnostics")
    assert diagnostics()[-1]["lifecycle_state"] == "active"
    assert diagnostics()[-1]["model_loads"] == "1"

    # The CLI a user debugs with works on the managed node too.
    out = run_ros2(["param", "describe", "--no-daemon", "--timeout", "30", name, "model",
                    "overlay_alpha"])
    assert out.returncode == 0, out.stdout + out.stderr
    model, alpha = out.stdout.split("Parameter name: overlay_alpha")
    assert "Type: string" in model and "Fixed once configured" in model
    assert "Type: double" in alpha and "Min value: 0.0" in alpha
    out = run_ros2(["param", "set", "--no-daemon", "--timeout", "30", name, "model",
                    "tiny_seg"])
    assert "Setting parameter failed: model can only be set while the node is unconfigured " \
        "(it is active)" in out.stdout + out.stderr, out.stdout + out.stderr

    # Deactivate: nothing is received or processed, the model stays.
    frames.wait_for_last()  # no frame in flight: every label the node will send has come
    assert "Transitioning successful" in lifecycle_set(name, "deactivate")
    assert lifecycle_get(name) == "inactive [2]"
    wait_graph(probe, f"{ns}/image", 0)
    seen, reports = set(frames.received()), len(diagnostics())
    while_inactive = frames.publish_for(3.0)
    time.sleep(1.0)
    assert set(frames.received()) == seen
    assert len(diagnostics()) == reports  # diagnostics_period 1 s: none while inactive
    assert not set(while_inactive) & set(frames.received())

    assert "Transitioning successful" in lifecycle_set(name, "activate")
    node.wait_for_log(f"{READY} {ns}/image")
    frames.wait_for_labels(3)
    log = node.log()
    assert log.count(LOADED) == 1 and "(model loads so far: 1)" in log, log  # no reload
    assert log.count(READY) == 2, log

    # Cleanup frees the model; a new configure loads it again.
    assert "Transitioning successful" in lifecycle_set(name, "deactivate")
    assert "Transitioning successful" in lifecycle_set(name, "cleanup")
    assert lifecycle_get(name) == "unconfigured [1]"
    node.wait_for_log("cleaned up (unconfigured): model unloaded")

    assert "Transitioning successful" in lifecycle_set(name, "shutdown")
    assert node.proc.wait(timeout=60) == 0, node.log()
    log = node.log()
    assert "shut down from unconfigured: finalized, exiting" in log
    assert "Traceback" not in log and not error_lines(log), log


@pytest.mark.slow
def test_bad_model_fails_configure_over_dds_and_recovers(
        tmp_path: Path, probe: Probe, processes: list[NodeProcess]) -> None:
    """`ros2 lifecycle set configure` with an unknown model: failed, one error line, no
    traceback, still unconfigured; `ros2 param set` of a good model, then it configures."""
    require_ros2_lifecycle()
    ns, name = "/lcbad", "/lcbad/seg_node"
    node = start_lifecycle_node(tmp_path, processes, ns, model="no_such_model")
    out = lifecycle_set(name, "configure")
    assert "Transitioning failed" in out, out
    assert lifecycle_get(name) == "unconfigured [1]"
    log = node.log()
    assert len(error_lines(log)) == 1, log
    assert "configure failed, still unconfigured: unknown model 'no_such_model'" in log
    assert "Traceback" not in log and node.alive()

    out = run_ros2(["param", "set", "--no-daemon", "--timeout", "30", name, "model",
                    "tiny_seg"])
    assert "Set parameter successful" in out.stdout + out.stderr, out.stdout + out.stderr
    assert "Transitioning successful" in lifecycle_set(name, "configure")
    assert lifecycle_get(name) == "inactive [2]"
    assert "Transitioning successful" in lifecycle_set(name, "activate")
    frames = Frames(probe, ns)
    frames.wait_for_labels(2)

    # Ctrl-C while active: a clean exit.
    node.proc.send_signal(signal.SIGINT)
    assert node.proc.wait(timeout=60) == 0, node.log()
    assert "Traceback" not in node.log()
    assert len(error_lines(node.log())) == 1


def call_service(probe: Probe, node: NodeProcess, srv_type: Any, name: str, request: Any,
                 timeout: float = 180.0, settled: Callable[[], Any] | None = None) -> Any:
    """Call a service of the node under test from the probe (rclpy client, no ros2 CLI);
    fails at once if the node's process dies meanwhile.

    One client per service for the probe's lifetime, and the request sent again when no
    response came in 20 s: on a loaded machine the first response can be lost while the
    client's response reader is still being matched. ``settled`` (for a request that must
    not run twice) says whether the lost request took effect: the response to return, or
    None to send it again."""
    client = probe.client(srv_type, name)
    assert client.wait_for_service(timeout_sec=60.0), f"no service {name}"
    deadline = time.monotonic() + timeout
    while True:
        future = client.call_async(request)
        with contextlib.suppress(AssertionError):
            probe.wait_until(lambda f=future: f.done() or not node.alive(),
                             timeout=min(20.0, max(0.0, deadline - time.monotonic())),
                             what=f"a response from {name}", period=0.1)
        assert node.alive(), f"the node died ({node.proc.returncode}):\n{node.log()}"
        if future.done():
            return future.result()
        client.remove_pending_request(future)
        assert time.monotonic() < deadline, f"no response from {name} in {timeout} s"
        if settled is not None and (result := settled()) is not None:
            return result


#: The state each transition ends in.
GOALS = {"configure": "inactive", "cleanup": "unconfigured", "activate": "active"}


def state_of(probe: Probe, node: NodeProcess, name: str) -> str:
    from lifecycle_msgs.srv import GetState

    return call_service(probe, node, GetState, f"{name}/get_state",
                        GetState.Request()).current_state.label


def transition(probe: Probe, node: NodeProcess, name: str, label: str) -> None:
    """Drive the managed node ``name`` through ``label`` (configure, cleanup, ...)."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    ids = {"configure": Transition.TRANSITION_CONFIGURE,
           "cleanup": Transition.TRANSITION_CLEANUP,
           "activate": Transition.TRANSITION_ACTIVATE}

    def settled() -> Any:  # a transition must not be asked for twice: did it happen?
        done = state_of(probe, node, name) == GOALS[label]
        return ChangeState.Response(success=True) if done else None

    result = call_service(probe, node, ChangeState, f"{name}/change_state",
                          ChangeState.Request(transition=Transition(id=ids[label])),
                          settled=settled)
    assert result.success, f"{label} failed:\n{node.log()}"


def set_use_sim_time(probe: Probe, node: NodeProcess, name: str, value: bool) -> None:
    from rcl_interfaces.srv import SetParameters

    request = SetParameters.Request(
        parameters=[Parameter("use_sim_time", value=value).to_parameter_msg()])
    result = call_service(probe, node, SetParameters, f"{name}/set_parameters", request)
    assert result.results[0].successful, result.results[0].reason


JUMP_LOG = "Detected jump back in time"


@pytest.mark.slow
@pytest.mark.parametrize("jump", ["clock back", "use_sim_time at run time"])
def test_clock_jump_after_configure_cleanup_cycles_keeps_the_node_alive(
        tmp_path: Path, probe: Probe, processes: list[NodeProcess], jump: str) -> None:
    """After 3 configure/cleanup cycles, a clock that jumps back (sim time,
    /clock restarting as a looped bag does) or use_sim_time switched on at run time used to
    call the freed tf2 buffers of the earlier configurations: SIGSEGV, nothing logged. The
    node survives, and a new configure/activate publishes labels."""
    from rosgraph_msgs.msg import Clock

    sim = jump == "clock back"
    ns = "/lcjump" + ("b" if sim else "s")
    name = f"{ns}/seg_node"
    node = start_lifecycle_node(tmp_path, processes, ns, model="tiny_seg", warmup=False,
                                use_sim_time=sim)
    for _ in range(3):
        transition(probe, node, name, "configure")
        transition(probe, node, name, "cleanup")
    assert node.log().count(LOADED) == 3

    clock = probe.publisher(Clock, "/clock", reliable=False)
    ticks: list[int] = []

    def tick_clock() -> None:  # 1000 s, 10 s, 1000 s, ...: a jump back every other tick
        ticks.append(len(ticks))
        clock.publish(Clock(clock=Time(sec=10 if len(ticks) % 2 == 0 else 1000,
                                       nanosec=len(ticks))))

    if sim:
        probe.wait_until(lambda: probe.node.count_subscribers("/clock") >= 1, timeout=60,
                         what="the node's /clock subscription")
        # Unconfigured: no tf2 buffer may hear these (20 jumps back).
        probe.wait_until(lambda: len(ticks) >= 40 or not node.alive(), timeout=60,
                         what="40 /clock messages", tick=tick_clock, period=0.05)
    else:
        set_use_sim_time(probe, node, name, True)
    assert node.alive(), f"the node died ({node.proc.returncode}):\n{node.log()}"

    transition(probe, node, name, "configure")
    transition(probe, node, name, "activate")
    node.wait_for_log(f"{READY} {ns}/image")
    frames = Frames(probe, ns)
    frames.wait_for_labels(3)
    # The live configuration's buffer does hear a jump (and is cleared), without a crash.
    # Without tf2_ros (pip-only) no tf2 buffer hooks the clock, so nothing logs the jump.
    tf2 = importlib.util.find_spec("tf2_ros") is not None
    if sim:
        start = len(ticks)
        probe.wait_until(lambda: (JUMP_LOG in node.log() if tf2 else len(ticks) >= start + 40)
                         or not node.alive(), timeout=60, what=JUMP_LOG, tick=tick_clock,
                         period=0.05)
    else:
        set_use_sim_time(probe, node, name, False)
        if tf2:
            node.wait_for_log(JUMP_LOG)
    frames.wait_for_labels(3)
    assert node.alive(), f"the node died ({node.proc.returncode}):\n{node.log()}"
    assert node.stop() == 0, node.log()
    assert "Traceback" not in node.log(), node.log()


# -- ros2 launch seg.launch.py lifecycle:=true (colcon build) -------------------------------
@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_ros2_lifecycle()
    return session_install(tmp_path_factory)


@pytest.fixture
def launches() -> Iterator[list[RosLaunch]]:
    started: list[RosLaunch] = []
    yield started
    for launch in started:
        launch.close()


LC_READY = r"\[seg_lifecycle_node-\d+\] .*ready: listening on"


@pytest.mark.slow
def test_ros2_run_installed_executable_and_shutdown(tmp_path: Path, install: Path) -> None:
    """`ros2 run seg_perception seg_lifecycle_node` from the colcon install; `ros2 lifecycle
    set shutdown` from active ends the process with status 0."""
    exe = install / "seg_perception" / "lib" / "seg_perception" / "seg_lifecycle_node"
    assert exe.is_file(), "colcon did not install lib/seg_perception/seg_lifecycle_node"
    log_path = tmp_path / "run.log"
    script = (f". {install / 'setup.bash'} && exec ros2 run seg_perception seg_lifecycle_node "
              "--ros-args -r __ns:=/lcr -p device:=cpu -p model:=tiny_seg")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT,
                                env=dict(ros_env(), ROS_LOG_DIR=str(tmp_path / "ros_log")),
                                start_new_session=True)
    try:
        assert "Transitioning successful" in lifecycle_set("/lcr/seg_node", "configure")
        assert "Transitioning successful" in lifecycle_set("/lcr/seg_node", "activate")
        assert lifecycle_get("/lcr/seg_node") == "active [3]"
        assert "Transitioning successful" in lifecycle_set("/lcr/seg_node", "shutdown")
        assert proc.wait(timeout=60) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log_path.read_text()
    assert "shut down from active: finalized, exiting" in text and "Traceback" not in text


@pytest.mark.slow
def test_launch_lifecycle_autostart_configures_and_activates(
        tmp_path: Path, install: Path, probe: Probe, launches: list[RosLaunch]) -> None:
    launch = RosLaunch(install, ["seg_perception", "seg.launch.py", "lifecycle:=true",
                                 "namespace:=lcl", "device:=cpu"], tmp_path / "launch.log")
    launches.append(launch)
    launch.wait_for(LC_READY + " /lcl/image")
    assert lifecycle_get("/lcl/seg_node") == "active [3]"
    frames = Frames(probe, "/lcl")
    frames.wait_for_labels(3)
    # Autostart acts once: a deactivate by hand is not undone by the launch.
    assert "Transitioning successful" in lifecycle_set("/lcl/seg_node", "deactivate")
    time.sleep(3.0)
    assert lifecycle_get("/lcl/seg_node") == "inactive [2]"
    launch.stop_cleanly("seg_lifecycle_node")


@pytest.mark.slow
def test_launch_lifecycle_without_autostart_waits_for_a_manager(
        tmp_path: Path, install: Path, probe: Probe, launches: list[RosLaunch]) -> None:
    """autostart:=false: unconfigured until told; the bag player waits for activation."""
    from bags import make_camera_bag, play_until

    # 8 s of frames at 5 Hz: discovery of the node's new publishers and subscription after
    # activate can take seconds on a loaded machine, and frames before it are not received
    stamps = make_camera_bag(tmp_path / "drive", n=40)
    probe.subscribe(Image, "/lcm/labels")
    launch = RosLaunch(install, ["seg_perception", "seg.launch.py", "lifecycle:=true",
                                 "autostart:=false", "namespace:=lcm", "device:=cpu",
                                 f"bag:={tmp_path / 'drive'}", "image_topic:=/cam/image_raw",
                                 "camera_info_topic:=/cam/camera_info"],
                       tmp_path / "launch.log")
    launches.append(launch)
    launch.wait_for(r"\[seg_lifecycle_node-\d+\] .*unconfigured: `ros2 lifecycle set")
    assert lifecycle_get("/lcm/seg_node") == "unconfigured [1]"
    assert "Transitioning successful" in lifecycle_set("/lcm/seg_node", "configure")
    time.sleep(2.0)
    log = launch.log()
    assert not re.search(LC_READY, log) and "starting `" not in log, log
    assert "Transitioning successful" in lifecycle_set("/lcm/seg_node", "activate")
    launch.wait_for(r"seg_node is ready: starting `")
    launch.wait_for(r"\[seg-perception-\d+\]: process has finished cleanly", timeout=120)
    play_until(lambda: len(probe.messages("/lcm/labels")), 10, tmp_path / "drive",
               "labels for the bag's frames")
    assert {(m.header.stamp.sec, m.header.stamp.nanosec)
            for m in probe.messages("/lcm/labels")} <= stamps
    launch.stop_cleanly("seg_lifecycle_node")


@pytest.mark.slow
def test_launch_refuses_a_non_boolean_lifecycle(tmp_path: Path, install: Path,
                                                launches: list[RosLaunch]) -> None:
    launch = RosLaunch(install, ["seg_perception", "seg.launch.py", "lifecycle:=maybe"],
                       tmp_path / "launch.log")
    launches.append(launch)
    assert launch.wait_exit() != 0
    assert 'Argument "lifecycle" provided value "maybe" is not valid' in launch.log()
    assert "process started" not in launch.log()
