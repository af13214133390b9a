"""A multi-camera rig on a vehicle and its synthetic renders with exact fused truth.

A rig names its cameras and gives each one intrinsics and a mounting in ``grid_frame``
(the vehicle's ground frame). :func:`surround_rig` is the usual four-camera layout (front,
left, right, rear, each with a wide lens so neighbours overlap at the corners);
:func:`render_rig` renders a :class:`~.scene.SceneSpec` from every camera and fuses the
cameras' exact grids with the same rule the node applies to its estimated ones, which makes
the result the truth a fused grid is scored against. :meth:`Rig.transforms` is the rig as a
robot publishes it on ``/tf_static`` (``base_footprint -> X_camera_link ->
X_camera_optical_frame`` per camera, REP 103's optical rotation in the second step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seg_perception.runtime.geometry.camera import BODY_FROM_OPTICAL, CameraModel, CameraMounting
from seg_perception.runtime.geometry.fusion import fuse_grids
from seg_perception.runtime.geometry.grid import GridSpec
from seg_perception.runtime.geometry.mapper import DEFAULT_MAX_PIXEL_FOOTPRINT, DEFAULT_MAX_RANGE
from seg_perception.runtime.geometry.transform import Transform
from seg_perception.sim.scene import SceneRender, SceneSpec, render_scene

#: The vehicle's ground frame the rig is mounted in (REP 120).
BASE_FRAME = "base_footprint"
#: A grid around the vehicle for a surround rig: 20 m behind to 30 m ahead, 15 m each side.
SURROUND_GRID = GridSpec(0.2, -20.0, 30.0, -15.0, 15.0)


@dataclass(frozen=True)
class RigCamera:
    """One camera of a rig: its name (topic namespace), intrinsics and mounting."""

    name: str
    model: CameraModel
    mounting: CameraMounting

    @property
    def body_frame(self) -> str:
        """The camera's body frame (x forward, y left, z up), as a URDF link."""
        return f"{self.name}_camera_link"

    @property
    def optical_frame(self) -> str:
        """The camera's optical frame (REP 103): its images' ``header.frame_id``."""
        return f"{self.name}_camera_optical_frame"


@dataclass(frozen=True)
class Rig:
    cameras: tuple[RigCamera, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def transforms(self, base_frame: str = BASE_FRAME) -> list[tuple[str, str, Transform]]:
        """(parent, child, transform) of every camera: ``base_frame -> body`` (the mounting)
        and ``body -> optical`` (REP 103's fixed rotation), as robot_state_publisher sends
        a URDF's fixed joints on /tf_static."""
        optical = Transform.from_matrix(BODY_FROM_OPTICAL, (0.0, 0.0, 0.0))
        out = []
        for cam in self.cameras:
            m = cam.mounting
            out.append((base_frame, cam.body_frame,
                        Transform.from_matrix(m.rotation_body, m.position)))
            out.append((cam.body_frame, cam.optical_frame, optical))
        return out

    def camera(self, name: str) -> RigCamera:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"no camera {name!r} in the rig; cameras: {', '.join(self.names)}")


def surround_rig(
    width: int = 480,
    height: int = 360,
    hfov_deg: float = 110.0,
    height_m: float = 1.6,
    pitch: float = 0.12,
    length: float = 4.4,
    track: float = 1.8,
) -> Rig:
    """Front, left, right and rear cameras on a car of ``length`` x ``track`` metres.

    ``grid_frame`` is at the rear-axle ground point; the front camera sits at the windscreen,
    side cameras at the mirrors looking sideways, the rear camera at the tailgate. With a
    110 degree lens neighbouring views overlap by about 20 degrees.
    """
    model = CameraModel.from_fov(width, height, hfov_deg)
    front_x = 0.8 * length
    mid_x = 0.45 * length
    mounts = {
        "front": CameraMounting(front_x, 0.0, height_m, 0.0, pitch, 0.0),
        "left": CameraMounting(mid_x, track / 2, height_m, 0.0, pitch, math.pi / 2),
        "right": CameraMounting(mid_x, -track / 2, height_m, 0.0, pitch, -math.pi / 2),
        "rear": CameraMounting(-0.2 * length, 0.0, height_m, 0.0, pitch, math.pi),
    }
    return Rig(tuple(RigCamera(n, model, m) for n, m in mounts.items()))


@dataclass
class RigRender:
    """Every camera's render (with its own exact grid) and the exact fused grid."""

    views: dict[str, SceneRender]
    fused: np.ndarray  # int8 (height, width)


def render_rig(
    spec: SceneSpec,
    rig: Rig,
    grid: GridSpec,
    rng: np.random.Generator | None = None,
    *,
    max_range: float = DEFAULT_MAX_RANGE,
    max_pixel_footprint: float = DEFAULT_MAX_PIXEL_FOOTPRINT,
    rule: str = "conservative",
) -> RigRender:
    """Render ``spec`` from each camera of ``rig``; the fused truth follows ``rule``."""
    views = {
        cam.name: render_scene(spec, cam.model, cam.mounting, grid, rng, max_range=max_range,
                               max_pixel_footprint=max_pixel_footprint)
        for cam in rig.cameras
    }
    fused = fuse_grids([v.grid for v in views.values() if v.grid is not None], rule)
    return RigRender(views, fused)


__all__ = ["BASE_FRAME", "SURROUND_GRID", "Rig", "RigCamera", "RigRender", "render_rig",
           "surround_rig"]
