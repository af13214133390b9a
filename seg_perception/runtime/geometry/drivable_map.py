"""A drivable map that persists: every cycle's fused grid accumulated in the odom frame.

:class:`DrivableMap` keeps a rolling window of ``map.size_x`` x ``map.size_y`` metres in
``map.frame`` (``odom``, REP 105: continuous, so what was seen stays where it was) centred
on the vehicle. Each cycle's fused grid (``grid_frame``, e.g. ``base_footprint``) is
projected into it with the transform ``map_frame <- grid_frame`` at the cycle's stamp and
updates a log-odds value per cell; cells the grid does not see decay toward unknown.

Rules, conservative because a planner drives into what the map calls free:

* an occupied observation adds ``map.hit`` (> 0), a free one ``map.miss`` (< 0); the sum is
  clamped to [``L_MIN``, ``L_MAX``] (octomap's clamping, p 0.12 .. 0.97), so minutes of one
  reading never outweigh more than a dozen new observations;
* a cell not observed in a cycle decays toward 0 (unknown) by ``exp(-dt / map.decay_s)``,
  ``dt`` the stamp time since the previous update (not a count of cycles);
* a cell reads free only when its probability of being free exceeds ``map.free_threshold``
  and no observation called it occupied for ``map.occupied_hold_s``; a cell the current grid
  sees occupied is occupied at once.

The window moves in whole cells (its lattice is anchored at the map frame's origin), so
what it holds is never resampled: cells leaving it are dropped, cells entering are unknown.
Only the incoming grid is resampled, conservatively for free (see ``DrivableMap._project``).
A stamp more than ``TIME_JUMP_NS`` older than the last update (a looped bag) clears it.
``DrivableMap.grid()`` says how the log-odds become OccupancyGrid values.

Measured (``python -m seg_perception.tools.map_bench``; the goals on synthetic drives with
exact truth: ``scripts/map_eval.py``, :mod:`seg_perception.sim.map_eval`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import cv2
import numpy as np

from seg_perception.runtime.errors import ConfigError
from seg_perception.runtime.geometry.grid import FREE, OCCUPIED, UNKNOWN, GridSpec
from seg_perception.runtime.geometry.transform import Transform

#: Log-odds clamp (octomap's defaults: probability 0.12 .. 0.97).
L_MIN = -2.0
L_MAX = 3.5
#: Cells with |log-odds| at or below this read unknown (probability 0.475 .. 0.525).
UNKNOWN_BAND = 0.1
#: A stamp this much older than the last update means time went back: the map is cleared.
TIME_JUMP_NS = 1_000_000_000
#: Largest window (cells); the map holds 12 bytes a cell.
MAX_MAP_CELLS = 4_000_000
#: Corner samples of a map cell sit this far inside it (cells), off the lattice lines of an
#: aligned grid of the same resolution, where nearest-cell rounding would tie.
_INSET = 0.05
_NEVER = np.iinfo(np.int64).min // 2

# Observation codes of the projection: what each fused-grid cell says.
_UNSEEN, _SEES_FREE, _SEES_OCC = 0, 1, 2
_CODE = np.full(256, _SEES_OCC, np.uint8)  # int8 1 .. 127 (any non-free value) is occupied
_CODE[128:] = _UNSEEN  # negative int8 values (UNKNOWN = -1 among them) are unseen
_CODE[FREE] = _SEES_FREE
_AS_GRID = np.array([UNKNOWN, FREE, OCCUPIED, OCCUPIED], np.int8)  # projection code -> cell


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class MapConfig:
    """The ``map.*`` parameters (metres, seconds, log-odds).

    ``hit`` / ``miss`` are the log-odds added per occupied / free observation (p 0.70 and
    0.33); with them a cell needs two free observations in a row before it reads free, one
    occupied observation makes it occupied. The defaults of ``miss`` and
    ``occupied_hold_s`` were chosen on one synthetic drive (seed 1, 60 frames, the
    degradation of :mod:`seg_perception.sim.map_eval`) among hit 0.5/0.85, miss
    -0.4/-0.7, hold 0/0.2/0.5 s and threshold 0.7/0.8 for the highest agreement with the
    truth at a false-free share of 0.01% (hold 0 scored higher; 0.2 s keeps two cycles of
    protection after an occupied reading); docs/map.md reports other drives.
    """

    frame: str = "odom"
    size_x: float = 60.0
    size_y: float = 60.0
    resolution: float = 0.2
    hit: float = 0.85
    miss: float = -0.7
    decay_s: float = 5.0
    free_threshold: float = 0.8
    occupied_hold_s: float = 0.2

    def problems(self) -> list[str]:
        """One line per wrong value (empty when the configuration is usable)."""
        out = []
        if not isinstance(self.frame, str) or not self.frame.strip() or (
                self.frame.startswith("/") or any(c.isspace() for c in self.frame)):
            out.append(f"map.frame={self.frame!r} must name a tf frame (e.g. odom; no leading "
                       "'/', no spaces)")
        numbers = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "frame"}
        bad = {k for k, v in numbers.items() if not _is_number(v) or not math.isfinite(v)}
        out += [f"map.{k}={numbers[k]!r} is not a finite number" for k in sorted(bad)]
        ok = {k: float(v) for k, v in numbers.items() if k not in bad}
        span = L_MAX - L_MIN

        def need(key: str, cond: bool, why: str) -> None:
            if key in ok and not cond:
                out.append(f"map.{key}={ok[key]!r} {why}")

        for key in ("size_x", "size_y", "resolution", "decay_s"):
            need(key, ok.get(key, 1.0) > 0.0, "must be > 0")
        need("hit", UNKNOWN_BAND < ok.get("hit", 1.0) <= span,
             f"must be in ({UNKNOWN_BAND}, {span}]: the log-odds one occupied observation "
             "adds")
        need("miss", -span <= ok.get("miss", -1.0) < -UNKNOWN_BAND,
             f"must be in [{-span}, {-UNKNOWN_BAND}): the log-odds one free observation adds "
             "(negative)")
        lo, hi = _sigmoid(UNKNOWN_BAND), _sigmoid(-L_MIN)
        need("free_threshold", lo < ok.get("free_threshold", 0.8) < hi,
             f"must be between {lo:.3f} and {hi:.3f}: the probability of free a cell needs to "
             f"read free (the clamp at log-odds {L_MIN} caps it at {hi:.3f})")
        need("occupied_hold_s", ok.get("occupied_hold_s", 0.0) >= 0.0, "must be >= 0")
        if {"size_x", "size_y", "resolution"}.isdisjoint(bad) and not out:
            cells = self.width * self.height
            if cells > MAX_MAP_CELLS:
                out.append(f"map.size_x x map.size_y at map.resolution={self.resolution} is "
                           f"{self.width}x{self.height} cells, over {MAX_MAP_CELLS}; raise "
                           "map.resolution or shrink the window")
        return out

    def validate(self) -> MapConfig:
        """Raise :class:`ConfigError` with one line per wrong value; returns ``self``."""
        bad = self.problems()
        if bad:
            raise ConfigError("\n".join(bad))
        return self

    @property
    def width(self) -> int:
        """Cells along the map frame's x."""
        return GridSpec._count(self.size_x, self.resolution)

    @property
    def height(self) -> int:
        """Cells along the map frame's y."""
        return GridSpec._count(self.size_y, self.resolution)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def free_log_odds(self) -> float:
        """Log-odds at or below which a cell has enough free evidence (negative)."""
        return -math.log(self.free_threshold / (1.0 - self.free_threshold))


def shift_window(arr: np.ndarray, dx: int, dy: int, fill: float) -> None:
    """Move a window's contents in place as its cell (0, 0) moves by (dx, dy) cells:
    ``new[r, c] = old[r + dy, c + dx]``; cells with no old counterpart get ``fill``."""
    if dx == 0 and dy == 0:
        return
    h, w = arr.shape[:2]
    if abs(dx) >= w or abs(dy) >= h:
        arr.fill(fill)
        return
    # numpy copies overlapping slices as if through a temporary
    arr[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
        arr[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    if dy > 0:
        arr[h - dy:] = fill
    elif dy < 0:
        arr[:-dy] = fill
    if dx > 0:
        arr[:, w - dx:] = fill
    elif dx < 0:
        arr[:, :-dx] = fill


class DrivableMap:
    """Rolling log-odds window in ``config.frame``; see the module docstring for the rules.

    ``update`` once per cycle, then ``grid()`` / ``origin`` / ``resolution`` fill the
    OccupancyGrid (``grid().ravel()`` is its data, row i along y, column j along x).
    """

    def __init__(self, config: MapConfig | None = None) -> None:
        self.config = (config or MapConfig()).validate()
        h, w = self.config.shape
        self._logodds = np.zeros((h, w), np.float32)
        self._last_occ = np.full((h, w), _NEVER, np.int64)
        self._cell0: tuple[int, int] | None = None  # lattice index (ix, iy) of cell (0, 0)
        self._stamp: int | None = None
        # cell centres of the last GridSpec seen (they depend on the grid geometry only)
        self._centres: tuple[GridSpec, np.ndarray, np.ndarray] | None = None

    # --- the window -------------------------------------------------------------------------
    @property
    def resolution(self) -> float:
        return self.config.resolution

    @property
    def shape(self) -> tuple[int, int]:
        return self.config.shape

    @property
    def origin_cells(self) -> tuple[int, int]:
        """(ix, iy): cell (0, 0) is the map frame's cell [ix, ix + 1) x [iy, iy + 1) times
        ``resolution`` ((0, 0) before the first update)."""
        return self._cell0 or (0, 0)

    @property
    def origin(self) -> tuple[float, float]:
        """Map-frame (x, y) of the outer corner of cell (0, 0): OccupancyGrid info.origin."""
        ix, iy = self.origin_cells
        return ix * self.resolution, iy * self.resolution

    @property
    def log_odds(self) -> np.ndarray:
        """Read-only view of the window's log-odds (float32, 0 = unknown)."""
        view = self._logodds.view()
        view.flags.writeable = False
        return view

    def cell_of(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) of the window cell holding map-frame point (x, y) (may be outside)."""
        ix, iy = self.origin_cells
        return (math.floor(y / self.resolution) - iy, math.floor(x / self.resolution) - ix)

    @property
    def stamp_ns(self) -> int | None:
        """Stamp of the latest update (None before the first or after :meth:`clear`)."""
        return self._stamp

    def clear(self) -> None:
        """Forget everything (the window stays where it is until the next update)."""
        self._logodds.fill(0.0)
        self._last_occ.fill(_NEVER)
        self._stamp = None

    def _move_to(self, ix: int, iy: int) -> None:
        """Put cell (0, 0) at lattice index (ix, iy), keeping the overlap, unknown elsewhere."""
        if self._cell0 is not None:
            dx, dy = ix - self._cell0[0], iy - self._cell0[1]
            shift_window(self._logodds, dx, dy, 0.0)
            shift_window(self._last_occ, dx, dy, _NEVER)
        self._cell0 = (ix, iy)

    # --- projection -------------------------------------------------------------------------
    def _project(
        self, fused_grid: np.ndarray, spec: GridSpec, map_from_grid: Transform,
        nearest: bool = False,
    ) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """(window slices, what each of their cells observes) or None when none is observed.

        The observation is uint8: 0 not observed, 1 free, 2 or 3 occupied (``nearest``: the
        grid cell under each cell's centre, 0 / 1 / 2).

        Resampling, conservative for free and one-to-one for occupied: a map cell is
        observed free when five points all lie in free grid cells (its centre and four points
        just inside its corners, nearest grid cell each); occupied when it holds the centre
        of an occupied grid cell (so each occupied grid cell marks exactly the map cell it
        projects to, however the grids are turned) or two of its corner points lie in
        occupied grid cells (a map cell astride an obstacle's edge, or finer than the grid);
        otherwise (partly unseen, or one corner occupied) it is not observed this cycle.
        Against a straight free edge in a grid of the map's resolution, a cell whose centre
        lies across the edge by more than 0.26 of a cell never reads free, whatever the
        rotation; the grid cell under the centre alone would allow 0.71, a line of false
        free cells along every road edge. One occupied grid cell (a segmentation flip) makes
        one map cell occupied, not the four whose corners it touches.
        """
        grid = np.asarray(fused_grid)
        if grid.shape != spec.shape:
            raise ValueError(f"fused grid of shape {grid.shape} does not match its GridSpec "
                             f"{spec.shape}")
        if grid.dtype != np.int8:
            raise ValueError(f"fused grid must be int8 (OccupancyGrid data), got {grid.dtype}")
        a = map_from_grid.matrix[:2, :2]  # the grid plane seen from above in the map frame
        t = map_from_grid.vector[:2]
        det = float(np.linalg.det(a))
        if abs(det) < 1e-6:
            raise ValueError("map_from_grid tilts the grid plane edge-on to the map plane")
        ainv = np.linalg.inv(a)
        res, res_g = self.resolution, spec.resolution
        ix, iy = self.origin_cells
        h, w = self.shape
        # the grid's footprint (outer corners) in window cells, clipped to the window
        gx = spec.x_min + np.array([0.0, spec.width, 0.0, spec.width]) * res_g
        gy = spec.y_min + np.array([0.0, 0.0, spec.height, spec.height]) * res_g
        mx, my = a @ np.stack([gx, gy]) + t[:, None]
        c0 = max(0, math.floor(mx.min() / res) - ix - 1)
        c1 = min(w, math.ceil(mx.max() / res) - ix + 1)
        r0 = max(0, math.floor(my.min() / res) - iy - 1)
        r1 = min(h, math.ceil(my.max() / res) - iy + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        codes = cv2.LUT(grid.view(np.uint8), _CODE)
        lin = ainv * (res / res_g)
        base = np.array([(ix + c0) * res, (iy + r0) * res]) - t
        lo, hi = _INSET, 1.0 - _INSET
        samples = []  # the centre first, then the four corners
        points = ((0.5, 0.5),) if nearest else ((0.5, 0.5), (lo, lo), (hi, lo), (lo, hi), (hi, hi))
        for ox, oy in points:
            off = (ainv @ (base + res * np.array([ox, oy])) - (spec.x_min, spec.y_min)) / res_g
            m = np.hstack([lin, (off - 0.5)[:, None]])
            samples.append(cv2.warpAffine(
                codes, m, (c1 - c0, r1 - r0), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT, borderValue=_UNSEEN))
        if nearest:
            return (slice(r0, r1), slice(c0, c1)), samples[0]
        most, least = samples[0].copy(), samples[0].copy()
        corners = np.zeros_like(most)
        for s in samples[1:]:
            np.maximum(most, s, out=most)
            np.minimum(least, s, out=least)
            corners += s >> 1  # 1 where occupied
        # occupied: it holds an occupied grid cell's centre, or two of its corners lie in
        # occupied grid cells (a map cell finer than the grid's, or astride an edge)
        occupied = corners >= 2
        occupied |= self._splat(codes, spec, a, t - (np.array([ix + c0, iy + r0]) * res),
                                occupied.shape)
        free = (least == _SEES_FREE) & (most == _SEES_FREE)
        code = free.view(np.uint8) | (occupied.view(np.uint8) << 1)
        return (slice(r0, r1), slice(c0, c1)), code

    def _splat(self, codes: np.ndarray, spec: GridSpec, a: np.ndarray, t: np.ndarray,
               shape: tuple[int, int]) -> np.ndarray:
        """Bool ``shape``: cells of the region (its corner at the origin of ``t``) holding the
        centre of an occupied grid cell, so that every occupied grid cell marks one."""
        if self._centres is None or self._centres[0] != spec:
            gx, gy = spec.cell_centers()
            self._centres = (spec, gx.ravel(), gy.ravel())
        _, gx, gy = self._centres
        idx = np.flatnonzero(codes.ravel() == _SEES_OCC)
        x, y = gx[idx], gy[idx]
        res = self.resolution
        col = np.floor((a[0, 0] * x + a[0, 1] * y + t[0]) / res).astype(np.intp)
        row = np.floor((a[1, 0] * x + a[1, 1] * y + t[1]) / res).astype(np.intp)
        h, w = shape
        keep = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        out = np.zeros(h * w, bool)
        out[row[keep] * w + col[keep]] = True
        return out.reshape(shape)

    def observation(
        self, fused_grid: np.ndarray, spec: GridSpec, map_from_grid: Transform,
        nearest: bool = False,
    ) -> np.ndarray:
        """The fused grid alone on the current window (int8 0 free / 100 occupied / -1
        unobserved), as :meth:`update` sees it, or with ``nearest`` each cell as the grid
        cell under its centre reads; changes nothing. A map without memory, to compare with.
        """
        out = np.full(self.shape, UNKNOWN, np.int8)
        proj = self._project(fused_grid, spec, map_from_grid, nearest)
        if proj is not None:
            out[proj[0]] = _AS_GRID[proj[1]]
        return out

    # --- the cycle --------------------------------------------------------------------------
    def update(
        self, fused_grid: np.ndarray, spec: GridSpec, map_from_grid: Transform, stamp_ns: int
    ) -> bool:
        """Fold one cycle's fused grid (int8, laid out as ``spec`` in grid_frame) into the
        map; ``map_from_grid`` is ``lookup_transform(map.frame, grid_frame, stamp)``.

        Returns True when the map was cleared first because ``stamp_ns`` went back in time
        by more than :data:`TIME_JUMP_NS` (the caller logs it). A slightly older stamp (out
        of order) is folded in without decay.
        """
        stamp_ns = int(stamp_ns)
        cleared = self._stamp is not None and stamp_ns < self._stamp - TIME_JUMP_NS
        if cleared:
            self.clear()
        res = self.resolution
        h, w = self.shape
        vx, vy = map_from_grid.translation[:2]  # grid_frame's origin: the vehicle
        self._move_to(math.floor(vx / res) - w // 2, math.floor(vy / res) - h // 2)
        proj = self._project(fused_grid, spec, map_from_grid)
        dt = 0 if self._stamp is None else max(0, stamp_ns - self._stamp)
        decay = np.float32(math.exp(-dt * 1e-9 / self.config.decay_s))
        before = None if proj is None else self._logodds[proj[0]].copy()
        if dt:
            self._logodds *= decay
        if proj is not None and before is not None:
            roi, code = proj
            # observed cells: their value before this cycle's decay plus the increment
            factor = np.ones(256, np.float32)
            factor[_UNSEEN] = decay
            inc = np.zeros(256, np.float32)
            inc[[_SEES_FREE, _SEES_OCC, _SEES_OCC | _SEES_FREE]] = (
                self.config.miss, self.config.hit, self.config.hit)
            np.multiply(before, cv2.LUT(code, factor), out=before)
            np.add(before, cv2.LUT(code, inc), out=before)
            np.clip(before, L_MIN, L_MAX, out=self._logodds[roi])
            occ_view = self._last_occ[roi]
            seen_occ = code >= _SEES_OCC
            if self._stamp is not None and stamp_ns < self._stamp:  # out of order: keep newest
                np.copyto(occ_view, np.maximum(occ_view, stamp_ns), where=seen_occ)
            else:
                np.copyto(occ_view, stamp_ns, where=seen_occ)
        self._stamp = stamp_ns if self._stamp is None else max(self._stamp, stamp_ns)
        return cleared

    def grid(self) -> np.ndarray:
        """The map as OccupancyGrid data: int8 (height, width) in the nav_msgs convention.

        * ``100``: occupied: seen occupied within ``occupied_hold_s`` of the latest update
          (this cycle included), or more occupied than free evidence (p > 0.525);
        * ``0``: free: p(free) > ``free_threshold`` and no occupied observation in the hold;
        * ``1 .. 49``: free evidence, not yet (or no longer) enough: ``round(100 p)``;
        * ``-1``: unknown: never seen, or decayed to 0.475 <= p <= 0.525.

        ``p`` is the probability of occupied, ``1 / (1 + exp(-log_odds))``. Free cells
        publish 0 rather than ``round(100 p)`` (12 .. 20): 0 is the one value that means
        drivable, as in the fused grid, so a consumer testing ``== 0`` gets exactly the
        cells the conservative rule allows; every occupied side value is 100, so one that
        thresholds at 100 (nav2's static layer, lethal_threshold) never misses an obstacle.
        A consumer that reads everything below 100 as free (nav2's ``trinary_costmap``)
        should take 1 .. 49 as not drivable.
        """
        lo = self._logodds
        out = np.full(self.shape, UNKNOWN, np.int8)
        mid = (lo < -UNKNOWN_BAND) & (lo > self.config.free_log_odds)
        p = 100.0 / (1.0 + np.exp(-lo[mid]))
        out[mid] = np.clip(np.rint(p), 1, 49).astype(np.int8)
        out[lo <= self.config.free_log_odds] = FREE
        out[lo > UNKNOWN_BAND] = OCCUPIED
        if self._stamp is not None:
            hold = round(self.config.occupied_hold_s * 1e9)
            out[self._last_occ >= self._stamp - hold] = OCCUPIED
        return out


__all__ = ["L_MAX", "L_MIN", "MAX_MAP_CELLS", "TIME_JUMP_NS", "UNKNOWN_BAND", "DrivableMap",
           "MapConfig", "shift_window"]
