"""Bird's-eye grid geometry and the cell -> pixel lookup that makes a frame cost one gather.

The grid layout is nav_msgs/OccupancyGrid's: an int8 array of shape (height, width); row i
runs along y (row 0 at ``y_min``), column j along x (column 0 at ``x_min``), so
``grid.ravel()`` is ``OccupancyGrid.data`` with origin ``(x_min, y_min)`` and identity
orientation. Values: 0 seen and drivable, 100 seen and not drivable, -1 unseen.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from seg_perception.runtime.geometry.camera import CameraModel, CameraMounting

FREE = 0
OCCUPIED = 100
UNKNOWN = -1

#: Why a cell is unseen (``CellVisibility.reason``); 0 means seen.
SEEN = 0
BEHIND = 1  # at or behind the camera plane, or where the lens model folds over
OUTSIDE_IMAGE = 2
BEYOND_RANGE = 3
FOOTPRINT = 4  # one pixel covers more ground than max_pixel_footprint

MAX_CELLS = 16_000_000
#: Mask sizes whose scaled pixel tables a lookup keeps (least recently used go first).
TABLES_PER_LOOKUP = 4


@dataclass(frozen=True)
class GridSpec:
    """Extent and resolution of the bird's-eye grid in ``grid_frame`` (metres).

    When the span is not a whole number of cells the grid is rounded up, so it may reach
    up to one cell beyond ``x_max`` / ``y_max``.
    """

    resolution: float = 0.1
    x_min: float = 0.0
    x_max: float = 40.0
    y_min: float = -10.0
    y_max: float = 10.0

    def validate(self) -> GridSpec:
        """Raise ValueError naming the inconsistent parameter; returns ``self``."""
        vals = (self.resolution, self.x_min, self.x_max, self.y_min, self.y_max)
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"grid parameters must be finite numbers: {self}")
        if self.resolution <= 0.0:
            raise ValueError(f"grid.resolution = {self.resolution} must be > 0 (metres per cell)")
        if self.x_min >= self.x_max:
            raise ValueError(f"grid.x_min = {self.x_min} must be < grid.x_max = {self.x_max}")
        if self.y_min >= self.y_max:
            raise ValueError(f"grid.y_min = {self.y_min} must be < grid.y_max = {self.y_max}")
        if self.width * self.height > MAX_CELLS:
            raise ValueError(
                f"grid of {self.width}x{self.height} cells exceeds {MAX_CELLS} cells; "
                "raise grid.resolution or shrink the extent"
            )
        return self

    @staticmethod
    def _count(span: float, res: float) -> int:
        n = span / res
        return max(1, round(n) if abs(n - round(n)) < 1e-6 else math.ceil(n))

    @property
    def width(self) -> int:
        """Cells along x (OccupancyGrid ``info.width``)."""
        return self._count(self.x_max - self.x_min, self.resolution)

    @property
    def height(self) -> int:
        """Cells along y (OccupancyGrid ``info.height``)."""
        return self._count(self.y_max - self.y_min, self.resolution)

    @property
    def shape(self) -> tuple[int, int]:
        """Array shape (height, width)."""
        return self.height, self.width

    @property
    def origin(self) -> tuple[float, float]:
        """Ground position of the outer corner of cell (0, 0): OccupancyGrid ``info.origin``."""
        return self.x_min, self.y_min

    def cell_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y) of every cell centre, each of shape (height, width)."""
        xs = self.x_min + (np.arange(self.width) + 0.5) * self.resolution
        ys = self.y_min + (np.arange(self.height) + 0.5) * self.resolution
        gx, gy = np.meshgrid(xs, ys)
        return gx, gy

    def cell_of(
        self, x: np.ndarray | float, y: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) integer indices of the cells holding ground points (may be out of range)."""
        col = np.floor((np.asarray(x) - self.x_min) / self.resolution).astype(np.int64)
        row = np.floor((np.asarray(y) - self.y_min) / self.resolution).astype(np.int64)
        return row, col

    def cells_to_xy(self, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Fractional (col, row) cell coordinates (cell centres at integers) -> (N, 2) x, y."""
        x = self.x_min + (np.asarray(cols, dtype=np.float64) + 0.5) * self.resolution
        y = self.y_min + (np.asarray(rows, dtype=np.float64) + 0.5) * self.resolution
        return np.stack([x, y], axis=-1)

    def empty(self) -> np.ndarray:
        """An all-unknown grid."""
        return np.full(self.shape, UNKNOWN, dtype=np.int8)


@dataclass(frozen=True)
class CellVisibility:
    """Where each cell's ground point lands in the image and whether it counts as seen."""

    reason: np.ndarray  # int8 (height, width): SEEN or the first failed test
    uv: np.ndarray  # float64 (height, width, 2) pixel coordinates, NaN where not imageable
    footprint: np.ndarray  # float64 (height, width): metres of ground one pixel covers

    @property
    def seen(self) -> np.ndarray:
        return self.reason == SEEN


def cell_visibility(
    grid: GridSpec,
    camera: CameraModel,
    mounting: CameraMounting,
    max_range: float,
    max_pixel_footprint: float,
) -> CellVisibility:
    """Project every cell centre into the image and apply the visibility rules.

    A cell is unseen when its ground point is behind the camera (or where the lens model is
    not invertible), outside the image, farther than ``max_range`` (horizontal distance from
    the point under the camera), or where one pixel covers more than ``max_pixel_footprint``
    metres of ground in its worst direction (estimated from the local Jacobian of the
    projection, so lens distortion is included). Ground points are always below the
    horizon; the footprint rule is what cuts the grid off before it.
    """
    gx, gy = grid.cell_centers()
    pts = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)
    delta = 1e-3
    p_opt = mounting.grid_to_optical(pts)
    uv = camera.project(p_opt)
    rot = mounting.rotation  # grid <- optical; rows of rot.T map grid offsets to optical
    uv_x = camera.project(p_opt + delta * rot[0])
    uv_y = camera.project(p_opt + delta * rot[1])
    ja = (uv_x - uv) / delta  # d(u, v)/dx
    jb = (uv_y - uv) / delta  # d(u, v)/dy
    a, c = ja[:, 0], ja[:, 1]
    b, d = jb[:, 0], jb[:, 1]
    t = a * a + b * b + c * c + d * d
    det = a * d - b * c
    with np.errstate(invalid="ignore", divide="ignore"):
        s_min2 = 0.5 * (t - np.sqrt(np.maximum(t * t - 4.0 * det * det, 0.0)))
        footprint = np.where(s_min2 > 0, 1.0 / np.sqrt(s_min2), np.inf)

    reason = np.full(gx.size, SEEN, dtype=np.int8)
    u, v = uv[:, 0], uv[:, 1]
    behind = ~np.isfinite(u) | ~np.isfinite(footprint)
    with np.errstate(invalid="ignore"):
        inside = (u >= -0.5) & (u < camera.width - 0.5) & (v >= -0.5) & (v < camera.height - 0.5)
    rng = np.hypot(pts[:, 0] - mounting.x, pts[:, 1] - mounting.y)
    reason[np.nan_to_num(footprint, nan=np.inf) > max_pixel_footprint] = FOOTPRINT
    reason[rng > max_range] = BEYOND_RANGE
    reason[~inside] = OUTSIDE_IMAGE
    reason[behind] = BEHIND
    return CellVisibility(
        reason=reason.reshape(grid.shape),
        uv=uv.reshape(*grid.shape, 2),
        footprint=footprint.reshape(grid.shape),
    )


def _scaled_table(uv: np.ndarray, width: int, height: int, h: int,
                  w: int) -> tuple[np.ndarray, int, int]:
    """:meth:`GroundLookup.table` of a mask of ``h`` x ``w`` for pixels ``uv`` of a camera
    image of ``width`` x ``height``."""
    sx, sy = w / width, h / height
    col = np.floor((uv[:, 0] + 0.5) * sx).astype(np.intp)
    row = np.floor((uv[:, 1] + 0.5) * sy).astype(np.intp)
    np.clip(col, 0, w - 1, out=col)
    np.clip(row, 0, h - 1, out=row)
    r0, r1 = (int(row.min()), int(row.max()) + 1) if len(row) else (0, 0)
    return ((row - r0) * w + col).astype(np.intp), r0, r1


class GroundLookup:
    """Precomputed cell -> pixel table for one (grid, camera, mounting, limits) combination.

    ``gather(mask)`` fills a grid with one fancy-index read of the mask. Masks of another size
    than the camera's (a network run at reduced resolution) are served by scaling the pixel
    coordinates; the scaled tables of the last :data:`TABLES_PER_LOOKUP` mask shapes are kept
    (a bounded LRU: a stream of ever-new sizes does not grow memory).
    """

    def __init__(
        self,
        grid: GridSpec,
        camera: CameraModel,
        mounting: CameraMounting,
        max_range: float,
        max_pixel_footprint: float,
    ) -> None:
        self.grid = grid
        self.camera = camera
        self.mounting = mounting
        self.visibility = cell_visibility(grid, camera, mounting, max_range, max_pixel_footprint)
        seen = self.visibility.seen.ravel()
        self.cell_index = np.flatnonzero(seen).astype(np.intp)
        self._uv = self.visibility.uv.reshape(-1, 2)[self.cell_index]
        # A pure function of the mask shape: functools' LRU, bound to this lookup's pixels
        # (a partial, not a method, so the cache holds no reference back to the lookup).
        self._table = functools.lru_cache(maxsize=TABLES_PER_LOOKUP)(
            functools.partial(_scaled_table, self._uv, camera.width, camera.height))

    @property
    def seen(self) -> np.ndarray:
        """Bool (height, width): cells the camera sees."""
        return self.visibility.seen

    @property
    def n_seen(self) -> int:
        return len(self.cell_index)

    def table(self, shape: tuple[int, int]) -> tuple[np.ndarray, int, int]:
        """(flat pixel indices relative to row ``r0``, r0, r1) for a mask of ``shape``.

        Rows ``r0 .. r1 - 1`` are the only ones read, so cleaning can be limited to them.
        """
        return self._table(int(shape[0]), int(shape[1]))

    def gather(
        self,
        mask: np.ndarray,
        clean: Callable[[np.ndarray], np.ndarray] | None = None,
        pad: int = 0,
    ) -> np.ndarray:
        """Grid (height, width) int8 from a 2-D mask (nonzero = drivable).

        ``clean``, when given, is applied to the band of mask rows the table reads, widened by
        ``pad`` rows each side (the cleaning filter's reach), and only to that band.
        """
        if mask.ndim != 2:
            raise ValueError(f"drivable mask must be 2-D (H, W), got shape {mask.shape}")
        idx, r0, r1 = self.table(mask.shape)
        if clean is not None and len(idx):
            b0, b1 = max(0, r0 - pad), min(mask.shape[0], r1 + pad)
            band = clean(np.ascontiguousarray(mask[b0:b1]))
            band = band[r0 - b0 : r0 - b0 + (r1 - r0)]
        else:
            band = mask[r0:r1]
        band = np.ascontiguousarray(band)
        out = np.full(self.grid.width * self.grid.height, UNKNOWN, dtype=np.int8)
        if len(idx):
            vals = band.reshape(-1)[idx]
            if vals.dtype != np.uint8:
                vals = vals.astype(bool).view(np.uint8)
            out[self.cell_index] = _CODE[vals]
        return out.reshape(self.grid.shape)


# mask byte -> cell value: 0 -> OCCUPIED, anything else -> FREE.
_CODE = np.full(256, FREE, dtype=np.int8)
_CODE[0] = OCCUPIED
