"""The polygon's vertices: the region's exact outline, then a top-down refinement inside it.

Split from :mod:`.freespace` (steps 2 and 3 of its docstring): :func:`lattice_outline`
walks the outline of a region from :func:`.free_region.polygon_region` along cell edges;
:func:`refine_inside` picks outline vertices whose shortcuts stay inside the region, with
the lookup tables (:class:`_Region`, :class:`_Shortcuts`) that make each test O(1) or one
vectorised pass. Ear clipping (step 4) lives in :mod:`.polygon`.
"""

from __future__ import annotations

import heapq
import math

import cv2
import numpy as np

from seg_perception.runtime.geometry.free_region import bbox

#: Area (cells) between outline and shortcut below which the refinement adds no vertex.
REFINE_TOLERANCE = 1.0
#: Chains and segments up to this many vertices / columns are measured in plain Python.
SHORT = 16


def refine_budget(max_vertices: int) -> int:
    """Vertices the top-down refinement may use before ear clipping trims to the bound: a
    margin of up to ``max_vertices`` (at most 32) buys area at tight bounds, cheaply."""
    return max_vertices + min(max_vertices, 32)


# --- exact outline ----------------------------------------------------------------------------

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def lattice_outline(region: np.ndarray) -> np.ndarray:
    """Outline (N, 2) of a well-composed, hole-free, 4-connected region along cell edges.

    Vertices are cell corners in cell units (x = column, y = row, so cell (r, c) spans
    [c, c+1] x [r, r+1]), counter-clockwise (region on the left), corners only (collinear
    points dropped), starting at the corner with the smallest (y, x), not repeated at the
    end. Raises ValueError when the region has more than one boundary loop (holes, several
    components).
    """
    box = bbox(region)
    if box is None:
        return np.zeros((0, 2), np.int64)
    r0, r1, c0, c1 = box
    crop = np.ascontiguousarray(np.asarray(region, dtype=bool)[r0:r1, c0:c1]).view(np.uint8)
    m = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    wp = m.shape[1]
    # the cells with a 4-neighbour outside the region carry every boundary edge
    inner = cv2.erode(m, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    idx = np.flatnonzero(m > inner)
    flat = m.ravel()
    r, c = np.divmod(idx, wp)
    stride = wp + 1  # lattice point (x, y) of the padded crop is y * stride + x
    base = r * stride + c
    below, above = base[flat[idx - wp] == 0], base[flat[idx + wp] == 0]
    left, right = base[flat[idx - 1] == 0], base[flat[idx + 1] == 0]
    # directed edges, region on the left: y = r (+x), y = r+1 (-x), x = c (-y), x = c+1 (+y)
    s = np.concatenate([below, above + stride + 1, left + stride, right + 1])
    e = np.concatenate([below + 1, above + stride, left, right + stride + 1])
    order = np.argsort(s, kind="stable")
    starts = s[order]
    if (starts[1:] == starts[:-1]).any():
        raise ValueError("region is not well-composed (a boundary vertex has two exits)")
    pos = np.minimum(np.searchsorted(starts, e), len(starts) - 1)
    if not (starts[pos] == e).all():
        raise ValueError("region outline is not closed")
    walk = _cycle_order(order[pos], int(order[0]))  # from the edge at the smallest (y, x)
    if walk is None:
        raise ValueError("region has boundary edges off its outer loop (holes or several "
                         "components)")
    step = (e - s)[walk]  # +-1 along x, +-stride along y: a corner where it changes
    corner = np.empty(len(walk), bool)
    corner[0] = step[0] != step[-1]
    np.not_equal(step[1:], step[:-1], out=corner[1:])
    y, x = np.divmod(s[walk[corner]], stride)
    return np.stack([x + (c0 - 1), y + (r0 - 1)], axis=1).astype(np.int64)


def _cycle_order(succ: np.ndarray, first: int) -> np.ndarray | None:
    """The items of the permutation ``succ`` in the order of its cycle through ``first``,
    or None when that cycle does not hold every item (pointer jumping: log2(n) vectorised
    steps instead of n Python ones)."""
    n = len(succ)
    pred = np.empty(n, np.intp)
    pred[succ] = np.arange(n)
    last = int(pred[first])  # the cycle cut before ``first``: every item walks to ``last``
    nxt = succ.astype(np.intp, copy=True)
    nxt[last] = last
    dist = np.ones(n, np.intp)
    dist[last] = 0
    for _ in range(max(1, (n - 1).bit_length())):
        dist += dist[nxt]
        nxt = nxt[nxt]
    if not (nxt == last).all():
        return None
    walk = np.empty(n, np.intp)
    walk[(n - 1) - dist] = np.arange(n)
    return walk


# --- conservative simplification --------------------------------------------------------------

def _winding(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Winding numbers of points (px, py) with respect to the closed polygon ``poly``."""
    x1, y1 = poly[:, 0].astype(np.float64), poly[:, 1].astype(np.float64)
    x2, y2 = np.concatenate([x1[1:], x1[:1]]), np.concatenate([y1[1:], y1[:1]])
    px, py = px[:, None], py[:, None]
    side = (x2 - x1) * (py - y1) - (px - x1) * (y2 - y1)
    up = (y1 <= py) & (y2 > py) & (side > 0)
    down = (y1 > py) & (y2 <= py) & (side < 0)
    return up.sum(axis=1) - down.sum(axis=1)


class _Region:
    """A bool cell mask, cropped to a bounding box (``box``: row0, row1, col0, col1) and padded
    by one ring of non-region cells, queried in the grid's cell units.

    Keeps, per column, the running count of non-region cells, so "are rows r0..r1 of
    column c all region" costs two lookups for any number of columns at once.
    """

    def __init__(self, region: np.ndarray, box: tuple[int, int, int, int]) -> None:
        r0, r1, c0, c1 = box
        crop = np.ascontiguousarray(np.asarray(region, dtype=bool)[r0:r1, c0:c1])
        self.cells = cv2.copyMakeBorder(crop.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT,
                                        value=0).view(bool)  # [row - r0 + 1, col - c0 + 1]
        h, w = self.cells.shape
        self._row, self._col, self._w = 1 - r0, 1 - c0, w
        self._bad = np.zeros((h + 1, w), np.int32)
        np.cumsum(~self.cells, axis=0, out=self._bad[1:])
        self._bad_flat = self._bad.reshape(-1)
        bad_h = np.zeros((h, w + 1), np.int32)  # the same along rows: [row, col] = cols < col
        np.cumsum(~self.cells, axis=1, out=bad_h[:, 1:])
        self._flat_h = memoryview(bad_h.reshape(-1))
        self._flat = memoryview(self._bad_flat)  # fast scalar reads
        # per padded column: the flat index of (row 0 of the grid, that column)
        self._base = np.arange(w, dtype=np.float64) + self._row * w

    def beside_in(self, x0: int, y0: int, x1: int, y1: int) -> bool:
        """For a segment along a grid line (lattice end points): True when the cells on both
        sides of it are all region (two lookups per side)."""
        row, col = self._row, self._col
        if x0 == x1:  # vertical: columns x0 - 1 and x0, rows between y0 and y1
            lo, hi = (y0, y1) if y0 < y1 else (y1, y0)
            bad, w = self._flat, self._w
            a, b = (lo + row) * w + x0 + col, (hi + row) * w + x0 + col
            return bad[b] == bad[a] and bad[b - 1] == bad[a - 1]
        lo, hi = (x0, x1) if x0 < x1 else (x1, x0)
        bad, w = self._flat_h, self._w + 1
        a, b = (y0 + row) * w + lo + col, (y0 + row) * w + hi + col
        return bad[b] == bad[a] and bad[b - w] == bad[a - w]

    def cell(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether cells (rows, cols) are region (the padding ring may be asked for)."""
        return self.cells[rows + self._row, cols + self._col]

    def rows_in(self, cols: np.ndarray, r0: np.ndarray, r1: np.ndarray) -> bool:
        """True when, for each column, the rows r0 .. r1 - 1 (cell units) are all region.

        The columns and rows of the padding ring may be asked for; an empty range
        (r1 <= r0) is trivially fine.
        """
        c = cols + self._col
        return not bool((self._bad[r1 + self._row, c] - self._bad[r0 + self._row, c] > 0).any())

    def segment_in(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """True when every cell whose interior the segment (lattice end points) passes
        through is region. Per column strip [c, c+1] the segment spans the rows between its
        heights on the two lines."""
        if x0 == x1 or y0 == y1:
            return True  # on a grid line: it passes through no cell's interior
        if x1 < x0:
            x0, y0, x1, y1 = x1, y1, x0, y0
        slope = (y1 - y0) / (x1 - x0)
        if x1 - x0 <= SHORT:  # a few columns: plain Python beats numpy's per-call cost
            bad, w, row, col = self._flat, self._w, self._row, self._col
            ceil, floor = math.ceil, math.floor
            for c in range(int(x0), int(x1)):
                ya, yb = y0 + (c - x0) * slope, y0 + (c + 1 - x0) * slope
                lo, hi = (ya, yb) if yb > ya else (yb, ya)
                if bad[(ceil(hi) + row) * w + c + col] > bad[(floor(lo) + row) * w + c + col]:
                    return False
            return True
        n = int(x1) - int(x0)
        ys = np.arange(n + 1, dtype=np.float64)
        ys *= slope
        ys += y0
        if y1 > y0:  # rising: each strip spans [y(c), y(c+1)]
            lo, hi = ys[:-1], ys[1:]
        else:
            lo, hi = ys[1:], ys[:-1]
        # flat indices into the running counts: (row + row offset) * width + column
        base = self._base[int(x0) + self._col:int(x1) + self._col]
        top = np.ceil(hi)
        top *= self._w
        top += base
        low = np.floor(lo)
        low *= self._w
        low += base
        bad = self._bad_flat
        return not bool((bad[top.astype(np.intp)] > bad[low.astype(np.intp)]).any())


class _Shortcuts:
    """Tests whether replacing an outline chain by a straight shortcut keeps the polygon
    inside the region (see :meth:`ok`). Chains are slices of the outline repeated twice, so
    chain i..j (j < i + n) needs no modulo. Scalar work runs on Python ints (the vertices
    are lattice points, so every product and area below is exact)."""

    def __init__(self, region: np.ndarray, outline: np.ndarray,
                 box: tuple[int, int, int, int] | None = None) -> None:
        box = box or bbox(region) or (0, 1, 0, 1)
        self.region = _Region(region, box)
        self.outline = outline
        self.n = n = len(outline)
        self.pts = np.concatenate([outline, outline]).astype(np.float64)
        x, y = self.pts[:, 0], self.pts[:, 1]
        # running sum of the shoelace terms: the area of chain i..j closed by its shortcut
        self._shoelace = np.concatenate([[0.0], np.cumsum(x[:-1] * y[1:] - x[1:] * y[:-1])])
        self._sl = self._shoelace.tolist()
        twice = np.concatenate([outline, outline]).astype(np.int64)
        self._xs, self._ys = twice[:, 0].tolist(), twice[:, 1].tolist()
        self._x, self._y = self.pts[:, 0].copy(), self.pts[:, 1].copy()  # contiguous
        r0, r1, c0, c1 = box
        self._x0, self._y0 = c0, r0
        self._stride = c1 - c0 + 1  # lattice points of the box
        vertex = np.full((r1 - r0 + 1) * self._stride, -1, np.int32)
        vertex[(outline[:, 1] - r0) * self._stride + outline[:, 0] - c0] = np.arange(n)
        self._vertex = memoryview(vertex)

    def _touches_other_vertex(self, i: int, j: int) -> bool:
        """Whether the segment i-j passes through an outline vertex outside chain i..j (the
        polygon would touch itself there)."""
        xs, ys = self._xs, self._ys
        px, py = xs[i], ys[i]
        dx, dy = xs[j] - px, ys[j] - py
        g = math.gcd(dx, dy)
        if g < 2:
            return False
        step = (dy // g) * self._stride + dx // g
        at = (py - self._y0) * self._stride + px - self._x0
        vertex, n, span = self._vertex, self.n, j - i
        for _ in range(1, g):
            at += step
            v = vertex[at]
            # a vertex inside the chain is removed by the shortcut anyway
            if v >= 0 and not 0 < (v - i) % n < span:
                return True
        return False

    def chain(self, i: int, j: int) -> np.ndarray:
        """Outline vertices i..j (0 <= i < n, i < j < i + n)."""
        return self.pts[i:j + 1]

    def ok(self, i: int, j: int) -> bool:
        """True when the area between chain i..j and the segment from vertex i to j holds no
        cell outside the region.

        The chain runs along the region's edge and the complement of a well-composed,
        hole-free region is connected to the outside, so a non-region cell inside that area
        would have to be reached across the segment: the segment must not pass through a
        non-region cell, and where it runs along a grid line the non-region cells beside it
        must lie outside the area (a winding-number test). The segment must not touch the
        outline elsewhere either (the polygon would touch itself).
        """
        if self._touches_other_vertex(i, j):
            return False
        xs, ys = self._xs, self._ys
        px, py, qx, qy = xs[i], ys[i], xs[j], ys[j]
        if px != qx and py != qy:
            return self.region.segment_in(px, py, qx, qy)
        # along a grid line: the cells on both sides that are not region must be outside
        if self.region.beside_in(px, py, qx, qy):  # the usual case, in O(1)
            return True
        if px == qx:
            y = np.arange(min(py, qy), max(py, qy), dtype=np.intp)
            rows = np.concatenate([y, y])
            cols = np.concatenate([np.full_like(y, px - 1), np.full_like(y, px)])
        else:
            x = np.arange(min(px, qx), max(px, qx), dtype=np.intp)
            cols = np.concatenate([x, x])
            rows = np.concatenate([np.full_like(x, py - 1), np.full_like(x, py)])
        outside = ~self.region.cell(rows, cols)
        if not outside.any():
            return True
        cx = cols[outside] + 0.5
        cy = rows[outside] + 0.5
        return not bool(_winding(cx, cy, self.chain(i, j)).any())

    def measure(self, i: int, j: int) -> tuple[float, int, int]:
        """(area between chain i..j and its shortcut, the chain vertex farthest from the
        shortcut, the vertex farthest on its inner side or -1 when none is); the first of
        equals."""
        xs, ys = self._xs, self._ys
        px, py, qx, qy = xs[i], ys[i], xs[j], ys[j]
        area = 0.5 * abs(self._sl[j] - self._sl[i] + (qx * py - px * qy))
        if j - i <= SHORT:  # plain Python beats numpy's per-call cost
            dx, dy = qx - px, qy - py
            offset = dy * px - dx * py
            far = dip = -1
            far_v, dip_v = -1, 0
            for k in range(i + 1, j):
                side = dx * ys[k] - dy * xs[k] + offset  # > 0: left of the shortcut
                size = side if side >= 0 else -side
                if size > far_v:
                    far, far_v = k, size
                if side > dip_v:
                    dip, dip_v = k, side
            return area, far, dip
        # side - offset over the chain; its extremes give both answers (exact: lattice ints)
        side = (qx - px) * self._y[i + 1:j] - (qy - py) * self._x[i + 1:j]
        offset = (qy - py) * px - (qx - px) * py
        hi, lo = int(side.argmax()), int(side.argmin())
        top, bottom = side.item(hi) + offset, side.item(lo) + offset
        if top > -bottom:
            far = hi
        elif top < -bottom:
            far = lo
        else:
            far = min(hi, lo)
        return area, i + 1 + far, i + 1 + hi if top > 0 else -1


def refine_inside(region: np.ndarray, outline: np.ndarray, max_vertices: int,
                  tolerance: float = REFINE_TOLERANCE) -> np.ndarray:
    """Indices (ascending) of outline vertices forming a polygon inside the region.

    Top-down: start from two far-apart vertices, then repeatedly split a segment. A segment
    whose shortcut would leave the region must be split, at the chain vertex that dips
    deepest on its inner side (the one the shortcut passes outside of); the others are
    split at their farthest vertex, largest area between chain and shortcut first, while
    fewer than ``max_vertices`` vertices are used and that area exceeds ``tolerance``
    cells. The result may exceed the bound when the region needs more vertices (the caller
    reduces it).
    """
    n = len(outline)
    sc = _Shortcuts(region, outline)
    a = int(np.lexsort((outline[:, 1], outline[:, 0]))[0])
    d2 = ((outline - outline[a]) ** 2).sum(axis=1)
    b = int(np.argmax(d2))
    if b < a:
        a, b = b, a
    heap: list[tuple[float, int, int, int]] = []
    measure, ok, heappush = sc.measure, sc.ok, heapq.heappush
    must = -math.inf

    def push(i: int, j: int) -> None:
        if j - i < 2:
            return
        area, far, dip = measure(i, j)
        if dip >= 0:
            heappush(heap, (must, i, j, dip))
        elif not ok(i, j):
            heappush(heap, (must, i, j, far))
        else:
            heappush(heap, (-area, i, j, far))

    push(a, b)
    push(b, a + n)
    vertices = {a % n, b % n}
    while heap:
        negp, i, j, k = heap[0]
        if negp != must and (len(vertices) >= max_vertices or -negp <= tolerance):
            break
        heapq.heappop(heap)
        vertices.add(k % n)
        push(i, k)
        push(k, j)
    return np.asarray(sorted(vertices), np.intp)


__all__ = [
    "REFINE_TOLERANCE",
    "SHORT",
    "lattice_outline",
    "refine_budget",
    "refine_inside",
]
