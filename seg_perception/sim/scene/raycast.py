"""Render one camera's view of a scene by ray casting, and the exact drivable grids.

Split from the scene description (:mod:`.spec`), its solids (:mod:`.boxes`) and their
colours (:mod:`.shading`): this module casts one ray per pixel centre (vectorised numpy)
against the ground plane and the boxes, keeps the nearest hit, and adds the camera's
response (haze, soft contrast, muted colour, vignetting, blur, optional sensor noise).
With a :class:`~seg_perception.runtime.geometry.grid.GridSpec` it also computes the true
grids from the world, with the projection's visibility rules (see the package docstring).
"""

from __future__ import annotations

import math

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
from seg_perception.sim.scene.boxes import Box, all_boxes
from seg_perception.sim.scene.shading import (
    box_colour,
    shade_ground,
    sky_colour,
    sun_direction,
    vignette,
)
from seg_perception.sim.scene.spec import ROAD, SKY, RoadGeometry, SceneRender, SceneSpec


def _world_pose(spec: SceneSpec, mounting: CameraMounting) -> tuple[np.ndarray, np.ndarray]:
    """(camera centre in the road frame, rotation road <- optical)."""
    ex, ey, eyaw = spec.ego
    c, s = math.cos(eyaw), math.sin(eyaw)
    r_we = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    origin = r_we @ mounting.position + np.array([ex, ey, 0.0])
    return origin, r_we @ mounting.rotation


def _box_pixels(
    box: Box, camera: CameraModel, origin: np.ndarray, r_wo: np.ndarray
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

    obstacles, roadside = all_boxes(spec, road)
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
    colour[sky] = sky_colour(rays[sky], spec)

    # ground
    gnd = np.isfinite(depth) & (box_id < 0)
    g_lab, g_col = shade_ground(spec, road, hit_pts[gnd], depth[gnd], obstacles, origin)
    labels[gnd] = g_lab
    colour[gnd] = g_col

    # boxes
    sun = sun_direction(spec)
    on_box = np.flatnonzero(box_id >= 0)
    order = on_box[np.argsort(box_id[on_box], kind="stable")]
    bounds = np.searchsorted(box_id[order], np.arange(len(boxes) + 1))
    for i, box in enumerate(boxes):
        sel = order[bounds[i] : bounds[i + 1]]
        if not len(sel):
            continue
        labels[sel] = box.label
        colour[sel] = box_colour(box, hit_pts[sel], face[sel], sun, spec.seed,
                                  depth[sel])

    # haze with distance, the camera's response (soft contrast, muted colour, vignetting),
    # a slight optical blur, sensor noise
    fog = 1.0 - np.exp(-np.where(np.isfinite(depth), depth, 0.0) / 250.0)
    haze = np.array([205.0, 210.0, 216.0], dtype=np.float32)
    colour = colour * (1 - fog[:, None]) + haze * fog[:, None]
    img = colour.reshape(h, w, 3)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + 0.85 * (img - grey)
    img = img * vignette(w, h)[:, :, None]
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


def _true_grids(
    spec: SceneSpec,
    road: RoadGeometry,
    grid: GridSpec,
    mounting: CameraMounting,
    origin: np.ndarray,
    boxes: list[Box],
    obstacles: list[Box],
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


__all__ = [
    "render_scene",
]
