"""The frame cycle (runtime.pipeline.CycleRunner) on a surround rig with exact truth: what
reaches the sink, in which order, and why a frame has no grid."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from seg_perception.runtime.config import PipelineConfig
from seg_perception.runtime.engine import SegResult
from seg_perception.runtime.geometry import CameraCalibration, Transform
from seg_perception.runtime.geometry.grid import FREE, OCCUPIED
from seg_perception.runtime.pipeline import (
    GRID_OUTPUTS,
    IMAGE_OUTPUTS,
    Cycle,
    CycleFrame,
    CycleRunner,
    FramePipeline,
    FusedGrid,
    MapUpdate,
    PoseResult,
)
from seg_perception.sim.rig import SURROUND_GRID, render_rig, surround_rig
from seg_perception.sim.scene import SceneSpec

W, H = 160, 120
RIG = surround_rig(width=W, height=H)
CONFIG = PipelineConfig.from_params({"grid.resolution": SURROUND_GRID.resolution,
                                     "grid.x_min": SURROUND_GRID.x_min,
                                     "grid.x_max": SURROUND_GRID.x_max,
                                     "grid.y_min": SURROUND_GRID.y_min,
                                     "grid.y_max": SURROUND_GRID.y_max})


class TruthEngine:
    """The rig's exact drivable masks instead of a network, one batch per call."""

    class meta:  # noqa: N801 - mimics ModelMeta's attribute
        palette = [(128, 64, 128)] * 11

    def __init__(self, masks: dict[int, np.ndarray]) -> None:
        self.masks = masks  # id(rgb) -> drivable mask
        self.batches: list[int] = []

    def run_batch(self, rgbs: list[np.ndarray], confs: list[bool]) -> list[SegResult]:
        self.batches.append(len(rgbs))
        out = []
        for rgb in rgbs:
            mask = self.masks[id(rgb)]
            labels = np.where(mask, 3, 0).astype(np.uint8)
            out.append(SegResult(labels, None, mask.astype(np.uint8) * 255, {}))
        return out


class Recorder:
    """Context and sink at once: calibration and pose from the rig (none for ``missing``),
    every sink call noted in order."""

    def __init__(self, missing: set[str] = frozenset()) -> None:
        self.missing = missing
        self.calls: list[tuple[str, str]] = []
        self.fused: list[FusedGrid] = []

    def calibration(self, frame: CycleFrame) -> tuple[CameraCalibration | None, str | None]:
        if frame.camera in self.missing:
            return None, f"no camera_info for {frame.camera}"
        return CameraCalibration.from_model(RIG.camera(frame.camera).model), None

    def pose(self, frame: CycleFrame) -> PoseResult:
        return PoseResult(RIG.camera(frame.camera).mounting, "parameters", "test")

    def images(self, frame: CycleFrame) -> None:
        self.calls.append(("images", frame.camera))

    def grid(self, frame: CycleFrame) -> None:
        self.calls.append(("grid", frame.camera))

    def fused_grid(self, cycle: Cycle, fused: FusedGrid) -> None:
        self.calls.append(("fused", ",".join(fused.cameras)))
        self.fused.append(fused)


@pytest.fixture(scope="module")
def scene() -> object:
    return render_rig(SceneSpec(), RIG, SURROUND_GRID)


def _frames(scene: object, engine: TruthEngine, want: set[str]) -> list[CycleFrame]:
    frames = []
    for k, name in enumerate(RIG.names):
        view = scene.views[name]
        rgb = view.rgb.copy()
        engine.masks[id(rgb)] = view.drivable
        frames.append(CycleFrame(name, rgb, 1_000 + k, f"{name}_optical", CONFIG, set(want)))
    return frames


def test_a_cycle_is_one_batch_images_first_then_grids_then_the_fused_grid(scene: object
                                                                         ) -> None:
    engine = TruthEngine({})
    sink = Recorder()
    runner = CycleRunner(FramePipeline(engine), sink, sink)
    frames = _frames(scene, engine, set(IMAGE_OUTPUTS) | set(GRID_OUTPUTS))
    cycle = runner.start(frames, CONFIG, {"drivable/grid"})
    assert cycle is not None and engine.batches == [4] and sink.calls == []
    runner.finish_images(cycle)
    assert sink.calls == [("images", n) for n in RIG.names]
    assert all(f.result is not None and f.result.labels is not None for f in frames)
    runner.finish_grids(cycle)
    assert sink.calls[4:] == [("grid", n) for n in RIG.names] + [("fused", ",".join(RIG.names))]
    fused = sink.fused[0]
    assert fused.stamp_ns == 1_003  # the newest frame's stamp
    # the exact masks give the exact fused truth (up to the mapper's seen-consistency)
    truth = scene.fused
    seen = (fused.grid != -1) & (truth != -1)
    assert seen.mean() > 0.2
    agree = (fused.grid[seen] == truth[seen]).mean()
    assert agree > 0.97, agree
    assert {"inference", "images"} <= set(cycle.timings)


def test_a_frame_without_calibration_says_why_and_the_others_still_fuse(scene: object) -> None:
    engine = TruthEngine({})
    sink = Recorder(missing={"rear"})
    runner = CycleRunner(FramePipeline(engine), sink, sink)
    frames = _frames(scene, engine, {"labels", "drivable/grid"})
    runner.run(frames, CONFIG, {"drivable/grid"})
    rear = frames[RIG.names.index("rear")]
    assert rear.result.grid is None and rear.result.no_grid == "no camera_info for rear"
    assert ("grid", "rear") in sink.calls  # the sink hears of it, to say so
    fused = sink.fused[0]
    assert "rear" not in fused.cameras and len(fused.cameras) == 3
    assert (fused.grid == FREE).any() and (fused.grid == OCCUPIED).any()


def test_only_image_outputs_asked_make_no_grid_and_no_fusion(scene: object) -> None:
    engine = TruthEngine({})
    sink = Recorder()
    runner = CycleRunner(FramePipeline(engine), sink, sink)
    frames = _frames(scene, engine, {"labels"})
    cycle = runner.run(frames, CONFIG)
    assert [c for c, _ in sink.calls] == ["images"] * 4 and cycle.fused is None
    assert all(f.result.grid is None and f.calibration is None for f in frames)


def test_an_empty_cycle_is_none() -> None:
    sink = Recorder()
    runner = CycleRunner(FramePipeline(TruthEngine({})), sink, sink)
    assert runner.start([], CONFIG) is None and runner.run([], CONFIG) is None


class MapContext(Recorder):
    """The recorder with the vehicle's odom pose by stamp (None: no transform then)."""

    def __init__(self, pose: Callable[[int], Transform | None]) -> None:
        super().__init__()
        self.pose_at = pose
        self.maps: list[MapUpdate] = []

    def map_transform(self, target: str, source: str, stamp_ns: int, timeout: float
                      ) -> tuple[Transform | None, str | None]:
        pose = self.pose_at(stamp_ns)
        return (pose, None) if pose is not None else (None, f"no {target} <- {source}")

    def drivable_map(self, cycle: Cycle, update: MapUpdate) -> None:
        self.calls.append(("map", update.frame))
        self.maps.append(update)


def _odom(x: float) -> Transform:
    return Transform.from_matrix(np.eye(3), (x, 0.0, 0.0))


def test_the_cycle_grid_goes_into_the_persistent_map_with_its_odom_pose(scene: object) -> None:
    """Each cycle's fused grid is folded into the map at its odom pose (free after a few
    agreeing cycles, occupied at once); a cycle without the transform leaves the map as it
    was and says why; the window follows the vehicle in odom."""
    engine = TruthEngine({})
    sink = MapContext(lambda t: _odom(0.0) if t < 50_000 else None if t < 60_000
                      else _odom(10.0))
    runner = CycleRunner(FramePipeline(engine), sink, sink)
    want = {"drivable/grid"}

    def cycle_at(offset: int) -> Cycle:
        frames = _frames(scene, engine, want)
        for f in frames:
            f.stamp_ns += offset
        return runner.run(frames, CONFIG, set(), fuse=True, map_key="")

    for k in range(5):  # 5 agreeing cycles at the same pose
        cycle = cycle_at(10_000 * k)
        assert cycle.fused is not None and sink.calls[-1] == ("map", "odom")
    first = sink.maps[-1]
    assert first.map is not None and not first.cleared and "map" in cycle.timings
    grid0 = first.map.grid().copy()
    assert (grid0 == FREE).any() and (grid0 == OCCUPIED).any()
    assert first.spec.shape == grid0.shape
    assert first.map.origin == pytest.approx((-30.0, -30.0))  # 60 m centred on the vehicle
    calls = len(sink.calls)
    cycle_at(40_000)  # the last cycle's frames again (a frame sent twice): not folded twice
    assert np.array_equal(first.map.grid(), grid0) and ("map", "odom") not in sink.calls[calls:]
    cycle_at(50_000)
    assert sink.maps[-1].map is None and "odom <- base_footprint" in sink.maps[-1].problem
    assert np.array_equal(first.map.grid(), grid0)  # not updated without its transform
    cycle_at(60_000)
    assert sink.maps[-1].map is first.map  # one map, its window moved 10 m with the vehicle
    assert first.map.origin == pytest.approx((-20.0, -30.0))
    assert len(runner.maps) == 1
