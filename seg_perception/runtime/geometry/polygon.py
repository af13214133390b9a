"""Plain polygon geometry: orientation, simplicity, and ear clipping to a vertex bound.

Split from :mod:`.freespace` because none of it knows about grids or regions: a simple
polygon in, a number or a smaller simple polygon inside it out. :func:`clip_ears` is step
4 of :mod:`.freespace`'s construction; :func:`is_simple` and :func:`signed_area` are the
checks it and the tests rely on.
"""

from __future__ import annotations

import bisect
import logging

import numpy as np

log = logging.getLogger(__name__)

#: Ear clipping removes up to 1 / EAR_ROUND of the vertices per round.
EAR_ROUND = 16


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (
        b[..., 0] - o[..., 0]
    )


def _point_in_triangles(px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray,
                        c: np.ndarray) -> np.ndarray:
    """(T, P) bool: points inside or on the (counter-clockwise) triangles a, b, c."""
    ax, ay = a[:, 0, None], a[:, 1, None]
    bx, by = b[:, 0, None], b[:, 1, None]
    cx, cy = c[:, 0, None], c[:, 1, None]
    inside = (bx - ax) * (py - ay) >= (by - ay) * (px - ax)
    inside &= (cx - bx) * (py - by) >= (cy - by) * (px - bx)
    inside &= (ax - cx) * (py - cy) >= (ay - cy) * (px - cx)
    return inside


def _ear_rows(p: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For vertices ``rows`` of the closed polygon ``p``: the turn (cross product) at each,
    and which vertices lie inside or on its triangle (prev, v, next), its own three
    excluded."""
    m = len(p)
    prev, nxt = (rows - 1) % m, (rows + 1) % m
    cross = _cross(p[prev], p[rows], p[nxt])
    inside = _point_in_triangles(p[None, :, 0], p[None, :, 1], p[prev], p[rows], p[nxt])
    k = np.arange(len(rows))
    inside[k, rows] = inside[k, prev] = inside[k, nxt] = False
    return cross, inside


def clip_ears(pts: np.ndarray, max_vertices: int) -> np.ndarray:
    """Remove vertices of a simple counter-clockwise polygon until at most ``max_vertices``
    remain, the ears that lose least area first.

    Removing an ear (a convex vertex whose triangle holds no other vertex) only cuts that
    triangle off: the polygon stays simple and inside the old one. Every simple polygon with
    four or more vertices has two ears, so any bound >= 3 is met. Ears that are not
    neighbours stay ears when others go, so large polygons lose several per round.

    Each round only re-tests the vertices next to those removed: the others keep their
    triangle, whose content only loses the removed vertices.
    """
    pts = np.asarray(pts, dtype=np.float64)
    alive = np.arange(len(pts))
    target = max(3, max_vertices)
    if len(alive) <= target:
        return pts[alive]
    m = len(pts)
    cross, inside = _ear_rows(pts, np.arange(m))
    while len(alive) > target:
        m = len(alive)
        convex = cross >= 0
        if not convex.any():
            break
        ear = convex & (~inside.any(axis=1) | (cross == 0))
        ears = np.flatnonzero(ear)
        if not len(ears):  # cannot happen for a simple polygon; keep what we have
            log.debug("ear clipping found no ear at %d vertices", m)
            break
        ears = ears[np.argsort(cross[ears], kind="stable")].tolist()
        budget = min(m - target, max(1, m // EAR_ROUND))
        taken = [False] * m
        picked = []
        for v in ears:
            if len(picked) == budget:
                break
            if not (taken[v - 1] or taken[(v + 1) % m]):
                taken[v] = True
                picked.append(v)
        # neighbours of removed vertices get new triangles; none of them is removed
        touched = sorted({(v - 1) % m for v in picked} | {(v + 1) % m for v in picked})
        picked.sort()
        keep = np.ones(m, bool)
        keep[picked] = False
        alive = alive[keep]
        cross, inside = cross[keep], inside[keep][:, keep]
        if len(alive) > target:
            redo = np.asarray([u - bisect.bisect_left(picked, u) for u in touched], np.intp)
            cross[redo], inside[redo] = _ear_rows(pts[alive], redo)
    return pts[alive]


def signed_area(pts: np.ndarray) -> float:
    """Shoelace area of a closed polygon (N, 2); positive when counter-clockwise."""
    x, y = pts[:, 0], pts[:, 1]
    wrap = float(x[-1] * y[0] - y[-1] * x[0])
    return 0.5 * (float(np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:])) + wrap)


def _crossings(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether segment p-q properly crosses each segment a[i]-b[i] (touching does not count)."""
    d1, d2 = _cross(p, q, a), _cross(p, q, b)
    d3, d4 = _cross(a, b, p), _cross(a, b, q)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


def is_simple(pts: np.ndarray, strict: bool = False) -> bool:
    """True when no two non-adjacent edges of the closed polygon properly cross; with
    ``strict`` also when no vertex lies on a non-adjacent edge (no touching either). Only
    pairs whose bounding boxes meet are tested exactly."""
    pts = np.asarray(pts)
    n = len(pts)
    if n < 4:
        return True
    a = pts
    b = np.concatenate([pts[1:], pts[:1]])
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    lx, ly, hx, hy = lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]
    near = ((lx[:, None] <= hx[None]) & (lx[None] <= hx[:, None])
            & (ly[:, None] <= hy[None]) & (ly[None] <= hy[:, None]))
    i, j = np.nonzero(np.triu(near, 2))
    keep = ~((i == 0) & (j == n - 1))
    i, j = i[keep], j[keep]
    if len(i) and _crossings(a[i], b[i], a[j], b[j]).any():
        return False
    if not strict:
        return True
    # vertex v on edge e (v not an end of e): within the edge's extent and collinear
    vx, vy = pts[:, 0, None], pts[:, 1, None]
    v, e = np.nonzero((vx >= lx) & (vx <= hx) & (vy >= ly) & (vy <= hy))
    other = (v != e) & (v != (e + 1) % n)
    v, e = v[other], e[other]
    return not bool(len(v) and (_cross(a[e], b[e], pts[v]) == 0).any())


def simplify_keep_simple(pts: np.ndarray, max_vertices: int) -> np.ndarray:
    """At most ``max_vertices`` vertices of a simple polygon, simple and inside it
    (ear clipping, :func:`clip_ears`; orientation is kept)."""
    pts = np.asarray(pts, dtype=np.float64)
    if signed_area(pts) < 0:
        return clip_ears(pts[::-1], max_vertices)[::-1]
    return clip_ears(pts, max_vertices)


__all__ = [
    "EAR_ROUND",
    "clip_ears",
    "is_simple",
    "signed_area",
    "simplify_keep_simple",
]
