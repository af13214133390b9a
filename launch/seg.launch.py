"""Start seg_node for one camera, optionally replaying a bag into it and RViz beside it.

Examples:
  ros2 launch seg_perception seg.launch.py image_topic:=/camera/image_raw \
      camera_info_topic:=/camera/camera_info
  ros2 launch seg_perception seg.launch.py namespace:=front model:=pidnet_s \
      checkpoint:=/data/PIDNet_S_Cityscapes_val.pt device:=cuda
  ros2 launch seg_perception seg.launch.py bag:=/data/drive.mcap \
      image_topic:=/camera/image_raw camera_info_topic:=/camera/camera_info rviz:=true
  ros2 launch seg_perception seg.launch.py lifecycle:=true autostart:=false   # for a manager

`lifecycle:=true` starts `seg_lifecycle_node` (the same node, managed) instead of `seg_node`;
with `autostart:=true` (the default) the launch configures it and, once it is inactive,
activates it; with `autostart:=false` it waits unconfigured for a lifecycle manager or
`ros2 lifecycle set`.

The Fast DDS profile (`fastdds_profile`) is given to the processes started here only (the node,
the bag player, RViz), never set in the launch's environment, so a launch file that includes
this one keeps its own transport settings. The bag player starts once the node has printed its
"ready" line, so the first frames of the bag are not lost while the model loads.
"""

import importlib.util
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessIO
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import ExecutableInPackage
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription

# Launch arguments whose non-empty value overrides the same node parameter.
OVERRIDES = ("model", "checkpoint", "device")
# Booleans as launch's own conditions read them (IfCondition: true/false/1/0, any case).
TRUE, FALSE = ("true", "1"), ("false", "0")
BOOL_CHOICES = ["true", "false", "True", "False", "1", "0"]
PLAYERS = ["auto", "ros2", "seg-perception"]
# seg_node logs this once its model is loaded and its subscription exists (the lifecycle
# node once it is active).
READY_TEXT = "ready: listening on"
CLOCK_HZ = "40"
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def parse_bool(name: str, value: str) -> bool:
    """The boolean a launch argument holds; anything else is an error naming the argument."""
    text = value.strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise RuntimeError(f"launch argument {name}:={value!r} is not a boolean: use true or false")


def ros2_bag_available() -> bool:
    """`ros2 bag` is the ros2bag verb on rosbag2_py (C++, in a ROS 2 install, not on PyPI)."""
    return all(importlib.util.find_spec(m) is not None for m in ("ros2bag", "rosbag2_py"))


def player_command(player: str, bag: str) -> list:
    """The command that replays ``bag`` with /clock: `ros2 bag play` or `seg-perception play`."""
    if player == "auto":
        player = "ros2" if ros2_bag_available() else "seg-perception"
    if player == "ros2":
        if not ros2_bag_available():
            raise RuntimeError("launch argument bag_player:=ros2, but `ros2 bag` (rosbag2) is "
                               "not installed: use bag_player:=seg-perception or auto")
        # --clock takes an optional frequency: the bag goes before it, not after.
        return ["ros2", "bag", "play", bag, "--clock", CLOCK_HZ]
    if player == "seg-perception":
        return [ExecutableInPackage("seg-perception", "seg_perception"), "play", bag,
                "--clock-hz", CLOCK_HZ]
    raise RuntimeError(f"launch argument bag_player:={player!r} is invalid; valid values: "
                       f"{', '.join(PLAYERS)}")


def after_ready(node: Node, actions: list) -> RegisterEventHandler:
    """Run ``actions`` once, when ``node`` prints its ready line (stdout or stderr)."""
    state = {"done": False, "stdout": "", "stderr": ""}

    def on_output(event):
        if state["done"]:
            return None
        stream = "stderr" if event.from_stderr else "stdout"
        text = state[stream] + event.text.decode(errors="replace")
        state[stream] = text[-len(READY_TEXT) - 200:]  # a line may arrive in pieces
        if READY_TEXT not in text:
            return None
        state["done"] = True
        return actions

    return RegisterEventHandler(OnProcessIO(target_action=node, on_stdout=on_output,
                                            on_stderr=on_output))


def autostart_actions(node: LifecycleNode) -> list:
    """Configure ``node``, then activate it once it is inactive (once: a later deactivate or
    cleanup by a manager or a user is not undone)."""
    def change(transition_id: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition_id))

    return [
        RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
            entities=[change(Transition.TRANSITION_ACTIVATE)], handle_once=True)),
        change(Transition.TRANSITION_CONFIGURE),
    ]


def _actions(context, *args, **kwargs):
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    bag = get("bag")
    use_sim_time = parse_bool("use_sim_time", get("use_sim_time")) or bool(bag)
    rviz = parse_bool("rviz", get("rviz"))
    lifecycle = parse_bool("lifecycle", get("lifecycle"))
    autostart = parse_bool("autostart", get("autostart"))
    params = [get("params_file"),
              {**{name: get(name) for name in OVERRIDES if get(name)},
               "use_sim_time": use_sim_time}]  # replaying a bag: the node runs on its /clock
    profile = get("fastdds_profile")
    if profile and not os.path.isfile(profile):
        raise RuntimeError(f"launch argument fastdds_profile:={profile}: no such file")
    # Large images need shared memory with big segments (UDP loses their fragments); only the
    # processes started here get the profile: nothing is set in the launch's environment.
    env = {PROFILE_ENV: profile} if profile else None
    node = (LifecycleNode if lifecycle else Node)(
        package="seg_perception",
        executable="seg_lifecycle_node" if lifecycle else "seg_node",
        name="seg_node",
        namespace=get("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=params,
        remappings=[
            ("image", get("image_topic")),
            ("image/compressed", get("image_topic") + "/compressed"),
            ("camera_info", get("camera_info_topic")),
        ],
        additional_env=env,
    )
    actions = [node]
    if lifecycle and autostart:
        actions += autostart_actions(node)
    if bag:
        cmd = player_command(get("bag_player"), bag)
        shown = " ".join(c if isinstance(c, str) else "seg-perception" for c in cmd)
        player = ExecuteProcess(cmd=cmd, output="screen", additional_env=env)
        actions.append(after_ready(node, [
            LogInfo(msg=f"seg_node is ready: starting `{shown}`"), player]))
    if rviz:
        rviz_config = get("rviz_config") or os.path.join(
            get_package_share_directory("seg_perception"), "config", "seg.rviz")
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                            arguments=["-d", rviz_config],
                            parameters=[{"use_sim_time": use_sim_time}],
                            additional_env=env))
    return actions


def generate_launch_description():
    share = get_package_share_directory("seg_perception")
    return LaunchDescription([
        DeclareLaunchArgument("params_file",
                              default_value=os.path.join(share, "config", "seg.yaml"),
                              description="YAML file with seg_node parameters"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and its relative topics"),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="camera image topic (its /compressed is used when "
                                          "input_transport is compressed)"),
        DeclareLaunchArgument("camera_info_topic", default_value="camera_info",
                              description="CameraInfo topic of the same camera"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=BOOL_CHOICES,
                              description="use /clock (e.g. when replaying a bag)"),
        DeclareLaunchArgument("model", default_value="",
                              description="model name or .onnx path; empty: params_file's"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="weights file; empty: params_file's"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto, cpu, cuda or cuda:N; empty: params_file's"),
        DeclareLaunchArgument("fastdds_profile",
                              default_value=os.path.join(share, "config", "fastdds_shm.xml"),
                              description="Fast DDS XML profile for the processes started "
                                          "here (shared memory for large images); empty: "
                                          "inherit. Use the same profile for the camera "
                                          "driver."),
        DeclareLaunchArgument("rviz", default_value="false", choices=BOOL_CHOICES,
                              description="true: also start rviz2 with config/seg.rviz"),
        DeclareLaunchArgument("rviz_config", default_value="",
                              description="rviz2 config for rviz:=true; empty: config/seg.rviz "
                                          "(config/seg_surround.rviz shows four cameras and "
                                          "the fused grid)"),
        DeclareLaunchArgument("lifecycle", default_value="false", choices=BOOL_CHOICES,
                              description="true: start seg_lifecycle_node, the managed "
                                          "(lifecycle) node, instead of seg_node"),
        DeclareLaunchArgument("autostart", default_value="true", choices=BOOL_CHOICES,
                              description="with lifecycle:=true: configure and activate it "
                                          "(false: leave it unconfigured for a lifecycle "
                                          "manager or `ros2 lifecycle set`)"),
        DeclareLaunchArgument("bag", default_value="",
                              description="rosbag2 to replay with /clock once seg_node is "
                                          "ready (sets use_sim_time)"),
        DeclareLaunchArgument("bag_player", default_value="auto", choices=PLAYERS,
                              description="auto: `ros2 bag play` where rosbag2 is installed, "
                                          "else `seg-perception play` (same --clock)"),
        OpaqueFunction(function=_actions),
    ])
