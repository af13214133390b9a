"""Drivable-area geometry without ROS: camera model, ground grid, free space.

The synthetic scenes that test it live in :mod:`seg_perception.sim`.

Typical use (the node does this with CameraInfo and its parameters)::

    mapper = DrivableAreaMapper(GridSpec(0.1, 0.0, 40.0, -10.0, 10.0),
                                CameraMounting(x=1.2, z=1.5, pitch=0.1))
    mapper.set_camera(CameraModel.from_camera_info_fields(msg.width, msg.height, msg.k,
                                                          msg.d, msg.distortion_model))
    grid = mapper.grid_from_mask(mask)          # int8 (height, width): OccupancyGrid.data
    polygon = mapper.boundary_from_grid(grid)   # (N, 2) x, y in grid_frame
"""

from seg_perception.runtime.geometry.camera import (
    BODY_FROM_OPTICAL,
    SUPPORTED_DISTORTION,
    CameraModel,
    CameraMounting,
    ground_point,
    rotate,
    rpy_matrix,
)
from seg_perception.runtime.geometry.camera_info import (
    CameraCalibration,
    CameraInfoMismatchError,
    ImageCamera,
)
from seg_perception.runtime.geometry.coverage import SLIVER, overclaimed_cells, polygon_coverage
from seg_perception.runtime.geometry.free_region import clean_mask, ego_component, open_holes
from seg_perception.runtime.geometry.freespace import boundary_polygon
from seg_perception.runtime.geometry.grid import (
    BEHIND,
    BEYOND_RANGE,
    FOOTPRINT,
    FREE,
    OCCUPIED,
    OUTSIDE_IMAGE,
    SEEN,
    UNKNOWN,
    CellVisibility,
    GridSpec,
    GroundLookup,
    cell_visibility,
)
from seg_perception.runtime.geometry.mapper import (
    DEFAULT_MAX_PIXEL_FOOTPRINT,
    DEFAULT_MAX_RANGE,
    DEFAULT_MAX_VERTICES,
    DEFAULT_MIN_REGION_AREA,
    DEFAULT_SPECKLE_AREA,
    DrivableAreaMapper,
)
from seg_perception.runtime.geometry.transform import (
    Transform,
    mounting_from_optical,
    optical_from_mounting,
)

__all__ = [
    "BEHIND",
    "BEYOND_RANGE",
    "BODY_FROM_OPTICAL",
    "DEFAULT_MAX_PIXEL_FOOTPRINT",
    "DEFAULT_MAX_RANGE",
    "DEFAULT_MAX_VERTICES",
    "DEFAULT_MIN_REGION_AREA",
    "DEFAULT_SPECKLE_AREA",
    "FOOTPRINT",
    "FREE",
    "OCCUPIED",
    "OUTSIDE_IMAGE",
    "SEEN",
    "SLIVER",
    "SUPPORTED_DISTORTION",
    "UNKNOWN",
    "CameraCalibration",
    "CameraInfoMismatchError",
    "CameraModel",
    "CameraMounting",
    "CellVisibility",
    "DrivableAreaMapper",
    "GridSpec",
    "GroundLookup",
    "ImageCamera",
    "Transform",
    "boundary_polygon",
    "cell_visibility",
    "clean_mask",
    "ego_component",
    "ground_point",
    "mounting_from_optical",
    "open_holes",
    "optical_from_mounting",
    "overclaimed_cells",
    "polygon_coverage",
    "rotate",
    "rpy_matrix",
]
