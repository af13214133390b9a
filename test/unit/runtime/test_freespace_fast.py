"""The fast free-space helpers give what their plain definitions give (random inputs)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from seg_perception.runtime.geometry import polygon as pg
from seg_perception.runtime.geometry.coverage import polygon_coverage
from seg_perception.runtime.geometry.free_region import bbox, nearest_component, polygon_region
from seg_perception.runtime.geometry.outline import _Region, lattice_outline
from seg_perception.runtime.geometry.polygon import clip_ears, is_simple, signed_area


def blobs(rng: np.random.Generator, shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    """Random free space: a few filled ellipses minus a few obstacles, speckled."""
    m = np.zeros(shape, np.uint8)
    for _ in range(rng.integers(1, 4)):
        c = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        axes = (int(rng.integers(5, 30)), int(rng.integers(5, 25)))
        cv2.ellipse(m, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    for _ in range(rng.integers(0, 4)):
        c = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        cv2.circle(m, c, int(rng.integers(1, 5)), 0, -1)
    m[rng.random(shape) < 0.02] ^= 1
    return m.astype(bool)


def ref_nearest(cells: np.ndarray, dist2: np.ndarray | None, min_cells: int,
                connectivity: int) -> np.ndarray:
    _, labels, stats, _ = cv2.connectedComponentsWithStats(cells.astype(np.uint8),
                                                           connectivity=connectivity)
    good = stats[:, cv2.CC_STAT_AREA] >= max(1, min_cells)
    good[0] = False
    if not good.any():
        return np.zeros(cells.shape, bool)
    if dist2 is None:
        return labels == int(np.argmax(np.where(good, stats[:, cv2.CC_STAT_AREA], -1)))
    nearest = int(np.argmin(np.where(good[labels], dist2, np.inf)))
    return labels == labels.flat[nearest]


def ref_is_simple(pts: np.ndarray, strict: bool) -> bool:
    """All pairs of edges, no pruning."""
    n = len(pts)
    if n < 4:
        return True
    a, b = pts, np.roll(pts, -1, axis=0)
    cross = pg._crossings(a[:, None], b[:, None], a[None], b[None])
    i, j = np.triu_indices(n, 2)
    keep = ~((i == 0) & (j == n - 1))
    if cross[i[keep], j[keep]].any():
        return False
    if not strict:
        return True
    v = pts[:, None, :]
    on_line = pg._cross(a[None], b[None], v) == 0
    within = ((v >= np.minimum(a, b)[None]) & (v <= np.maximum(a, b)[None])).all(axis=-1)
    idx = np.arange(n)
    ends = (idx[:, None] == idx[None]) | (idx[:, None] == (idx[None] + 1) % n)
    return not bool((on_line & within & ~ends).any())


def ref_clip_ears(pts: np.ndarray, max_vertices: int) -> np.ndarray:
    """Ear clipping that re-tests every vertex each round."""
    pts = np.asarray(pts, dtype=np.float64)
    alive = np.arange(len(pts))
    target = max(3, max_vertices)
    while len(alive) > target:
        p = pts[alive]
        m = len(p)
        prev_i, next_i = np.roll(np.arange(m), 1), np.roll(np.arange(m), -1)
        cross = pg._cross(p[prev_i], p, p[next_i])
        cand = np.flatnonzero(cross >= 0)
        if not len(cand):
            break
        inside = pg._point_in_triangles(p[:, 0], p[:, 1], p[prev_i][cand], p[cand],
                                        p[next_i][cand])
        rows = np.arange(len(cand))
        inside[rows, cand] = inside[rows, prev_i[cand]] = inside[rows, next_i[cand]] = False
        ears = cand[~inside.any(axis=1) | (cross[cand] == 0)]
        if not len(ears):
            break
        ears = ears[np.argsort(cross[ears], kind="stable")]
        budget = min(m - target, max(1, m // pg.EAR_ROUND))
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


@pytest.mark.parametrize("seed", range(12))
def test_region_outline_and_components_match_their_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cells = blobs(rng)
    h, w = cells.shape
    gy, gx = np.mgrid[0:h, 0:w]
    dist2 = ((gx - w / 2) ** 2 + (gy - h) ** 2).astype(np.float32)
    for conn in (4, 8):
        for d2 in (dist2, None):
            for min_cells in (1, 30):
                assert np.array_equal(nearest_component(cells, d2, min_cells, conn),
                                      ref_nearest(cells, d2, min_cells, conn))
    region = polygon_region(cells, dist2, 10)
    assert not (region & ~cells).any()  # only removes cells
    if not region.any():
        return
    outline = lattice_outline(region)
    # exact: covers the region's cells fully and nothing else
    cov, outside = polygon_coverage(outline.astype(np.float64), region.shape)
    assert outside == 0 and np.allclose(cov, region)
    assert signed_area(outline.astype(np.float64)) == region.sum()  # counter-clockwise
    first = outline[0]
    assert (first[1], first[0]) == min((y, x) for x, y in outline.tolist())
    turn = pg._cross(np.roll(outline, 1, axis=0), outline, np.roll(outline, -1, axis=0))
    assert (turn != 0).all()  # corners only
    assert is_simple(outline, strict=True)


def test_outline_refuses_several_loops() -> None:
    two = np.zeros((6, 9), bool)
    two[1:3, 1:3] = two[3:5, 5:8] = True
    with pytest.raises(ValueError, match="outer loop"):
        lattice_outline(two)
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False
    with pytest.raises(ValueError, match="outer loop"):
        lattice_outline(ring)


@pytest.mark.parametrize("seed", range(40))
def test_is_simple_matches_all_pairs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 14))
    pts = rng.integers(0, 6, size=(n, 2)).astype(np.float64)  # many collinear touches
    for strict in (False, True):
        assert is_simple(pts, strict) == ref_is_simple(pts, strict)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("bound", [4, 9, 30])
def test_clip_ears_matches_clipping_from_scratch(seed: int, bound: int) -> None:
    rng = np.random.default_rng(seed)
    region = polygon_region(blobs(rng), None, 10)
    if not region.any():
        pytest.skip("no region")
    outline = lattice_outline(region).astype(np.float64)
    assert np.array_equal(clip_ears(outline, bound), ref_clip_ears(outline, bound))


def test_coverage_is_the_same_either_way_round() -> None:
    rng = np.random.default_rng(3)
    region = polygon_region(blobs(rng), None, 10)
    outline = lattice_outline(region).astype(np.float64) + 0.25
    a, oa = polygon_coverage(outline, region.shape)
    b, ob = polygon_coverage(outline[::-1], region.shape)
    assert np.allclose(a, b) and oa == pytest.approx(ob)


@pytest.mark.parametrize("seed", range(6))
def test_beside_in_matches_the_cells(seed: int) -> None:
    """The O(1) test of the cells on both sides of a grid-line segment."""
    rng = np.random.default_rng(seed)
    cells = blobs(rng, (30, 40))
    box = bbox(cells)
    if box is None:
        pytest.skip("empty")
    region = _Region(cells, box)
    r0, r1, c0, c1 = box
    padded = np.pad(cells, 1)  # cell (r, c) at [r + 1, c + 1]; rows/cols -1 are outside
    for _ in range(300):
        vertical = bool(rng.integers(2))
        a = int(rng.integers(c0, c1 + 1)) if vertical else int(rng.integers(r0, r1 + 1))
        lo, hi = sorted(int(v) for v in rng.integers(r0 if vertical else c0,
                                                     (r1 if vertical else c1) + 1, 2))
        if lo == hi:
            continue
        if vertical:  # x = a from y = lo to hi: columns a - 1 and a
            want = bool(padded[lo + 1:hi + 1, a:a + 2].all())
            got = region.beside_in(a, lo, a, hi) and region.beside_in(a, hi, a, lo)
        else:  # y = a from x = lo to hi: rows a - 1 and a
            want = bool(padded[a:a + 2, lo + 1:hi + 1].all())
            got = region.beside_in(lo, a, hi, a) and region.beside_in(hi, a, lo, a)
        assert got == want
