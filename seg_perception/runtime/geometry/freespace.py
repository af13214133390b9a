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

import bisect
import heapq
import logging
import math

import cv2
import numpy as np

from seg_perception.runtime.geometry.grid import FREE, UNKNOWN, GridSpec

log = logging.getLogger(__name__)

MAX_HOLE_PASSES = 64
#: Overlap (fraction of a cell's area) above which a cell counts as inside the polygon.
SLIVER = 1e-3
#: Area (cells) between outline and shortcut below which the refinement adds no vertex.
REFINE_TOLERANCE = 1.0
#: Chains and segments up to this many vertices / columns are measured in plain Python.
SHORT = 16
#: Ear clipping removes up to 1 / EAR_ROUND of the vertices per round.
EAR_ROUND = 16


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


def _component_areas(labels: np.ndarray, n: int) -> np.ndarray:
    """Cells per label 0 .. n-1: a histogram of the labels as uint8 where they fit (several
    times faster than bincount on int32; float32 counts are exact below 2**24 cells)."""
    if n <= 256 and labels.size < 2**24:
        hist = cv2.calcHist([labels.astype(np.uint8)], [0], None, [256], [0, 256])
        return hist.ravel()[:n].astype(np.int64)
    return np.bincount(labels.ravel(), minlength=n)


def nearest_component(cells: np.ndarray, dist2: np.ndarray | None, min_cells: int = 1,
                      connectivity: int = 8) -> np.ndarray:
    """Bool mask of the component of ``cells`` (at least ``min_cells``) nearest the ego point.

    ``dist2`` is each cell's squared distance to the ego point (:func:`ego_distance2`);
    None picks the largest component.
    """
    src = np.ascontiguousarray(cells, dtype=bool).view(np.uint8)
    n, labels = cv2.connectedComponents(src, connectivity=connectivity, ltype=cv2.CV_32S)
    if n <= 1:
        return np.zeros(cells.shape, dtype=bool)
    area = _component_areas(labels, n)
    good = area >= max(1, min_cells)
    good[0] = False
    count = int(np.count_nonzero(good))
    if count == 0:
        return np.zeros(cells.shape, dtype=bool)
    if count == 1:  # the usual case: one component is large enough
        return labels == int(np.flatnonzero(good)[0])
    if dist2 is None:
        return labels == int(np.argmax(np.where(good, area, -1)))
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

def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) bounding the nonzero cells (half-open), or None."""
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask, dtype=bool).view(np.uint8))
    return (y, y + h, x, x + w) if w else None


def _well_composed(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """:func:`well_composed` and whether it dropped any cell (worked on the mask's bounding
    box)."""
    mask = np.asarray(mask, dtype=bool)
    out = mask.copy()
    box = _bbox(mask)
    if box is None:
        return out, False
    r0, r1, c0, c1 = box
    crop = np.ascontiguousarray(mask[r0:r1, c0:c1]).view(np.uint8)
    m = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0).view(bool)
    changed = False
    for _ in range(10_000):
        a, b = m[:-1, :-1], m[:-1, 1:]
        c, d = m[1:, :-1], m[1:, 1:]
        diag = (a == d) & (b == c) & (a != b)  # two cells of the region on a diagonal
        if not diag.any():
            break
        changed = True
        diag_ad = diag & a
        diag_bc = diag & b
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
    if changed:
        out[r0:r1, c0:c1] = m[1:-1, 1:-1]
    return out, changed


def well_composed(mask: np.ndarray) -> np.ndarray:
    """``mask`` without corner-only contacts: no 2x2 block holds exactly two cells of the
    region on a diagonal. Of each such pair the cell with fewer 4-neighbours is dropped, so
    only ever cells are removed (a conservative change). Then the region and its complement
    have the same components under 4- and 8-connectivity, and its outline along cell edges
    never touches itself."""
    return _well_composed(mask)[0]


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


def _has_holes(component: np.ndarray) -> bool:
    """Whether the component encloses non-component cells (looked at on its bounding box)."""
    box = _bbox(component)
    if box is None:
        return False
    r0, r1, c0, c1 = box
    crop = np.ascontiguousarray(np.asarray(component, dtype=bool)[r0:r1, c0:c1]).view(np.uint8)
    crop = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    _, hier = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hier is not None and bool((hier[0][:, 3] >= 0).any())


def polygon_region(component: np.ndarray, dist2: np.ndarray | None,
                   min_cells: int = 1) -> np.ndarray:
    """The cells a boundary polygon may cover: the 4-connected part of ``component`` nearest
    the ego point, well-composed and without holes (see the module docstring). Only ever
    removes cells from ``component``."""
    region = nearest_component(component, dist2, min_cells, connectivity=4)
    for _ in range(16):
        if not region.any():
            return region
        fixed, dropped = _well_composed(region)
        cut = _has_holes(fixed)
        if cut:
            fixed = open_holes(fixed).astype(bool)
        if not (dropped or cut):  # both only remove cells: nothing changed
            return region
        part = nearest_component(fixed, dist2, min_cells, connectivity=4)
        if not cut and np.count_nonzero(part) == np.count_nonzero(fixed):
            # well-composed, without holes and still one piece: another pass changes nothing
            return part
        region = part
    log.debug("boundary region did not settle; using no free space")
    return np.zeros_like(region)


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
    box = _bbox(region)
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


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (
        b[..., 0] - o[..., 0]
    )


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
        box = box or _bbox(region) or (0, 1, 0, 1)
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
