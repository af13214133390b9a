"""One frame pipeline for the node and for bags (ROS-free).

:class:`CycleRunner` is the frame cycle node and ``process`` share (:mod:`.cycle`: one batched
forward pass, image outputs, grids, the fused grid, through two small ports);
:class:`FramePipeline` turns :class:`CameraFrame` sets into :class:`FrameResult` lists
under a :class:`~seg_perception.runtime.config.PipelineConfig` snapshot;
:func:`resolve_pose` decides each frame's camera pose (tf or parameters) and
:class:`CameraInfoBuffer` pairs frames with their camera_info by stamp; :class:`GridFusion`
keeps the cameras' recent grids for the fused surround grid of each cycle. The adapters
(``seg_perception.ros.node``, ``seg_perception.offline.process``) only convert messages.
"""

from seg_perception.runtime.pipeline.cycle import (
    Cycle,
    CycleContext,
    CycleFrame,
    CycleRunner,
    CycleSink,
    MapUpdate,
)
from seg_perception.runtime.pipeline.frames import (
    GRID_OUTPUTS,
    IMAGE_ENCODINGS,
    IMAGE_OUTPUTS,
    OUTPUTS,
    CameraFrame,
    FrameResult,
)
from seg_perception.runtime.pipeline.fusion import CameraGrid, FusedGrid, GridFusion
from seg_perception.runtime.pipeline.pipeline import FUSED, FramePipeline, PendingInference
from seg_perception.runtime.pipeline.pose import PoseResult, TransformLookup, resolve_pose
from seg_perception.runtime.pipeline.sync import JUMP_BACK_S, CameraInfoBuffer

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
    "Cycle",
    "CycleContext",
    "CycleFrame",
    "CycleRunner",
    "CycleSink",
    "FramePipeline",
    "FrameResult",
    "FusedGrid",
    "GridFusion",
    "MapUpdate",
    "PendingInference",
    "PoseResult",
    "TransformLookup",
    "resolve_pose",
]
