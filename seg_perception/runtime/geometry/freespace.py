"""The free-space boundary polygon: the free space a planner may treat as reachable.

The boundary is a conservative, simple polygon of the free region connected to the vehicle,
in ``grid_frame``: **every grid cell it covers is a cell the grid marks free**. "Covers" is
the strict reading a planner needs: a cell counts as inside the polygon as soon as the
polygon overlaps more than a sliver of it (:data:`.coverage.SLIVER`: 0.1 % of the cell's
area), not only when it holds the cell's centre. The sliver only absorbs number formats:
geometry_msgs/Point32 carries float32, which alone moves an edge by up to about 1e-5 of a
0.1 m cell at 40 m. :func:`.coverage.overclaimed_cells` measures exactly that (exact
polygon-cell overlap areas, :func:`.coverage.polygon_coverage`).

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

This module puts the steps together; each lives in its own module: the region
(:mod:`.free_region`), the outline and its refinement (:mod:`.outline`), ear clipping and
simplicity (:mod:`.polygon`), the exact check (:mod:`.coverage`).
"""

from __future__ import annotations

import logging

import numpy as np

from seg_perception.runtime.geometry.coverage import covers_only, grid_to_cells
from seg_perception.runtime.geometry.free_region import polygon_region
from seg_perception.runtime.geometry.grid import GridSpec
from seg_perception.runtime.geometry.outline import lattice_outline, refine_budget, refine_inside
from seg_perception.runtime.geometry.polygon import clip_ears, is_simple, signed_area

log = logging.getLogger(__name__)


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


__all__ = [
    "boundary_polygon",
]
