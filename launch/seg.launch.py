"""Start seg_node for one camera.

Examples:
  ros2 launch seg_perception seg.launch.py image_topic:=/camera/image_raw \
      camera_info_topic:=/camera/camera_info
  ros2 launch seg_perception seg.launch.py namespace:=front model:=pidnet_s \
      checkpoint:=/data/PIDNet_S_Cityscapes_val.pt device:=cuda
  ros2 launch seg_perception seg.launch.py bag:=/data/drive.mcap \
      image_topic:=/camera/image_raw camera_info_topic:=/camera/camera_info rviz:=true
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

# Launch arguments whose non-empty value overrides the same node parameter.
OVERRIDES = ("model", "checkpoint", "device")


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _node(context, *args, **kwargs):
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    params = [get("params_file")]
    overrides = {name: get(name) for name in OVERRIDES if get(name)}
    bag = get("bag")
    # Replaying a bag: the node runs on the bag's /clock.
    overrides["use_sim_time"] = _truthy(get("use_sim_time")) or bool(bag)
    params.append(overrides)
    actions = []
    profile = get("fastdds_profile")
    if profile:
        # Large images need shared memory with big segments; UDP loses fragments of them.
        actions.append(SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", profile))
    node = Node(
        package="seg_perception",
        executable="seg_node",
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
    )
    actions.append(node)
    if bag:
        actions.append(ExecuteProcess(cmd=["ros2", "bag", "play", "--clock", bag],
                                      output="screen"))
    if _truthy(get("rviz")):
        rviz_config = os.path.join(get_package_share_directory("seg_perception"), "config",
                                   "seg.rviz")
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                            arguments=["-d", rviz_config],
                            parameters=[{"use_sim_time": overrides["use_sim_time"]}]))
    return actions


def generate_launch_description():
    default_params = os.path.join(
        get_package_share_directory("seg_perception"), "config", "seg.yaml"
    )
    fastdds_profile = os.path.join(
        get_package_share_directory("seg_perception"), "config", "fastdds_shm.xml"
    )
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with seg_node parameters"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and its relative topics"),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="camera image topic (its /compressed is used when "
                                          "input_transport is compressed)"),
        DeclareLaunchArgument("camera_info_topic", default_value="camera_info",
                              description="CameraInfo topic of the same camera"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (e.g. when replaying a bag)"),
        DeclareLaunchArgument("model", default_value="",
                              description="model name or .onnx path; empty: params_file's"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="weights file; empty: params_file's"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto, cpu, cuda or cuda:N; empty: params_file's"),
        DeclareLaunchArgument("fastdds_profile", default_value=fastdds_profile,
                              description="Fast DDS XML profile for seg_node (shared memory "
                                          "for large images); empty: Fast DDS defaults. Use "
                                          "the same profile for the camera driver."),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="true: also start rviz2 with config/seg.rviz"),
        DeclareLaunchArgument("bag", default_value="",
                              description="rosbag2 to replay with `ros2 bag play --clock` "
                                          "(sets use_sim_time)"),
        OpaqueFunction(function=_node),
    ])
