"""Free space a planner may treat as reachable: speckle cleaning, ego region, boundary polygon.

The boundary is a conservative, simple polygon of the free region connected to the vehicle,
in ``grid_frame``: **every grid cell it covers is a cell the grid marks free**. "Covers" is
the strict reading a planner needs: a cell counts as inside the polygon as soon as the
polygon overlaps more than a sliver of it (:data:`SLIVER`: 0.1 % of the cell's area), not
only when it holds the cell's centre. The sliver only absorbs number formats:
geometry_msgs/Point32 carries float32, which alone moves an edge by up to about 1e-5 of a
0.1 m cell at 40 m. :func:`overclaimed_cells` measures exactly that (exact polygon-cell
overlap areas, :func:`polygon_coverage`).

How it is built (:func:`boundary_polygon`):

1. the region: the free 4-connected component nearest the vehicle, made *well-composed*
   (no two region cells that touch only at a corner: one of them is dropped), with every
   enclosed obstacle cut open to the outside by a one-cell channel (PolygonStamped carries
   one simple polygon, so an obstacle inside the road must become a notch);
2. its exact outline along cell edges (vertices on cell corners): a polygon that covers the
   region exactly;
3. if that has more than ``max_vertices`` vertices, a top-down refinement picks outline
   vertices (up to a few times the bound), accepting a shortcut only when the area between
   it and the outline holds no non-region cell (so shortcuts cut corners inwards, never
   across an obstacle);
4. ear clipping then removes the convex vertices whose triangles hold least area until the
   bound holds (a reflex vertex of the region's outline can never go: its triangle would
   cover the outside corner there). Where the region needs more vertices than allowed
   (many notches) this gives fewer vertices of a smaller region, never a hull;
5. a final exact check of the polygon as published (float32 coordinates) against the
   region; a polygon that fails it (none should) is replaced by the empty one.
"""

from __future__ import annotations

import heapq
import logging
import math

import cv2
import numpy as np

from .grid import FREE, UNKNOWN, GridSpec

log = logging.getLogger(__name__)

MAX_HOLE_PASSES = 64
#: Overlap (fraction of a cell's area) above which a cell counts as inside the polygon.
SLIVER = 1e-3
#: Area (cells) between outline and shortcut below which the refinement adds no vertex.
REFINE_TOLERANCE = 1.0
#: Chains and segments up to this many vertices / columns are measured in plain Python.
SHORT = 16


def refine_budget(max_vertices: int) -> int:
    """Vertices the top-down refinement may use before ear clipping trims to the bound: a
    margin of up to ``max_vertices`` (at most 32) buys area at tight bounds, cheaply."""
    return max_vertices + min(max_vertices, 32)


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


def ego_distance2(spec: GridSpec, ego_xy: tuple[float, float]) -> np.ndarray:
    """Squared distance (float32, height x width) from each cell centre to the ego point."""
    gx, gy = spec.cell_centers()
    return ((gx - ego_xy[0]) ** 2 + (gy - ego_xy[1]) ** 2).astype(np.float32)


def nearest_component(cells: np.ndarray, dist2: np.ndarray | None, min_cells: int = 1,
                      connectivity: int = 8) -> np.ndarray:
    """Bool mask of the component of ``cells`` (at least ``min_cells``) nearest the ego point.

    ``dist2`` is each cell's squared distance to the ego point (:func:`ego_distance2`);
    None picks the largest component.
    """
    src = np.ascontiguousarray(cells, dtype=bool).view(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(src, connectivity=connectivity)
    if n <= 1:
        return np.zeros(cells.shape, dtype=bool)
    good = stats[:, cv2.CC_STAT_AREA] >= max(1, min_cells)
    good[0] = False
    if not good.any():
        return np.zeros(cells.shape, dtype=bool)
    if dist2 is None:
        return labels == int(np.argmax(np.where(good, stats[:, cv2.CC_STAT_AREA], -1)))
    nearest = int(np.argmin(np.where(good[labels], dist2, np.inf)))
    return labels == labels.flat[nearest]


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
    if dist2 is None:
        dist2 = ego_distance2(spec, ego_xy)
    return nearest_component(grid == FREE, dist2, min_cells, connectivity=8)


def vehicle_component(grid: np.ndarray, spec: GridSpec, ego_xy: tuple[float, float] = (0.0, 0.0),
                      min_cells: int = 1) -> np.ndarray | None:
    """Bool (height, width): for a surround grid, the largest free 8-connected component
    that borders the vehicle's blind spot (the unknown region around ``ego_xy`` no camera
    sees: under and right beside the car); None where the ego point is not in an unknown
    region of the grid or no free component of ``min_cells`` touches it.

    Around a vehicle with cameras on every side the nearest free cell can be a sliver the
    cameras see next to the mirrors, while the road ahead and behind starts a few metres
    away; "connected to the vehicle" then means "reached from the vehicle's blind spot".
    """
    row, col = spec.cell_of(*ego_xy)
    if not (0 <= row < grid.shape[0] and 0 <= col < grid.shape[1]) \
            or grid[row, col] != UNKNOWN:
        return None
    unknown = np.ascontiguousarray(grid == UNKNOWN, dtype=np.uint8)
    _, blind = cv2.connectedComponents(unknown, connectivity=4)
    spot = blind == blind[row, col]
    near = cv2.dilate(spot.view(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    free = np.ascontiguousarray(grid == FREE, dtype=np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(free, connectivity=8)
    touching = np.unique(labels[near & (labels > 0)])
    touching = [k for k in touching if stats[k, cv2.CC_STAT_AREA] >= max(1, min_cells)]
    if not touching:
        return None
    best = max(touching, key=lambda k: stats[k, cv2.CC_STAT_AREA])
    return labels == best


# --- the region the polygon outlines ----------------------------------------------------------

def well_composed(mask: np.ndarray) -> np.ndarray:
    """``mask`` without corner-only contacts: no 2x2 block holds exactly two cells of the
    region on a diagonal. Of each such pair the cell with fewer 4-neighbours is dropped, so
    only ever cells are removed (a conservative change). Then the region and its complement
    have the same components under 4- and 8-connectivity, and its outline along cell edges
    never touches itself."""
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    for _ in range(10_000):
        a, b = m[:-1, :-1], m[:-1, 1:]
        c, d = m[1:, :-1], m[1:, 1:]
        diag_ad = a & d & ~b & ~c
        diag_bc = b & c & ~a & ~d
        if not (diag_ad.any() or diag_bc.any()):
            break
        nb = np.zeros(m.shape, np.int8)
        nb[1:] += m[:-1]
        nb[:-1] += m[1:]
        nb[:, 1:] += m[:, :-1]
        nb[:, :-1] += m[:, 1:]
        drop = np.zeros_like(m)
        r, k = np.nonzero(diag_ad)
        first = nb[r, k] <= nb[r + 1, k + 1]
        drop[r[first], k[first]] = True
        drop[r[~first] + 1, k[~first] + 1] = True
        r, k = np.nonzero(diag_bc)
        first = nb[r, k + 1] <= nb[r + 1, k]
        drop[r[first], k[first] + 1] = True
        drop[r[~first] + 1, k[~first]] = True
        m &= ~drop
    return m[1:-1, 1:-1]


def open_holes(component: np.ndarray) -> np.ndarray:
    """Cut each hole of a component to its outside with a one-cell channel.

    For each hole the shortest straight channel (up, down, left or right) through the
    component to the outside is removed. Returns a uint8 copy whose outer contour goes
    around every former hole.
    """
    comp = component.astype(np.uint8, copy=True)
    for _ in range(MAX_HOLE_PASSES):
        contours, hier = cv2.findContours(comp, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if hier is None or not (hier[0][:, 3] >= 0).any():
            return comp
        outer = [c for c, hh in zip(contours, hier[0], strict=True) if hh[3] < 0]
        filled = np.zeros_like(comp)
        cv2.drawContours(filled, outer, -1, 1, thickness=cv2.FILLED)
        holes = (filled != 0) & (comp == 0)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(
            holes.view(np.uint8), connectivity=4
        )
        for k in range(1, n):
            x0, y0 = stats[k, cv2.CC_STAT_LEFT], stats[k, cv2.CC_STAT_TOP]
            x1 = x0 + stats[k, cv2.CC_STAT_WIDTH] - 1
            y1 = y0 + stats[k, cv2.CC_STAT_HEIGHT] - 1
            best: tuple[int, tuple[slice, slice]] | None = None
            # (row, col) of the hole's extreme cell on each side, and the direction out
            cols = np.flatnonzero(labels[y0] == k)
            c_up = int(cols[len(cols) // 2])
            cols = np.flatnonzero(labels[y1] == k)
            c_dn = int(cols[len(cols) // 2])
            rows = np.flatnonzero(labels[:, x0] == k)
            r_lt = int(rows[len(rows) // 2])
            rows = np.flatnonzero(labels[:, x1] == k)
            r_rt = int(rows[len(rows) // 2])
            line = filled[:y0, c_up]
            out = np.flatnonzero(line == 0)
            start = int(out[-1]) + 1 if len(out) else 0
            cands = [(y0 - start, (slice(start, y0), slice(c_up, c_up + 1)))]
            line = filled[y1 + 1:, c_dn]
            out = np.flatnonzero(line == 0)
            stop = y1 + 1 + (int(out[0]) if len(out) else len(line))
            cands.append((stop - y1 - 1, (slice(y1 + 1, stop), slice(c_dn, c_dn + 1))))
            line = filled[r_lt, :x0]
            out = np.flatnonzero(line == 0)
            start = int(out[-1]) + 1 if len(out) else 0
            cands.append((x0 - start, (slice(r_lt, r_lt + 1), slice(start, x0))))
            line = filled[r_rt, x1 + 1:]
            out = np.flatnonzero(line == 0)
            stop = x1 + 1 + (int(out[0]) if len(out) else len(line))
            cands.append((stop - x1 - 1, (slice(r_rt, r_rt + 1), slice(x1 + 1, stop))))
            for length, cut in cands:
                if best is None or length < best[0]:
                    best = (length, cut)
            assert best is not None
            comp[best[1]] = 0
            filled[best[1]] = 0
    return comp


def polygon_region(component: np.ndarray, dist2: np.ndarray | None,
                   min_cells: int = 1) -> np.ndarray:
    """The cells a boundary polygon may cover: the 4-connected part of ``component`` nearest
    the ego point, well-composed and without holes (see the module docstring). Only ever
    removes cells from ``component``."""
    region = nearest_component(component, dist2, min_cells, connectivity=4)
    for _ in range(16):
        if not region.any():
            return region
        fixed = open_holes(well_composed(region)).astype(bool)
        if fixed.sum() == region.sum():  # both only remove cells: nothing changed
            return region
        region = nearest_component(fixed, dist2, min_cells, connectivity=4)
    log.debug("boundary region did not settle; using no free space")
    return np.zeros_like(region)


# --- exact outline ----------------------------------------------------------------------------

def lattice_outline(region: np.ndarray) -> np.ndarray:
    """Outline (N, 2) of a well-composed, hole-free, 4-connected region along cell edges.

    Vertices are cell corners in cell units (x = column, y = row, so cell (r, c) spans
    [c, c+1] x [r, r+1]), counter-clockwise (region on the left), corners only (collinear
    points dropped), not repeated at the end. Raises ValueError when the region has more
    than one boundary loop (holes, several components).
    """
    m = np.pad(np.asarray(region, dtype=bool), 1)
    wp = m.shape[1]  # padded; lattice vertex (x, y) of the unpadded grid is (x+1, y+1)
    inner = m[1:-1, 1:-1]
    rr, cc = np.nonzero(inner)
    if len(rr) == 0:
        return np.zeros((0, 2), np.int64)
    stride = wp + 1
    r, c = rr + 1, cc + 1
    starts, ends = [], []
    below = ~m[r - 1, c]  # edge y = r, direction +x
    starts.append(r[below] * stride + c[below])
    ends.append(r[below] * stride + c[below] + 1)
    above = ~m[r + 1, c]  # edge y = r+1, direction -x
    starts.append((r[above] + 1) * stride + c[above] + 1)
    ends.append((r[above] + 1) * stride + c[above])
    left = ~m[r, c - 1]  # edge x = c, direction -y
    starts.append((r[left] + 1) * stride + c[left])
    ends.append(r[left] * stride + c[left])
    right = ~m[r, c + 1]  # edge x = c+1, direction +y
    starts.append(r[right] * stride + c[right] + 1)
    ends.append((r[right] + 1) * stride + c[right] + 1)
    s = np.concatenate(starts)
    e = np.concatenate(ends)
    if len(np.unique(s)) != len(s):
        raise ValueError("region is not well-composed (a boundary vertex has two exits)")
    succ = dict(zip(s.tolist(), e.tolist(), strict=True))
    first = int(s.min())
    path = [first]
    v = succ[first]
    while v != first:
        path.append(v)
        v = succ[v]
    if len(path) != len(s):
        raise ValueError(f"region has {len(s) - len(path)} boundary edges off its outer loop "
                         "(holes or several components)")
    ids = np.asarray(path, np.int64)
    pts = np.stack([ids % stride - 1, ids // stride - 1], axis=1)
    prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    turn = _cross(prev, pts, nxt)
    return pts[turn != 0]


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (
        b[..., 0] - o[..., 0]
    )


# --- conservative simplification --------------------------------------------------------------

def _winding(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Winding numbers of points (px, py) with respect to the closed polygon ``poly``."""
    x1, y1 = poly[:, 0].astype(np.float64), poly[:, 1].astype(np.float64)
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    px, py = px[:, None], py[:, None]
    side = (x2 - x1) * (py - y1) - (px - x1) * (y2 - y1)
    up = (y1 <= py) & (y2 > py) & (side > 0)
    down = (y1 > py) & (y2 <= py) & (side < 0)
    return up.sum(axis=1) - down.sum(axis=1)


class _Region:
    """A bool cell mask padded by one ring of non-region cells, queried in cell units.

    Keeps, per column, the running count of non-region cells, so "are rows r0..r1 of
    column c all region" costs two lookups for any number of columns at once.
    """

    def __init__(self, region: np.ndarray) -> None:
        self.cells = np.pad(np.asarray(region, dtype=bool), 1)  # index [row + 1, col + 1]
        h, w = self.cells.shape
        self._bad = np.zeros((h + 1, w), np.int32)
        np.cumsum(~self.cells, axis=0, out=self._bad[1:])

    def rows_in(self, cols: np.ndarray, r0: np.ndarray, r1: np.ndarray) -> bool:
        """True when, for each column, the rows r0 .. r1 - 1 (cell units) are all region.

        Columns -1 .. width and rows -1 .. height (the padding ring) may be asked for; an
        empty range (r1 <= r0) is trivially fine.
        """
        c = cols + 1
        return not bool((self._bad[r1 + 1, c] - self._bad[r0 + 1, c] > 0).any())

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
            bad = self._bad
            for c in range(int(x0), int(x1)):
                ya, yb = y0 + (c - x0) * slope, y0 + (c + 1 - x0) * slope
                lo, hi = (ya, yb) if yb > ya else (yb, ya)
                if bad.item(math.ceil(hi) + 1, c + 1) > bad.item(math.floor(lo) + 1, c + 1):
                    return False
            return True
        cols = np.arange(int(x0), int(x1) + 1)
        ys = y0 + (cols - x0) * slope
        if y1 > y0:  # rising: each strip spans [y(c), y(c+1)]
            lo, hi = ys[:-1], ys[1:]
        else:
            lo, hi = ys[1:], ys[:-1]
        return self.rows_in(cols[:-1], np.floor(lo).astype(np.intp),
                            np.ceil(hi).astype(np.intp))


class _Shortcuts:
    """Tests whether replacing an outline chain by a straight shortcut keeps the polygon
    inside the region (see :meth:`ok`). Chains are slices of the outline repeated twice, so
    chain i..j (j < i + n) needs no modulo."""

    def __init__(self, region: np.ndarray, outline: np.ndarray) -> None:
        self.region = _Region(region)
        self.outline = outline
        self.n = n = len(outline)
        self.pts = np.concatenate([outline, outline]).astype(np.float64)
        x, y = self.pts[:, 0], self.pts[:, 1]
        # running sum of the shoelace terms: the area of chain i..j closed by its shortcut
        self._shoelace = np.concatenate([[0.0], np.cumsum(x[:-1] * y[1:] - x[1:] * y[:-1])])
        self._xs, self._ys = x.tolist(), y.tolist()
        h, w = region.shape
        self._stride = w + 1
        self._vertex = np.full((h + 1) * (w + 1), -1, np.intp)
        self._vertex[outline[:, 1] * (w + 1) + outline[:, 0]] = np.arange(n)

    def _touches_other_vertex(self, i: int, j: int) -> bool:
        """Whether the segment i-j passes through an outline vertex outside chain i..j (the
        polygon would touch itself there)."""
        p, q = self.outline[i % self.n], self.outline[j % self.n]
        dx, dy = int(q[0] - p[0]), int(q[1] - p[1])
        g = math.gcd(abs(dx), abs(dy))
        if g < 2:
            return False
        k = np.arange(1, g)
        ids = self._vertex[(int(p[1]) + k * (dy // g)) * self._stride + int(p[0])
                           + k * (dx // g)]
        ids = ids[ids >= 0]
        offset = (ids - i) % self.n
        in_chain = (offset > 0) & (offset < j - i)  # vertices the shortcut removes anyway
        return bool(len(ids) and not in_chain.all())

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
        (px, py), (qx, qy) = self.pts[i], self.pts[j]
        if px != qx and py != qy:
            return self.region.segment_in(px, py, qx, qy)
        # along a grid line: the cells on both sides that are not region must be outside
        if px == qx:
            y = np.arange(min(py, qy), max(py, qy)).astype(np.intp)
            rows = np.concatenate([y, y])
            cols = np.concatenate([np.full_like(y, int(px) - 1), np.full_like(y, int(px))])
        else:
            x = np.arange(min(px, qx), max(px, qx)).astype(np.intp)
            cols = np.concatenate([x, x])
            rows = np.concatenate([np.full_like(x, int(py) - 1), np.full_like(x, int(py))])
        outside = ~self.region.cells[rows + 1, cols + 1]
        if not outside.any():
            return True
        cx = cols[outside] + 0.5
        cy = rows[outside] + 0.5
        return not bool(_winding(cx, cy, self.chain(i, j)).any())

    def measure(self, i: int, j: int) -> tuple[float, int, int]:
        """(area between chain i..j and its shortcut, the chain vertex farthest from the
        shortcut, the vertex farthest on its inner side or -1 when none is)."""
        if j - i <= SHORT:
            return self._measure_short(i, j)
        pts = self.pts
        (px, py), (qx, qy) = pts[i], pts[j]
        inner = pts[i + 1:j]
        side = (qx - px) * (inner[:, 1] - py) - (qy - py) * (inner[:, 0] - px)  # > 0: left
        far = i + 1 + int(np.argmax(np.abs(side)))
        k = int(np.argmax(side))
        dip = i + 1 + k if side[k] > 0 else -1
        area = 0.5 * abs(float(self._shoelace[j] - self._shoelace[i]) + (qx * py - px * qy))
        return area, far, dip

    def _measure_short(self, i: int, j: int) -> tuple[float, int, int]:
        xs, ys = self._xs, self._ys
        px, py, qx, qy = xs[i], ys[i], xs[j], ys[j]
        dx, dy = qx - px, qy - py
        far = dip = -1
        far_v = dip_v = 0.0
        for k in range(i + 1, j):
            side = dx * (ys[k] - py) - dy * (xs[k] - px)
            if abs(side) > far_v or far < 0:
                far, far_v = k, abs(side)
            if side > dip_v:
                dip, dip_v = k, side
        area = 0.5 * abs(float(self._shoelace[j] - self._shoelace[i]) + (qx * py - px * qy))
        return area, far, dip


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

    def push(i: int, j: int) -> None:
        if j - i < 2:
            return
        area, far, dip = sc.measure(i, j)
        if dip >= 0 or not sc.ok(i, j):
            heapq.heappush(heap, (-math.inf, i, j, dip if dip >= 0 else far))
        else:
            heapq.heappush(heap, (-area, i, j, far))

    push(a, b)
    push(b, a + n)
    vertices = {a % n, b % n}
    while heap:
        negp, i, j, k = heap[0]
        prio = -negp
        if prio != math.inf and (len(vertices) >= max_vertices or prio <= tolerance):
            break
        heapq.heappop(heap)
        vertices.add(k % n)
        push(i, k)
        push(k, j)
    return np.asarray(sorted(vertices), np.intp)


def _point_in_triangles(px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray,
                        c: np.ndarray) -> np.ndarray:
    """(T, P) bool: points inside or on the (counter-clockwise) triangles a, b, c."""
    def side(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return ((v[:, 0] - u[:, 0])[:, None] * (py[None] - u[:, 1][:, None])
                - (v[:, 1] - u[:, 1])[:, None] * (px[None] - u[:, 0][:, None]))
    return (side(a, b) >= 0) & (side(b, c) >= 0) & (side(c, a) >= 0)


def clip_ears(pts: np.ndarray, max_vertices: int) -> np.ndarray:
    """Remove vertices of a simple counter-clockwise polygon until at most ``max_vertices``
    remain, the ears that lose least area first.

    Removing an ear (a convex vertex whose triangle holds no other vertex) only cuts that
    triangle off: the polygon stays simple and inside the old one. Every simple polygon with
    four or more vertices has two ears, so any bound >= 3 is met. Ears that are not
    neighbours stay ears when others go, so large polygons lose several per round.
    """
    pts = np.asarray(pts, dtype=np.float64)
    alive = np.arange(len(pts))
    target = max(3, max_vertices)
    while len(alive) > target:
        p = pts[alive]
        m = len(p)
        prev_i, next_i = np.roll(np.arange(m), 1), np.roll(np.arange(m), -1)
        prev, nxt = p[prev_i], p[next_i]
        cross = _cross(prev, p, nxt)
        cand = np.flatnonzero(cross >= 0)
        if not len(cand):
            break
        inside = _point_in_triangles(p[:, 0], p[:, 1], prev[cand], p[cand], nxt[cand])
        rows = np.arange(len(cand))
        inside[rows, cand] = inside[rows, prev_i[cand]] = inside[rows, next_i[cand]] = False
        ears = cand[~inside.any(axis=1) | (cross[cand] == 0)]
        if not len(ears):  # cannot happen for a simple polygon; keep what we have
            log.debug("ear clipping found no ear at %d vertices", m)
            break
        ears = ears[np.argsort(cross[ears], kind="stable")]
        budget = min(m - target, max(1, m // 16))
        taken = np.zeros(m, bool)
        picked = []
        for v in ears:
            if len(picked) == budget:
                break
            if not (taken[prev_i[v]] or taken[next_i[v]]):
                taken[v] = True
                picked.append(v)
        alive = np.delete(alive, picked)
    return pts[alive]


def signed_area(pts: np.ndarray) -> float:
    """Shoelace area of a closed polygon (N, 2); positive when counter-clockwise."""
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _crossings(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether segment p-q properly crosses each segment a[i]-b[i] (touching does not count)."""
    d1, d2 = _cross(p, q, a), _cross(p, q, b)
    d3, d4 = _cross(a, b, p), _cross(a, b, q)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


def is_simple(pts: np.ndarray, strict: bool = False) -> bool:
    """True when no two non-adjacent edges of the closed polygon properly cross; with
    ``strict`` also when no vertex lies on a non-adjacent edge (no touching either)."""
    n = len(pts)
    if n < 4:
        return True
    a, b = pts, np.roll(pts, -1, axis=0)
    cross = _crossings(a[:, None], b[:, None], a[None], b[None])
    i, j = np.triu_indices(n, 2)
    keep = ~((i == 0) & (j == n - 1))
    if cross[i[keep], j[keep]].any():
        return False
    if not strict:
        return True
    # vertex v on edge e (v not an end of e): collinear and within the edge's extent
    v = pts[:, None, :]
    on_line = _cross(a[None], b[None], v) == 0
    lo, hi = np.minimum(a, b)[None], np.maximum(a, b)[None]
    within = ((v >= lo) & (v <= hi)).all(axis=-1)
    idx = np.arange(n)
    ends = (idx[:, None] == idx[None]) | (idx[:, None] == (idx[None] + 1) % n)
    return not bool((on_line & within & ~ends).any())


def simplify_keep_simple(pts: np.ndarray, max_vertices: int) -> np.ndarray:
    """At most ``max_vertices`` vertices of a simple polygon, simple and inside it
    (ear clipping, :func:`clip_ears`; orientation is kept)."""
    pts = np.asarray(pts, dtype=np.float64)
    if signed_area(pts) < 0:
        return clip_ears(pts[::-1], max_vertices)[::-1]
    return clip_ears(pts, max_vertices)


# --- exact coverage ---------------------------------------------------------------------------

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
    q = np.roll(p, -1, axis=0)
    keep = p[:, 1] != q[:, 1]  # horizontal edges add nothing
    p, q = p[keep], q[keep]
    d = q - p
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
    xa, xb = p[e0, 0] + ta * d[e0, 0], p[e0, 0] + tb * d[e0, 0]
    ya, yb = p[e0, 1] + ta * d[e0, 1], p[e0, 1] + tb * d[e0, 1]
    j = np.floor(0.5 * (xa + xb)).astype(np.intp)
    i = np.floor(0.5 * (ya + yb)).astype(np.intp)
    dyp = yb - ya
    width = ww + 2  # a vertical edge on the right border lands in column ww
    area = np.bincount(i * width + j, dyp * ((j + 1) - 0.5 * (xa + xb)), hh * width)
    cover = np.bincount(i * width + j + 1, dyp, hh * width)
    cov = (area + np.cumsum(cover.reshape(hh, width), axis=1).ravel()).reshape(hh, width)
    cov = cov[:, :ww] * (-1.0 if signed_area(poly) > 0 else 1.0)
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


def boundary_polygon(
    component: np.ndarray, spec: GridSpec, max_vertices: int = 64,
    dist2: np.ndarray | None = None, min_cells: int = 1,
) -> np.ndarray:
    """Conservative outline (N, 2) x, y in grid_frame of free space (bool mask of free
    cells, e.g. ``grid == 0`` or one component), 3 <= N <= ``max_vertices`` or empty (0, 2):
    every cell the polygon covers is in ``component`` (see the module docstring). The
    polygon outlines the 4-connected part of at least ``min_cells`` cells nearest the ego
    point.

    Counter-clockwise, not repeated at the end (a geometry_msgs/Polygon is implicitly
    closed); vertices on cell corners. ``dist2`` (distance of cells to the ego point) picks
    the ego part when the region splits; by default the largest part.
    """
    if max_vertices < 4:
        raise ValueError(f"max_vertices = {max_vertices} must be >= 4")
    comp = np.asarray(component, dtype=bool)
    if not comp.any():
        return np.zeros((0, 2))
    region = polygon_region(comp, dist2, min_cells)
    if not region.any():
        return np.zeros((0, 2))
    try:
        outline = lattice_outline(region)
    except ValueError as exc:  # should not happen after polygon_region
        log.debug("boundary outline: %s", exc)
        return np.zeros((0, 2))
    pts = outline.astype(np.float64)
    if len(outline) > max_vertices:
        # a finer inner polygon first, then the ears that lose least area
        keep = refine_inside(region, outline, refine_budget(max_vertices))
        pts = outline[keep].astype(np.float64)
        if not is_simple(pts, strict=True):
            pts = outline.astype(np.float64)
        if len(pts) > max_vertices:
            pts = clip_ears(pts, max_vertices)
    if len(pts) < 3 or signed_area(pts) <= 0:
        return np.zeros((0, 2))
    xy = spec.origin + pts * spec.resolution
    if not covers_only(grid_to_cells(xy.astype(np.float32).astype(np.float64), spec), region):
        log.warning("free-space polygon failed its containment check; publishing none")
        return np.zeros((0, 2))
    return xy


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
    "boundary_polygon",
    "clean_mask",
    "clip_ears",
    "ego_component",
    "ego_distance2",
    "grid_to_cells",
    "is_simple",
    "lattice_outline",
    "nearest_component",
    "open_holes",
    "overclaimed_cells",
    "polygon_coverage",
    "polygon_region",
    "refine_inside",
    "signed_area",
    "simplify_keep_simple",
    "speckle_kernel",
    "vehicle_component",
    "well_composed",
]
