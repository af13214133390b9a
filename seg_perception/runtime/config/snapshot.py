"""The frame pipeline's configuration: an immutable, validated snapshot of the parameters.

Split from the table (:mod:`.table`) and the checks of single values (:mod:`.validate`):
:class:`PipelineConfig` holds what the frame pipeline works with, checked as a whole (grid
extent and cell count, camera above the ground, positive limits); the node builds a new
one for each accepted parameter change and the worker reads one per frame.
:func:`check_camera_poses` checks the snapshots of several cameras together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from seg_perception.runtime.config.table import DEFAULTS, ConfigError, camera_param
from seg_perception.runtime.config.validate import camera_values, validate_values
from seg_perception.runtime.geometry.camera import CameraMounting
from seg_perception.runtime.geometry.drivable_map import MapConfig
from seg_perception.runtime.geometry.grid import MAX_CELLS, GridSpec


@dataclass(frozen=True)
class PipelineConfig:
    """What the frame pipeline needs, validated as a whole; immutable, so a worker that holds
    one sees a consistent set however the parameters change meanwhile.

    Build it with :meth:`from_params`; the node keeps one per accepted parameter change.
    """

    grid: GridSpec
    mounting: CameraMounting  # fallback camera pose (camera.*): body frame in grid_frame
    grid_frame: str = "base_footprint"
    max_range: float = 50.0
    max_pixel_footprint: float = 1.0
    speckle_area: int = 9
    max_vertices: int = 64
    min_region_area: float = 1.0
    overlay_alpha: float = 0.5
    use_tf: bool = True
    tf_timeout: float = 0.05
    image_type: str = "auto"
    camera_info_tolerance: float = 0.0
    fusion_max_age: float = 0.2
    sync_window: float = 0.03
    map: MapConfig = field(default_factory=MapConfig)

    @classmethod
    def from_params(cls, values: Mapping[str, Any] | None = None, camera: str = ""
                    ) -> PipelineConfig:
        """The snapshot for parameter ``values`` (missing names take their defaults), as
        camera ``camera`` of ``cameras`` sees them (its ``camera.*`` entries replace the
        global ones; ``""``: the global values).

        Single values are checked against the table, then the combination (grid extent,
        cell count, camera above the ground, positive limits); a :class:`ConfigError` names
        the parameters involved.
        """
        p = {**DEFAULTS, **validate_values(values or {})}
        if camera:
            p = camera_values(p, camera)
        grid = GridSpec(p["grid.resolution"], p["grid.x_min"], p["grid.x_max"],
                        p["grid.y_min"], p["grid.y_max"])
        if grid.x_min >= grid.x_max:
            raise ConfigError(f"grid.x_min = {grid.x_min} must be < grid.x_max = {grid.x_max}")
        if grid.y_min >= grid.y_max:
            raise ConfigError(f"grid.y_min = {grid.y_min} must be < grid.y_max = {grid.y_max}")
        cells = grid.width * grid.height
        if cells > MAX_CELLS:
            raise ConfigError(
                f"grid of {grid.width}x{grid.height} = {cells} cells exceeds {MAX_CELLS}; raise "
                "grid.resolution or shrink grid.x_min/x_max/y_min/y_max")
        mounting = CameraMounting(p["camera.x"], p["camera.y"], p["camera.z"],
                                  p["camera.roll"], p["camera.pitch"], p["camera.yaw"])
        if not mounting.z > 0.0:
            z_name = camera_param(camera, "camera.z") if camera else "camera.z"
            raise ConfigError(
                f"{z_name} = {mounting.z} m puts the camera at or below the ground plane z = 0 "
                f"of grid_frame; the drivable grid needs {z_name} > 0")
        for name in ("grid.max_range", "grid.max_pixel_footprint"):
            if not p[name] > 0.0:
                raise ConfigError(f"{name} = {p[name]} must be > 0 metres")
        if not p["grid_frame"].strip("/"):
            raise ConfigError("grid_frame must name a frame (e.g. base_footprint)")
        drivable_map = MapConfig(**{f.name: p[f"map.{f.name}"] for f in fields(MapConfig)})
        drivable_map = dataclasses.replace(drivable_map, frame=drivable_map.frame.lstrip("/"))
        drivable_map.validate()
        return cls(
            grid=grid,
            mounting=mounting,
            grid_frame=p["grid_frame"].lstrip("/"),
            max_range=p["grid.max_range"],
            max_pixel_footprint=p["grid.max_pixel_footprint"],
            speckle_area=p["mask.speckle_area"],
            max_vertices=p["boundary.max_vertices"],
            min_region_area=p["boundary.min_region_area"],
            overlay_alpha=p["overlay_alpha"],
            use_tf=p["use_tf"],
            tf_timeout=p["tf_timeout"],
            image_type=p["image_type"],
            camera_info_tolerance=p["camera_info_tolerance"],
            fusion_max_age=p["fusion.max_age"],
            sync_window=p["fusion.sync_window"],
            map=drivable_map,
        )

    @property
    def mapper_key(self) -> tuple[Any, ...]:
        """Everything a ground mapper depends on besides the camera model and pose."""
        return (self.grid, self.max_range, self.max_pixel_footprint, self.speckle_area,
                self.max_vertices, self.min_region_area)

    def rectified(self, image_topic: str) -> bool:
        """Whether images of ``image_topic`` are rectified (``image_type``; ``auto`` looks
        at the topic's last name, an image_transport ``/compressed`` suffix dropped)."""
        if self.image_type != "auto":
            return self.image_type == "rectified"
        parts = [p for p in image_topic.split("/") if p]
        if len(parts) > 1 and parts[-1] in ("compressed", "compressedDepth", "theora"):
            parts = parts[:-1]
        return bool(parts) and parts[-1].startswith("image_rect")


def check_camera_poses(configs: Mapping[str, PipelineConfig]) -> None:
    """With several cameras and ``use_tf`` false each camera needs its own ``X.camera.*``
    pose: two cameras at one pose would project both onto the same ground (the fused grid
    wrong without an error). Raises :class:`ConfigError` (one line) naming them."""
    if len(configs) < 2:
        return
    seen: dict[Any, str] = {}
    for cam, cfg in configs.items():
        if cfg.use_tf:
            return
        other = seen.setdefault(cfg.mounting, cam)
        if other != cam:
            raise ConfigError(
                f"use_tf is false with cameras {', '.join(configs)}, but {other} and {cam} have "
                f"the same camera.* pose; give each camera its own pose ({cam}.camera.x/y/z/"
                "roll/pitch/yaw, ...), or set use_tf true (poses from /tf)")


__all__ = [
    "PipelineConfig",
    "check_camera_poses",
]
