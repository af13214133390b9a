"""Synthetic driving scenes with exact labels: the ground truth the projection is tested on.

A flat world (ground plane z = 0) holds a road of known shape, built from straight and
circular pieces in a *road frame* (the centreline starts at the origin heading +x, s is arc
length, lateral offset is positive to the left). Lanes with lane markings, sidewalks, grass
verges, buildings, trees and poles line it; obstacles are upright boxes. A camera with
given intrinsics and mounting on a vehicle (``SceneSpec.ego_pose`` places ``grid_frame`` in
the road frame) is rendered by casting one ray per pixel centre (vectorised numpy).

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

from .camera import CameraModel, CameraMounting, rotate
from .grid import FREE, OCCUPIED, UNKNOWN, CellVisibility, GridSpec, cell_visibility
from .mapper import DEFAULT_MAX_PIXEL_FOOTPRINT, DEFAULT_MAX_RANGE

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
        """
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        ox, oy = origin[0] - self.x, origin[1] - self.y
        o = (c * ox + s * oy, -s * ox + c * oy, origin[2])
        d = (c * dirs[:, 0] + s * dirs[:, 1], -s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2])
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
_FACADES = ((150, 80, 60), (190, 170, 140), (120, 120, 125), (210, 205, 195), (110, 70, 55))


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
    g_lab, g_col = _ground(spec, road, hit_pts[gnd], depth[gnd], obstacles)
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
        colour[sel] = _box_colour(box, hit_pts[sel], face[sel], sun, spec.seed)

    # haze with distance, a slight optical blur, sensor noise
    fog = 1.0 - np.exp(-np.where(np.isfinite(depth), depth, 0.0) / 350.0)
    haze = np.array([200.0, 205.0, 210.0], dtype=np.float32)
    colour = colour * (1 - fog[:, None]) + haze * fog[:, None]
    img = colour.reshape(h, w, 3)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
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


def _sky_colour(rays: np.ndarray, spec: SceneSpec) -> np.ndarray:
    elev = np.clip(rays[:, 2], -1.0, 1.0)
    k = np.clip(elev / 0.45, 0.0, 1.0)[:, None] ** 0.7
    horizon = np.array([215.0, 222.0, 230.0], dtype=np.float32)
    zenith = np.array([105.0, 150.0, 205.0], dtype=np.float32)
    col = horizon * (1 - k) + zenith * k
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.maximum(rays[:, 2], 0.03)
        cu, cv = rays[:, 0] / up * 40.0, rays[:, 1] / up * 40.0
    cloud = _sample(_noise_texture(spec.seed + 7), cu, cv)
    cloud = np.clip(cloud * 0.6 + 0.1, 0.0, 1.0)[:, None] * np.clip(elev * 6.0, 0, 1)[:, None]
    return (col * (1 - cloud) + 238.0 * cloud).astype(np.float32)


def _ground(
    spec: SceneSpec,
    road: RoadGeometry,
    pts: np.ndarray,
    dist: np.ndarray,
    obstacles: list[_Box],
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and colours of ground points (road frame)."""
    s, lat = road.coords(pts[:, 0], pts[:, 1])
    s = np.nan_to_num(s)
    alat = np.abs(lat)
    half = spec.road_half_width
    on_road = alat <= half
    on_walk = ~on_road & (alat <= half + spec.sidewalk_width)
    labels = np.where(on_road, ROAD, np.where(on_walk, PAVEMENT, TREE)).astype(np.uint8)

    fine_amp = np.clip(1.0 - dist / 35.0, 0.0, 1.0).astype(np.float32)
    fine = _sample(_noise_texture(spec.seed + 1), s / 0.03, lat / 0.03) * fine_amp
    coarse = _sample(_noise_texture(spec.seed + 2), s / 0.6, lat / 0.6)

    col = np.empty((len(pts), 3), dtype=np.float32)
    asphalt = np.array([92.0, 91.0, 94.0], dtype=np.float32)
    shade = 1.0 + 0.10 * fine + 0.07 * coarse
    col[:] = asphalt * shade[:, None]

    if spec.lane_markings:
        mw = spec.marking_width
        edge_line = on_road & (alat >= half - 0.25 - mw) & (alat <= half - 0.25)
        period = spec.dash_length + spec.dash_gap
        dashed = np.zeros(len(pts), dtype=bool)
        for k in range(1, spec.n_lanes):
            b = -half + k * spec.lane_width
            dashed |= np.abs(lat - b) <= mw / 2
        dashed &= np.mod(s, period) < spec.dash_length
        paint = edge_line | dashed
        wear = np.clip(0.92 + 0.08 * coarse, 0.75, 1.0)
        col[paint] = np.array([228.0, 226.0, 215.0], dtype=np.float32) * wear[paint, None]

    walk = np.array([158.0, 152.0, 146.0], dtype=np.float32)
    joints = (np.mod(s, 1.2) < 0.04) | (np.mod(alat - half, 1.2) < 0.04)
    walk_shade = (1.0 + 0.06 * fine + 0.05 * coarse) * np.where(joints, 0.82, 1.0)
    kerb = on_walk & (alat - half < 0.2)
    col[on_walk] = walk * walk_shade[on_walk, None]
    col[kerb] = np.array([185.0, 182.0, 175.0], dtype=np.float32) * shade[kerb, None]

    grass = ~on_road & ~on_walk
    g = np.array([78.0, 112.0, 52.0], dtype=np.float32)
    col[grass] = g * (1.0 + 0.18 * fine[grass] + 0.15 * coarse[grass])[:, None]

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
        col[cand[near]] *= (0.45 + 0.55 * d[near] / 0.6)[:, None]
    return labels, col


def _box_colour(
    box: _Box, pts: np.ndarray, face: np.ndarray, sun: np.ndarray, seed: int
) -> np.ndarray:
    loc = box.local(pts)
    along = np.where(face < 2, loc[:, 1], loc[:, 0])
    z = loc[:, 2]
    n = box.normal(face)
    light = (0.55 + 0.5 * np.clip(n @ sun, 0.0, 1.0)).astype(np.float32)
    base = np.array(box.color, dtype=np.float32)
    tex = _sample(_noise_texture(seed + 3), along / 0.08, z / 0.08)
    col = base * (1.0 + 0.06 * tex)[:, None]
    if box.kind == _KIND_BUILDING:
        wx = np.mod(along, 3.0) / 3.0
        wz = np.mod(z, 3.2) / 3.2
        window = (face < 4) & (wx > 0.25) & (wx < 0.75) & (wz > 0.3) & (wz < 0.8) & (z > 1.0)
        col[window] = np.array([60.0, 72.0, 88.0], dtype=np.float32) * (
            1.0 + 0.15 * tex[window, None]
        )
        col[face == 4] = base * 0.7
    elif box.kind == _KIND_CAR_BODY:
        wheels = (face < 4) & (z < 0.35)
        col[wheels] = np.array([28.0, 28.0, 30.0], dtype=np.float32)
        lights = (face < 2) & (z > 0.45) & (z < 0.65) & (np.abs(along) > 0.45 * box.width)
        col[lights] = np.where(face[lights, None] == 1, 235.0, 170.0) * np.array(
            [1.0, 0.85, 0.7], dtype=np.float32
        )
    elif box.kind == _KIND_CAR_CABIN:
        glass = face < 4
        col[glass] = np.array([45.0, 55.0, 65.0], dtype=np.float32) * (
            1.0 + 0.1 * tex[glass, None]
        )
    elif box.kind == _KIND_CROWN:
        leaves = _sample(_noise_texture(seed + 4), along / 0.15, z / 0.15)
        col = base * (1.0 + 0.35 * leaves)[:, None]
    return col * light[:, None]


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
