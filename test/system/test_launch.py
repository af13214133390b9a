"""launch/seg.launch.py under the real launch, launch_ros and `ros2` CLI.

The package is built with `colcon build` into a temporary workspace and started with
`ros2 launch seg_perception seg.launch.py ...` after `. install/setup.bash`, exactly as a user
does; the test talks to the node over DDS and with `ros2 param` / `ros2 topic`. The tools come
from ../shared/ros2 (built into .venv by `make test`) or a sourced ROS 2 install; without
either these tests skip, saying so (see ros2_tools.py).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
from bags import make_camera_bag, play_until, striped_frame
from builtin_interfaces.msg import Time
from ros2_tools import (
    RosLaunch,
    missing_modules,
    process_env,
    ros2_executable,
    ros_env,
    run_ros2,
    session_install,
)
from ros_harness import Probe
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_perception.ros.params import PARAMS_BY_NAME
from seg_perception.tools.node_process import interrupt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
W, H = 160, 120
READY = r"\[seg_node-\d+\] .*ready: listening on"
NODE_STARTED = r"\[seg_node-\d+\]: process started with pid \[\d+\]"


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout built with colcon, once for the session."""
    return session_install(tmp_path_factory)


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    p = Probe("launch_test_probe")
    yield p
    p.close()
    rclpy.try_shutdown()


@pytest.fixture
def launches() -> Iterator[list[RosLaunch]]:
    """Every `ros2 launch` a test starts is stopped, with all it started, whatever happens."""
    started: list[RosLaunch] = []
    yield started
    for launch in started:
        launch.close()


def image_msg(i: int) -> Image:
    return Image(header=Header(stamp=Time(sec=1_700_000_000 + i, nanosec=500), frame_id="cam"),
                 height=H, width=W, encoding="rgb8", step=3 * W,
                 data=striped_frame(i).tobytes())


def key(msg: object) -> tuple[int, int]:
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


def start(install: Path, launches: list[RosLaunch], log: Path, *args: str,
          env: dict[str, str] | None = None) -> RosLaunch:
    launch = RosLaunch(install, args, log, env)
    launches.append(launch)
    return launch


def param_get(node: str, name: str) -> str:
    out = run_ros2(["param", "get", "--no-daemon", "--timeout", "30", node, name])
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


def hz(topic: str, publish: object, log: Path, seconds: float = 90.0) -> float:
    """`ros2 topic hz TOPIC` while ``publish()`` runs every 0.25 s; its last average rate."""
    with open(log, "w") as out:
        proc = subprocess.Popen([str(ros2_executable()), "topic", "hz", "--window", "20", topic],
                                stdout=out, stderr=subprocess.STDOUT, env=ros_env())
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and log.read_text().count("average rate") < 3:
                assert proc.poll() is None, log.read_text()
                publish()
                time.sleep(0.25)
        finally:
            interrupt(proc)
    text = log.read_text()
    rates = [float(r) for r in re.findall(r"average rate: ([0-9.]+)", text)]
    assert len(rates) >= 3, text
    return rates[-1]


def test_ros2_launch_namespace_remaps_params_file_and_cli(
        tmp_path: Path, install: Path, probe: Probe, launches: list[RosLaunch]) -> None:
    """A user's launch: arguments reach the node, it segments, the CLI sees it, Ctrl-C ends it."""
    params = tmp_path / "mine.yaml"
    params.write_text(textwrap.dedent("""\
        /**:
          ros__parameters:
            grid_frame: "params_file_frame"
            overlay_alpha: 0.25
            device: "cuda"
        """))
    probe.subscribe(Image, "/front/labels")
    pub = probe.publisher(Image, "/cam/image_raw")
    launch = start(install, launches, tmp_path / "launch.log",
                   "seg_perception", "seg.launch.py", "namespace:=front",
                   "image_topic:=/cam/image_raw", "camera_info_topic:=/cam/camera_info",
                   f"params_file:={params}", "device:=cpu", "use_sim_time:=True")
    launch.wait_for(r"\[seg_node-\d+\] .*ready: listening on /cam/image_raw")
    assert "[front.seg_node]" in launch.log()  # namespace

    # Remapped input, namespaced output, stamps copied from the input.
    count = itertools.count()
    sent: set[tuple[int, int]] = set()

    def publish() -> None:
        msg = image_msg(next(count))
        sent.add(key(msg))
        pub.publish(msg)

    probe.wait_until(lambda: len(probe.messages("/front/labels")) >= 3, timeout=120,
                     what="labels from the launched node", tick=publish, period=0.5)
    labels = probe.messages("/front/labels")
    assert {key(m) for m in labels} <= sent
    assert all((m.width, m.height, m.encoding) == (W, H, "mono8") for m in labels)

    # params_file is read, launch arguments override it, the boolean reaches the node typed.
    assert param_get("/front/seg_node", "grid_frame") == "String value is: params_file_frame"
    assert param_get("/front/seg_node", "overlay_alpha") == "Double value is: 0.25"
    assert param_get("/front/seg_node", "device") == "String value is: cpu"
    assert param_get("/front/seg_node", "use_sim_time") == "Boolean value is: True"

    # The CLI a user debugs with.
    out = run_ros2(["param", "describe", "--no-daemon", "--timeout", "30", "/front/seg_node",
                    "overlay_alpha", "model"])
    assert out.returncode == 0, out.stdout + out.stderr
    alpha, model = out.stdout.split("Parameter name: model")
    assert "Parameter name: overlay_alpha" in alpha and "Type: double" in alpha
    assert PARAMS_BY_NAME["overlay_alpha"].description in alpha
    assert "Min value: 0.0" in alpha and "Max value: 1.0" in alpha
    assert "Read only: true" not in alpha
    assert "Type: string" in model and "Read only: true" in model

    rate = hz("/front/labels", publish, tmp_path / "hz.log")
    assert 0.0 < rate <= 8.0, rate  # frames go in at 4 Hz (fewer out on a loaded machine)

    if not missing_modules("vision_msgs"):  # ros2 topic echo needs the message package
        out = run_ros2(["topic", "echo", "--no-daemon", "--once", "--qos-durability",
                        "transient_local", "--qos-reliability", "reliable",
                        "/front/label_info", "vision_msgs/msg/LabelInfo"], timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "class_name: Road" in out.stdout and "threshold: 0.0" in out.stdout

    launch.stop_cleanly("seg_node")


def test_ros2_launch_bag_plays_after_the_node_is_ready(
        tmp_path: Path, install: Path, probe: Probe, launches: list[RosLaunch]) -> None:
    """bag:= starts the player once seg_node is ready, with the profile, on sim time."""
    fallback = bool(missing_modules("ros2bag", "rosbag2_py"))
    stamps = make_camera_bag(tmp_path / "drive", n=40)
    probe.subscribe(Image, "/labels")
    launch = start(install, launches, tmp_path / "launch.log",
                   "seg_perception", "seg.launch.py", f"bag:={tmp_path / 'drive'}",
                   "image_topic:=/cam/image_raw", "camera_info_topic:=/cam/camera_info",
                   "device:=cpu")
    player_name = "seg-perception" if fallback else "ros2"
    started = launch.wait_for(rf"\[{player_name}-\d+\]: process started with pid \[(\d+)\]")
    player_pid = int(re.search(r"\[(\d+)\]$", started).group(1))
    node_pid = next(p for n, p in launch.pids().items() if n.startswith("seg_node"))
    player_env, node_env = process_env(player_pid), process_env(node_pid)
    log = launch.log()
    # The player was started by the node's ready line, not with the node.
    assert log.index("ready: listening on /cam/image_raw") < log.index(started), log
    assert re.search(r"seg_node is ready: starting `" + (
        "seg-perception play" if fallback else "ros2 bag play"), log), log
    profile = install / "seg_perception" / "share" / "seg_perception" / "config"
    assert player_env[PROFILE_ENV] == node_env[PROFILE_ENV] == str(profile / "fastdds_shm.xml")

    launch.wait_for(rf"\[{player_name}-\d+\]: process has finished cleanly", timeout=120)
    play_until(lambda: len(probe.messages("/labels")), 20, tmp_path / "drive",
               "labels for the bag's frames")
    got = {key(m) for m in probe.messages("/labels")}
    assert got <= stamps  # outputs carry the recorded stamps
    assert param_get("/seg_node", "use_sim_time") == "Boolean value is: True"
    launch.stop_cleanly("seg_node")


def test_including_launch_keeps_its_environment(
        tmp_path: Path, install: Path, launches: list[RosLaunch]) -> None:
    """The Fast DDS profile reaches seg_node, not the other processes of an including launch."""
    parent = tmp_path / "robot.launch.py"
    parent.write_text(textwrap.dedent(f"""\
        import os
        from launch import LaunchDescription
        from launch.actions import ExecuteProcess, IncludeLaunchDescription
        from launch.launch_description_sources import PythonLaunchDescriptionSource
        from launch_ros.substitutions import FindPackageShare
        from launch.substitutions import PathJoinSubstitution

        def generate_launch_description():
            seg = PathJoinSubstitution([FindPackageShare("seg_perception"), "launch",
                                        "seg.launch.py"])
            return LaunchDescription([
                IncludeLaunchDescription(PythonLaunchDescriptionSource(seg),
                                         launch_arguments={{"device": "cpu"}}.items()),
                ExecuteProcess(cmd=[{sys.executable!r}, "-c",
                                    "import os; print('sibling sees', "
                                    "os.environ.get('{PROFILE_ENV}', 'nothing'))"],
                               name="sibling", output="screen"),
            ])
        """))
    launch = start(install, launches, tmp_path / "launch.log", str(parent),
                   env=ros_env(drop=[PROFILE_ENV]))
    launch.wait_for(READY)
    launch.wait_for(r"\[sibling-\d+\]: process has finished cleanly")
    assert re.search(r"\[sibling-\d+\] sibling sees nothing", launch.log()), launch.log()
    node_pid = next(p for n, p in launch.pids().items() if n.startswith("seg_node"))
    profile = install / "seg_perception" / "share" / "seg_perception" / "config"
    assert process_env(node_pid)[PROFILE_ENV] == str(profile / "fastdds_shm.xml")
    assert param_get("/seg_node", "use_sim_time") == "Boolean value is: False"
    launch.stop_cleanly("seg_node")


def test_ros2_bag_player_without_rosbag2_is_refused(tmp_path: Path, install: Path,
                                                   launches: list[RosLaunch]) -> None:
    if not missing_modules("ros2bag", "rosbag2_py"):
        pytest.skip("rosbag2 is installed here: bag_player:=ros2 is valid")
    make_camera_bag(tmp_path / "drive", n=1)
    launch = start(install, launches, tmp_path / "launch.log", "seg_perception",
                   "seg.launch.py", f"bag:={tmp_path / 'drive'}", "bag_player:=ros2")
    assert launch.wait_exit() != 0, launch.log()
    assert "`ros2 bag` (rosbag2) is not installed" in launch.log(), launch.log()
    assert not re.search(NODE_STARTED, launch.log()), launch.log()


@pytest.mark.parametrize(("argument", "expected"), [
    ("rviz:=maybe", r'Argument "rviz" provided value "maybe" is not valid'),
    ("use_sim_time:=yes", r'Argument "use_sim_time" provided value "yes" is not valid'),
    ("bag_player:=rosbag", r'Argument "bag_player" provided value "rosbag" is not valid'),
    ("fastdds_profile:=/no/such/profile.xml", r"fastdds_profile:=/no/such/profile.xml: no such"),
])
def test_invalid_arguments_are_refused(tmp_path: Path, install: Path,
                                       launches: list[RosLaunch], argument: str,
                                       expected: str) -> None:
    launch = start(install, launches, tmp_path / "launch.log", "seg_perception",
                   "seg.launch.py", argument)
    code = launch.wait_exit()
    log = launch.log()
    assert code != 0, log
    assert re.search(expected, log), log
    assert not re.search(NODE_STARTED, log), log  # refused before anything started
    assert "Traceback" not in log, log
