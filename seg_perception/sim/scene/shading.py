"""Colours of what a ray hits: sky, ground (asphalt, markings, kerbs, slabs, grass), boxes.

Split from the renderer (:mod:`.raycast`), which finds the hits; this module gives them the
look of CamVid's streets (a bright overcast sky, paving slabs behind a raised kerb, brick
facades with sash windows, leafy crowns, cars with glass, tyres and lights), textured with
tileable 1/f noise, and the lens fall-off of the camera. Labels are the ground's only
output besides colour: lane markings are Road, grass is Tree.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from seg_perception.sim.scene.boxes import (
    KIND_BUILDING,
    KIND_CAR_BODY,
    KIND_CAR_CABIN,
    KIND_CROWN,
    KIND_POLE,
    KIND_TRUNK,
    Box,
)
from seg_perception.sim.scene.spec import PAVEMENT, ROAD, TREE, RoadGeometry, SceneSpec


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


@lru_cache(maxsize=8)
def vignette(w: int, h: int) -> np.ndarray:
    """Lens fall-off: 1 in the centre, about 0.8 in the corners."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((x - 0.5 * w) / (0.5 * w)) ** 2 * 0.6 + ((y - 0.5 * h) / (0.5 * h)) ** 2 * 0.4
    return (1.0 - 0.2 * r2).astype(np.float32)


def sun_direction(spec: SceneSpec) -> np.ndarray:
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


def sky_colour(rays: np.ndarray, spec: SceneSpec) -> np.ndarray:
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


def shade_ground(
    spec: SceneSpec,
    road: RoadGeometry,
    pts: np.ndarray,
    dist: np.ndarray,
    obstacles: list[Box],
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


def box_colour(
    box: Box, pts: np.ndarray, face: np.ndarray, sun: np.ndarray, seed: int,
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
    if box.kind == KIND_BUILDING:
        col = _facade(box, along, z, face, tex, near, seed)
    elif box.kind == KIND_CAR_BODY:
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
    elif box.kind == KIND_CAR_CABIN:
        glass = face < 4
        up = np.clip((z - box.z0) / max(box.z1 - box.z0, 1e-6), 0.0, 1.0)
        g = np.array([60.0, 68.0, 78.0], dtype=np.float32)[None, :] * (
            1.0 + 0.1 * tex[:, None] + 1.5 * up[:, None] ** 2)
        col[glass] = g[glass]
        pillar = glass & (np.abs(along) > 0.5 * np.where(face < 2, box.width, box.length) - 0.08)
        col[pillar] = base * 0.9
    elif box.kind == KIND_CROWN:
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
    elif box.kind in (KIND_TRUNK, KIND_POLE):
        col = col * (0.85 + 0.3 * np.clip(z / 8.0, 0.0, 1.0))[:, None]
    return col * light[:, None]


def _facade(
    box: Box, along: np.ndarray, z: np.ndarray, face: np.ndarray, tex: np.ndarray,
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


__all__ = [
    "box_colour",
    "shade_ground",
    "sky_colour",
    "sun_direction",
    "vignette",
]
