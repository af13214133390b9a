"""Every parameter of ``seg_node`` and ``process``: one table, one set of defaults.

The table drives the node's ROS parameter declarations (:mod:`seg_perception.ros.params`
turns each entry into a ``ParameterDescriptor``), the validation of new values at start-up,
at run time and in ``process --params-file``, and ``config/seg.yaml``, which is generated
from it (``python -m seg_perception.runtime.config > config/seg.yaml``; a test checks the file
is current). :class:`PipelineConfig` is the immutable snapshot of the values the frame
pipeline works with; the node builds a new one for each accepted parameter change and the
worker reads one per frame.

ROS-free and torch-free: nothing here imports rclpy, cv_bridge or torch.

This ``__init__`` is the public surface (import from ``seg_perception.runtime.config``); by
concern: the table (:mod:`.table`), checking values (:mod:`.validate`), the pipeline's
snapshot (:mod:`.snapshot`), parameter files and ``config/seg.yaml`` (:mod:`.params_file`).
"""

from seg_perception.runtime.config.params_file import (
    describe,
    params_yaml,
    read_params_file,
)
from seg_perception.runtime.config.snapshot import (
    PipelineConfig,
    check_camera_poses,
)
from seg_perception.runtime.config.table import (
    CAMERA_PARAMS,
    DEFAULTS,
    IMAGE_TYPES,
    MAX_CAMERAS,
    NODE_NAME,
    PARAMS,
    PARAMS_BY_NAME,
    ROS_PARAMETERS,
    SINGLE_CAMERA,
    ConfigError,
    ParamSpec,
    camera_names_problem,
    camera_param,
    camera_spec,
    camera_specs,
)
from seg_perception.runtime.config.validate import (
    camera_values,
    is_ros_parameter,
    unknown_parameter_message,
    validate_values,
)

__all__ = [
    "CAMERA_PARAMS",
    "DEFAULTS",
    "IMAGE_TYPES",
    "MAX_CAMERAS",
    "NODE_NAME",
    "PARAMS",
    "PARAMS_BY_NAME",
    "ROS_PARAMETERS",
    "SINGLE_CAMERA",
    "ConfigError",
    "ParamSpec",
    "PipelineConfig",
    "camera_names_problem",
    "camera_param",
    "camera_spec",
    "camera_specs",
    "camera_values",
    "check_camera_poses",
    "describe",
    "is_ros_parameter",
    "params_yaml",
    "read_params_file",
    "unknown_parameter_message",
    "validate_values",
]
