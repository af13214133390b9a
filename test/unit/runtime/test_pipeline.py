"""The frame pipeline: only what is asked is computed; why a frame has no grid; caches stay
bounded."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from seg_perception.runtime.config import PipelineConfig
from seg_perception.runtime.engine import SegResult
from seg_perception.runtime.geometry import (
    CameraCalibration,
    CameraModel,
    CameraMounting,
    DrivableAreaMapper,
    GridSpec,
)
from seg_perception.runtime.geometry.grid import TABLES_PER_LOOKUP
from seg_perception.runtime.geometry.mapper import LOOKUPS_PER_MAPPER
from seg_perception.runtime.pipeline import (
    GRID_OUTPUTS,
    IMAGE_OUTPUTS,
    JUMP_BACK_S,
    CameraFrame,
    CameraInfoBuffer,
    FramePipeline,
)
from seg_perception.sim.scene import SceneSpec, render_scene

CAM = CameraModel.from_fov(320, 180, 70.0)
MOUNT = CameraMounting(1.0, 0.0, 1.5, 0.0, math.radians(6), 0.0)


class TruthEngine:
    """Stands in for the network: the scene's exact labels, counting what it is asked."""

    class meta:  # noqa: N801 - mimics ModelMeta's attribute
        palette = [(128, 64, 128)] * 11

    def __init__(self, drivable: np.ndarray) -> None:
        self.drivable = drivable
        self.calls: list[bool] = []

    def __call__(self, rgb: np.ndarray, want_confidence: bool = True) -> SegResult:
        self.calls.append(want_confidence)
        labels = np.where(self.drivable, 3, 0).astype(np.uint8)
        conf = np.full(labels.shape, 200, np.uint8) if want_confidence else None
        return SegResult(labels, conf, self.drivable.astype(np.uint8) * 255, {"inference": 1.0})


@pytest.fixture
def scene() -> Any:
    return render_scene(SceneSpec(curvature=1 / 80), CAM, MOUNT,
                        PipelineConfig.from_params().grid)


def test_only_what_is_asked_is_computed(scene: Any) -> None:
    engine = TruthEngine(scene.drivable)
    pipe = FramePipeline(engine)
    cfg = PipelineConfig.from_params()
    frame = CameraFrame(scene.rgb, CameraCalibration.from_model(CAM), MOUNT)
    res = pipe.process(frame, cfg, {"labels"})
    assert res.labels is not None and res.confidence is None and res.overlay is None
    assert res.grid is None and res.boundary is None and engine.calls == [False]
    res = pipe.process(frame, cfg, {"confidence", "drivable/grid"})
    assert res.confidence is not None and res.grid is not None and res.boundary is None
    assert res.labels is None and res.drivable is None
    res = pipe.process(frame, cfg, set(IMAGE_OUTPUTS) | set(GRID_OUTPUTS))
    assert all(res.image(n) is not None for n in IMAGE_OUTPUTS)
    assert res.grid_spec == cfg.grid and res.grid_frame == "base_footprint"
    assert len(res.boundary) >= 3 and not res.lookup_built  # the lookup was built before
    np.testing.assert_array_equal(res.grid == -1, scene.grid == -1)
    assert pipe.process(frame, cfg, set()).labels is None and len(engine.calls) == 3


def test_why_a_frame_has_no_grid(scene: Any) -> None:
    pipe = FramePipeline(TruthEngine(scene.drivable))
    cfg = PipelineConfig.from_params()
    want = {"drivable/grid"}
    cal = CameraCalibration.from_model(CAM)
    assert pipe.process(CameraFrame(scene.rgb, None, MOUNT), cfg, want).no_grid == \
        "no camera_info"
    assert "pose unknown" in pipe.process(CameraFrame(scene.rgb, cal, None), cfg, want).no_grid
    big = CameraCalibration.from_model(CameraModel.from_fov(640, 360, 70.0))
    res = pipe.process(CameraFrame(scene.rgb, big, MOUNT), cfg, want)
    assert res.grid is None and "image is 320x180 but its camera_info describes 640x360" \
        in res.no_grid
    res = pipe.process(CameraFrame(scene.rgb, cal, MOUNT, rectified=True), cfg, want)
    assert res.grid is not None  # P = [K | 0]: a rectified monocular camera
    custom = CameraFrame(scene.rgb, None, MOUNT, no_grid="no transform from a to b")
    assert pipe.process(custom, cfg, want).no_grid == "no transform from a to b"


def test_mappers_follow_the_configuration_and_cameras(scene: Any) -> None:
    pipe = FramePipeline(TruthEngine(scene.drivable))
    a = PipelineConfig.from_params()
    b = PipelineConfig.from_params({"grid.resolution": 0.2})
    assert pipe.mapper("front", a) is pipe.mapper("front", a)
    assert pipe.mapper("front", a) is not pipe.mapper("front", b)
    assert pipe.mapper("front", a) is not pipe.mapper("rear", a)
    frame = CameraFrame(scene.rgb, CameraCalibration.from_model(CAM), MOUNT, camera="front")
    res = pipe.process(frame, b, {"drivable/grid"})
    assert res.grid.shape == b.grid.shape and res.grid_spec.resolution == 0.2
    assert pipe.process(frame, b, {"drivable/grid"}).lookup_built is False
    poly = pipe.boundary(res.grid, b, "front")
    assert len(poly) >= 3
    with pytest.raises(ValueError, match="grid shape"):
        pipe.boundary(res.grid, a)


def test_lookup_tables_per_frame_size_are_a_bounded_lru() -> None:
    mapper = DrivableAreaMapper(GridSpec(0.2, 0.0, 20.0, -5.0, 5.0), MOUNT)
    mapper.set_camera(CAM)
    lookup = mapper.lookup
    for i in range(12):  # ever-new mask sizes
        mapper.grid_from_mask(np.ones((90 + i, 160 + 2 * i), np.uint8))
        assert lookup._table.cache_info().currsize <= TABLES_PER_LOOKUP
    info = lookup._table.cache_info()
    assert info.currsize == TABLES_PER_LOOKUP and info.misses - info.currsize == 8  # evicted
    # the most recent sizes are the ones kept: a hit for the last, a rebuild for the first
    lookup.table((101, 182))
    assert lookup._table.cache_info().hits == info.hits + 1
    lookup.table((90, 160))
    assert lookup._table.cache_info().misses == info.misses + 1
    # camera models / poses that come back reuse their lookup (a small LRU too)
    other = CameraModel.from_fov(320, 180, 60.0)
    built = [mapper.set_view(m, MOUNT) for m in (other, CAM, other, CAM)]
    assert built == [True, False, False, False] and mapper.rebuilds == 2
    for k in range(LOOKUPS_PER_MAPPER + 2):
        mapper.set_view(CameraModel.from_fov(320, 180, 50.0 + k), MOUNT)
    assert mapper._lookup_for.cache_info().currsize == LOOKUPS_PER_MAPPER


def test_camera_info_pairing_by_stamp() -> None:
    buf = CameraInfoBuffer(size=4)
    a = CameraCalibration.from_model(CAM)
    b = CameraCalibration.from_model(CameraModel.from_fov(320, 180, 60.0))
    for i, cal in enumerate((a, a, b, a, b)):
        buf.add(1_000 + 100 * i, cal)
    assert buf.count == 5 and buf.latest_stamp == 1_400
    assert buf.match(1_200) == b and buf.match(1_250) is None
    assert buf.match(1_260, tolerance_s=50e-9) == a  # nearest within the tolerance
    assert buf.match(1_000) is None  # dropped: the buffer is bounded
    assert "nearest is 0.000 s away" in buf.describe_miss(1_250, 0.0)
    assert buf.wait_match(1_500, 0.0, timeout_s=0.05) is None  # nothing came
    assert buf.wait_match(1_250, 0.0, timeout_s=5.0) is None  # 1_300 arrived: no wait


def test_camera_info_history_starts_afresh_when_time_goes_back() -> None:
    """A looped bag: the second pass's camera_infos are all older than the 64 of the first
    pass the buffer holds. They must be kept (and pair with their frames), not be thrown
    away on arrival as the oldest; a small reordering is not a jump; ``process``'s
    whole-recording buffer keeps every stamp."""
    a = CameraCalibration.from_model(CAM)
    period, t0, n = 33_333_333, 1_700_000_000 * 10**9, 101
    buf = CameraInfoBuffer(size=64, jump_back_s=JUMP_BACK_S)
    for i in range(n):
        assert buf.add(t0 + i * period, a) is None
    paired, jumps = 0, []
    for i in range(n):  # the loop starts again at the first stamp
        jumps.append(buf.add(t0 + i * period, a))
        paired += buf.match(t0 + i * period) is not None
    assert paired == n and buf.jumps == 1
    assert jumps[0] == pytest.approx((n - 1) * period * 1e-9) and not any(jumps[1:])
    # a camera_info 50 ms late (out of order) is kept beside the others
    assert buf.add(t0 + (n - 3) * period - 50_000_000, a) is None and buf.jumps == 1
    # the worker saw the jump on an image first: the infos from before it go
    late = CameraInfoBuffer(size=64, jump_back_s=JUMP_BACK_S)
    for i in range(10):
        late.add(t0 + i * period, a)
    assert late.forget_after(t0 + 4 * period) == 5 and late.latest_stamp == t0 + 4 * period
    assert late.may_still_come(t0 + 5 * period, 0.0)
    assert not late.may_still_come(t0 + 4 * period, 0.0)  # there already
    assert not late.may_still_come(t0 + 3 * period + 1, 0.0)  # a later one came: none will
    # without the bound (the old buffer): the second pass is thrown away on arrival
    old = CameraInfoBuffer(size=64)
    for i in range(n):
        old.add(t0 + i * period, a)
    assert sum(old.add(t0 + i * period, a) is None and old.match(t0 + i * period) is not None
               for i in range(n)) == 64
    # process: the whole recording, stamps back and forth, all kept
    offline = CameraInfoBuffer(size=None)
    for i in [*range(n), *range(n)]:
        assert offline.add(t0 + i * period, a) is None
    assert all(offline.match(t0 + i * period) is not None for i in range(n))


def test_a_missing_calibration_is_explained_by_its_real_cause() -> None:
    a = CameraCalibration.from_model(CAM)
    buf = CameraInfoBuffer(size=4, jump_back_s=JUMP_BACK_S)
    assert buf.describe_miss(5, 0.0) == "no camera_info received yet"
    for i in range(4):
        buf.add(10 * 10**9 + i * 10**8, a)
    # near: the tolerance is the cure
    assert "raise camera_info_tolerance" in buf.describe_miss(10 * 10**9 + 5 * 10**7, 0.0)
    # an image older than every camera_info kept: raising the tolerance would not help
    why = buf.describe_miss(9 * 10**9 + 9 * 10**8, 0.0)
    assert "older than the 4 camera_infos kept" in why and "tolerance" not in why
    # seconds away (not older than all: the buffer is not full): different clocks
    two = CameraInfoBuffer(size=64, jump_back_s=JUMP_BACK_S)
    two.add(10 * 10**9, a)
    why = two.describe_miss(20 * 10**9, 0.05)
    assert "different clocks" in why and "tolerance" not in why


def test_colorize_table_lookup_equals_the_gather() -> None:
    """The OpenCV table lookup of uint8 ids gives exactly ``lut[labels]`` (every id, views
    that are not contiguous, and the fallback for other id types)."""
    from seg_perception.runtime.render import colorize, palette_lut

    rng = np.random.default_rng(0)
    lut = palette_lut(rng.integers(0, 256, (12, 3)).tolist())
    labels = rng.integers(0, 256, (37, 53)).astype(np.uint8)
    for ids in (labels, labels[:, ::2], labels.T):
        out = colorize(ids, lut)
        assert out.dtype == np.uint8 and np.array_equal(out, lut[ids])
    assert np.array_equal(colorize(labels.astype(np.int64), lut), lut[labels])
