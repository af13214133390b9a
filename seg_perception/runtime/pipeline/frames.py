"""What goes into the frame pipeline and what comes out, for one camera's frame.

A cycle of the pipeline takes a *set* of frames (one per camera, or one), each with its own
calibration and pose, so several cameras share one call (and, later, one batched forward
pass and a fused grid).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seg_perception.runtime.geometry import CameraCalibration, CameraMounting, GridSpec

#: Per-camera image outputs (relative topic names of CONTRACT.md).
IMAGE_OUTPUTS = ("labels", "labels_color", "overlay", "confidence", "drivable/mask")
#: Bird's-eye outputs, in ``grid_frame``.
GRID_OUTPUTS = ("drivable/grid", "drivable/boundary")
OUTPUTS = IMAGE_OUTPUTS + GRID_OUTPUTS
#: Image outputs and their encodings.
IMAGE_ENCODINGS = {"labels": "mono8", "labels_color": "rgb8", "overlay": "rgb8",
                   "confidence": "mono8", "drivable/mask": "mono8"}


@dataclass(frozen=True)
class CameraFrame:
    """One decoded frame of one camera and what is known about its geometry.

    ``calibration`` is the camera_info paired with the frame (None: none yet); ``pose`` the
    camera's pose in grid_frame as a body-frame mounting (from tf or the camera.*
    parameters; None: unknown); ``no_grid`` says why either is missing, for the result.
    """

    rgb: np.ndarray
    calibration: CameraCalibration | None = None
    pose: CameraMounting | None = None
    rectified: bool = False
    camera: str = ""
    no_grid: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


@dataclass
class FrameResult:
    """Outputs of one frame; only what was asked for is set.

    ``grid`` is int8 (height, width) laid out as ``grid_spec`` says (OccupancyGrid data),
    ``boundary`` (N, 2) x, y in ``grid_frame``. Where grid outputs were asked for but could
    not be made, ``no_grid`` says why (no camera_info, no pose, size mismatch ...).
    ``lookup_built`` is True when the frame's camera model or pose needed a new ground
    lookup (for logs). ``timings`` are milliseconds per stage.
    """

    camera: str = ""
    labels: np.ndarray | None = None
    labels_color: np.ndarray | None = None
    overlay: np.ndarray | None = None
    confidence: np.ndarray | None = None
    drivable: np.ndarray | None = None
    grid: np.ndarray | None = None
    grid_spec: GridSpec | None = None
    grid_frame: str = ""
    boundary: np.ndarray | None = None
    no_grid: str | None = None
    lookup_built: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def image(self, name: str) -> np.ndarray | None:
        """The array of image output ``name`` (e.g. ``drivable/mask``), or None."""
        return {"labels": self.labels, "labels_color": self.labels_color,
                "overlay": self.overlay, "confidence": self.confidence,
                "drivable/mask": self.drivable}[name]


__all__ = [
    "GRID_OUTPUTS",
    "IMAGE_ENCODINGS",
    "IMAGE_OUTPUTS",
    "OUTPUTS",
    "CameraFrame",
    "FrameResult",
]
