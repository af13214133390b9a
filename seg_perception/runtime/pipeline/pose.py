"""Where a camera is: from a transform lookup (tf2 in the node, the bag's tf offline) or the
``camera.*`` parameters, decided the same way in both paths."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from seg_perception.runtime.config import PipelineConfig
from seg_perception.runtime.geometry import CameraMounting, Transform, mounting_from_optical
from seg_perception.runtime.tf import FrameUnknownError, TransformError

#: ``lookup(target, source, stamp_ns, timeout_s)`` -> the transform mapping source into
#: target; raises :class:`~seg_perception.runtime.tf.TransformError` when there is none.
TransformLookup = Callable[[str, str, int, float], Transform]


@dataclass(frozen=True)
class PoseResult:
    """A pose (None when unknown), where it came from (``tf`` or ``parameters``) and why."""

    mounting: CameraMounting | None
    source: str
    detail: str
    problem: str | None = None


def resolve_pose(config: PipelineConfig, frame_id: str, stamp_ns: int,
                 lookup: TransformLookup | None, no_tf_reason: str = "",
                 fallback_unknown: bool = False) -> PoseResult:
    """The camera pose for an image of ``frame_id`` (its optical frame) at ``stamp_ns``.

    ``lookup`` None (tf2_ros absent) or ``use_tf`` false: the ``camera.*`` parameters.
    Otherwise the transform ``grid_frame <- frame_id``; a failure leaves the pose unknown
    (the frame then gets no grid) unless ``fallback_unknown`` and the frames are unknown to
    the transform source altogether (a bag without tf for this camera): parameters then.
    """
    grid = config.grid_frame
    if not config.use_tf:
        return PoseResult(config.mounting, "parameters", "use_tf is false")
    if lookup is None:
        return PoseResult(config.mounting, "parameters", no_tf_reason or "no tf available")
    frame = frame_id.lstrip("/")
    if not frame:
        return PoseResult(None, "tf", "", "the image has an empty header.frame_id, so its "
                          f"pose in {grid} cannot be looked up (set use_tf false to use the "
                          "camera.* parameters)")
    try:
        transform = lookup(grid, frame, stamp_ns, config.tf_timeout)
    except FrameUnknownError as exc:
        if fallback_unknown:
            return PoseResult(config.mounting, "parameters",
                              f"the recording has no transform {grid} <- {frame}")
        return PoseResult(None, "tf", f"{grid} <- {frame}",
                          f"no transform from {frame} to {grid}: {exc}")
    except TransformError as exc:
        return PoseResult(None, "tf", f"{grid} <- {frame}",
                          f"no transform from {frame} to {grid} at "
                          f"{stamp_ns * 1e-9:.3f} s: {exc}")
    try:
        mounting = mounting_from_optical(transform).validate()
    except ValueError as exc:
        return PoseResult(None, "tf", f"{grid} <- {frame}",
                          f"transform {grid} <- {frame} is unusable for the grid: {exc}")
    return PoseResult(mounting, "tf", f"{grid} <- {frame}")


__all__ = ["PoseResult", "TransformLookup", "resolve_pose"]
