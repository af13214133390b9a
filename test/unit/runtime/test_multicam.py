"""Several cameras, one engine: batched forward passes on every backend, and the fused
surround grid against the scene generator's exact fused truth (ROS-free)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seg_perception.runtime.config import PipelineConfig
from seg_perception.runtime.engine import SegResult, build_engine
from seg_perception.runtime.geometry import CameraCalibration, overclaimed_cells
from seg_perception.runtime.pipeline import CameraFrame, FramePipeline, GridFusion, resolve_pose
from seg_perception.runtime.tf import TransformBuffer
from seg_perception.sim.rig import SURROUND_GRID, render_rig, surround_rig
from seg_perception.sim.scene import BoxObstacle, SceneSpec

GRID = {"grid.resolution": SURROUND_GRID.resolution, "grid.x_min": SURROUND_GRID.x_min,
        "grid.x_max": SURROUND_GRID.x_max, "grid.y_min": SURROUND_GRID.y_min,
        "grid.y_max": SURROUND_GRID.y_max}
SPEC = SceneSpec(curvature=1 / 90, n_lanes=4, obstacles=(
    BoxObstacle(9.0, 4.0, 0.05), BoxObstacle(-9.0, 1.7, 0.0), BoxObstacle(14.0, 0.0, 0.1)))


def _frames(rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(0, 256, (360, 480, 3), dtype=np.uint8),
            rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
            rng.integers(0, 256, (180, 640, 3), dtype=np.uint8)]


@pytest.mark.parametrize("backend", ["torch", "openvino", "onnx"])
def test_one_batch_gives_each_frame_its_single_frame_outputs(backend: str,
                                                            rng: np.random.Generator) -> None:
    """Frames of different sizes in ONE forward pass: every frame's labels, confidence and
    drivable mask at its own resolution, equal to running it alone."""
    engine, _ = build_engine("tiny_seg", device="cpu", precision="fp32", backend=backend,
                             threads=1)
    frames = _frames(rng)
    single = [engine(f) for f in frames]
    calls = []
    forward = engine.forward
    engine.forward = lambda x: calls.append(tuple(x.shape)) or forward(x)  # type: ignore
    batch = engine.run_batch(frames, [True, False, True])
    # one pass, every frame resized to the input (OpenVINO takes the uint8 frames, NHWC)
    uint8 = getattr(engine.model, "uint8_input", False)
    assert calls == [(3, 352, 480, 3) if uint8 else (3, 3, 352, 480)]
    assert uint8 == (backend == "openvino")
    for f, a, b in zip(frames, single, batch, strict=True):
        assert b.labels.shape == f.shape[:2] and b.timings["batch"] == 3
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.drivable, b.drivable)
    np.testing.assert_array_equal(single[0].confidence, batch[0].confidence)
    assert batch[1].confidence is None
    assert engine.run_batch([]) == []


def test_openvino_compiles_each_batch_size_once_and_keeps_it() -> None:
    engine, _ = build_engine("tiny_seg", device="cpu", backend="openvino", threads=1)
    backend = engine.model
    assert backend.batch_sizes == (1,)
    engine.warmup(batch_sizes=(1, 2, 4), runs=1)
    assert backend.batch_sizes == (1, 2, 4)
    compiled = backend._batches[4][0]
    frame = np.zeros((360, 480, 3), np.uint8)
    engine.run_batch([frame] * 4)
    assert backend._batches[4][0] is compiled  # not compiled again


def test_exports_take_any_batch_and_old_fixed_batch_files_still_run(tmp_path: Path,
                                                                   rng: np.random.Generator
                                                                   ) -> None:
    import onnx

    from seg_perception.runtime.export import export_onnx
    from seg_perception.runtime.models import create_model

    model = create_model("tiny_seg").eval()
    path = export_onnx(model, model.meta, tmp_path / "t.onnx", 160, 128)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 128, 160]
    # a file from before (batch fixed at 1) runs a batch one frame at a time, same outputs
    proto = onnx.load(str(path))
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    frames = _frames(rng)
    for file in (path, old):
        for backend in ("onnx", "openvino"):
            engine, _ = build_engine(str(file), device="cpu", backend=backend, threads=1)
            assert engine.max_batch == (1 if file == old else None), (file, backend)
            single = [engine(f).labels for f in frames]
            batch = [r.labels for r in engine.run_batch(frames)]
            for a, b in zip(single, batch, strict=True):
                np.testing.assert_array_equal(a, b)


# --- the fused surround grid ---------------------------------------------------------------

class RigTruthEngine:
    """Stands in for the network: each camera's exact labels (found by its frame), counting
    the forward passes and their batch sizes."""

    class meta:  # noqa: N801 - mimics ModelMeta's attribute
        palette = [(128, 64, 128)] * 11

    def __init__(self, views: dict) -> None:
        self.views = views
        self.batches: list[int] = []

    def _one(self, rgb: np.ndarray) -> SegResult:
        view = next(v for v in self.views.values() if v.rgb is rgb)
        labels = np.where(view.drivable, 3, 0).astype(np.uint8)
        return SegResult(labels, None, view.drivable.astype(np.uint8) * 255, {})

    def run_batch(self, frames: list[np.ndarray], want_confidence: object = True
                  ) -> list[SegResult]:
        self.batches.append(len(frames))
        return [self._one(f) for f in frames]


def _rig_cycle(pipeline: FramePipeline, fusion: GridFusion, render, rig, config, tf,
               stamp_ns: int, cameras=None, want=("drivable/grid", "drivable/boundary")):
    """One cycle as the node and process run it: batch, per-camera pose (tf) and grid,
    fusion."""
    cams = [c for c in rig.cameras if cameras is None or c.name in cameras]
    frames = []
    for cam in cams:
        pose = resolve_pose(config, cam.optical_frame, stamp_ns, lambda t, s, n, _: tf.lookup(
            t, s, n))
        assert pose.problem is None, pose.problem
        frames.append(CameraFrame(render.views[cam.name].rgb,
                                  CameraCalibration.from_model(cam.model), pose.mounting,
                                  camera=cam.name))
    results = pipeline.run(frames, config, {"drivable/grid"})
    return pipeline.fuse(fusion, results, [stamp_ns] * len(results), config, set(want)), results


@pytest.fixture(scope="module")
def rig_scene():
    rig = surround_rig(width=320, height=240)
    return rig, render_rig(SPEC, rig, SURROUND_GRID)


def test_fused_grid_of_four_cameras_matches_the_exact_fused_truth(rig_scene) -> None:
    """Exact masks of four cameras, poses from their /tf_static chain, one batch, fused:
    >= 98% of the cells the truth sees agree, and the boundary never over-claims."""
    rig, render = rig_scene
    tf = TransformBuffer()
    for parent, child, tr in rig.transforms():
        tf.set_transform(parent, child, tr, None)
    config = PipelineConfig.from_params({**GRID, "cameras": list(rig.names)})
    engine = RigTruthEngine(render.views)
    pipeline = FramePipeline(engine)
    fused, results = _rig_cycle(pipeline, GridFusion(), render, rig, config, tf, 10**9)
    assert engine.batches == [4]  # one forward pass for the four cameras
    assert fused is not None and fused.cameras == rig.names and not fused.left_out
    truth = render.fused
    seen = truth >= 0
    assert np.array_equal(fused.grid >= 0, seen)
    agreement = float((fused.grid[seen] == truth[seen]).mean())
    print(f"\nfused 4-camera grid through the pipeline: {agreement:.2%} of {seen.sum()} "
          "seen cells agree with the exact fused truth")
    assert agreement >= 0.98
    for r in results:  # each camera's own grid against its own exact truth
        own = render.views[r.camera].grid
        s = own >= 0
        assert (r.grid[s] == own[s]).mean() >= 0.97, r.camera
    # the polygon is published in float32: check what a planner receives
    over, covered = overclaimed_cells(fused.boundary.astype(np.float32), fused.grid,
                                      SURROUND_GRID)
    assert not over.any() and covered.sum() > 100


def test_a_silent_camera_drops_out_after_max_age(rig_scene) -> None:
    """The rear camera stops: within fusion.max_age its last grid still counts; after it,
    the cells only it saw become unknown (-1), never stale free."""
    rig, render = rig_scene
    tf = TransformBuffer()
    for parent, child, tr in rig.transforms():
        tf.set_transform(parent, child, tr, None)
    config = PipelineConfig.from_params({**GRID, "cameras": list(rig.names),
                                         "fusion.max_age": 0.25})
    pipeline = FramePipeline(RigTruthEngine(render.views))
    fusion = GridFusion()
    t0 = 5 * 10**9
    full, _ = _rig_cycle(pipeline, fusion, render, rig, config, tf, t0)
    per_cam = {n: render.views[n].grid for n in rig.names}
    only_rear = (per_cam["rear"] >= 0) & np.all(
        [per_cam[n] < 0 for n in ("front", "left", "right")], axis=0)
    assert only_rear.sum() > 500 and (full.grid[only_rear] == 0).any()
    others = ("front", "left", "right")
    # 0.2 s later without the rear camera: still within max_age, its grid still counts
    soon, _ = _rig_cycle(pipeline, fusion, render, rig, config, tf, t0 + 200_000_000, others)
    assert "rear" in soon.cameras and not soon.left_out
    np.testing.assert_array_equal(soon.grid, full.grid)
    # 0.3 s after its last frame: left out, and its cells are unknown
    late, _ = _rig_cycle(pipeline, fusion, render, rig, config, tf, t0 + 300_000_000, others)
    assert "rear" not in late.cameras and late.left_out == {"rear": pytest.approx(0.3)}
    assert np.all(late.grid[only_rear] == -1)
    assert fusion.left_out == {"rear": 1}
    seen_by_others = ~only_rear & (full.grid >= 0)
    np.testing.assert_array_equal(late.grid[seen_by_others], full.grid[seen_by_others])
    # it comes back: it takes part again
    back, _ = _rig_cycle(pipeline, fusion, render, rig, config, tf, t0 + 400_000_000)
    np.testing.assert_array_equal(back.grid, full.grid)


def test_fusion_keeps_grids_of_one_geometry_and_a_cycle_without_grids_fuses_nothing(
        rig_scene) -> None:
    rig, render = rig_scene
    tf = TransformBuffer()
    for parent, child, tr in rig.transforms():
        tf.set_transform(parent, child, tr, None)
    config = PipelineConfig.from_params({**GRID, "cameras": list(rig.names)})
    pipeline = FramePipeline(RigTruthEngine(render.views))
    fusion = GridFusion()
    _rig_cycle(pipeline, fusion, render, rig, config, tf, 10**9)
    # the grid geometry changes: the other cameras' grids of the old one are not mixed in
    coarse = PipelineConfig.from_params({**GRID, "grid.resolution": 0.4,
                                         "cameras": list(rig.names)})
    fused, _ = _rig_cycle(pipeline, fusion, render, rig, coarse, tf, 10**9 + 10**8,
                          ("front",))
    assert fused.cameras == ("front",) and fused.grid.shape == coarse.grid.shape
    # a cycle whose frames have no grid (no camera_info) fuses nothing
    frame = CameraFrame(render.views["left"].rgb, None, None, camera="left")
    results = pipeline.run([frame], coarse, {"drivable/grid"})
    assert results[0].grid is None
    assert pipeline.fuse(fusion, results, [2 * 10**9], coarse, {"drivable/grid"}) is None


def test_fusion_forgets_the_grids_from_before_time_went_back() -> None:
    """After a jump back, the grids stamped after the new time are dropped (the node does it
    when it sees the jump), so they are neither left out with a negative age nor used."""
    from seg_perception.runtime.geometry import GridSpec
    from seg_perception.runtime.pipeline import CameraGrid

    spec = GridSpec(1.0, 0.0, 4.0, -2.0, 2.0)
    free = np.zeros(spec.shape, np.int8)
    fusion = GridFusion()
    t = 100 * 10**9
    fusion.update([CameraGrid("front", t, free, spec), CameraGrid("rear", t, free, spec)],
                  spec, 0.2, "base_footprint")
    back = 10**9  # the bag starts again at 1 s
    without = GridFusion()
    without.latest = dict(fusion.latest)
    stale = without.update([CameraGrid("front", back, free, spec)], spec, 0.2, "base_footprint")
    assert stale.cameras == ("front",) and stale.left_out["rear"] < 0  # "older" by -99 s
    assert sorted(fusion.forget_after(back + 10**9)) == ["front", "rear"]
    fused = fusion.update([CameraGrid("front", back, free, spec)], spec, 0.2, "base_footprint")
    assert fused.cameras == ("front",) and fused.left_out == {} and fusion.left_out == {}


def test_fused_boundary_outlines_the_largest_free_region_at_the_vehicles_blind_spot() -> None:
    """Around a surround rig the car stands in a blind spot; a sliver seen beside the
    mirror is nearer than the road ahead, but the road ahead is what borders the blind spot
    widest: that is the region the polygon outlines (conservatively)."""
    from seg_perception.runtime.geometry import GridSpec, ego_component
    from seg_perception.runtime.geometry.free_region import vehicle_component

    spec = GridSpec(1.0, -10.0, 20.0, -10.0, 10.0)
    grid = np.full(spec.shape, 100, np.int8)
    gx, gy = spec.cell_centers()
    grid[(np.abs(gx) < 3) & (np.abs(gy) < 2)] = -1  # the blind spot around the car
    grid[(gx > 3) & (gx < 18) & (np.abs(gy) < 4)] = 0  # the road ahead
    grid[(np.abs(gx) < 1) & (gy > 2) & (gy < 4)] = 0  # a sliver beside the car
    region = vehicle_component(grid, spec, min_cells=1)
    assert region is not None and region.sum() == ((gx > 3) & (gx < 18) & (np.abs(gy) < 4)).sum()
    assert ego_component(grid, spec).sum() == 4  # the nearest-cell rule picks the sliver
    config = PipelineConfig.from_params({"grid.resolution": 1.0, "grid.x_min": -10.0,
                                         "grid.x_max": 20.0, "grid.y_min": -10.0,
                                         "grid.y_max": 10.0})
    fusion = GridFusion()
    from seg_perception.runtime.pipeline import FrameResult

    result = FrameResult(camera="front", grid=grid, grid_spec=config.grid)
    fused = FramePipeline(RigTruthEngine({})).fuse(fusion, [result], [1], config,
                                                   {"drivable/grid", "drivable/boundary"})
    over, covered = overclaimed_cells(fused.boundary.astype(np.float32), grid, spec)
    assert not over.any() and covered.sum() > 0.8 * region.sum()
    # a grid whose ego cell is seen (a single forward camera's grid starts at x = 0 ahead of
    # the origin) keeps the nearest-region rule
    grid[spec.cell_of(0.0, 0.0)] = 100
    assert vehicle_component(grid, spec) is None
