"""One frame pipeline for the node and for bags (ROS-free).

:class:`FramePipeline` turns :class:`CameraFrame` sets into :class:`FrameResult` lists
under a :class:`~seg_perception.core.config.PipelineConfig` snapshot;
:func:`resolve_pose` decides each frame's camera pose (tf or parameters) and
:class:`CameraInfoBuffer` pairs frames with their camera_info by stamp; :class:`GridFusion`
keeps the cameras' recent grids for the fused surround grid of each cycle. The adapters
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
from .fusion import CameraGrid, FusedGrid, GridFusion
from .pipeline import FUSED, FramePipeline, PendingInference
from .pose import PoseResult, TransformLookup, resolve_pose
from .sync import JUMP_BACK_S, CameraInfoBuffer

__all__ = [
    "FUSED",
    "GRID_OUTPUTS",
    "IMAGE_ENCODINGS",
    "IMAGE_OUTPUTS",
    "JUMP_BACK_S",
    "OUTPUTS",
    "CameraFrame",
    "CameraGrid",
    "CameraInfoBuffer",
    "FramePipeline",
    "FrameResult",
    "FusedGrid",
    "GridFusion",
    "PendingInference",
    "PoseResult",
    "TransformLookup",
    "resolve_pose",
]
