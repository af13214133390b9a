"""Drivable mask -> bird's-eye grid and free-space boundary, for one camera on a vehicle."""

from __future__ import annotations

import functools
import logging
import math

import numpy as np

from seg_perception.runtime.geometry.camera import CameraModel, CameraMounting
from seg_perception.runtime.geometry.free_region import (
    clean_mask,
    ego_component,
    ego_distance2,
    speckle_kernel,
)
from seg_perception.runtime.geometry.freespace import boundary_polygon
from seg_perception.runtime.geometry.grid import FREE, GridSpec, GroundLookup

log = logging.getLogger(__name__)

DEFAULT_MAX_RANGE = 50.0
DEFAULT_MAX_PIXEL_FOOTPRINT = 1.0
DEFAULT_SPECKLE_AREA = 9
DEFAULT_MAX_VERTICES = 64
DEFAULT_MIN_REGION_AREA = 1.0
#: Lookups (camera model + pose combinations) a mapper keeps: a camera that alternates
#: between two CameraInfos, or a pose that comes back, does not rebuild each time.
LOOKUPS_PER_MAPPER = 4


class DrivableAreaMapper:
    """Projects drivable masks onto the ground grid with a lookup built once per camera.

    The lookup depends on the grid, the mounting and the intrinsics; :meth:`set_camera`
    rebuilds it only when the intrinsics change, so it may be called with every CameraInfo
    (:meth:`set_view` sets both at once; the last few lookups are kept in an LRU).
    A mask whose size differs from the camera's (a network run at reduced resolution) is read
    through scaled pixel coordinates; the scaled table is cached per mask size.

    Args:
        grid: grid extent and resolution (validated here).
        mounting: camera pose in grid_frame (validated here: camera above the ground).
        max_range: cells farther than this horizontal distance from the camera are unseen.
        max_pixel_footprint: cells where one pixel covers more ground (metres, worst
            direction) are unseen: the far field where one pixel would speak for many cells.
        speckle_area: drivable / non-drivable specks below about this many pixels are removed
            from the mask before projection (0 or 1 disables cleaning).
        max_vertices: bound on the boundary polygon's vertex count (>= 4).
        min_region_area: free regions smaller than this (m^2) never count as the ego region.
        ego_xy: the vehicle's reference point in grid_frame; the free component nearest to it
            is the one the boundary outlines.
        exact_speckle: clean with connected components (exact areas, slower) instead of a
            morphological opening and closing.
    """

    def __init__(
        self,
        grid: GridSpec,
        mounting: CameraMounting,
        max_range: float = DEFAULT_MAX_RANGE,
        max_pixel_footprint: float = DEFAULT_MAX_PIXEL_FOOTPRINT,
        speckle_area: int = DEFAULT_SPECKLE_AREA,
        max_vertices: int = DEFAULT_MAX_VERTICES,
        min_region_area: float = DEFAULT_MIN_REGION_AREA,
        ego_xy: tuple[float, float] = (0.0, 0.0),
        exact_speckle: bool = False,
    ) -> None:
        self.grid = grid.validate()
        self.mounting = mounting.validate()
        if not (max_range > 0.0):
            raise ValueError(f"max_range = {max_range} must be > 0 metres")
        if not (max_pixel_footprint > 0.0):
            raise ValueError(f"max_pixel_footprint = {max_pixel_footprint} must be > 0 metres")
        if speckle_area < 0:
            raise ValueError(f"speckle_area = {speckle_area} must be >= 0 pixels")
        if max_vertices < 4:
            raise ValueError(f"max_vertices = {max_vertices} must be >= 4")
        if min_region_area < 0.0:
            raise ValueError(f"min_region_area = {min_region_area} must be >= 0 m^2")
        self.max_range = float(max_range)
        self.max_pixel_footprint = float(max_pixel_footprint)
        self.speckle_area = int(speckle_area)
        self.max_vertices = int(max_vertices)
        self.exact_speckle = bool(exact_speckle)
        self.min_region_cells = max(1, math.ceil(min_region_area / grid.resolution**2 - 1e-9))
        self.ego_xy = (float(ego_xy[0]), float(ego_xy[1]))
        kernel = speckle_kernel(self.speckle_area)
        self._pad = 0 if kernel is None else kernel.shape[0]
        self._dist2 = ego_distance2(self.grid, self.ego_xy)
        self._camera: CameraModel | None = None
        self._lookup: GroundLookup | None = None
        # The lookup is a pure function of (intrinsics, pose) under this mapper's grid and
        # limits: functools' LRU over a partial (no reference back to the mapper).
        self._lookup_for = functools.lru_cache(maxsize=LOOKUPS_PER_MAPPER)(functools.partial(
            GroundLookup, self.grid, max_range=self.max_range,
            max_pixel_footprint=self.max_pixel_footprint))
        self.rebuilds = 0

    # -- camera model -------------------------------------------------------------------------
    @property
    def camera(self) -> CameraModel | None:
        return self._camera

    @property
    def lookup(self) -> GroundLookup | None:
        """The current cell -> pixel table (None until a camera model is set)."""
        return self._lookup

    @property
    def seen(self) -> np.ndarray | None:
        """Bool (height, width) of the cells the camera sees, None before a camera is set."""
        return None if self._lookup is None else self._lookup.seen

    def set_camera(self, model: CameraModel) -> bool:
        """Use these intrinsics; returns True when the lookup was (re)built.

        Raises ValueError (from :meth:`CameraModel.validate`) for unusable intrinsics, in
        which case the previous model stays in use.
        """
        if model == self._camera and self._lookup is not None:
            return False
        model.validate()
        return self._use(model, self.mounting)

    def set_mounting(self, mounting: CameraMounting) -> bool:
        """Change the camera pose (e.g. after recalibration); True when the lookup was rebuilt."""
        mounting.validate()
        if mounting == self.mounting:
            return False
        self.mounting = mounting
        if self._camera is None:
            return False
        return self._use(self._camera, mounting)

    def set_view(self, model: CameraModel, mounting: CameraMounting) -> bool:
        """Use these intrinsics and this pose (one lookup build at most); True when a lookup
        was built. Raises ValueError for unusable values; the previous view then stays."""
        if model == self._camera and mounting == self.mounting and self._lookup is not None:
            return False
        model.validate()
        mounting.validate()
        self.mounting = mounting
        return self._use(model, mounting)

    def _use(self, model: CameraModel, mounting: CameraMounting) -> bool:
        """Switch to the lookup of (model, mounting): from the LRU, or built (returns True)."""
        misses = self._lookup_for.cache_info().misses
        self._lookup = self._lookup_for(model, mounting)
        self._camera = model
        if self._lookup_for.cache_info().misses == misses:
            return False
        self.rebuilds += 1
        log.debug(
            "ground lookup built: %dx%d image, %d of %d cells seen",
            model.width, model.height, self._lookup.n_seen, self.grid.width * self.grid.height,
        )
        if self._lookup.n_seen == 0:
            log.warning(
                "the camera sees none of the grid's cells (check camera.* mounting, grid.* "
                "extent and the CameraInfo); the grid will stay unknown"
            )
        return True

    # -- per frame ----------------------------------------------------------------------------
    def clean_mask(self, mask: np.ndarray) -> np.ndarray:
        """The mask with speckle below ``speckle_area`` removed (uint8, nonzero = drivable)."""
        return clean_mask(mask, self.speckle_area, exact=self.exact_speckle)

    def grid_from_mask(self, mask: np.ndarray, clean: bool = True) -> np.ndarray:
        """int8 (height, width) grid: 0 seen drivable, 100 seen not drivable, -1 unseen.

        ``mask`` is (H, W) bool or integer, nonzero = drivable. Only the band of rows that the
        lookup reads is cleaned. Raises RuntimeError before the first :meth:`set_camera`.
        """
        if self._lookup is None:
            raise RuntimeError("no camera model yet: call set_camera() (from CameraInfo) first")
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.size == 0:
            raise ValueError(f"drivable mask must be a non-empty 2-D (H, W) array: {mask.shape}")
        cleaner = self.clean_mask if clean and self.speckle_area > 1 else None
        return self._lookup.gather(mask, clean=cleaner, pad=self._pad)

    def ego_component(self, grid: np.ndarray) -> np.ndarray:
        """Bool (height, width): the free region the vehicle is on (see :mod:`.free_region`)."""
        self._check_grid(grid)
        return ego_component(grid, self.grid, self.ego_xy, self.min_region_cells, self._dist2)

    def boundary_from_grid(self, grid: np.ndarray) -> np.ndarray:
        """Free-space boundary (N, 2) x, y in grid_frame, counter-clockwise, not repeated at
        the end, N <= max_vertices; (0, 2) when no ego-connected free space is seen.

        Conservative: every cell the polygon covers is free in ``grid`` (see
        :mod:`.freespace`)."""
        self._check_grid(grid)
        return boundary_polygon(grid == FREE, self.grid, self.max_vertices, self._dist2,
                                self.min_region_cells)

    def boundary_of_region(self, region: np.ndarray) -> np.ndarray:
        """The conservative polygon of a chosen set of free cells (bool, grid-shaped; e.g.
        :func:`.free_region.vehicle_component` of a fused surround grid)."""
        self._check_grid(region)
        return boundary_polygon(region, self.grid, self.max_vertices, self._dist2,
                                self.min_region_cells)

    def process(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(grid, boundary) for one drivable mask."""
        grid = self.grid_from_mask(mask)
        return grid, self.boundary_from_grid(grid)

    def _check_grid(self, grid: np.ndarray) -> None:
        if grid.shape != self.grid.shape:
            raise ValueError(f"grid shape {grid.shape} != grid spec shape {self.grid.shape}")
