"""The persistent drivable map: window motion, log-odds rules, decay, hold, output, config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seg_perception.runtime.config import ConfigError
from seg_perception.runtime.geometry.camera import rpy_matrix
from seg_perception.runtime.geometry.drivable_map import (
    L_MAX,
    L_MIN,
    DrivableMap,
    MapConfig,
)
from seg_perception.runtime.geometry.grid import FREE, OCCUPIED, UNKNOWN, GridSpec
from seg_perception.runtime.geometry.transform import Transform

#: A small grid around the vehicle: 10 m x 6 m at 0.2 m (50 x 30 cells).
SPEC = GridSpec(0.2, -4.0, 6.0, -3.0, 3.0)
SMALL = MapConfig(size_x=20.0, size_y=20.0)
S = 1_000_000_000  # one second in ns
DT = S // 10


def pose(x: float = 0.0, y: float = 0.0, yaw: float = 0.0) -> Transform:
    return Transform.from_matrix(rpy_matrix(0.0, 0.0, yaw), (x, y, 0.0))


def grid_with(free: bool = True, occupied: tuple[tuple[float, float], ...] = ()) -> np.ndarray:
    """All free (or all unknown) with occupied cells at the grid-frame points given."""
    g = np.full(SPEC.shape, FREE if free else UNKNOWN, np.int8)
    for x, y in occupied:
        r, c = SPEC.cell_of(x, y)
        g[r, c] = OCCUPIED
    return g


UNSEEN = grid_with(free=False)


def at(m: DrivableMap, out: np.ndarray, x: float, y: float) -> int:
    r, c = m.cell_of(x, y)
    return int(out[r, c])


def lo_at(m: DrivableMap, x: float, y: float) -> float:
    r, c = m.cell_of(x, y)
    return float(m.log_odds[r, c])


def test_window_moves_with_the_vehicle_and_keeps_what_it_holds():
    m = DrivableMap(SMALL)
    g = grid_with(occupied=((2.1, 0.1),))
    for k in range(5):
        m.update(g, SPEC, pose(), k * DT)
    out = m.grid()
    assert at(m, out, 2.1, 0.1) == OCCUPIED
    assert at(m, out, 1.1, -1.1) == FREE
    origin0 = m.origin
    # drive 10 m along x, then 3 m along y with a turn, seeing nothing
    m.update(UNSEEN, SPEC, pose(10.0, 0.0), 5 * DT)
    m.update(UNSEEN, SPEC, pose(10.0, 3.0, 0.7), 6 * DT)
    out = m.grid()
    assert m.origin == pytest.approx((origin0[0] + 10.0, origin0[1] + 3.0))
    assert at(m, out, 2.1, 0.1) == OCCUPIED  # still where it is in the odom frame
    assert at(m, out, 1.1, -1.1) == FREE
    assert at(m, out, 2.1, 0.3) == FREE and at(m, out, 2.3, 0.1) == FREE
    # what entered the window is unknown; what left it is gone for good
    assert at(m, out, 19.9, 12.9) == UNKNOWN
    m.update(UNSEEN, SPEC, pose(40.0, 3.0), 7 * DT)
    m.update(UNSEEN, SPEC, pose(0.0, 0.0), 8 * DT)
    assert at(m, m.grid(), 2.1, 0.1) == UNKNOWN
    assert np.all(m.grid() == UNKNOWN)


def test_window_is_centred_on_the_vehicle_on_the_map_lattice():
    m = DrivableMap(SMALL)
    m.update(UNSEEN, SPEC, pose(3.33, -7.71, 1.0), 0)
    h, w = SMALL.shape
    x0, y0 = m.origin
    assert x0 / SMALL.resolution == pytest.approx(round(x0 / SMALL.resolution))
    assert abs(x0 + w * SMALL.resolution / 2 - 3.33) <= SMALL.resolution
    assert abs(y0 + h * SMALL.resolution / 2 + 7.71) <= SMALL.resolution


def test_unseen_cells_decay_toward_unknown_by_stamp_time():
    cfg = MapConfig(size_x=20.0, size_y=20.0, decay_s=2.0)
    m = DrivableMap(cfg)
    for k in range(10):
        m.update(grid_with(), SPEC, pose(), k * DT)
    t0 = 9 * DT
    assert lo_at(m, 1.1, 1.1) == pytest.approx(L_MIN)
    m.update(UNSEEN, SPEC, pose(), t0 + 2 * S)  # one decay time constant later
    assert lo_at(m, 1.1, 1.1) == pytest.approx(L_MIN / math.e, rel=1e-5)
    assert at(m, m.grid(), 1.1, 1.1) != UNKNOWN  # still known after map.decay_s
    assert at(m, m.grid(), 1.1, 1.1) != FREE  # but no longer confident enough to be free
    m.update(UNSEEN, SPEC, pose(), t0 + 20 * S)
    assert at(m, m.grid(), 1.1, 1.1) == UNKNOWN
    # the same time in many short cycles decays exactly as much as in one
    a, b = DrivableMap(cfg), DrivableMap(cfg)
    for mm in (a, b):
        for k in range(10):
            mm.update(grid_with(), SPEC, pose(), k * DT)
    for k in range(1, 31):
        a.update(UNSEEN, SPEC, pose(), t0 + k * DT)
    b.update(UNSEEN, SPEC, pose(), t0 + 30 * DT)
    np.testing.assert_allclose(a.log_odds, b.log_odds, rtol=1e-5)
    assert np.array_equal(a.grid(), b.grid())


def test_occupied_at_once_even_on_a_confident_free_cell():
    m = DrivableMap(SMALL)
    for k in range(20):
        m.update(grid_with(), SPEC, pose(), k * DT)
    assert at(m, m.grid(), 2.1, 0.1) == FREE
    m.update(grid_with(occupied=((2.1, 0.1),)), SPEC, pose(), 20 * DT)
    assert at(m, m.grid(), 2.1, 0.1) == OCCUPIED
    assert at(m, m.grid(), 1.1, 0.1) == FREE


def test_free_only_after_the_threshold_and_the_hold():
    m = DrivableMap(MapConfig(size_x=20.0, size_y=20.0, miss=-0.4, occupied_hold_s=2.0))
    values = []
    for k in range(4):
        m.update(grid_with(), SPEC, pose(), k * DT)
        values.append(at(m, m.grid(), 1.1, 1.1))
    # -0.4, -0.8, -1.2 (p free 0.60 .. 0.77, below 0.8), then -1.6: free
    assert all(1 <= v <= 49 for v in values[:3]) and values[3] == FREE
    # a cell seen occupied once stays not free for the hold, however much free it is seen
    m.update(grid_with(occupied=((1.1, 1.1),)), SPEC, pose(), 10 * DT)
    t_occ = 10 * DT
    k = 11
    while (k * DT - t_occ) <= 2 * S:
        m.update(grid_with(), SPEC, pose(), k * DT)
        assert at(m, m.grid(), 1.1, 1.1) == OCCUPIED, k
        k += 1
    assert lo_at(m, 1.1, 1.1) == pytest.approx(L_MIN)  # the evidence itself says free
    m.update(grid_with(), SPEC, pose(), k * DT)
    assert at(m, m.grid(), 1.1, 1.1) == FREE


def test_log_odds_are_clamped():
    m = DrivableMap(MapConfig(size_x=20.0, size_y=20.0, miss=-0.4, occupied_hold_s=0.0))
    occ = grid_with(occupied=((1.1, 1.1),))
    for k in range(50):
        m.update(occ, SPEC, pose(), k * DT)
    assert lo_at(m, 1.1, 1.1) == pytest.approx(L_MAX)
    assert lo_at(m, 0.1, 0.1) == pytest.approx(L_MIN)
    # from the clamp, a bounded number of free observations makes it free again:
    # (3.5 + 1.386) / 0.4 -> 13
    free = grid_with()
    n = 0
    while at(m, m.grid(), 1.1, 1.1) != FREE:
        n += 1
        m.update(free, SPEC, pose(), (50 + n) * DT)
        assert n <= 13
    assert n == 13
    # and from the free clamp one occupied observation makes it occupied at once
    for k in range(10):
        m.update(free, SPEC, pose(), (51 + n + k) * DT)
    assert lo_at(m, 1.1, 1.1) == pytest.approx(L_MIN)
    m.update(occ, SPEC, pose(), (61 + n) * DT)
    assert lo_at(m, 1.1, 1.1) == pytest.approx(L_MIN + 0.85)
    assert at(m, m.grid(), 1.1, 1.1) == OCCUPIED


def test_time_going_back_clears_the_map():
    m = DrivableMap(SMALL)
    for k in range(5):
        assert m.update(grid_with(occupied=((2.1, 0.1),)), SPEC, pose(), 100 * S + k * DT) is False
    # slightly out of order (within TIME_JUMP_NS): folded in, nothing cleared
    assert m.update(UNSEEN, SPEC, pose(), 100 * S - S // 2) is False
    assert at(m, m.grid(), 2.1, 0.1) == OCCUPIED
    # a looped bag: back to the start
    assert m.update(UNSEEN, SPEC, pose(), 5 * S) is True
    assert np.all(m.grid() == UNKNOWN)
    assert m.stamp_ns == 5 * S
    assert m.update(grid_with(), SPEC, pose(), 5 * S + DT) is False
    assert at(m, m.grid(), 2.1, 0.1) != OCCUPIED


@pytest.mark.parametrize(("field", "value", "says"), [
    ("frame", "", "map.frame"),
    ("frame", "/odom", "map.frame"),
    ("size_x", 0.0, "map.size_x"),
    ("size_y", -5.0, "map.size_y"),
    ("resolution", 0.0, "map.resolution"),
    ("resolution", math.nan, "map.resolution"),
    ("hit", -0.5, "map.hit"),
    ("hit", 0.05, "map.hit"),
    ("miss", 0.4, "map.miss"),
    ("miss", -9.0, "map.miss"),
    ("decay_s", 0.0, "map.decay_s"),
    ("decay_s", math.inf, "map.decay_s"),
    ("free_threshold", 0.5, "map.free_threshold"),
    ("free_threshold", 0.9, "map.free_threshold"),
    ("occupied_hold_s", -1.0, "map.occupied_hold_s"),
    ("hit", "0.85", "map.hit"),
])
def test_bad_config_values_are_refused_in_one_line(field, value, says):
    cfg = MapConfig(**{field: value})
    with pytest.raises(ConfigError) as err:
        DrivableMap(cfg)
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(says + "="), lines


def test_every_wrong_value_gets_its_own_line():
    cfg = MapConfig(hit=-1.0, miss=1.0, decay_s=-2.0)
    lines = cfg.problems()
    assert len(lines) == 3
    assert {ln.split("=")[0] for ln in lines} == {"map.hit", "map.miss", "map.decay_s"}
    with pytest.raises(ConfigError):
        cfg.validate()
    big = MapConfig(size_x=1000.0, size_y=1000.0, resolution=0.1)
    assert len(big.problems()) == 1 and "cells" in big.problems()[0]
    assert MapConfig().validate() == MapConfig()
    assert MapConfig().shape == (300, 300)


def test_output_convention():
    m = DrivableMap(SMALL)
    assert m.grid().dtype == np.int8 and m.grid().shape == SMALL.shape
    assert np.all(m.grid() == UNKNOWN)
    rng = np.random.default_rng(3)
    for k in range(6):
        g = rng.choice(np.array([FREE, OCCUPIED, UNKNOWN], np.int8), SPEC.shape, p=(.6, .2, .2))
        m.update(g, SPEC, pose(0.3 * k, 0.1 * k, 0.05 * k), k * DT)
    out = m.grid()
    vals = set(np.unique(out).tolist())
    assert vals <= {UNKNOWN} | set(range(0, 50)) | {OCCUPIED}
    assert {UNKNOWN, FREE, OCCUPIED} <= vals
    assert vals & set(range(1, 50))  # unconfirmed free evidence in between
    # every value between 0 and 100 is round(100 p) of its log-odds
    lo = m.log_odds
    mid = (out > 0) & (out < OCCUPIED)
    p = 100.0 / (1.0 + np.exp(-lo[mid].astype(np.float64)))
    assert np.all(np.abs(out[mid] - p) <= 0.5 + 1e-6)
    assert np.all(lo[out == FREE] <= MapConfig().free_log_odds)


def test_same_inputs_same_map():
    rng = np.random.default_rng(5)
    seq = [(rng.choice(np.array([FREE, OCCUPIED, UNKNOWN], np.int8), SPEC.shape),
            pose(*rng.uniform(-2, 2, 2), rng.uniform(-3, 3)), k * DT) for k in range(8)]
    outs = []
    for _ in range(2):
        m = DrivableMap(SMALL)
        for g, t, s in seq:
            m.update(g, SPEC, t, s)
        outs.append((m.grid(), m.log_odds.copy(), m.origin))
    assert np.array_equal(outs[0][0], outs[1][0])
    assert np.array_equal(outs[0][1], outs[1][1])
    assert outs[0][2] == outs[1][2]


def test_aligned_grid_maps_cell_for_cell():
    """Same resolution, lattice-aligned, no rotation: the observation is the grid itself."""
    rng = np.random.default_rng(7)
    g = rng.choice(np.array([FREE, OCCUPIED, UNKNOWN], np.int8), SPEC.shape)
    m = DrivableMap(SMALL)
    m.update(UNSEEN, SPEC, pose(2.0, -1.0), 0)
    obs = m.observation(g, SPEC, pose(2.0, -1.0))
    r, c = m.cell_of(2.0 + SPEC.x_min + 0.1, -1.0 + SPEC.y_min + 0.1)
    assert np.array_equal(obs[r:r + SPEC.height, c:c + SPEC.width], g)
    assert (obs != UNKNOWN).sum() == (g != UNKNOWN).sum()


def _samples_in_grid(m: DrivableMap, t: Transform, rows: np.ndarray, cols: np.ndarray):
    """Grid-frame positions of the centre and the four inset corners of map cells."""
    res = m.resolution
    x0, y0 = m.origin
    out = []
    for ox, oy in ((0.5, 0.5), (0.05, 0.05), (0.95, 0.05), (0.05, 0.95), (0.95, 0.95)):
        pts = np.column_stack([x0 + (cols + ox) * res, y0 + (rows + oy) * res,
                               np.zeros(len(rows))])
        out.append(t.inverse().apply(pts)[:, :2])
    return out


@pytest.mark.parametrize("yaw", [0.0, 0.3, math.pi / 4, 1.1, 2.5, -0.8])
def test_resampling_rule(yaw):
    """Free: the centre and four points just inside the corners all in free grid cells.
    Occupied: the cell holds an occupied grid cell's centre, or two of its corner points lie
    in occupied grid cells. Else not observed."""
    rng = np.random.default_rng(11)
    g = rng.choice(np.array([FREE, OCCUPIED, UNKNOWN], np.int8), SPEC.shape, p=(.7, .1, .2))
    t = pose(5.07, -2.91, yaw)
    m = DrivableMap(SMALL)
    m.update(UNSEEN, SPEC, t, 0)
    obs = m.observation(g, SPEC, t)
    rows, cols = np.indices(obs.shape).reshape(2, -1)
    vals, near_line = [], np.zeros(len(rows), bool)
    for p in _samples_in_grid(m, t, rows, cols):
        fc = (p[:, 0] - SPEC.x_min) / SPEC.resolution
        fr = (p[:, 1] - SPEC.y_min) / SPEC.resolution
        # cv2 rounds in fixed point (1/1024 cell): skip points that close to a cell line
        near_line |= (np.abs(fc - np.rint(fc)) < 1.5e-3) | (np.abs(fr - np.rint(fr)) < 1.5e-3)
        c, r = np.floor(fc).astype(int), np.floor(fr).astype(int)
        inside = (c >= 0) & (c < SPEC.width) & (r >= 0) & (r < SPEC.height)
        v = np.full(len(rows), UNKNOWN, np.int8)
        v[inside] = g[r[inside], c[inside]]
        vals.append(v)
    vals = np.stack(vals)
    # map cells holding the centre of an occupied grid cell
    gx, gy = SPEC.cell_centers()
    occ = g == OCCUPIED
    centres = t.apply(np.column_stack([gx[occ], gy[occ], np.zeros(occ.sum())]))
    holds = np.zeros(obs.shape, bool)
    hr = np.floor(centres[:, 1] / SMALL.resolution).astype(int) - m.origin_cells[1]
    hc = np.floor(centres[:, 0] / SMALL.resolution).astype(int) - m.origin_cells[0]
    holds[hr, hc] = True
    want = np.full(len(rows), UNKNOWN, np.int8)
    want[(vals == FREE).all(axis=0)] = FREE
    want[((vals[1:] == OCCUPIED).sum(axis=0) >= 2) | holds.ravel()] = OCCUPIED
    got = obs.ravel()
    assert np.array_equal(got[~near_line], want[~near_line])
    assert near_line.mean() < 0.1
    assert (got == FREE).sum() > 200 and (got == OCCUPIED).sum() > 100


@pytest.mark.parametrize("yaw", np.linspace(0.0, math.pi / 2, 9))
def test_one_occupied_grid_cell_marks_the_map_cell_under_its_centre(yaw):
    """However the grids are turned, an isolated occupied cell (a pole, or a segmentation
    flip) is occupied in the map at once, in the cell its centre projects to and at most one
    more: it does not spread to the four cells whose corners it touches."""
    for dx, dy in ((0.0, 0.0), (0.07, 0.13), (0.099, 0.101), (0.13, 0.02)):
        t = pose(5.0 + dx, -3.0 + dy, yaw)
        m = DrivableMap(SMALL)
        m.update(grid_with(occupied=((1.1, 0.5),)), SPEC, t, 0)
        out = m.grid()
        x, y, _ = t.apply(np.array([[1.1, 0.5, 0.0]]))[0]
        assert at(m, out, x, y) == OCCUPIED
        assert 1 <= (out == OCCUPIED).sum() <= 2


@pytest.mark.parametrize("yaw", [0.0, 0.3, math.pi / 4, 1.1, 2.5, -0.8])
def test_resampling_never_frees_a_cell_well_across_a_free_edge(yaw):
    """A straight edge (grid cells free when their centre is on one side): no map cell whose
    centre lies across it by more than 0.26 of a cell reads free, whatever the rotation
    (the nearest cell to the centre alone would allow 0.71)."""
    gx, gy = SPEC.cell_centers()
    for angle in np.linspace(0.0, math.pi, 7):
        normal = np.array([math.cos(angle), math.sin(angle)])
        g = np.where(gx * normal[0] + gy * normal[1] < 0.53, FREE, OCCUPIED).astype(np.int8)
        t = pose(5.07, -2.91, yaw)
        m = DrivableMap(SMALL)
        m.update(UNSEEN, SPEC, t, 0)
        obs = m.observation(g, SPEC, t)
        rows, cols = np.nonzero(obs == FREE)
        centre = _samples_in_grid(m, t, rows, cols)[0]
        assert np.all(centre @ normal < 0.53 + 0.26 * SMALL.resolution)
        assert len(rows) > 0.6 * (g == FREE).sum()


def test_wrong_grids_are_refused():
    m = DrivableMap(SMALL)
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros((3, 3), np.int8), SPEC, pose(), 0)
    with pytest.raises(ValueError, match="int8"):
        m.update(np.zeros(SPEC.shape, np.int16), SPEC, pose(), 0)
