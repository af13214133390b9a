"""The world's solids as boxes in the road frame: obstacles, roadside buildings, trees, poles.

Split from the renderer (:mod:`.raycast`): this is the scene's layout (where each solid
stands, how tall, which class and base colour), computed once per render from a
:class:`.spec.SceneSpec`; the renderer intersects rays with :class:`Box` and
:mod:`.shading` colours the hits. Tree crowns are the ellipsoid inscribed in their box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seg_perception.sim.scene.spec import (
    BUILDING,
    CAR,
    POLE,
    STRAIGHT,
    TREE,
    BoxObstacle,
    RoadGeometry,
    SceneSpec,
)

KIND_PLAIN, KIND_BUILDING, KIND_CAR_BODY, KIND_CAR_CABIN, KIND_CROWN, KIND_TRUNK = range(6)
KIND_POLE = 6


@dataclass(frozen=True)
class Box:
    """A solid in the road frame: an upright box (a tree crown: the ellipsoid inscribed in
    it), its class, base colour and kind (how :mod:`.shading` colours it)."""

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
        if self.kind == KIND_CROWN:
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


CAR_COLOURS = (
    (150, 20, 25), (30, 50, 120), (170, 170, 175), (25, 25, 28), (220, 220, 215), (90, 95, 100),
)
_FACADES = ((131, 86, 73), (182, 169, 149), (119, 119, 124), (208, 204, 198), (99, 73, 63))


def _obstacle_boxes(obs: BoxObstacle, ego: tuple[float, float, float], idx: int) -> list[Box]:
    ex, ey, eyaw = ego
    c, s = math.cos(eyaw), math.sin(eyaw)
    x, y = ex + c * obs.x - s * obs.y, ey + s * obs.x + c * obs.y
    yaw = eyaw + obs.yaw
    colour = obs.color or CAR_COLOURS[idx % len(CAR_COLOURS)]
    colour_f = tuple(float(v) for v in colour)
    if obs.label != CAR or obs.height < 1.0:
        return [Box(x, y, yaw, obs.length, obs.width, 0.0, obs.height, obs.label, colour_f,
                     KIND_PLAIN)]
    body_h = 0.6 * obs.height
    cl, cw = 0.55 * obs.length, 0.92 * obs.width
    back = -0.08 * obs.length
    cx, cy = x + math.cos(yaw) * back, y + math.sin(yaw) * back
    return [
        Box(x, y, yaw, obs.length, obs.width, 0.0, body_h, CAR, colour_f, KIND_CAR_BODY),
        Box(cx, cy, yaw, cl, cw, body_h, obs.height, CAR, colour_f, KIND_CAR_CABIN),
    ]


def _roadside_boxes(spec: SceneSpec, road: RoadGeometry, s_ego: float) -> list[Box]:
    """Buildings, trees and poles in fixed slots along the road (deterministic per seed)."""
    out: list[Box] = []
    half = spec.road_half_width
    edge = half + spec.sidewalk_width
    spacing = 14.0
    reach = 160.0
    if not spec.segments and abs(spec.curvature) > STRAIGHT:
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
                box = Box(x + nx * lat, y + ny * lat, h, length, depth, 0.0,
                           rng.uniform(6.0, 18.0), BUILDING, tuple(map(float, colour)),
                           KIND_BUILDING)
                parts = [box]
            elif kind == 1:  # tree: trunk and crown
                lat = side * (edge + rng.uniform(1.0, 3.0))
                tx, ty = x + nx * lat, y + ny * lat
                crown = rng.uniform(2.5, 4.5)
                top = crown + rng.uniform(2.5, 4.0)  # crowns start 2.5 m up or higher
                parts = [
                    Box(tx, ty, h, 0.35, 0.35, 0.0, top - crown * 0.8, TREE,
                         (90.0, 70.0, 50.0), KIND_TRUNK),
                    Box(tx, ty, h + rng.uniform(0, 1), crown, crown, top - crown, top, TREE,
                         (60.0, 105.0, 45.0), KIND_CROWN),
                ]
            else:
                parts = []
            if k % 2 == 0:  # a pole on the outer edge of the sidewalk
                lat = side * (edge - 0.3)
                parts.append(Box(x + nx * lat, y + ny * lat, h, 0.18, 0.18, 0.0, 7.0, POLE,
                                  (120.0, 120.0, 125.0), KIND_POLE))
            for b in parts:
                pts = b.corners(3)
                _, lat_c = road.coords(np.append(pts[:, 0], b.x), np.append(pts[:, 1], b.y))
                # crowns may overhang the pavement, nothing may stand on or over the road
                limit = half + 0.3 if b.kind == KIND_CROWN else edge - 0.45
                if not np.all(np.abs(lat_c) >= limit):
                    if b.kind == KIND_TRUNK:
                        break  # no tree at all rather than a crown floating on its own
                    continue
                out.append(b)
    return out


def all_boxes(spec: SceneSpec, road: RoadGeometry) -> tuple[list[Box], list[Box]]:
    """(obstacle boxes, roadside boxes) in the road frame."""
    obstacles: list[Box] = []
    for i, obs in enumerate(spec.obstacles):
        obstacles += _obstacle_boxes(obs, spec.ego, i)
    roadside: list[Box] = []
    if spec.roadside:
        s_ego, _ = road.coords(np.array([spec.ego[0]]), np.array([spec.ego[1]]))
        s_e = float(s_ego[0]) if np.isfinite(s_ego[0]) else 0.0
        roadside = _roadside_boxes(spec, road, s_e)
    return obstacles, roadside


__all__ = [
    "CAR_COLOURS",
    "KIND_BUILDING",
    "KIND_CAR_BODY",
    "KIND_CAR_CABIN",
    "KIND_CROWN",
    "KIND_PLAIN",
    "KIND_POLE",
    "KIND_TRUNK",
    "Box",
    "all_boxes",
]
