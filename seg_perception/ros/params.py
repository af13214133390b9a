"""Every parameter of ``seg_node``: name, default, description, constraints.

One table drives the declarations (with ``ParameterDescriptor``s), the validation of new
values, and the test that ``config/seg.yaml`` names exactly these parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.engine import DEVICE_CHOICES, PRECISION_CHOICES


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. ``choices`` or ``(min, max)`` bound its values."""

    name: str
    default: Any
    description: str
    read_only: bool = True
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None

    def check(self, value: Any) -> str | None:
        """None when ``value`` is valid, else a message naming the valid values."""
        if self.choices is not None:
            ok = value in self.choices or (
                self.name == "device" and isinstance(value, str) and _is_cuda_n(value)
            )
            if not ok:
                return f"{self.name}={value!r} is invalid; valid values: {', '.join(self.choices)}"
        if self.min is not None and value < self.min:
            return f"{self.name}={value!r} is below its minimum {self.min}"
        if self.max is not None and value > self.max:
            return f"{self.name}={value!r} is above its maximum {self.max}"
        return None


def _is_cuda_n(value: str) -> bool:
    head, _, index = value.partition(":")
    return head == "cuda" and index.isdigit()


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model", "default",
              "Registered model name (see `seg-perception models`), 'default' for the model "
              "shipped with the package, or a path to an exported .onnx file."),
    ParamSpec("checkpoint", "",
              "Weights file for `model` (official .pth/.pt or our .safetensors); empty: the "
              "package's shipped weights for that model, if any."),
    ParamSpec("device", "auto", "Inference device; 'auto' uses CUDA when available.",
              choices=(*tuple(c for c in DEVICE_CHOICES if c != "cuda:N"), "cuda:N")),
    ParamSpec("precision", "auto", "'auto' is fp16 on CUDA, fp32 on CPU.",
              choices=PRECISION_CHOICES),
    ParamSpec("input_transport", "raw",
              "'raw' subscribes to `image` (sensor_msgs/Image), 'compressed' to "
              "`image/compressed` (sensor_msgs/CompressedImage, JPEG or PNG).",
              choices=("raw", "compressed")),
    ParamSpec("image_qos.reliability", "best_effort",
              "Reliability of the image and camera_info subscriptions; best_effort connects "
              "to both reliable and best-effort publishers.",
              choices=("best_effort", "reliable")),
    ParamSpec("image_qos.depth", 1,
              "Queue depth of the image subscription (1: always the newest frame).",
              min=1, max=100),
    ParamSpec("output_qos.reliability", "reliable", "Reliability of all outputs.",
              choices=("reliable", "best_effort")),
    ParamSpec("output_qos.depth", 10, "Queue depth of all outputs.", min=1, max=100),
    ParamSpec("overlay_alpha", 0.5, "Weight of the palette colours in `overlay` (0..1).",
              read_only=False, min=0.0, max=1.0),
    ParamSpec("warmup", True,
              "Run dummy frames through the model and message serialisation at start-up so "
              "the first real frame is not slow."),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.",
              min=0.1, max=60.0),
    ParamSpec("grid_frame", "base_link",
              "Frame of the bird's-eye grid and boundary (x forward, y left, z up, ground at "
              "z = 0); the camera mounting below is given in this frame."),
    ParamSpec("camera.x", 0.0, "Camera body frame position x in grid_frame (m)."),
    ParamSpec("camera.y", 0.0, "Camera body frame position y in grid_frame (m)."),
    ParamSpec("camera.z", 1.5, "Camera height above the ground plane (m, > 0).",
              min=0.0),
    ParamSpec("camera.roll", 0.0, "Camera roll about grid_frame x (rad, fixed-axis rpy).",
              min=-3.1416, max=3.1416),
    ParamSpec("camera.pitch", 0.0, "Camera pitch (rad); positive looks down at the road.",
              min=-1.5708, max=1.5708),
    ParamSpec("camera.yaw", 0.0, "Camera yaw about grid_frame z (rad).",
              min=-3.1416, max=3.1416),
    ParamSpec("grid.resolution", 0.1, "Grid cell size (m).", min=0.0),
    ParamSpec("grid.x_min", 0.0, "Grid extent: nearest x (m, forward)."),
    ParamSpec("grid.x_max", 40.0, "Grid extent: farthest x (m, forward)."),
    ParamSpec("grid.y_min", -10.0, "Grid extent: rightmost y (m, left positive)."),
    ParamSpec("grid.y_max", 10.0, "Grid extent: leftmost y (m, left positive)."),
)

PARAMS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMS}
