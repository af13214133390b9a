"""The persistent drivable map scored on a synthetic drive with exact truth.

A surround rig (:func:`.rig.surround_rig`) drives a :func:`.scene.drive_sequence` route; the
vehicle's odom pose is exact (``SceneSpec.ego_pose`` places grid_frame in the road frame,
and odom is the road frame moved to the start pose). Per frame the rig gives (a) the exact
fused truth grid and (b) an "estimated" one degraded as a segmenter would (seeded, see
:class:`Degradation`); (b) goes into a :class:`DrivableMap` with the true transforms, and
the map is scored in the odom frame against the single-frame fused grid (b) alone: ``fused``
reads each map cell from the grid cell under its centre, ``frame`` goes through the map's
own conservative resampling (:meth:`DrivableMap.observation`); both are held over dropped
frames, as a planner holds the last message. Figures:

* agreement: share of cells (a) sees where the output says what (a) says (0 is free,
  1..100 is not free, -1 never agrees);
* known for decay_s: share of cells observed within the last ``map.decay_s`` (not in this
  cycle) that the map still knows (not -1);
* false free: share of not-drivable cells (the world now: off the road or under a car,
  evaluated at the map cells' centres) that the output knows and calls free (0);
* flicker: share of cells (a) sees in two consecutive frames whose output turns from free
  (0) to occupied (100) or back.

Truth grids do not depend on the images' size when ``max_pixel_footprint`` scales with it,
so the rig renders small images (the cost is the truth, not the pictures).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from seg_perception.runtime.geometry.camera import rpy_matrix
from seg_perception.runtime.geometry.drivable_map import DrivableMap, MapConfig, shift_window
from seg_perception.runtime.geometry.fusion import fuse_grids
from seg_perception.runtime.geometry.grid import FREE, OCCUPIED, UNKNOWN, GridSpec
from seg_perception.runtime.geometry.mapper import DEFAULT_MAX_PIXEL_FOOTPRINT
from seg_perception.runtime.geometry.transform import Transform
from seg_perception.sim.rig import SURROUND_GRID, render_rig, surround_rig
from seg_perception.sim.scene import SceneSpec, drive_sequence

#: The rig's image width whose pixel footprint the node's default max_pixel_footprint fits.
_REFERENCE_WIDTH = 480


@dataclass(frozen=True)
class Degradation:
    """How the "estimated" fused grid departs from the truth (all seeded).

    flip: chance per seen cell and frame of reading free as occupied or occupied as free.
    drop_frame: chance per frame that no fused grid comes at all (the map is not updated).
    drop_camera: chance per camera and frame that its grid is missing from the fusion.
    blob: chance per frame that a blob of false free starts on not-drivable ground it sees
    (a disc of ``blob_radius`` metres fixed on the ground, for 1 .. ``blob_frames`` frames).
    """

    flip: float = 0.03
    drop_frame: float = 0.05
    drop_camera: float = 0.05
    blob: float = 0.08
    blob_radius: tuple[float, float] = (1.0, 3.0)
    blob_frames: int = 3


def pose_transform(x: float, y: float, yaw: float) -> Transform:
    """A planar pose (x, y, yaw) as a Transform (parent <- child)."""
    return Transform.from_matrix(rpy_matrix(0.0, 0.0, yaw), (x, y, 0.0))


def world_occupied(spec: SceneSpec, odom_from_road: Transform, m: DrivableMap) -> np.ndarray:
    """Bool (height, width) of the map window: cells whose centre is not drivable in the world
    of ``spec`` (off the road, or under one of its obstacles)."""
    h, w = m.shape
    ix, iy = m.origin_cells
    res = m.resolution
    gx, gy = np.meshgrid((ix + np.arange(w) + 0.5) * res, (iy + np.arange(h) + 0.5) * res)
    pts = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    road_pts = odom_from_road.inverse().apply(pts)
    _, lat = spec.road().coords(road_pts[:, 0], road_pts[:, 1])
    occupied = ~(np.abs(lat) <= spec.road_half_width)
    local = pose_transform(*spec.ego).inverse().apply(road_pts)  # grid_frame
    for obs in spec.obstacles:
        c, s = math.cos(obs.yaw), math.sin(obs.yaw)
        dx, dy = local[:, 0] - obs.x, local[:, 1] - obs.y
        occupied |= ((np.abs(c * dx + s * dy) <= obs.length / 2)
                     & (np.abs(-s * dx + c * dy) <= obs.width / 2))
    return occupied.reshape(h, w)


class _Degrader:
    """Turns each frame's per-camera truth grids into the degraded fused grid (b)."""

    def __init__(self, degrade: Degradation, grid: GridSpec, seed: int) -> None:
        self.d = degrade
        self.grid = grid
        self.rng = np.random.default_rng([seed, 7])
        self.blobs: list[list[float]] = []  # [x, y (odom), radius, frames left]
        gx, gy = grid.cell_centers()
        self._cells = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])

    def __call__(self, views: list[np.ndarray], truth: np.ndarray,
                 odom_from_grid: Transform) -> np.ndarray | None:
        d, rng = self.d, self.rng
        if rng.random() < d.drop_frame:
            self._age_blobs()
            return None
        kept = [v for v in views if rng.random() >= d.drop_camera]
        est = fuse_grids(kept or [np.full(self.grid.shape, UNKNOWN, np.int8)])
        flip = (rng.random(est.shape) < d.flip) & (est != UNKNOWN)
        est = np.where(flip, np.where(est == FREE, OCCUPIED, FREE), est).astype(np.int8)
        if rng.random() < d.blob:
            rows, cols = np.nonzero(truth == OCCUPIED)
            if len(rows):
                k = int(rng.integers(len(rows)))
                centre = self.grid.cells_to_xy(np.array([cols[k]]), np.array([rows[k]]))[0]
                x, y, _ = odom_from_grid.apply(np.array([[*centre, 0.0]]))[0]
                self.blobs.append([x, y, float(rng.uniform(*d.blob_radius)),
                                   float(rng.integers(1, d.blob_frames + 1))])
        if self.blobs:
            odom = odom_from_grid.apply(self._cells)[:, :2]
            inside = np.zeros(len(odom), bool)
            for x, y, r, _ in self.blobs:
                inside |= np.hypot(odom[:, 0] - x, odom[:, 1] - y) <= r
            inside = inside.reshape(est.shape) & (est != UNKNOWN)
            est[inside] = FREE
        self._age_blobs()
        return est

    def _age_blobs(self) -> None:
        for b in self.blobs:
            b[3] -= 1
        self.blobs = [b for b in self.blobs if b[3] > 0]


class _Track:
    """One scored output: its previous frame (kept aligned with its window) and counts."""

    def __init__(self, name: str, counts: dict[str, float]) -> None:
        self.name = name
        self.c = counts
        self.prev: np.ndarray | None = None
        self.prev_seen: np.ndarray | None = None
        self.cell0: tuple[int, int] | None = None

    def score(self, out: np.ndarray, cell0: tuple[int, int], truth: np.ndarray,
              world_occ: np.ndarray) -> None:
        """Add one frame's counts (see the module docstring); ``truth`` is (a) resampled
        onto the window at ``cell0``, ``world_occ`` the world's not-drivable cells."""
        if self.cell0 is not None and cell0 != self.cell0:
            dx, dy = cell0[0] - self.cell0[0], cell0[1] - self.cell0[1]
            for arr, fill in ((self.prev, UNKNOWN), (self.prev_seen, False)):
                if arr is not None:
                    shift_window(arr, dx, dy, fill)
        c, n = self.c, self.name
        free, known = out == FREE, out != UNKNOWN
        seen = truth != UNKNOWN
        c[f"{n}.agree_free"] += np.count_nonzero(free & (truth == FREE))
        c[f"{n}.agree_occ"] += np.count_nonzero((out > FREE) & (truth == OCCUPIED))
        c[f"{n}.false_free"] += np.count_nonzero(free & world_occ)
        c[f"{n}.occ_known"] += np.count_nonzero(known & world_occ)
        if self.prev is not None and self.prev_seen is not None:
            both = seen & self.prev_seen
            turned = (free & (self.prev == OCCUPIED)) | ((out == OCCUPIED) & (self.prev == FREE))
            c[f"{n}.flicker"] += np.count_nonzero(both & turned)
            c[f"{n}.flicker_cells"] += np.count_nonzero(both)
        self.prev, self.prev_seen, self.cell0 = out.copy(), seen, cell0


class _Recency:
    """When each odom cell a drive can reach was last observed, on one canvas."""

    def __init__(self, xy: np.ndarray, config: MapConfig) -> None:
        half = 0.5 * max(config.size_x, config.size_y) + 2.0
        self.lo = np.floor((xy.min(axis=0) - half) / config.resolution).astype(int)
        hi = np.ceil((xy.max(axis=0) + half) / config.resolution).astype(int)
        size = (hi[1] - self.lo[1], hi[0] - self.lo[0])
        self.last = np.full(size, np.iinfo(np.int64).min // 2, np.int64)

    def window(self, m: DrivableMap) -> np.ndarray:
        r0, c0 = m.origin_cells[1] - self.lo[1], m.origin_cells[0] - self.lo[0]
        return self.last[r0:r0 + m.shape[0], c0:c0 + m.shape[1]]


def evaluate_drive(
    seed: int,
    frames: int = 150,
    *,
    configs: dict[str, MapConfig] | None = None,
    grid: GridSpec = SURROUND_GRID,
    degrade: Degradation | None = None,
    fps: float = 10.0,
    speed: float = 8.0,
    camera_width: int = 96,
) -> dict[str, float]:
    """Figures of one seeded drive (see the module docstring), keyed ``<output>.<figure>``.

    Outputs: each of ``configs`` (default ``{"map": MapConfig()}``), a map fed the degraded
    grids; ``fused`` and ``frame``, the degraded grid alone (on the first map's window; see
    the module docstring); ``exact``, a map of the first configuration fed the exact truth
    (what the map's own rules cost).
    """
    configs = configs or {"map": MapConfig()}
    first = next(iter(configs))
    degrade = degrade or Degradation()
    rig = surround_rig(camera_width, round(camera_width * 0.75))
    footprint = DEFAULT_MAX_PIXEL_FOOTPRINT * _REFERENCE_WIDTH / camera_width
    specs = list(drive_sequence(frames, fps, speed, rng=np.random.default_rng(seed)))
    odom_from_road = pose_transform(*specs[0].ego).inverse()
    degrader = _Degrader(degrade, grid, seed)
    maps = {name: DrivableMap(cfg) for name, cfg in configs.items()}
    exact = DrivableMap(configs[first])
    c: dict[str, float] = defaultdict(float)
    tracks = {n: _Track(n, c) for n in [*maps, "exact", "fused", "frame"]}
    xy = np.array([odom_from_road.apply(np.array([[*s.ego[:2], 0.0]]))[0, :2] for s in specs])
    recency = {n: _Recency(xy, cfg) for n, cfg in configs.items()}
    held: dict[str, np.ndarray | None] = {"fused": None, "frame": None}  # over dropped frames
    held_cell0: tuple[int, int] | None = None
    for k, spec in enumerate(specs):
        stamp = round(k * 1e9 / fps)
        tf = odom_from_road @ pose_transform(*spec.ego)
        render = render_rig(spec, rig, grid, max_pixel_footprint=footprint)
        views = [v.grid for v in render.views.values() if v.grid is not None]
        est = degrader(views, render.fused, tf)
        exact.update(render.fused, grid, tf, stamp)
        cache: dict[Any, tuple[np.ndarray, np.ndarray]] = {}

        def truths(m: DrivableMap, spec: SceneSpec = spec, fused: np.ndarray = render.fused,
                   tf: Transform = tf, cache: dict = cache) -> tuple[np.ndarray, np.ndarray]:
            """(a) under each cell's centre, and the world's not-drivable cells."""
            key = (m.origin_cells, m.shape, m.resolution)
            if key not in cache:
                cache[key] = (m.observation(fused, grid, tf, nearest=True),
                              world_occupied(spec, odom_from_road, m))
            return cache[key]

        for name, m in maps.items():
            if est is not None:
                m.update(est, grid, tf, stamp)
            out = m.grid()
            tracks[name].score(out, m.origin_cells, *truths(m))
            # known for decay_s: cells observed before (not now) and within decay_s
            win = recency[name].window(m)
            if est is not None:
                win[m.observation(est, grid, tf) != UNKNOWN] = stamp
            age = stamp - win
            recent = (age > 0) & (age <= round(m.config.decay_s * 1e9))
            c[f"{name}.recent"] += np.count_nonzero(recent)
            c[f"{name}.recent_known"] += np.count_nonzero(recent & (out != UNKNOWN))
            if recent.any():
                c[f"{name}.oldest_recent"] = max(c[f"{name}.oldest_recent"],
                                                 float(age[recent].max()) * 1e-9)
        lead = maps[first]
        for name, nearest in (("fused", True), ("frame", False)):
            last = held[name]
            if last is not None and held_cell0 is not None:
                shift_window(last, lead.origin_cells[0] - held_cell0[0],
                             lead.origin_cells[1] - held_cell0[1], UNKNOWN)
            if est is not None:
                last = held[name] = lead.observation(est, grid, tf, nearest=nearest)
            out = last if last is not None else np.full(lead.shape, UNKNOWN, np.int8)
            tracks[name].score(out, lead.origin_cells, *truths(lead))
        held_cell0 = lead.origin_cells
        tracks["exact"].score(exact.grid(), exact.origin_cells, *truths(exact))
        truth = truths(lead)[0]
        c["seen_free"] += np.count_nonzero(truth == FREE)
        c["seen_occ"] += np.count_nonzero(truth == OCCUPIED)
    return _figures(c, frames, list(tracks), list(maps))


def _figures(c: dict[str, float], frames: int, names: list[str],
             maps: list[str]) -> dict[str, float]:
    out = {"frames": float(frames)}
    seen = c["seen_free"] + c["seen_occ"]
    fused_flicker = c["fused.flicker"] / max(1.0, c["fused.flicker_cells"])
    frame_flicker = c["frame.flicker"] / max(1.0, c["frame.flicker_cells"])
    for n in names:
        out[f"{n}.agreement"] = (c[f"{n}.agree_free"] + c[f"{n}.agree_occ"]) / max(1.0, seen)
        out[f"{n}.agreement_free"] = c[f"{n}.agree_free"] / max(1.0, c["seen_free"])
        out[f"{n}.agreement_occupied"] = c[f"{n}.agree_occ"] / max(1.0, c["seen_occ"])
        out[f"{n}.false_free"] = c[f"{n}.false_free"] / max(1.0, c[f"{n}.occ_known"])
        out[f"{n}.false_free_cells"] = c[f"{n}.false_free"]
        out[f"{n}.flicker"] = c[f"{n}.flicker"] / max(1.0, c[f"{n}.flicker_cells"])
        out[f"{n}.flicker_changes"] = c[f"{n}.flicker"]
        out[f"{n}.flicker_ratio"] = fused_flicker / max(out[f"{n}.flicker"], 1e-12)
        out[f"{n}.flicker_ratio_frame"] = frame_flicker / max(out[f"{n}.flicker"], 1e-12)
    for n in maps:
        out[f"{n}.recent_cells"] = c[f"{n}.recent"]
        out[f"{n}.known_for_decay"] = c[f"{n}.recent_known"] / max(1.0, c[f"{n}.recent"])
        out[f"{n}.oldest_recent_s"] = c[f"{n}.oldest_recent"]
    return out


def format_figures(seed: int, f: dict[str, float]) -> str:
    """One drive's figures as text: a line per output (maps, then the fused grid alone)."""
    names = sorted({k.rsplit(".", 1)[0] for k in f if "." in k},
                   key=lambda n: (n in ("fused", "frame"), n == "exact", n))
    rows = [f"drive seed {seed}: {int(f['frames'])} frames"]
    for n in names:
        line = (f"  {n:10s} agreement {f[f'{n}.agreement']:6.2%} (free "
                f"{f[f'{n}.agreement_free']:6.2%}, occupied {f[f'{n}.agreement_occupied']:6.2%})"
                f"  false free {f[f'{n}.false_free']:.4%} ({int(f[f'{n}.false_free_cells'])})"
                f"  flicker {f[f'{n}.flicker']:.3%} ({int(f[f'{n}.flicker_changes'])})")
        if n not in ("fused", "frame"):
            line += (f" ({f[f'{n}.flicker_ratio']:.1f}x lower than fused, "
                     f"{f[f'{n}.flicker_ratio_frame']:.1f}x than frame)")
        if f"{n}.known_for_decay" in f:
            line += (f"  known for decay_s {f[f'{n}.known_for_decay']:.2%} (oldest "
                     f"{f[f'{n}.oldest_recent_s']:.1f} s)")
        rows.append(line)
    return "\n".join(rows)


__all__ = ["Degradation", "evaluate_drive", "format_figures", "pose_transform",
           "world_occupied"]
