"""One frame pipeline for the node and for bags (ROS-free).

:class:`FramePipeline` turns :class:`CameraFrame` sets into :class:`FrameResult` lists
under a :class:`~seg_perception.core.config.PipelineConfig` snapshot;
:func:`resolve_pose` decides each frame's camera pose (tf or parameters) and
:class:`CameraInfoBuffer` pairs frames with their camera_info by stamp. The adapters
(``seg_perception.ros.node``, ``seg_perception.core.bagio``) only convert messages.
"""

from .frames import (
    GRID_OUTPUTS,
    IMAGE_ENCODINGS,
    IMAGE_OUTPUTS,
    OUTPUTS,
    CameraFrame,
    FrameResult,
)
from .pipeline import FramePipeline
from .pose import PoseResult, TransformLookup, resolve_pose
from .sync import CameraInfoBuffer

__all__ = [
    "GRID_OUTPUTS",
    "IMAGE_ENCODINGS",
    "IMAGE_OUTPUTS",
    "OUTPUTS",
    "CameraFrame",
    "CameraInfoBuffer",
    "FramePipeline",
    "FrameResult",
    "PoseResult",
    "TransformLookup",
    "resolve_pose",
]
