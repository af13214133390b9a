"""The parameter table: every parameter of ``seg_node`` and ``process``, one set of defaults.

Split from the rest of :mod:`seg_perception.runtime.config` because the table is data
that everything else reads (the node's declarations, validation, ``config/seg.yaml``):
:class:`ParamSpec` (type, bounds, one value's check), :data:`PARAMS` and the per-camera
``X.<name>`` entries a ``cameras`` list adds. Torch-free and ROS-free.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from seg_perception.runtime.engine_options import (
    DEVICE_CHOICES,
    PRECISION_CHOICES,
    is_device_choice,
)
from seg_perception.runtime.errors import ConfigError
from seg_perception.runtime.image_codec import DEFAULT_MAX_PIXELS

#: ``image_type`` values: how camera_info is read for the grid (image_geometry semantics).
IMAGE_TYPES = ("auto", "raw", "rectified")
#: Node name whose sections of a ROS 2 parameter file apply (besides ``/**``).
NODE_NAME = "seg_node"
#: The default of ``cameras``: one camera whose topics carry no prefix (``image``,
#: ``labels``, ``drivable/grid``, ...), the node as it has always been.
SINGLE_CAMERA = ("",)
#: Most cameras one node serves (one batched forward pass holds a frame of each).
MAX_CAMERAS = 16
#: Parameters a camera ``X`` of ``cameras`` can set for itself as ``X.<name>`` (e.g.
#: ``front.input_transport``, ``rear.camera.yaw``); they default to the global value.
CAMERA_PARAMS = ("input_transport", "image_type", "camera.x", "camera.y", "camera.z",
                 "camera.roll", "camera.pitch", "camera.yaw")


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a double", str: "a string",
               tuple: "a list of strings"}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, default (its type is the parameter's type), description, bounds.

    ``choices`` or ``(min, max)`` bound the values; every double must also be finite. A
    tuple default makes a list-of-strings parameter (ROS STRING_ARRAY; values are tuples).
    ``read_only`` parameters are fixed at start-up; the others can change at run time.
    """

    name: str
    default: Any
    description: str
    read_only: bool = True
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None

    @property
    def type(self) -> type:
        """bool, int, float, str or tuple (a list of strings)."""
        return type(self.default)

    def coerce(self, value: Any) -> Any:
        """``value`` as this parameter's type: an integer where a double is declared becomes
        a float (``-p camera.x:=1``). Raises :class:`ConfigError` for any other type."""
        want = self.type
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if want is tuple:
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise ConfigError(f"{self.name} must be {_TYPE_NAMES[want]}, got "
                              f"{type(value).__name__} {value!r}")
        if want is bool:
            ok = isinstance(value, bool)
        elif want is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, want)
        if not ok:
            raise ConfigError(
                f"{self.name} must be {_TYPE_NAMES[want]}, got {type(value).__name__} "
                f"{value!r}" + (f"; valid values: {', '.join(self.choices)}"
                                if self.choices else ""))
        return value

    def check(self, value: Any) -> str | None:
        """None when ``value`` (already of this type) is valid, else the reason, naming the
        valid values."""
        if self.type is float and not math.isfinite(value):
            return f"{self.name}={value!r} is not a finite number"
        if self.name == "cameras":
            return camera_names_problem(value)
        if self.choices is not None:
            ok = value in self.choices or (self.name == "device" and is_device_choice(value))
            if not ok:
                return f"{self.name}={value!r} is invalid; valid values: {', '.join(self.choices)}"
        if self.min is not None and value < self.min:
            return f"{self.name}={value!r} is below its minimum {self.min}"
        if self.max is not None and value > self.max:
            return f"{self.name}={value!r} is above its maximum {self.max}"
        return None

    def validate(self, value: Any) -> Any:
        """Coerced and checked ``value``; raises :class:`ConfigError` with the reason."""
        value = self.coerce(value)
        problem = self.check(value)
        if problem:
            raise ConfigError(problem)
        return value


_DISTANCE = 1000.0  # metres: bound of positions and grid extents (a grid is local)

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model", "default",
              "Registered model name (see `seg-perception models`), 'default' for the model "
              "shipped with the package, or a path to an exported .onnx file."),
    ParamSpec("checkpoint", "",
              "Weights file for `model` (official .pth/.pt or our .safetensors); empty: the "
              "package's shipped weights for that model, if any."),
    ParamSpec("device", "auto", "Inference device; 'auto' uses CUDA when available.",
              choices=DEVICE_CHOICES),
    ParamSpec("precision", "auto",
              "'auto' is fp16 on CUDA; on a CPU bf16 where it has a bf16 matrix unit (AMX or "
              "AVX-512 BF16), else fp32. 'int8' needs an int8 .onnx model from "
              "`seg-perception export --int8`.", choices=PRECISION_CHOICES),
    ParamSpec("cpu_threads", 0,
              "CPU threads for inference (torch, ONNX Runtime); 0: half the CPUs, at least 1, "
              "leaving room for decoding, DDS and other nodes.", min=0, max=256),
    ParamSpec("cameras", SINGLE_CAMERA,
              "Names of the cameras this node serves, e.g. [front, left, right, rear]: camera X "
              "subscribes X/image (or X/image/compressed) and X/camera_info and publishes its "
              "image outputs under X/ (X/labels, ..., X/drivable/mask; X/drivable/grid and "
              "X/drivable/boundary too, computed only while subscribed); drivable/grid and "
              "drivable/boundary are fused from all cameras, and all frames of a cycle go "
              "through the network as one batch. X.input_transport, X.image_type and "
              "X.camera.x/y/z/roll/pitch/yaw set one camera's own values (default: the global "
              "ones at start-up; with use_tf false every camera needs a pose of its own). "
              "Default [\"\"]: one camera on the unprefixed names (image, labels, "
              "drivable/grid, ...)."),
    ParamSpec("input_transport", "raw",
              "'raw' subscribes to `image` (sensor_msgs/Image), 'compressed' to "
              "`image/compressed` (sensor_msgs/CompressedImage, JPEG or PNG).",
              choices=("raw", "compressed")),
    ParamSpec("image_type", "auto",
              "How camera_info describes the images, as image_geometry reads it: 'raw' "
              "applies K and the distortion D; 'rectified' uses P and R and no distortion; "
              "'auto' is 'rectified' when the image topic's name starts with image_rect "
              "(image_rect, image_rect_color), else 'raw'.", choices=IMAGE_TYPES),
    ParamSpec("camera_info_tolerance", 0.0,
              "Images are paired with the camera_info of the same header stamp (as "
              "image_transport's CameraSubscriber does); a positive value accepts the nearest "
              "camera_info within this many seconds. An image without one gets no grid (s).",
              read_only=False, min=0.0, max=3600.0),
    ParamSpec("max_image_pixels", DEFAULT_MAX_PIXELS,
              "Frames with more pixels than this (width x height, read from the message or the "
              "JPEG/PNG header before decoding) are refused with a warning: a bound on memory "
              "and time per frame. 0: no limit.", min=0, max=2**31 - 1),
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
    ParamSpec("grid_frame", "base_footprint",
              "Frame of the bird's-eye grid and boundary (REP 120's ground-level frame: x "
              "forward, y left, z up; the grid is its plane z = 0)."),
    ParamSpec("use_tf", True,
              "Camera pose from /tf and /tf_static: the transform of the image's "
              "header.frame_id (its optical frame, REP 103) in grid_frame at the image stamp, "
              "through tf2_ros, or without it read from the topics directly (needs tf2_msgs). "
              "False: the camera.* parameters give the pose (with several cameras each "
              "camera's own X.camera.*; cameras sharing one pose are refused). A missing "
              "transform: image outputs still go out, the grid and boundary do not.",
              read_only=False),
    ParamSpec("tf_timeout", 0.05,
              "Seconds to wait at least for the camera's transform at the image stamp (static "
              "transforms are there at once). For a time after the newest sample of a moving "
              "transform the wait is up to 1.5 of its measured periods (capped at 0.3 s), "
              "as its next /tf message is due; this is the floor of that wait (s).",
              read_only=False, min=0.0, max=10.0),
    ParamSpec("camera.x", 0.0,
              "Pose with use_tf false (several cameras: X.camera.* per camera): camera body "
              "frame (x forward, y left, z up) position x in grid_frame (m).",
              read_only=False, min=-_DISTANCE, max=_DISTANCE),
    ParamSpec("camera.y", 0.0,
              "Pose with use_tf false: camera body frame position y in grid_frame (m).",
              read_only=False, min=-_DISTANCE, max=_DISTANCE),
    ParamSpec("camera.z", 1.5,
              "Pose with use_tf false: camera height above the ground plane (m, > 0).",
              read_only=False, min=0.0, max=_DISTANCE),
    ParamSpec("camera.roll", 0.0,
              "Pose with use_tf false: camera roll about grid_frame x (rad, URDF fixed-axis rpy).",
              read_only=False, min=-3.1416, max=3.1416),
    ParamSpec("camera.pitch", 0.0,
              "Pose with use_tf false: camera pitch (rad); positive looks down at the road.",
              read_only=False, min=-1.5708, max=1.5708),
    ParamSpec("camera.yaw", 0.0, "Pose with use_tf false: camera yaw about grid_frame z (rad).",
              read_only=False, min=-3.1416, max=3.1416),
    ParamSpec("grid.resolution", 0.1, "Grid cell size (m).", read_only=False,
              min=0.001, max=100.0),
    ParamSpec("grid.x_min", 0.0, "Grid extent: nearest x (m, forward).", read_only=False,
              min=-_DISTANCE, max=_DISTANCE),
    ParamSpec("grid.x_max", 40.0, "Grid extent: farthest x (m, forward).", read_only=False,
              min=-_DISTANCE, max=_DISTANCE),
    ParamSpec("grid.y_min", -10.0, "Grid extent: rightmost y (m, left positive).",
              read_only=False, min=-_DISTANCE, max=_DISTANCE),
    ParamSpec("grid.y_max", 10.0, "Grid extent: leftmost y (m, left positive).",
              read_only=False, min=-_DISTANCE, max=_DISTANCE),
    ParamSpec("grid.max_range", 50.0,
              "Cells farther than this from the point below the camera are unseen (-1) (m, "
              "> 0).", read_only=False, min=0.0, max=10 * _DISTANCE),
    ParamSpec("grid.max_pixel_footprint", 1.0,
              "Cells where one image pixel covers more ground than this are unseen (-1): "
              "limits the grid before the horizon, where a pixel spans metres (m, > 0).",
              read_only=False, min=0.0, max=_DISTANCE),
    ParamSpec("fusion.max_age", 0.2,
              "Several cameras: a camera's latest grid takes part in the fused drivable/grid "
              "only while its stamp is within this many seconds of the newest frame of the "
              "cycle; a camera that goes silent drops out and its cells become unknown (-1) "
              "unless another camera sees them (s).", read_only=False, min=0.0, max=60.0),
    ParamSpec("fusion.sync_window", 0.03,
              "Several cameras: how long a cycle waits after its first frame for the other "
              "cameras' frames before they run as one batch. The node waits in wall-clock "
              "time, ending as soon as every camera has a frame (a camera that missed the "
              "last wait is not waited for until it sends again); process puts one frame per "
              "camera in a cycle whose header stamps are within this of the cycle's first "
              "(0: equal stamps) (s).", read_only=False, min=0.0, max=10.0),
    ParamSpec("map.frame", "odom",
              "Persistent map (drivable/map): the frame it accumulates in (REP 105: odom, "
              "continuous); each cycle needs the transform map.frame <- grid_frame at its "
              "stamp.", read_only=False),
    ParamSpec("map.size_x", 60.0,
              "Persistent map: window length along map.frame x, centred on the vehicle (m).",
              read_only=False, min=0.0, max=10_000.0),
    ParamSpec("map.size_y", 60.0,
              "Persistent map: window length along map.frame y, centred on the vehicle (m).",
              read_only=False, min=0.0, max=10_000.0),
    ParamSpec("map.resolution", 0.2, "Persistent map: cell size (m).", read_only=False,
              min=0.001, max=100.0),
    ParamSpec("map.hit", 0.85,
              "Persistent map: log-odds one occupied observation adds (> 0; clamped at "
              "3.5).", read_only=False, min=0.0, max=5.5),
    ParamSpec("map.miss", -0.7,
              "Persistent map: log-odds one free observation adds (< 0; clamped at -2).",
              read_only=False, min=-5.5, max=0.0),
    ParamSpec("map.decay_s", 5.0,
              "Persistent map: cells not observed decay toward unknown with this time "
              "constant of stamp time (s).", read_only=False, min=0.0, max=86_400.0),
    ParamSpec("map.free_threshold", 0.8,
              "Persistent map: a cell reads free (0) only when its probability of being free "
              "exceeds this ...", read_only=False, min=0.5, max=1.0),
    ParamSpec("map.occupied_hold_s", 0.2,
              "Persistent map: ... and no observation called it occupied for this long; a "
              "cell the current grid sees occupied is occupied at once (s).",
              read_only=False, min=0.0, max=3600.0),
    ParamSpec("mask.speckle_area", 9,
              "Drivable-mask blobs and gaps smaller than about this many pixels are removed "
              "before projection (0: no cleaning).", min=0, max=10000, read_only=False),
    ParamSpec("boundary.max_vertices", 64,
              "Most vertices of the free-space boundary polygon (an inner approximation: "
              "every cell it covers is free in the grid).", min=4, max=4096, read_only=False),
    ParamSpec("boundary.min_region_area", 1.0,
              "Free-space regions smaller than this are ignored when choosing the region "
              "connected to the vehicle (m^2).", read_only=False, min=0.0, max=1e6),
)

PARAMS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMS}
DEFAULTS: Mapping[str, Any] = {p.name: p.default for p in PARAMS}
#: Parameters every ROS node has, or that launch sets: never reported as unknown.
ROS_PARAMETERS = frozenset({"use_sim_time", "start_type_description_service"})


_CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def _reserved_camera_names() -> frozenset[str]:
    """Names a camera cannot have: its ``X.<name>`` parameters would read as ours."""
    return frozenset({p.name.split(".", 1)[0] for p in PARAMS} | {"qos_overrides"}
                     | {n.split(".", 1)[0] for n in ROS_PARAMETERS})


def camera_names_problem(names: tuple[str, ...]) -> str | None:
    """None when ``names`` is a valid ``cameras`` value, else why not."""
    if names == SINGLE_CAMERA:
        return None
    if not names:
        return "cameras must name at least one camera (or be [\"\"] for the unprefixed names)"
    if len(names) > MAX_CAMERAS:
        return f"cameras lists {len(names)} cameras; at most {MAX_CAMERAS}"
    reserved = _reserved_camera_names()
    for name in names:
        if not _CAMERA_NAME.match(name):
            return (f"cameras: {name!r} is not a camera name (a letter, then letters, digits "
                    "or _; it becomes the topic prefix X/ and the parameter prefix X.)")
        if name in reserved:
            return (f"cameras: {name!r} is also the name of a parameter or parameter group; "
                    "choose another camera name")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        return f"cameras: {', '.join(dup)} listed more than once"
    return None


def camera_param(camera: str, name: str) -> str:
    """The parameter ``name`` of camera ``camera`` (``front.input_transport``)."""
    return f"{camera}.{name}"


def camera_spec(camera: str, name: str, default: Any | None = None) -> ParamSpec:
    """The table entry of camera ``camera``'s own ``name`` (one of :data:`CAMERA_PARAMS`),
    with ``default`` (the global value) as its default."""
    base = PARAMS_BY_NAME[name]
    return dataclasses.replace(
        base, name=camera_param(camera, name),
        default=base.default if default is None else default,
        description=f"Camera {camera}: {name} of this camera (default: the global {name} at "
        f"start-up). " + base.description)


def camera_specs(cameras: Iterable[str], defaults: Mapping[str, Any] | None = None
                 ) -> dict[str, ParamSpec]:
    """Every per-camera entry of ``cameras`` (none for the single unprefixed camera)."""
    defaults = defaults or DEFAULTS
    return {spec.name: spec for cam in cameras if cam
            for spec in (camera_spec(cam, n, defaults.get(n)) for n in CAMERA_PARAMS)}

