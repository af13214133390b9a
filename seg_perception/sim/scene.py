"""Synthetic driving scenes with exact labels: the ground truth the projection is tested on.

A flat world (ground plane z = 0) holds a road of known shape, built from straight and
circular pieces in a *road frame* (the centreline starts at the origin heading +x, s is arc
length, lateral offset is positive to the left). Lanes with lane markings, sidewalks, grass
verges, buildings, trees and poles line it; obstacles are upright boxes. A camera with
given intrinsics and mounting on a vehicle (``SceneSpec.ego_pose`` places ``grid_frame`` in
the road frame) is rendered by casting one ray per pixel centre (vectorised numpy).
Tree crowns are the ellipsoid inscribed in their box. The look (a bright overcast sky,
paving slabs behind a raised kerb, brick facades with sash windows, leafy crowns, muted
colour and vignetting) follows CamVid's frames, so the CamVid-trained default model
reads the scenes much as it reads real streets.

Labels use CamVid's 11 classes (0 Sky, 1 Building, 2 Pole, 3 Road, 4 Pavement, 5 Tree,
6 SignSymbol, 7 Fence, 8 Car, 9 Pedestrian, 10 Bicyclist): lane markings are Road, grass is
Tree (CamVid files vegetation there), obstacles are Car unless they say otherwise.

Ground truth grid (``SceneRender.grid``): computed from the world, not from the image, with
the same visibility rules as the projection (:func:`.grid.cell_visibility`). A seen cell is
0 when its centre lies on the road and the straight segment from the camera to it meets no
box, else 100; unseen cells are -1. So ground hidden behind or under an obstacle counts as
seen-and-not-drivable, exactly what a perfect segmenter plus flat-ground projection yields.
``SceneRender.grid_world`` is the world's own layout (road minus obstacle footprints) over
every cell, regardless of visibility.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache

import cv2
import numpy as np

from seg_perception.runtime.geometry.camera import CameraModel, CameraMounting, rotate
from seg_perception.runtime.geometry.grid import (
    FREE,
    OCCUPIED,
    UNKNOWN,
    CellVisibility,
    GridSpec,
    cell_visibility,
)
from seg_perception.runtime.geometry.mapper import DEFAULT_MAX_PIXEL_FOOTPRINT, DEFAULT_MAX_RANGE

SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)

_STRAIGHT = 1e-9


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
        if abs(kappa) < _STRAIGHT:
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
            if abs(p.kappa) < _STRAIGHT:
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


# ---------------------------------------------------------------------------------------------
# Boxes (internal, road frame)
# ---------------------------------------------------------------------------------------------
_KIND_PLAIN, _KIND_BUILDING, _KIND_CAR_BODY, _KIND_CAR_CABIN, _KIND_CROWN, _KIND_TRUNK = range(6)
_KIND_POLE = 6


@dataclass(frozen=True)
class _Box:
    x: float
    y: float
    yaw: float
    length: float
    width: float
    z0: float
    z1: float
    label: int
    color: tuple[float, float, float]
    kind: int

    def edges(self, n: int = 2) -> np.ndarray:
        """The 12 edges sampled at ``n`` points each (corners included), (12, n, 3)."""
        lx, ly = 0.5 * self.length, 0.5 * self.width
        corner = np.array(
            [[sx * lx, sy * ly, z] for z in (self.z0, self.z1) for sx in (-1, 1) for sy in (-1, 1)]
        )
        pairs = ((0, 1), (0, 2), (1, 3), (2, 3), (4, 5), (4, 6), (5, 7), (6, 7),
                 (0, 4), (1, 5), (2, 6), (3, 7))
        t = np.linspace(0.0, 1.0, n)[None, :, None]
        a = corner[[p[0] for p in pairs]][:, None, :]
        b = corner[[p[1] for p in pairs]][:, None, :]
        p = a + (b - a) * t
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        x = self.x + c * p[..., 0] - s * p[..., 1]
        y = self.y + s * p[..., 0] + c * p[..., 1]
        return np.stack([x, y, p[..., 2]], axis=-1)

    def corners(self, n: int = 2) -> np.ndarray:
        """Points along the box's edges, (12 n, 3)."""
        return self.edges(n).reshape(-1, 3)

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slab test: (t_near, face) per ray; t_near = inf where missed or camera inside.

        face: 0/1 = -x/+x side, 2/3 = -y/+y side, 4 = top, 5 = bottom (box local axes).
        Tree crowns are the ellipsoid inscribed in the box (face: its nearest box side).
        """
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        ox, oy = origin[0] - self.x, origin[1] - self.y
        o = (c * ox + s * oy, -s * ox + c * oy, origin[2])
        d = (c * dirs[:, 0] + s * dirs[:, 1], -s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2])
        if self.kind == _KIND_CROWN:
            return self._intersect_ellipsoid(o, d)
        lo = (-0.5 * self.length, -0.5 * self.width, self.z0)
        hi = (0.5 * self.length, 0.5 * self.width, self.z1)
        t_near = np.full(len(dirs), -np.inf)
        t_far = np.full(len(dirs), np.inf)
        face = np.zeros(len(dirs), dtype=np.int8)
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis in range(3):
                inv = 1.0 / d[axis]
                t1 = (lo[axis] - o[axis]) * inv
                t2 = (hi[axis] - o[axis]) * inv
                tmin = np.fmin(t1, t2)
                tmax = np.fmax(t1, t2)
                better = tmin > t_near
                # entering through the low face when the ray moves towards +axis
                f = np.where(d[axis] > 0, 2 * axis, 2 * axis + 1).astype(np.int8)
                if axis == 2:
                    f = np.where(d[axis] > 0, 5, 4).astype(np.int8)
                face = np.where(better, f, face)
                t_near = np.where(better, tmin, t_near)
                t_far = np.fmin(t_far, tmax)
        hit = (t_near <= t_far) & (t_near > 1e-9)
        return np.where(hit, t_near, np.inf), face

    def _intersect_ellipsoid(
        self, o: tuple[float, float, float], d: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        semi = (0.5 * self.length, 0.5 * self.width, 0.5 * (self.z1 - self.z0))
        oc = (o[0] / semi[0], o[1] / semi[1], (o[2] - 0.5 * (self.z0 + self.z1)) / semi[2])
        dc = [d[k] / semi[k] for k in range(3)]
        a = dc[0] ** 2 + dc[1] ** 2 + dc[2] ** 2
        b = 2.0 * (oc[0] * dc[0] + oc[1] * dc[1] + oc[2] * dc[2])
        cc = oc[0] ** 2 + oc[1] ** 2 + oc[2] ** 2 - 1.0
        disc = b * b - 4.0 * a * cc
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (-b - np.sqrt(disc)) / (2.0 * a)
        hit = (disc >= 0.0) & (t > 1e-9) & (cc > 0.0)
        t = np.where(hit, t, 0.0)
        # the box side the surface point faces most
        p = [oc[k] + t * dc[k] for k in range(3)]
        k = np.argmax(np.abs(np.stack(p, axis=1)), axis=1)
        face = (2 * k + (np.take_along_axis(np.stack(p, axis=1), k[:, None], 1)[:, 0] > 0))
        face = np.where(k == 2, np.where(p[2] > 0, 4, 5), face).astype(np.int8)
        return np.where(hit, t, np.inf), face

    def normal(self, face: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        table = np.array(
            [[-c, -s, 0.0], [c, s, 0.0], [s, -c, 0.0], [-s, c, 0.0], [0, 0, 1.0], [0, 0, -1.0]]
        )
        return table[face]

    def local(self, pts: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        dx, dy = pts[:, 0] - self.x, pts[:, 1] - self.y
        return np.stack([c * dx + s * dy, -s * dx + c * dy, pts[:, 2]], axis=1)


_CAR_COLOURS = (
    (150, 20, 25), (30, 50, 120), (170, 170, 175), (25, 25, 28), (220, 220, 215), (90, 95, 100),
)
_FACADES = ((131, 86, 73), (182, 169, 149), (119, 119, 124), (208, 204, 198), (99, 73, 63))


def _obstacle_boxes(obs: BoxObstacle, ego: tuple[float, float, float], idx: int) -> list[_Box]:
    ex, ey, eyaw = ego
    c, s = math.cos(eyaw), math.sin(eyaw)
    x, y = ex + c * obs.x - s * obs.y, ey + s * obs.x + c * obs.y
    yaw = eyaw + obs.yaw
    colour = obs.color or _CAR_COLOURS[idx % len(_CAR_COLOURS)]
    colour_f = tuple(float(v) for v in colour)
    if obs.label != CAR or obs.height < 1.0:
        return [_Box(x, y, yaw, obs.length, obs.width, 0.0, obs.height, obs.label, colour_f,
                     _KIND_PLAIN)]
    body_h = 0.6 * obs.height
    cl, cw = 0.55 * obs.length, 0.92 * obs.width
    back = -0.08 * obs.length
    cx, cy = x + math.cos(yaw) * back, y + math.sin(yaw) * back
    return [
        _Box(x, y, yaw, obs.length, obs.width, 0.0, body_h, CAR, colour_f, _KIND_CAR_BODY),
        _Box(cx, cy, yaw, cl, cw, body_h, obs.height, CAR, colour_f, _KIND_CAR_CABIN),
    ]


def _roadside_boxes(spec: SceneSpec, road: RoadGeometry, s_ego: float) -> list[_Box]:
    """Buildings, trees and poles in fixed slots along the road (deterministic per seed)."""
    out: list[_Box] = []
    half = spec.road_half_width
    edge = half + spec.sidewalk_width
    spacing = 14.0
    reach = 160.0
    if not spec.segments and abs(spec.curvature) > _STRAIGHT:
        reach = min(reach, 0.9 * math.pi / abs(spec.curvature))
    k0 = math.floor((s_ego - 25.0) / spacing)
    k1 = math.ceil((s_ego + reach) / spacing)
    for side in (-1, 1):
        for k in range(k0, k1 + 1):
            rng = np.random.default_rng([spec.seed & 0xFFFF, side + 1, k + 1_000_000])
            kind = rng.choice(3, p=(0.6, 0.3, 0.1))
            s_c = k * spacing + rng.uniform(-1.5, 1.5)
            x, y, h = road.pose_at(s_c)
            nx, ny = -math.sin(h), math.cos(h)
            if kind == 0:  # building
                length, depth = rng.uniform(8.0, 13.0), rng.uniform(8.0, 14.0)
                lat = side * (edge + rng.uniform(1.0, 4.0) + depth / 2)
                colour = _FACADES[int(rng.integers(len(_FACADES)))]
                box = _Box(x + nx * lat, y + ny * lat, h, length, depth, 0.0,
                           rng.uniform(6.0, 18.0), BUILDING, tuple(map(float, colour)),
                           _KIND_BUILDING)
                parts = [box]
            elif kind == 1:  # tree: trunk and crown
                lat = side * (edge + rng.uniform(1.0, 3.0))
                tx, ty = x + nx * lat, y + ny * lat
                crown = rng.uniform(2.5, 4.5)
                top = crown + rng.uniform(2.5, 4.0)  # crowns start 2.5 m up or higher
                parts = [
                    _Box(tx, ty, h, 0.35, 0.35, 0.0, top - crown * 0.8, TREE,
                         (90.0, 70.0, 50.0), _KIND_TRUNK),
                    _Box(tx, ty, h + rng.uniform(0, 1), crown, crown, top - crown, top, TREE,
                         (60.0, 105.0, 45.0), _KIND_CROWN),
                ]
            else:
                parts = []
            if k % 2 == 0:  # a pole on the outer edge of the sidewalk
                lat = side * (edge - 0.3)
                parts.append(_Box(x + nx * lat, y + ny * lat, h, 0.18, 0.18, 0.0, 7.0, POLE,
                                  (120.0, 120.0, 125.0), _KIND_POLE))
            for b in parts:
                pts = b.corners(3)
                _, lat_c = road.coords(np.append(pts[:, 0], b.x), np.append(pts[:, 1], b.y))
                # crowns may overhang the pavement, nothing may stand on or over the road
                limit = half + 0.3 if b.kind == _KIND_CROWN else edge - 0.45
                if not np.all(np.abs(lat_c) >= limit):
                    if b.kind == _KIND_TRUNK:
                        break  # no tree at all rather than a crown floating on its own
                    continue
                out.append(b)
    return out


# ---------------------------------------------------------------------------------------------
# Textures
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _noise_texture(seed: int, size: int = 256, beta: float = 1.8) -> np.ndarray:
    """Tileable 1/f^beta noise, float32 with unit standard deviation."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    r = np.hypot(*np.meshgrid(f, f))
    r[0, 0] = 1.0
    spec = np.fft.fft2(rng.standard_normal((size, size))) / r ** (beta / 2.0)
    spec[0, 0] = 0.0
    tex = np.real(np.fft.ifft2(spec))
    return (tex / tex.std()).astype(np.float32)


def _sample(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping lookup of a square texture at texel coordinates (u, v)."""
    n = tex.shape[0]
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
    i0, j0 = np.mod(u0, n).astype(np.intp), np.mod(v0, n).astype(np.intp)
    i1, j1 = (i0 + 1) % n, (j0 + 1) % n
    top = tex[j0, i0] * (1 - fu) + tex[j0, i1] * fu
    bot = tex[j1, i0] * (1 - fu) + tex[j1, i1] * fu
    return top * (1 - fv) + bot * fv


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _world_pose(spec: SceneSpec, mounting: CameraMounting) -> tuple[np.ndarray, np.ndarray]:
    """(camera centre in the road frame, rotation road <- optical)."""
    ex, ey, eyaw = spec.ego
    c, s = math.cos(eyaw), math.sin(eyaw)
    r_we = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    origin = r_we @ mounting.position + np.array([ex, ey, 0.0])
    return origin, r_we @ mounting.rotation


def _box_pixels(
    box: _Box, camera: CameraModel, origin: np.ndarray, r_wo: np.ndarray
) -> np.ndarray | None:
    """Flat indices of the pixels whose rays may hit ``box``, or None when none can.

    The box's edges (sampled densely under lens distortion, whose images of straight edges
    bend) are clipped against a plane just in front of the camera and projected; the
    bounding rectangle of those points, padded by two pixels, holds every hit.
    """
    near = 0.05
    seg = (box.edges(6 if camera.has_distortion else 2) - origin) @ r_wo  # (12, n, 3) optical
    z = seg[..., 2]
    if np.all(z <= near):
        return None
    pts = [seg[z > near]]
    a, b = seg[:, :-1], seg[:, 1:]
    za, zb = a[..., 2], b[..., 2]
    cross = (za > near) != (zb > near)
    if cross.any():
        t = ((near - za) / np.where(cross, zb - za, 1.0))[cross]
        pts.append(a[cross] + (b[cross] - a[cross]) * t[:, None])
    pts_all = np.concatenate(pts)
    pts_all[:, 2] = np.maximum(pts_all[:, 2], near)
    if camera.has_distortion:
        r = np.hypot(pts_all[:, 0], pts_all[:, 1]) / pts_all[:, 2]
        if np.any(r > camera.max_valid_radius):
            return np.arange(camera.width * camera.height)
    uv = camera.project(pts_all)
    w, h = camera.width, camera.height
    lo = np.floor(np.clip(uv.min(axis=0) - 2, -1, [w, h])).astype(int)
    hi = np.ceil(np.clip(uv.max(axis=0) + 2, -1, [w, h])).astype(int)
    u0, v0 = max(lo[0], 0), max(lo[1], 0)
    u1, v1 = min(hi[0], w - 1), min(hi[1], h - 1)
    if u0 > u1 or v0 > v1:
        return None
    rows, cols = np.mgrid[v0 : v1 + 1, u0 : u1 + 1]
    return (rows * w + cols).ravel()


def _all_boxes(spec: SceneSpec, road: RoadGeometry) -> tuple[list[_Box], list[_Box]]:
    """(obstacle boxes, roadside boxes) in the road frame."""
    obstacles: list[_Box] = []
    for i, obs in enumerate(spec.obstacles):
        obstacles += _obstacle_boxes(obs, spec.ego, i)
    roadside: list[_Box] = []
    if spec.roadside:
        s_ego, _ = road.coords(np.array([spec.ego[0]]), np.array([spec.ego[1]]))
        s_e = float(s_ego[0]) if np.isfinite(s_ego[0]) else 0.0
        roadside = _roadside_boxes(spec, road, s_e)
    return obstacles, roadside


def render_scene(
    spec: SceneSpec,
    camera: CameraModel,
    mounting: CameraMounting,
    grid: GridSpec | None = None,
    rng: np.random.Generator | None = None,
    *,
    max_range: float = DEFAULT_MAX_RANGE,
    max_pixel_footprint: float = DEFAULT_MAX_PIXEL_FOOTPRINT,
) -> SceneRender:
    """Ray-cast the scene for one camera; with ``grid``, also the true drivable grids.

    ``rng`` adds sensor noise to the RGB (labels never change); without it the render is
    deterministic. ``max_range`` / ``max_pixel_footprint`` are the visibility rules of the
    true grid and must match the mapper's for a like-for-like comparison.
    """
    camera.validate()
    mounting.validate()
    road = spec.road()
    origin, r_wo = _world_pose(spec, mounting)
    w, h = camera.width, camera.height
    n = w * h
    rays = rotate(camera.pixel_rays(camera.pixel_grid()), r_wo)
    rays /= np.sqrt(rays[:, 0] ** 2 + rays[:, 1] ** 2 + rays[:, 2] ** 2)[:, None]

    # ground
    dz = rays[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dz < -1e-9, -origin[2] / dz, np.inf)
    t_ground[t_ground > spec.far_clip] = np.inf
    depth = t_ground.copy()
    box_id = np.full(n, -1, dtype=np.int16)
    face = np.zeros(n, dtype=np.int8)

    obstacles, roadside = _all_boxes(spec, road)
    boxes = obstacles + roadside
    for i, box in enumerate(boxes):
        sel = _box_pixels(box, camera, origin, r_wo)
        if sel is None:
            continue
        t, f = box.intersect(origin, rays[sel])
        closer = t < depth[sel]
        idx = sel[closer]
        depth[idx] = t[closer]
        box_id[idx] = i
        face[idx] = f[closer]

    labels = np.full(n, SKY, dtype=np.uint8)
    colour = np.zeros((n, 3), dtype=np.float32)
    hit_pts = origin + rays * np.where(np.isfinite(depth), depth, 0.0)[:, None]

    # sky
    sky = ~np.isfinite(depth)
    colour[sky] = _sky_colour(rays[sky], spec)

    # ground
    gnd = np.isfinite(depth) & (box_id < 0)
    g_lab, g_col = _ground(spec, road, hit_pts[gnd], depth[gnd], obstacles, origin)
    labels[gnd] = g_lab
    colour[gnd] = g_col

    # boxes
    sun = _sun(spec)
    on_box = np.flatnonzero(box_id >= 0)
    order = on_box[np.argsort(box_id[on_box], kind="stable")]
    bounds = np.searchsorted(box_id[order], np.arange(len(boxes) + 1))
    for i, box in enumerate(boxes):
        sel = order[bounds[i] : bounds[i + 1]]
        if not len(sel):
            continue
        labels[sel] = box.label
        colour[sel] = _box_colour(box, hit_pts[sel], face[sel], sun, spec.seed,
                                  depth[sel])

    # haze with distance, the camera's response (soft contrast, muted colour, vignetting),
    # a slight optical blur, sensor noise
    fog = 1.0 - np.exp(-np.where(np.isfinite(depth), depth, 0.0) / 250.0)
    haze = np.array([205.0, 210.0, 216.0], dtype=np.float32)
    colour = colour * (1 - fog[:, None]) + haze * fog[:, None]
    img = colour.reshape(h, w, 3)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + 0.85 * (img - grey)
    img = img * _vignette(w, h)[:, :, None]
    img = cv2.GaussianBlur(img, (3, 3), 0.7)
    if rng is not None:
        img = img + rng.normal(0.0, 2.5, img.shape).astype(np.float32)
    rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    labels = labels.reshape(h, w)
    out = SceneRender(
        rgb=rgb,
        labels=labels,
        drivable=labels == ROAD,
        depth=depth.reshape(h, w).astype(np.float32),
    )
    if grid is not None:
        out.visibility = cell_visibility(grid, camera, mounting, max_range, max_pixel_footprint)
        out.grid, out.grid_world = _true_grids(
            spec, road, grid, mounting, origin, boxes, obstacles, out.visibility
        )
    return out


@lru_cache(maxsize=8)
def _vignette(w: int, h: int) -> np.ndarray:
    """Lens fall-off: 1 in the centre, about 0.8 in the corners."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((x - 0.5 * w) / (0.5 * w)) ** 2 * 0.6 + ((y - 0.5 * h) / (0.5 * h)) ** 2 * 0.4
    return (1.0 - 0.2 * r2).astype(np.float32)


def _true_grids(
    spec: SceneSpec,
    road: RoadGeometry,
    grid: GridSpec,
    mounting: CameraMounting,
    origin: np.ndarray,
    boxes: list[_Box],
    obstacles: list[_Box],
    vis: CellVisibility,
) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = grid.cell_centers()
    ex, ey, eyaw = spec.ego
    c, s = math.cos(eyaw), math.sin(eyaw)
    wx = ex + c * gx.ravel() - s * gy.ravel()
    wy = ey + s * gx.ravel() + c * gy.ravel()
    _, lat = road.coords(wx, wy)
    on_road = np.abs(lat) <= spec.road_half_width
    pts = np.stack([wx, wy, np.zeros_like(wx)], axis=1)

    seen = vis.seen.ravel()
    occluded = np.zeros(len(wx), dtype=bool)
    seg = pts[seen] - origin  # camera -> ground point, t in (0, 1)
    occ_seen = np.zeros(len(seg), dtype=bool)
    r_wo = _world_pose(spec, mounting)[1]
    for box in boxes:
        if np.all((box.corners() - origin) @ r_wo[:, 2] <= 0.0):
            continue  # wholly behind the camera: cannot hide anything in front of it
        t, _ = box.intersect(origin, seg)
        occ_seen |= t < 1.0 - 1e-9
    occluded[seen] = occ_seen
    truth = np.where(seen, np.where(on_road & ~occluded, FREE, OCCUPIED), UNKNOWN)

    under = np.zeros(len(wx), dtype=bool)
    for box in obstacles:
        loc = box.local(pts)
        under |= (np.abs(loc[:, 0]) <= box.length / 2) & (np.abs(loc[:, 1]) <= box.width / 2)
    world = np.where(on_road & ~under, FREE, OCCUPIED)
    return (truth.astype(np.int8).reshape(grid.shape), world.astype(np.int8).reshape(grid.shape))


def _sun(spec: SceneSpec) -> np.ndarray:
    az, el = spec.sun
    return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def _hash(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """A uniform value in [0, 1) per integer pair (a, b): per-slab, per-brick variation."""
    with np.errstate(over="ignore"):
        h = (np.asarray(a).astype(np.int64).astype(np.uint32) * np.uint32(73856093)) ^ (
            np.asarray(b).astype(np.int64).astype(np.uint32) * np.uint32(19349663)
        ) ^ np.uint32((seed * 83492791) & 0xFFFFFFFF)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0x5BD1E995)
        h ^= h >> np.uint32(15)
    return ((h & np.uint32(0xFFFFFF)).astype(np.float32)) / np.float32(1 << 24)


def _sky_colour(rays: np.ndarray, spec: SceneSpec) -> np.ndarray:
    """A bright, pale, mostly overcast sky, as CamVid's exposure for the street shows it."""
    elev = np.clip(rays[:, 2], -1.0, 1.0)
    k = np.clip(elev / 0.6, 0.0, 1.0)[:, None]
    horizon = np.array([236.0, 240.0, 245.0], dtype=np.float32)
    zenith = np.array([188.0, 206.0, 232.0], dtype=np.float32)
    col = horizon * (1 - k) + zenith * k
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.maximum(rays[:, 2], 0.03)
        cu, cv = rays[:, 0] / up * 12.0, rays[:, 1] / up * 12.0
    cloud = _sample(_noise_texture(spec.seed + 7), cu, cv)
    cloud = np.clip(cloud * 0.45 + 0.55, 0.0, 1.0)[:, None]
    white = np.array([244.0, 246.0, 248.0], dtype=np.float32)
    return (col * (1 - cloud) + white * cloud).astype(np.float32)


def _ground(
    spec: SceneSpec,
    road: RoadGeometry,
    pts: np.ndarray,
    dist: np.ndarray,
    obstacles: list[_Box],
    origin: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and colours of ground points (road frame); ``origin`` is the camera centre."""
    s, lat = road.coords(pts[:, 0], pts[:, 1])
    s = np.nan_to_num(s)
    alat = np.abs(lat)
    half = spec.road_half_width
    on_road = alat <= half
    on_walk = ~on_road & (alat <= half + spec.sidewalk_width)
    labels = np.where(on_road, ROAD, np.where(on_walk, PAVEMENT, TREE)).astype(np.uint8)

    near = np.clip(1.0 - dist / 35.0, 0.0, 1.0).astype(np.float32)
    fine = _sample(_noise_texture(spec.seed + 1), s / 0.03, lat / 0.03) * near
    coarse = _sample(_noise_texture(spec.seed + 2), s / 0.6, lat / 0.6)
    blotch = _sample(_noise_texture(spec.seed + 5), s / 3.0, lat / 3.0)

    # asphalt: worn lighter in the wheel tracks, oil down the lane centres, grime and a
    # darker band of older surface along the kerb, darker repair patches
    col = np.empty((len(pts), 3), dtype=np.float32)
    asphalt = np.array([84.0, 85.0, 89.0], dtype=np.float32)
    u = np.mod(lat + half, spec.lane_width) - 0.5 * spec.lane_width
    track = np.exp(-(((np.abs(u) - 0.85) / 0.3) ** 2))
    oil = np.exp(-((u / 0.25) ** 2))
    gutter = np.clip(1.0 - (half - alat) / 0.5, 0.0, 1.0)
    shade = (1.0 + 0.12 * fine + 0.06 * coarse + 0.05 * blotch + 0.06 * track - 0.06 * oil
             - 0.12 * gutter)
    shade = np.where(blotch > 1.4, shade * 0.84, shade)
    col[:] = asphalt * shade[:, None]

    if spec.lane_markings:
        mw = spec.marking_width
        period = spec.dash_length + spec.dash_gap
        dashed = np.zeros(len(pts), dtype=bool)
        for k in range(1, spec.n_lanes):
            b = -half + k * spec.lane_width
            dashed |= np.abs(lat - b) <= mw / 2
        dashed &= np.mod(s, period) < spec.dash_length
        wear = np.clip(0.88 + 0.1 * coarse + 0.06 * fine, 0.65, 1.0)
        col[dashed] = np.array([212.0, 212.0, 206.0], dtype=np.float32) * wear[dashed, None]
        # a double edge line along the kerb (the model reads yellow ones as signs)
        lw = 0.67 * mw
        edge = on_road & (
            ((alat >= half - 0.22 - 2 * lw) & (alat <= half - 0.22 - lw))
            | ((alat >= half - 0.17 - lw) & (alat <= half - 0.17))
        )
        col[edge] = np.array([212.0, 212.0, 206.0], dtype=np.float32) * wear[edge, None]

    # pavement: slabs of varying tone and joints behind a raised granite kerb. The kerb's
    # vertical face (shaded) hides a band of ground behind it whose width grows with the
    # camera's lateral distance from the kerb: painted as the face, Pavement all the same.
    d = alat - half
    kerb_h, kerb_w = 0.15, 0.15
    lat_cam = float(np.nan_to_num(road.coords(origin[:1], origin[1:2])[1][0]))
    face_w = kerb_h * np.abs(lat_cam - np.sign(lat) * half) / max(float(origin[2]) - kerb_h, 0.3)
    face_w = np.clip(face_w, 0.03, 0.6)
    kerb_w = kerb_w + face_w
    slab_i = np.floor(s / 0.9)
    slab_j = np.floor((d - kerb_w) / 0.6)
    tone = 1.0 + 0.2 * (_hash(slab_i, slab_j, spec.seed) - 0.5)
    joint_fade = np.clip(1.0 - dist / 20.0, 0.0, 1.0)
    joints = (np.mod(s, 0.9) < 0.025) | (np.mod(d - kerb_w, 0.6) < 0.025)
    walk_shade = (tone * (1.0 + 0.07 * fine + 0.05 * coarse + 0.04 * blotch)
                  * np.where(joints, 1.0 - 0.3 * joint_fade, 1.0))

    walk = np.array([125.0, 110.0, 100.0], dtype=np.float32)
    col[on_walk] = walk * walk_shade[on_walk, None]
    kerb = on_walk & (d < kerb_w)
    kerb_col = np.where((d < face_w)[:, None], np.float32(0.3), np.float32(1.0)) * np.array(
        [150.0, 148.0, 143.0], dtype=np.float32)
    col[kerb] = kerb_col[kerb] * (1.0 + 0.06 * fine[kerb] + 0.04 * coarse[kerb])[:, None]

    grass = ~on_road & ~on_walk
    gt = np.clip(0.5 + 0.3 * coarse + 0.2 * fine + 0.2 * blotch, 0.0, 1.0)[grass, None]
    dark = np.array([30.0, 45.0, 20.0], dtype=np.float32)
    light = np.array([80.0, 100.0, 50.0], dtype=np.float32)
    col[grass] = dark * (1 - gt) + light * gt

    for box in obstacles:  # contact shadow under vehicles
        if box.z0 > 0.0:
            continue
        reach = 0.5 * math.hypot(box.length, box.width) + 0.6
        cand = np.flatnonzero(np.abs(pts[:, 0] - box.x) + np.abs(pts[:, 1] - box.y) < 1.5 * reach)
        if not len(cand):
            continue
        loc = box.local(pts[cand])
        dx = np.maximum(np.abs(loc[:, 0]) - box.length / 2, 0.0)
        dy = np.maximum(np.abs(loc[:, 1]) - box.width / 2, 0.0)
        d = np.hypot(dx, dy)
        near = d < 0.6
        col[cand[near]] *= (0.4 + 0.6 * d[near] / 0.6)[:, None]
    return labels, col


_FASCIAS = ((30, 60, 40), (25, 35, 70), (90, 25, 30), (35, 35, 38), (200, 195, 185))


def _box_colour(
    box: _Box, pts: np.ndarray, face: np.ndarray, sun: np.ndarray, seed: int,
    dist: np.ndarray,
) -> np.ndarray:
    loc = box.local(pts)
    along = np.where(face < 2, loc[:, 1], loc[:, 0])
    z = loc[:, 2]
    n = box.normal(face)
    light = (0.5 + 0.55 * np.clip(n @ sun, 0.0, 1.0)).astype(np.float32)
    base = np.array(box.color, dtype=np.float32)
    tex = _sample(_noise_texture(seed + 3), along / 0.08, z / 0.08)
    near = np.clip(1.0 - dist / 40.0, 0.0, 1.0).astype(np.float32)
    col = base * (1.0 + 0.06 * tex)[:, None]
    if box.kind == _KIND_BUILDING:
        col = _facade(box, along, z, face, tex, near, seed)
    elif box.kind == _KIND_CAR_BODY:
        # darker sills, a bright sky reflection along the shoulder line
        hz = z / max(box.z1, 1e-6)
        col = col * (0.75 + 0.35 * hz)[:, None]
        # the dark gap under the sills; tyres with grey hubs in the wheel arches
        dark = np.array([24.0, 24.0, 26.0], dtype=np.float32)
        col[(face < 4) & (z < 0.18)] = dark
        half_len = 0.5 * box.length
        wx = np.abs(np.abs(along) - (half_len - 0.85))
        r = np.hypot(wx, z - 0.32)
        side = (face == 2) | (face == 3)
        col[side & (r < 0.36) & (z < 0.7)] = dark
        col[side & (r < 0.17)] = np.array([120.0, 120.0, 124.0], dtype=np.float32)
        ends = (face < 2) & (z < 0.3)
        col[ends] = dark
        col[(face < 2) & (z >= 0.3) & (z < 0.36)] *= 0.6  # bumper line
        lights = (face < 2) & (z > 0.45) & (z < 0.65) & (np.abs(along) > 0.45 * box.width - 0.3)
        lights &= np.abs(along) < 0.45 * box.width
        col[lights] = np.where(face[lights, None] == 1, 225.0, 150.0) * np.where(
            face[lights, None] == 1, np.array([1.0, 0.95, 0.85]), np.array([1.0, 0.25, 0.2])
        ).astype(np.float32)
        plate = (face < 2) & (z > 0.38) & (z < 0.5) & (np.abs(along) < 0.26)
        col[plate] = np.where(face[plate, None] == 1, np.array([225.0, 225.0, 220.0]),
                              np.array([225.0, 190.0, 40.0])).astype(np.float32)
        col[face == 4] = col[face == 4] * 1.15
    elif box.kind == _KIND_CAR_CABIN:
        glass = face < 4
        up = np.clip((z - box.z0) / max(box.z1 - box.z0, 1e-6), 0.0, 1.0)
        g = np.array([60.0, 68.0, 78.0], dtype=np.float32)[None, :] * (
            1.0 + 0.1 * tex[:, None] + 1.5 * up[:, None] ** 2)
        col[glass] = g[glass]
        pillar = glass & (np.abs(along) > 0.5 * np.where(face < 2, box.width, box.length) - 0.08)
        col[pillar] = base * 0.9
    elif box.kind == _KIND_CROWN:
        ls = 0.05
        leaves = (_sample(_noise_texture(seed + 4), along / ls, z / ls)
                  + 0.8 * _sample(_noise_texture(seed + 6), along / 0.5, z / 0.5))
        t = np.clip(0.5 + 0.5 * leaves, 0.0, 1.0)[:, None]
        dark = np.array([15.0, 20.0, 12.0], dtype=np.float32)
        bright = np.array([90.0, 100.0, 60.0], dtype=np.float32)
        col = dark * (1 - t) + bright * t
        gap = leaves < -1.3
        col[gap] = np.array([200.0, 208.0, 214.0], dtype=np.float32)
        semi = np.array([0.5 * box.length, 0.5 * box.width, 0.5 * (box.z1 - box.z0)])
        nl = (loc - np.array([0.0, 0.0, 0.5 * (box.z0 + box.z1)])) / semi**2
        cy, sy = math.cos(box.yaw), math.sin(box.yaw)
        nw = np.stack([cy * nl[:, 0] - sy * nl[:, 1], sy * nl[:, 0] + cy * nl[:, 1], nl[:, 2]], 1)
        nw /= np.linalg.norm(nw, axis=1, keepdims=True) + 1e-9
        light = (0.5 + 0.55 * np.clip(nw @ sun, 0.0, 1.0)).astype(np.float32)
        return col * np.where(gap, 1.0, 0.75 + 0.35 * light)[:, None]
    elif box.kind in (_KIND_TRUNK, _KIND_POLE):
        col = col * (0.85 + 0.3 * np.clip(z / 8.0, 0.0, 1.0))[:, None]
    return col * light[:, None]


def _facade(
    box: _Box, along: np.ndarray, z: np.ndarray, face: np.ndarray, tex: np.ndarray,
    near: np.ndarray, seed: int,
) -> np.ndarray:
    """Brick or rendered walls with sash windows and, on some, a shop front."""
    style = _hash(np.array([round(box.x * 10.0)]), np.array([round(box.y * 10.0)]), seed)[0]
    style2 = _hash(np.array([round(box.y * 7.0)]), np.array([round(box.x * 7.0)]), seed + 1)[0]
    base = np.array(box.color, dtype=np.float32)
    brick = style < 0.75
    if brick:  # courses of bricks of varying tone (visible close up), mortar joints
        course = np.floor(z / 0.075)
        bi = np.floor((along + 0.11 * np.mod(course, 2)) / 0.225)
        bt = 0.86 + 0.28 * _hash(bi, course, seed + 9)
        mortar = (np.mod(z, 0.075) < 0.012) | (np.mod(along + 0.11 * np.mod(course, 2), 0.225)
                                               < 0.012)
        wall = (1.0 + (bt - 1.0) * near) * np.where(mortar, 1.0 + 0.25 * near, 1.0)
    else:
        wall = np.ones_like(z)
    streak = _sample(_noise_texture(seed + 8), along / 0.6, z / 5.0)
    wall = wall * (1.0 + 0.05 * tex + 0.07 * streak)
    col = base * wall[:, None]
    top = box.z1
    col[z > top - 0.35] *= 0.78  # cornice / parapet shadow
    col[z < 0.35] *= 0.7  # plinth

    floor_h = 2.9 + 0.4 * style2
    bay = 2.4 + 1.2 * style
    win_w = 0.38 + 0.15 * style2
    wx = np.mod(along, bay) / bay
    wz = np.mod(z, floor_h) / floor_h
    side = face < 4
    shop = style2 < 0.2
    ground_floor = z < floor_h
    upper = side & ~ground_floor & (z < top - 0.8)
    inwin = upper & (np.abs(wx - 0.5) < win_w / 2) & (wz > 0.25) & (wz < 0.8)
    frame = upper & (np.abs(wx - 0.5) < win_w / 2 + 0.06) & (wz > 0.22) & (wz < 0.83) & ~inwin
    col[frame] = np.array([205.0, 203.0, 196.0], dtype=np.float32)
    # glass reflects the sky: brighter towards the top; some windows with lit curtains
    wi = np.floor(along / bay)
    fi = np.floor(z / floor_h)
    lit = _hash(wi, fi, seed + 11)
    refl = np.clip((wz - 0.25) / 0.55, 0.0, 1.0)
    glass = np.array([38.0, 44.0, 52.0], dtype=np.float32)[None, :] * (
        1.0 + 0.9 * refl[:, None] ** 2 + 0.1 * tex[:, None])
    glass = np.where((lit > 0.8)[:, None], np.array([120.0, 112.0, 100.0], np.float32), glass)
    bar = np.abs(wz - 0.52) < 0.015  # sash bar
    col[inwin] = np.where(bar[inwin, None], np.float32(190.0), glass[inwin])
    if shop:
        fascia = side & (z > floor_h - 0.7) & (z < floor_h - 0.15)
        fc = _FASCIAS[int(style * 97) % len(_FASCIAS)]
        col[fascia] = np.array(fc, dtype=np.float32)
        pane = side & (z > 0.4) & (z < floor_h - 0.85) & (np.mod(along, 1.6) > 0.08)
        shopglass = np.array([34.0, 38.0, 44.0], dtype=np.float32)[None, :] * (
            1.0 + 1.2 * np.clip(z / (floor_h - 0.85), 0, 1)[:, None] ** 2 + 0.15 * tex[:, None])
        col[pane] = shopglass[pane]
    else:
        low = side & ground_floor & (np.abs(wx - 0.5) < win_w / 2) & (z > 0.8) & (z < 2.2)
        col[low] = glass[low]
    col[face == 4] = base * 0.6
    return col


# ---------------------------------------------------------------------------------------------
# A drive along a winding road
# ---------------------------------------------------------------------------------------------
def make_route(length: float, rng: np.random.Generator) -> tuple[tuple[float, float], ...]:
    """Straights and left/right arcs (radius 35-90 m, 25-70 degrees) totalling ``length``."""
    segs: list[tuple[float, float]] = [(float(rng.uniform(15.0, 30.0)), 0.0)]
    total = segs[0][0]
    sign = float(rng.choice((-1.0, 1.0)))
    while total < length:
        radius = float(rng.uniform(35.0, 90.0))
        angle = math.radians(float(rng.uniform(25.0, 70.0)))
        segs.append((radius * angle, sign / radius))
        straight = float(rng.uniform(10.0, 30.0))
        segs.append((straight, 0.0))
        total += radius * angle + straight
        sign = -sign if rng.uniform() < 0.75 else sign
    return tuple(segs)


def drive_sequence(
    n_frames: int,
    fps: float = 10.0,
    speed: float = 8.0,
    rng: np.random.Generator | None = None,
    **spec_fields: object,
) -> Iterator[SceneSpec]:
    """SceneSpecs of a vehicle driving ``speed`` m/s in the right lane of a winding road.

    A lead car keeps about 20 m ahead, oncoming cars pass in the left lane and a few cars are
    parked half on the pavement on either side. ``spec_fields`` override other SceneSpec
    fields (lane width, lanes, seed, ...). The same ``rng`` state gives the same drive.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    base = SceneSpec(**spec_fields)  # type: ignore[arg-type]
    dt = 1.0 / fps
    length = speed * n_frames * dt + 200.0
    segments = make_route(length, rng)
    seed = int(spec_fields.get("seed", rng.integers(1 << 15)))  # type: ignore[call-overload]
    base = replace(base, segments=segments, seed=seed)
    road = base.road()
    half = base.road_half_width
    lane = base.lane_width
    lat_ego = -half + 0.5 * lane
    lat_left = half - 0.5 * lane
    s_start = 5.0
    lead_gap = float(rng.uniform(18.0, 24.0))
    oncoming = [float(s) for s in rng.uniform(30.0, length, size=max(2, int(length // 60)))]
    parked = [float(s) for s in rng.uniform(20.0, length, size=max(2, int(length // 50)))]
    colours = [int(c) for c in rng.integers(len(_CAR_COLOURS), size=64)]

    def place(s: float, lat: float, yaw: float, ego: tuple[float, float, float], k: int):
        x, y, h = road.pose_at(s)
        x, y = x - math.sin(h) * lat, y + math.cos(h) * lat
        ex, ey, eyaw = ego
        c, sn = math.cos(eyaw), math.sin(eyaw)
        dx, dy = x - ex, y - ey
        return BoxObstacle(
            x=c * dx + sn * dy, y=-sn * dx + c * dy, yaw=h + yaw - eyaw,
            color=_CAR_COLOURS[colours[k % len(colours)]],
        )

    for i in range(n_frames):
        t = i * dt
        s_e = s_start + speed * t
        x, y, h = road.pose_at(s_e)
        ego = (x - math.sin(h) * lat_ego, y + math.cos(h) * lat_ego, h)
        obs = [place(s_e + lead_gap + 2.0 * math.sin(0.3 * t), lat_ego, 0.0, ego, 0)]
        for k, s0 in enumerate(oncoming):
            s_o = s0 - 0.8 * speed * t
            if -20.0 < s_o - s_e < 120.0:
                obs.append(place(s_o, lat_left, math.pi, ego, k + 1))
        for k, s0 in enumerate(parked):
            if -20.0 < s0 - s_e < 120.0:
                side = 1.0 if k % 2 else -1.0
                obs.append(place(s0, side * (half + 0.5), 0.0, ego, k + 20))
        yield replace(base, ego_pose=ego, obstacles=tuple(obs))
