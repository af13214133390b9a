"""The free region a planner may use: speckle cleaning, the ego component, the polygon's region.

Split from :mod:`.freespace` so the mask and cell-set work (OpenCV morphology and connected
components) reads apart from the polygon built on it. :func:`clean_mask` cleans the
drivable mask before projection; :func:`ego_component` and :func:`vehicle_component` pick
the free component connected to the vehicle; :func:`polygon_region` turns a free mask into
the well-composed, hole-free, 4-connected region the boundary polygon outlines (steps 1 of
:mod:`.freespace`'s docstring).
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from seg_perception.runtime.geometry.grid import FREE, UNKNOWN, GridSpec

log = logging.getLogger(__name__)

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

def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) bounding the nonzero cells (half-open), or None."""
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask, dtype=bool).view(np.uint8))
    return (y, y + h, x, x + w) if w else None


def _well_composed(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """:func:`well_composed` and whether it dropped any cell (worked on the mask's bounding
    box)."""
    mask = np.asarray(mask, dtype=bool)
    out = mask.copy()
    box = bbox(mask)
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
    box = bbox(component)
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


__all__ = [
    "MAX_HOLE_PASSES",
    "bbox",
    "clean_mask",
    "ego_component",
    "ego_distance2",
    "nearest_component",
    "open_holes",
    "polygon_region",
    "speckle_kernel",
    "vehicle_component",
    "well_composed",
]
