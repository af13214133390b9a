"""Exact polygon-cell overlaps: what a polygon covers of the grid, and what it over-claims.

Split from :mod:`.freespace` because the check is not the construction: it measures any
polygon against any grid, so the node's polygon (step 5 of :mod:`.freespace`'s docstring),
the benches and the tests all judge "every covered cell is free" with the same exact areas.
A cell counts as covered when the polygon overlaps more than :data:`SLIVER` of it.
"""

from __future__ import annotations

import math

import numpy as np

from seg_perception.runtime.geometry.grid import FREE, GridSpec
from seg_perception.runtime.geometry.polygon import signed_area

#: Overlap (fraction of a cell's area) above which a cell counts as inside the polygon.
SLIVER = 1e-3


def polygon_coverage(poly: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Exact area of each cell covered by a simple polygon given in cell units.

    Cell (r, c) spans [c, c+1] x [r, r+1] (x = column, y = row). Returns the (rows, cols)
    coverage (fraction of each cell, 0..1) and the polygon area that falls outside the
    grid (cells). Each edge is cut where it crosses grid lines; a piece inside a cell adds
    the signed area between it and the cell's right side, and its height to every cell
    further right in its row (Green's theorem, as exact-coverage rasterisers do).
    """
    h, w = shape
    poly = np.asarray(poly, dtype=np.float64)
    if len(poly) < 3:
        return np.zeros((h, w)), 0.0
    x_lo = min(0, math.floor(poly[:, 0].min()))
    y_lo = min(0, math.floor(poly[:, 1].min()))
    x_hi = max(w, math.ceil(poly[:, 0].max()))
    y_hi = max(h, math.ceil(poly[:, 1].max()))
    ww, hh = x_hi - x_lo, y_hi - y_lo
    p = poly - (x_lo, y_lo)
    q = np.concatenate([p[1:], p[:1]])
    keep = p[:, 1] != q[:, 1]  # horizontal edges add nothing
    p, q = p[keep], q[keep]
    d = q - p
    # clockwise polygons give negative areas: the sign goes on the pieces (exact, +-1)
    sign = -1.0 if signed_area(poly) > 0 else 1.0
    # parameters t of every grid-line crossing of every edge, plus its two ends
    ts, ids = [np.zeros(len(p)), np.ones(len(p))], [np.arange(len(p))] * 2
    for axis in (0, 1):
        lo = np.floor(np.minimum(p[:, axis], q[:, axis])) + 1
        hi = np.ceil(np.maximum(p[:, axis], q[:, axis])) - 1
        count = np.where(d[:, axis] != 0, np.maximum(0, hi - lo + 1), 0).astype(np.intp)
        edge = np.repeat(np.arange(len(p)), count)
        if len(edge):
            first = np.repeat(np.cumsum(count) - count, count)
            k = lo[edge] + (np.arange(len(edge)) - first)
            ts.append((k - p[edge, axis]) / d[edge, axis])
            ids.append(edge)
    t = np.concatenate(ts)
    e = np.concatenate(ids)
    order = np.lexsort((t, e))
    t, e = t[order], e[order]
    same = e[1:] == e[:-1]
    e0, ta, tb = e[:-1][same], t[:-1][same], t[1:][same]
    px, py, dx, dy = p[:, 0][e0], p[:, 1][e0], d[:, 0][e0], d[:, 1][e0]
    xa, xb = px + ta * dx, px + tb * dx
    ya, yb = py + ta * dy, py + tb * dy
    xm = 0.5 * (xa + xb)
    j = np.floor(xm).astype(np.intp)
    i = np.floor(0.5 * (ya + yb)).astype(np.intp)
    dyp = (yb - ya) * sign
    width = ww + 2  # a vertical edge on the right border lands in column ww
    area = np.bincount(i * width + j, dyp * ((j + 1) - xm), hh * width)
    cover = np.bincount(i * width + j + 1, dyp, hh * width)
    cov = (area + np.cumsum(cover.reshape(hh, width), axis=1).ravel()).reshape(hh, width)
    cov = cov[:, :ww]
    inside = cov[-y_lo:-y_lo + h, -x_lo:-x_lo + w]
    outside = float(cov.sum() - inside.sum())
    return inside, outside


def grid_to_cells(points: np.ndarray, spec: GridSpec) -> np.ndarray:
    """Points (N, 2) x, y in grid_frame -> cell units (column, row) of :func:`polygon_coverage`."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return np.stack([(pts[:, 0] - spec.x_min) / spec.resolution,
                     (pts[:, 1] - spec.y_min) / spec.resolution], axis=1)


def overclaimed_cells(polygon: np.ndarray, grid: np.ndarray, spec: GridSpec,
                      sliver: float = SLIVER) -> tuple[np.ndarray, np.ndarray]:
    """Cells the polygon covers (overlap > ``sliver`` of a cell) that the grid does not call
    free, and the covered cells: two bool (height, width) arrays. Polygon area outside the
    grid counts as over-claimed cell (0, 0)'s business: see :func:`polygon_coverage`."""
    cov, _ = polygon_coverage(grid_to_cells(polygon, spec), spec.shape)
    covered = cov > sliver
    return covered & (grid != FREE), covered


def covers_only(poly: np.ndarray, region: np.ndarray, sliver: float = SLIVER) -> bool:
    """True when the polygon (cell units) covers no cell outside ``region`` by more than
    ``sliver`` of its area, cells beyond the grid included (exact overlaps, computed on the
    polygon's bounding box only)."""
    x0, y0 = np.floor(poly.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + 1
    cov, outside = polygon_coverage(poly - (x0, y0), (y1 - y0, x1 - x0))
    h, w = region.shape
    win = np.zeros((y1 - y0, x1 - x0), bool)
    ya, yb, xa, xb = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
    if ya < yb and xa < xb:
        win[ya - y0:yb - y0, xa - x0:xb - x0] = region[ya:yb, xa:xb]
    return outside <= sliver and not ((cov > sliver) & ~win).any()


__all__ = [
    "SLIVER",
    "covers_only",
    "grid_to_cells",
    "overclaimed_cells",
    "polygon_coverage",
]
