"""Free space a planner may treat as reachable: speckle cleaning, ego component, boundary.

The boundary is the outline of the drivable component nearest to the vehicle, in
``grid_frame``. Drivable islands not connected to it are dropped. Obstacles enclosed by the
component (holes) are opened to the outside with a one-cell cut before tracing, so the one
simple polygon that PolygonStamped can carry never claims an obstacle as reachable.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .grid import FREE, GridSpec

MAX_HOLE_PASSES = 64


def speckle_kernel(speckle_area: int) -> np.ndarray | None:
    """Elliptical kernel whose area is about ``speckle_area`` pixels, or None for no cleaning."""
    if speckle_area <= 1:
        return None
    d = max(2, round(math.sqrt(4.0 * speckle_area / math.pi)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))


def clean_mask(mask: np.ndarray, speckle_area: int, exact: bool = False) -> np.ndarray:
    """Drop drivable specks and fill non-drivable specks smaller than ``speckle_area`` pixels.

    The default is a morphological opening then closing with a disc of that area: it costs
    well under a millisecond at 1280x720, and removes every speck smaller than the disc (and
    strips narrower than its diameter). ``exact=True`` removes exactly the connected
    components below the area instead, at several milliseconds per frame. Returns uint8,
    nonzero = drivable.
    """
    m = np.asarray(mask)
    m = m.view(np.uint8) if m.dtype == bool else m
    if m.dtype != np.uint8:
        m = (m != 0).view(np.uint8)
    m = np.ascontiguousarray(m)
    if speckle_area <= 1:
        return m
    if exact:
        out = (m != 0).view(np.uint8)
        for value in (1, 0):  # drivable specks, then holes in the drivable area
            src = (out == value).view(np.uint8)
            n, labels, stats, _ = cv2.connectedComponentsWithStats(src, connectivity=8)
            small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < speckle_area)
            small = small[small > 0]
            if len(small):
                lut = np.zeros(n, dtype=bool)
                lut[small] = True
                out[lut[labels]] = 1 - value
        return out
    kernel = speckle_kernel(speckle_area)
    out = cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel)
    return cv2.morphologyEx(out, cv2.MORPH_CLOSE, kernel)


def ego_component(
    grid: np.ndarray,
    spec: GridSpec,
    ego_xy: tuple[float, float] = (0.0, 0.0),
    min_cells: int = 1,
    dist2: np.ndarray | None = None,
) -> np.ndarray:
    """Bool (height, width): the 8-connected free component nearest to ``ego_xy``.

    Components smaller than ``min_cells`` are islands that never qualify. ``dist2`` is the
    squared distance of each cell centre to the ego point (pass it to skip recomputing).
    """
    free = (grid == FREE).view(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(free, connectivity=8)
    if n <= 1:
        return np.zeros(grid.shape, dtype=bool)
    good = stats[:, cv2.CC_STAT_AREA] >= max(1, min_cells)
    good[0] = False
    if not good.any():
        return np.zeros(grid.shape, dtype=bool)
    if dist2 is None:
        dist2 = ego_distance2(spec, ego_xy)
    cand = good[labels]
    nearest = int(np.argmin(np.where(cand, dist2, np.inf)))
    return labels == labels.flat[nearest]


def ego_distance2(spec: GridSpec, ego_xy: tuple[float, float]) -> np.ndarray:
    """Squared distance (float32, height x width) from each cell centre to the ego point."""
    gx, gy = spec.cell_centers()
    return ((gx - ego_xy[0]) ** 2 + (gy - ego_xy[1]) ** 2).astype(np.float32)


def open_holes(component: np.ndarray) -> np.ndarray:
    """Cut each hole of a component to its outside with a one-cell column towards row 0.

    Returns a uint8 copy whose outer contour goes around every former hole.
    """
    comp = component.astype(np.uint8, copy=True)
    for _ in range(MAX_HOLE_PASSES):
        contours, hier = cv2.findContours(comp, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if hier is None or not (hier[0][:, 3] >= 0).any():
            return comp
        outer = [c for c, h in zip(contours, hier[0], strict=True) if h[3] < 0]
        filled = np.zeros_like(comp)
        cv2.drawContours(filled, outer, -1, 1, thickness=cv2.FILLED)
        holes = (filled != 0) & (comp == 0)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(
            holes.view(np.uint8), connectivity=4
        )
        for k in range(1, n):
            top = stats[k, cv2.CC_STAT_TOP]
            cols = np.flatnonzero(labels[top] == k)
            c = int(cols[len(cols) // 2])
            below = np.flatnonzero(filled[:top, c] == 0)
            start = int(below[-1]) + 1 if len(below) else 0
            comp[start:top, c] = 0
            filled[start:top, c] = 0
    return comp


def boundary_polygon(
    component: np.ndarray, spec: GridSpec, max_vertices: int = 64
) -> np.ndarray:
    """Outline (N, 2) x, y in grid_frame of a bool component mask, N <= ``max_vertices``.

    The polygon runs counter-clockwise through the centres of the component's boundary cells
    (half a cell inside its edge) and is not repeated at the end (a geometry_msgs/Polygon is
    implicitly closed). It is simplified with Douglas-Peucker, the tolerance growing until
    the vertex bound holds; should that cross its own edges (tight bounds on intricate
    shapes), a Visvalingam-Whyatt reduction that keeps the polygon simple takes over.
    Empty (0, 2) when the component is empty.
    """
    if max_vertices < 4:
        raise ValueError(f"max_vertices = {max_vertices} must be >= 4")
    if not component.any():
        return np.zeros((0, 2))
    comp = open_holes(component)
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2))
    contour = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    poly = contour
    eps = 0.7
    while len(poly) > max_vertices:
        poly = cv2.approxPolyDP(contour, eps, closed=True)
        eps *= 1.25
    pts = poly.reshape(-1, 2).astype(np.float64)
    if len(pts) > 3 and not is_simple(pts):
        fine = cv2.approxPolyDP(contour, 0.7, closed=True).reshape(-1, 2).astype(np.float64)
        pts = simplify_keep_simple(fine, max_vertices)
    if len(pts) < 3:
        box = cv2.boxPoints(cv2.minAreaRect(contour.astype(np.float32)))
        pts = np.asarray(box, dtype=np.float64)
    xy = spec.cells_to_xy(pts[:, 0], pts[:, 1])
    if signed_area(xy) < 0:
        xy = xy[::-1].copy()
    return xy


def signed_area(pts: np.ndarray) -> float:
    """Shoelace area of a closed polygon (N, 2); positive when counter-clockwise."""
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (
        b[..., 0] - o[..., 0]
    )


def _crossings(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether segment p-q properly crosses each segment a[i]-b[i] (touching does not count)."""
    d1, d2 = _cross(p, q, a), _cross(p, q, b)
    d3, d4 = _cross(a, b, p), _cross(a, b, q)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


def is_simple(pts: np.ndarray) -> bool:
    """True when no two non-adjacent edges of the closed polygon properly cross."""
    n = len(pts)
    if n < 4:
        return True
    a, b = pts, np.roll(pts, -1, axis=0)
    cross = _crossings(a[:, None], b[:, None], a[None], b[None])
    i, j = np.triu_indices(n, 2)
    keep = ~((i == 0) & (j == n - 1))
    return not bool(cross[i[keep], j[keep]].any())


def simplify_keep_simple(pts: np.ndarray, max_vertices: int) -> np.ndarray:
    """Visvalingam-Whyatt: drop the vertex spanning the smallest triangle, never letting the
    shortcut cross another edge, until ``max_vertices`` remain.

    Falls back to the convex hull (reduced the same way, which keeps it convex) when no
    vertex can be dropped without a crossing.
    """
    pts = np.asarray(pts, dtype=np.float64)
    while len(pts) > max_vertices:
        prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
        area = np.abs(_cross(prev, pts, nxt))
        n = len(pts)
        a, b = pts, nxt
        for k in np.argsort(area, kind="stable"):
            p, q = pts[(k - 1) % n], pts[(k + 1) % n]
            # edges that do not touch the vertices k-1, k, k+1
            others = np.array([e for e in range(n) if e not in ((k - 2) % n, (k - 1) % n, k,
                                                                (k + 1) % n)])
            if len(others) == 0 or not _crossings(p, q, a[others], b[others]).any():
                pts = np.delete(pts, k, axis=0)
                break
        else:
            hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
            return _reduce_convex(hull, max_vertices)
    return pts


def _reduce_convex(pts: np.ndarray, max_vertices: int) -> np.ndarray:
    while len(pts) > max_vertices:
        prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
        pts = np.delete(pts, int(np.argmin(np.abs(_cross(prev, pts, nxt)))), axis=0)
    return pts
