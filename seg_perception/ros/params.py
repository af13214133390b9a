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
    ParamSpec("precision", "auto",
              "'auto' is fp16 on CUDA; on a CPU bf16 where it has a bf16 matrix unit (AMX or "
              "AVX-512 BF16), else fp32. 'int8' needs an int8 .onnx model from "
              "`seg-perception export --int8`.", choices=PRECISION_CHOICES),
    ParamSpec("cpu_threads", 0,
              "CPU threads for inference (torch, ONNX Runtime); 0: half the CPUs, at least 1, "
              "leaving room for decoding, DDS and other nodes.", min=0, max=256),
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
    ParamSpec("camera.x", 0.0, "Camera body frame position x in grid_frame (m).", read_only=False),
    ParamSpec("camera.y", 0.0, "Camera body frame position y in grid_frame (m).", read_only=False),
    ParamSpec("camera.z", 1.5, "Camera height above the ground plane (m, > 0).",
              min=0.0, read_only=False),
    ParamSpec("camera.roll", 0.0, "Camera roll about grid_frame x (rad, fixed-axis rpy).",
              min=-3.1416, max=3.1416, read_only=False),
    ParamSpec("camera.pitch", 0.0, "Camera pitch (rad); positive looks down at the road.",
              min=-1.5708, max=1.5708, read_only=False),
    ParamSpec("camera.yaw", 0.0, "Camera yaw about grid_frame z (rad).",
              min=-3.1416, max=3.1416, read_only=False),
    ParamSpec("grid.resolution", 0.1, "Grid cell size (m).", min=0.0, read_only=False),
    ParamSpec("grid.x_min", 0.0, "Grid extent: nearest x (m, forward).", read_only=False),
    ParamSpec("grid.x_max", 40.0, "Grid extent: farthest x (m, forward).", read_only=False),
    ParamSpec("grid.y_min", -10.0, "Grid extent: rightmost y (m, left positive).",
              read_only=False),
    ParamSpec("grid.y_max", 10.0, "Grid extent: leftmost y (m, left positive).",
              read_only=False),
    ParamSpec("grid.max_range", 50.0,
              "Cells farther than this from the point below the camera are unseen (-1) (m).",
              min=0.0, read_only=False),
    ParamSpec("grid.max_pixel_footprint", 1.0,
              "Cells where one image pixel covers more ground than this are unseen (-1): "
              "limits the grid before the horizon, where a pixel spans metres (m).", min=0.0,
              read_only=False),
    ParamSpec("mask.speckle_area", 9,
              "Drivable-mask blobs and gaps smaller than about this many pixels are removed "
              "before projection (0: no cleaning).", min=0, max=10000, read_only=False),
    ParamSpec("boundary.max_vertices", 64,
              "Most vertices of the free-space boundary polygon.", min=4, max=4096,
              read_only=False),
    ParamSpec("boundary.min_region_area", 1.0,
              "Free-space regions smaller than this are ignored when choosing the region "
              "connected to the vehicle (m^2).", min=0.0, read_only=False),
)

PARAMS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


def params_yaml() -> str:
    """``config/seg.yaml``: every parameter with its default and its description as comments.

    Regenerate the file with ``python -m seg_perception.ros.params > config/seg.yaml``.
    """
    import textwrap

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return f'"{v}"' if isinstance(v, str) else repr(v)

    lines = [
        "# Parameters of seg_node: every parameter the node declares, with its default.",
        "# Use: ros2 launch seg_perception seg.launch.py params_file:=/path/to/copy.yaml",
        "#  or: seg_node --ros-args --params-file config/seg.yaml",
        "# Model facts (input size, normalisation, classes, palette, drivable classes) travel",
        "# with the weights and are not parameters.",
        "/**:",
        "  ros__parameters:",
    ]
    for p in PARAMS:
        desc = p.description
        if p.choices:
            desc += f" Valid: {', '.join(p.choices)}."
        if p.min is not None or p.max is not None:
            lo = "-inf" if p.min is None else p.min
            hi = "inf" if p.max is None else p.max
            desc += f" Range: [{lo}, {hi}]."
        desc += " Read-only." if p.read_only else " Can be changed at run time."
        lines += ["    # " + line for line in textwrap.wrap(desc, 90, break_on_hyphens=False)]
        lines.append(f"    {p.name}: {fmt(p.default)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(params_yaml(), end="")
