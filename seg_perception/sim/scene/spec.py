"""What a synthetic scene is: CamVid class ids, the road's shape, obstacles, the render's fields.

Split from the renderer (:mod:`.raycast`) so the scene description, which the demo, rigs,
benches and tests build, reads on its own: :class:`SceneSpec` (road, lanes, ego pose,
obstacles, roadside, seed, sun), :class:`RoadGeometry` (a centreline of straight and
circular pieces with road coordinates) and :class:`SceneRender` (what a camera sees).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from seg_perception.runtime.geometry.grid import CellVisibility

SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)

#: Curvature (1/m) below which a road piece counts as straight.
STRAIGHT = 1e-9


# ---------------------------------------------------------------------------------------------
# Road geometry
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Piece:
    x0: float
    y0: float
    h0: float
    kappa: float
    s0: float  # arc length of the road at the piece's start pose
    lo: float  # valid local arc length range
    hi: float


class RoadGeometry:
    """Centreline made of straight and circular pieces, with road coordinates (s, lateral).

    ``segments`` are (length, curvature) pieces starting at the origin heading +x; the road
    runs straight before s = 0 and after the last piece. With no segments, ``curvature``
    gives one arc (or line) through the origin extending both ways.
    """

    def __init__(self, segments: tuple[tuple[float, float], ...] = (), curvature: float = 0.0):
        pieces: list[_Piece] = []
        if not segments:
            pieces.append(_Piece(0.0, 0.0, 0.0, curvature, 0.0, -math.inf, math.inf))
        else:
            pieces.append(_Piece(0.0, 0.0, 0.0, 0.0, 0.0, -math.inf, 0.0))
            x, y, h, s = 0.0, 0.0, 0.0, 0.0
            for length, kappa in segments:
                if length <= 0:
                    raise ValueError(f"road segment length {length} must be > 0")
                pieces.append(_Piece(x, y, h, kappa, s, 0.0, length))
                x, y, h = self._advance(x, y, h, kappa, length)
                s += length
            pieces.append(_Piece(x, y, h, 0.0, s, 0.0, math.inf))
        self.pieces = tuple(pieces)

    @staticmethod
    def _advance(x: float, y: float, h: float, kappa: float, ds: float) -> tuple[float, ...]:
        if abs(kappa) < STRAIGHT:
            return x + ds * math.cos(h), y + ds * math.sin(h), h
        r = 1.0 / kappa
        phi = ds * kappa
        lx, ly = r * math.sin(phi), r * (1.0 - math.cos(phi))
        c, s = math.cos(h), math.sin(h)
        return x + c * lx - s * ly, y + s * lx + c * ly, h + phi

    def pose_at(self, s: float) -> tuple[float, float, float]:
        """(x, y, heading) of the centreline at arc length ``s``."""
        for p in self.pieces:
            if p.s0 + p.lo - 1e-9 <= s <= p.s0 + p.hi + 1e-9:
                return self._advance(p.x0, p.y0, p.h0, p.kappa, s - p.s0)
        p = self.pieces[-1]
        return self._advance(p.x0, p.y0, p.h0, p.kappa, s - p.s0)

    def coords(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Road coordinates (s, lateral) of points; lateral is signed, positive left."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        best_s = np.full(x.shape, np.nan)
        best_l = np.full(x.shape, np.inf)
        for p in self.pieces:
            c, s = math.cos(p.h0), math.sin(p.h0)
            dx, dy = x - p.x0, y - p.y0
            a = dx * c + dy * s
            b = -dx * s + dy * c
            if abs(p.kappa) < STRAIGHT:
                s_loc, lat = a, b
            else:
                r = 1.0 / p.kappa
                d = np.hypot(a, b - r)
                lat = r - math.copysign(1.0, p.kappa) * d
                s_loc = r * np.arctan2(r * a, -r * (b - r))
            ok = (s_loc >= p.lo - 1e-6) & (s_loc <= p.hi + 1e-6) & (np.abs(lat) < np.abs(best_l))
            best_l = np.where(ok, lat, best_l)
            best_s = np.where(ok, p.s0 + s_loc, best_s)
        return best_s, best_l


@lru_cache(maxsize=32)
def _road(segments: tuple[tuple[float, float], ...], curvature: float) -> RoadGeometry:
    return RoadGeometry(segments, curvature)


# ---------------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoxObstacle:
    """An upright box standing on the ground, in ``grid_frame`` (metres, radians).

    (x, y) is the footprint centre, yaw the heading of its length axis. ``label`` is the
    CamVid class it renders as; cars get a body, a cabin and wheels-dark lower band.
    """

    x: float
    y: float
    yaw: float = 0.0
    length: float = 4.4
    width: float = 1.8
    height: float = 1.5
    label: int = CAR
    color: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class SceneSpec:
    """A flat road scene seen from a vehicle.

    Attributes:
        curvature: 1/m of a single-arc road through the road origin (positive turns left),
            used when ``segments`` is empty.
        segments: (length m, curvature 1/m) pieces of centreline from the road origin.
        lane_width, n_lanes: lanes are centred on the centreline.
        lane_markings: dashed lane dividers and solid edge lines (all labelled Road).
        sidewalk_width: Pavement strip each side of the road; grass (Tree) beyond.
        ego_pose: (x, y, yaw) of grid_frame in the road frame; None puts the vehicle on the
            centre of the rightmost lane at s = 0 heading along the road.
        obstacles: boxes in grid_frame.
        roadside: buildings, trees and poles along the road (laid out by ``seed`` in road
            coordinates, so they stay put while the vehicle moves).
        seed: roadside layout, colours and textures.
        sun: (azimuth, elevation) in the road frame, radians.
        far_clip: ground farther than this along the ray renders as haze/sky.
    """

    curvature: float = 0.0
    segments: tuple[tuple[float, float], ...] = ()
    lane_width: float = 3.5
    n_lanes: int = 2
    lane_markings: bool = True
    dash_length: float = 3.0
    dash_gap: float = 6.0
    marking_width: float = 0.15
    sidewalk_width: float = 2.0
    ego_pose: tuple[float, float, float] | None = None
    obstacles: tuple[BoxObstacle, ...] = ()
    roadside: bool = True
    seed: int = 0
    sun: tuple[float, float] = (2.3, 0.75)
    far_clip: float = 400.0

    @property
    def road_half_width(self) -> float:
        return 0.5 * self.n_lanes * self.lane_width

    @property
    def ego(self) -> tuple[float, float, float]:
        if self.ego_pose is not None:
            return self.ego_pose
        return 0.0, -self.road_half_width + 0.5 * self.lane_width, 0.0

    def road(self) -> RoadGeometry:
        return _road(tuple(tuple(map(float, s)) for s in self.segments), float(self.curvature))


@dataclass
class SceneRender:
    """What the camera sees, with exact labels; ``grid`` fields are None without a GridSpec."""

    rgb: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) uint8 CamVid class ids
    drivable: np.ndarray  # (H, W) bool: labels == Road
    depth: np.ndarray  # (H, W) float32 metres along the ray, inf for sky
    grid: np.ndarray | None = None  # (height, width) int8 seen-consistent truth
    grid_world: np.ndarray | None = None  # (height, width) int8 world layout, no -1
    visibility: CellVisibility | None = field(default=None, repr=False)

