"""``process`` on a surround-rig bag with named ``cameras``: cycles and the fused grid."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bags import read_bag

from seg_perception.cli import main as cli_main
from seg_perception.offline.job import ProcessOptions
from seg_perception.offline.process import process_bag
from seg_perception.offline.reader import open_bag
from seg_perception.offline.topics import (
    GRID_OUTPUTS,
    IMAGE_OUTPUTS,
    BagError,
    tf_static_qos,
    typestore,
)
from seg_perception.offline.writer import BagWriter
from seg_perception.runtime.config import PipelineConfig
from seg_perception.runtime.engine import SegResult
from seg_perception.runtime.geometry import GridSpec
from seg_perception.runtime.geometry.drivable_map import DrivableMap
from seg_perception.runtime.pipeline import FramePipeline, FrameResult, GridFusion
from seg_perception.runtime.tf import TransformBuffer
from seg_perception.sim.demo_report import write_surround_drive
from seg_perception.sim.rig import SURROUND_GRID, surround_rig

W, H = 160, 120
FPS = 10.0
FRAMES = 6
G = SURROUND_GRID
GRID = {"grid.resolution": G.resolution, "grid.x_min": G.x_min, "grid.x_max": G.x_max,
        "grid.y_min": G.y_min, "grid.y_max": G.y_max}
NAMES = ("front", "left", "right", "rear")


class GreyRoadEngine:
    """Stands in for a trained network on the rendered drive: grey, darker pixels are road
    (deterministic, with free and occupied cells in every grid); counts its batches."""

    class meta:  # noqa: N801 - ModelMeta's attribute
        palette = [(0, 0, 0)] * 2 + [(128, 64, 128)] * 9

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run_batch(self, frames: list[np.ndarray], want_confidence: Any = True
                  ) -> list[SegResult]:
        self.batches.append(len(frames))
        out = []
        for rgb in frames:
            c = rgb.astype(np.int16)
            road = ((np.abs(c[..., 0] - c[..., 1]) < 12) & (np.abs(c[..., 1] - c[..., 2]) < 12)
                    & (c.mean(axis=2) < 115))
            labels = np.where(road, 3, 0).astype(np.uint8)
            conf = np.full(labels.shape, 200, np.uint8)
            out.append(SegResult(labels, conf, road.astype(np.uint8) * 255, {}))
        return out


@pytest.fixture
def engine() -> GreyRoadEngine:
    return GreyRoadEngine()


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-camera surround drive: every camera's frame of a trigger has the same stamp."""
    bag = tmp_path_factory.mktemp("rig") / "in"
    write_surround_drive(bag, FRAMES, FPS, W, H, surround_rig(W, H), G)
    return bag


def _config(**extra: Any) -> PipelineConfig:
    return PipelineConfig.from_params({**GRID, "cameras": list(NAMES), **extra})


def _options(**extra: Any) -> ProcessOptions:
    return ProcessOptions(config=_config(**extra), cameras=NAMES)


def _ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _grid(msg: Any) -> np.ndarray:
    return np.asarray(msg.data, np.int8).reshape(msg.info.height, msg.info.width)


def copy_bag(src: Path, dst: Path, drop: Any = lambda topic, i: False,
             shift_ns: dict[str, int] | None = None) -> None:
    """``src`` into ``dst`` without the messages ``drop(topic, index)`` names, the header
    stamps of camera X's image and camera_info moved by ``shift_ns[X]``."""
    shift_ns = shift_ns or {}
    index: dict[str, int] = defaultdict(int)
    with open_bag(src) as reader, BagWriter(dst) as writer:
        store = typestore()
        for conn, log_time, raw in reader.messages():
            i = index[conn.topic]
            index[conn.topic] += 1
            if drop(conn.topic, i):
                continue
            msg = store.deserialize_cdr(raw, conn.msgtype)
            cam = conn.topic.split("/")[1]
            if cam in shift_ns and conn.topic != "/tf_static":
                t = _ns(msg.header.stamp) + shift_ns[cam]
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t, 1_000_000_000)
            qos = tf_static_qos() if conn.topic == "/tf_static" else None
            writer.write(conn.topic, msg, log_time, qos=qos)


def refuse(out: dict[str, list], config: PipelineConfig) -> list[tuple[int, Any]]:
    """The fused grid of every cycle recomputed from the bag's per-camera grids: cycles
    are the groups of per-camera grids written at one log time (a synchronous rig)."""
    cycles: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for name in NAMES:
        for log_time, msg in out.get(f"/{name}/drivable/grid", []):
            cycles[log_time].append((name, msg))
    pipeline, fusion = FramePipeline(_NoEngine()), GridFusion()
    fused = []
    for log_time in sorted(cycles):
        results, stamps = [], []
        for name, msg in cycles[log_time]:
            r = FrameResult(camera=name, grid_frame=config.grid_frame)
            r.grid, r.grid_spec = _grid(msg), config.grid
            results.append(r)
            stamps.append(_ns(msg.header.stamp))
        fused.append((log_time, pipeline.fuse(fusion, results, stamps, config,
                                              {"drivable/grid", "drivable/boundary"})))
    return fused


class _NoEngine:
    class meta:  # noqa: N801 - ModelMeta's attribute
        palette = ((0, 0, 0),)


def test_one_fused_grid_per_cycle_equal_to_the_fusion_of_the_camera_grids(
        tmp_path: Path, drive: Path, engine: Any) -> None:
    """One cycle per trigger (4 frames, one batch), one fused grid and boundary each, with
    the newest frame's stamp and log time, equal to FramePipeline.fuse of the written
    per-camera grids; the per-camera outputs are all there as without fusion."""
    config = _config()
    summary = process_bag(drive, tmp_path / "out", engine, options=_options(),
                          progress=False)
    assert engine.batches == [4] * FRAMES
    assert (summary.cycles, summary.fused, summary.processed) == (FRAMES, FRAMES, 4 * FRAMES)
    assert not summary.left_out
    out = read_bag(tmp_path / "out")
    for name in NAMES:
        for topic in (*IMAGE_OUTPUTS, *GRID_OUTPUTS):
            assert len(out[f"/{name}/{topic}"]) == FRAMES, (name, topic)
    assert len(out["/drivable/grid"]) == len(out["/drivable/boundary"]) == FRAMES
    inputs = read_bag(drive)
    stamps = [_ns(m.header.stamp) for _, m in inputs["/front/image_raw"]]
    logs = [t for t, _ in inputs["/front/image_raw"]]
    expected = refuse(out, config)
    assert len(expected) == FRAMES
    for k, ((log_time, msg), (_, b), (_, fused)) in enumerate(zip(
            out["/drivable/grid"], out["/drivable/boundary"], expected, strict=True)):
        assert (log_time, _ns(msg.header.stamp)) == (logs[k], stamps[k])
        assert msg.header.frame_id == config.grid_frame == b.header.frame_id
        assert fused.cameras == NAMES
        assert np.array_equal(_grid(msg), fused.grid), k
        assert (fused.grid == 0).sum() > 100 and (fused.grid == 100).sum() > 100
        points = np.array([(p.x, p.y) for p in b.polygon.points], np.float32).reshape(-1, 2)
        assert len(points) >= 3
        assert np.array_equal(points, fused.boundary.astype(np.float32)), k
        seen = [(_grid(m) >= 0) for n in NAMES for t, m in out[f"/{n}/drivable/grid"]
                if t == log_time]
        assert np.array_equal(_grid(msg) >= 0, np.logical_or.reduce(seen))


def test_a_missing_camera_takes_part_until_max_age_then_its_cells_go_unknown(
        tmp_path: Path, drive: Path, engine: Any) -> None:
    """The rear camera's frames stop after frame 1: cycles 2 and 3 (0.1 and 0.2 s later)
    fuse its latest grid (within fusion.max_age = 0.2 s, as the node does), later cycles
    leave it out and the cells only it sees become -1, not stale free."""
    copy_bag(drive, tmp_path / "in", drop=lambda topic, i: topic == "/rear/image_raw"
             and i >= 2)
    config = _config()
    summary = process_bag(tmp_path / "in", tmp_path / "out", engine, options=_options(),
                          progress=False)
    assert (summary.cycles, summary.fused) == (FRAMES, FRAMES)
    assert summary.left_out == {"/rear": FRAMES - 4}
    out = read_bag(tmp_path / "out")
    assert len(out["/rear/labels"]) == 2
    expected = refuse(out, config)
    rear = _grid(out["/rear/drivable/grid"][-1][1]) >= 0
    for k, ((_, msg), (_, fused)) in enumerate(zip(out["/drivable/grid"], expected,
                                                   strict=True)):
        grid = _grid(msg)
        assert np.array_equal(grid, fused.grid), k
        others = np.logical_or.reduce([_grid(m) >= 0 for n in NAMES[:3]
                                       for _, m in out[f"/{n}/drivable/grid"][k:k + 1]])
        only_rear = rear & ~others
        assert only_rear.sum() > 100
        if k < 4:
            assert "rear" in fused.cameras and (grid[only_rear] >= 0).all(), k
        else:
            assert "rear" not in fused.cameras and (grid[only_rear] == -1).all(), k


@pytest.mark.parametrize(("shift_ms", "cycles"), [(20, FRAMES), (50, 3 * FRAMES)])
def test_cycles_follow_the_stamps_within_fusion_sync_window(
        tmp_path: Path, drive: Path, engine: Any, shift_ms: int, cycles: int) -> None:
    """The left camera's stamps 20 ms late (inside the 30 ms sync window): the same cycles,
    each fused grid stamped with the newest (left) frame. 50 ms late: the left frame is
    outside front's window and starts its own cycle, and right is outside left's: cycles
    {front}, {left}, {right, rear} per trigger, nothing dropped."""
    shift = shift_ms * 1_000_000
    copy_bag(drive, tmp_path / "in", shift_ns={"left": shift})
    summary = process_bag(tmp_path / "in", tmp_path / "out", engine, options=_options(),
                          progress=False)
    assert summary.processed == 4 * FRAMES and summary.cycles == cycles
    out = read_bag(tmp_path / "out")
    assert len(out["/drivable/grid"]) == summary.fused == cycles
    left = [_ns(m.header.stamp) for _, m in out["/left/labels"]]
    front = [_ns(m.header.stamp) for _, m in out["/front/labels"]]
    stamps = [_ns(m.header.stamp) for _, m in out["/drivable/grid"]]
    if cycles == FRAMES:
        assert stamps == left
    else:
        assert stamps == [t for f, lt in zip(front, left, strict=True) for t in (f, lt, f)]


def test_single_camera_default_writes_no_fused_grid_and_unknown_cameras_are_refused(
        tmp_path: Path, drive: Path, engine: Any) -> None:
    """Without named cameras each camera is processed on its own (no /drivable/grid: the
    node without ``cameras`` has none either); a named camera the bag lacks is an error."""
    summary = process_bag(drive, tmp_path / "out", engine,
                          options=ProcessOptions(config=PipelineConfig.from_params(GRID)),
                          progress=False)
    assert summary.cycles == 0 and summary.processed == 4 * FRAMES
    assert "/drivable/grid" not in read_bag(tmp_path / "out")
    with pytest.raises(BagError, match="camera side of cameras"):
        process_bag(drive, tmp_path / "out2", engine, progress=False,
                    options=ProcessOptions(config=_config(), cameras=("front", "side")))
    assert not (tmp_path / "out2").exists()


def test_cli_params_file_cameras(tmp_path: Path, drive: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    """``--params-file`` with ``cameras`` (and a camera's own ``X.<name>``) runs the cycles;
    the report says how many fused grids were written."""
    params = tmp_path / "seg.yaml"
    grid = "\n".join(f"      {k}: {v}" for k, v in GRID.items())
    params.write_text("/**:\n  ros__parameters:\n      cameras: [front, left, right, rear]\n"
                      f"      rear.image_type: raw\n{grid}\n")
    code = cli_main(["process", str(drive), str(tmp_path / "out"), "--model", "tiny_seg",
                     "--device", "cpu", "--params-file", str(params), "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert f"fused /drivable/grid, /drivable/boundary: {FRAMES} of {FRAMES} cycles" in stdout
    assert "unknown" not in stdout.lower()
    assert len(read_bag(tmp_path / "out")["/drivable/grid"]) == FRAMES


def test_cycles_are_the_same_sequential_and_overlapped(tmp_path: Path, drive: Path) -> None:
    """pipeline_depth 0 and the overlapped default write the same messages (bytes, log
    times, order) with cycles, keep_input and a camera missing part of the time."""
    copy_bag(drive, tmp_path / "in", drop=lambda topic, i: topic == "/left/image_raw"
             and i in (1, 2, 3))
    outputs = []
    for depth in (0, 2):
        options = _options()
        options.pipeline_depth, options.keep_input = depth, True
        process_bag(tmp_path / "in", tmp_path / f"out{depth}", GreyRoadEngine(),
                    options=options, progress=False)
        with open_bag(tmp_path / f"out{depth}") as reader:
            outputs.append([(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()])
    assert len(outputs[0]) == len(outputs[1]) > 0
    assert outputs[0] == outputs[1]


def test_the_persistent_map_is_written_per_cycle_in_odom(tmp_path: Path, drive: Path,
                                                         engine: Any) -> None:
    """The drive's odometry on /tf: one /drivable/map per cycle in ``odom``, at the fused
    grid's stamp and log time, recorded latched; the last one equals the bag's fused grids
    folded into a map with the bag's odom poses; its window moved with the vehicle."""
    summary = process_bag(drive, tmp_path / "out", engine, options=_options(),
                          progress=False)
    assert summary.warnings == [] and summary.written["/drivable/map"] == FRAMES
    out = read_bag(tmp_path / "out")
    maps, grids = out["/drivable/map"], out["/drivable/grid"]
    assert [t for t, _ in maps] == [t for t, _ in grids]
    assert [_ns(m.header.stamp) for _, m in maps] == [_ns(m.header.stamp) for _, m in grids]
    assert {m.header.frame_id for _, m in maps} == {"odom"}
    with open_bag(tmp_path / "out") as reader:
        [conn] = [c for c in reader.connections if c.topic == "/drivable/map"]
        assert conn.ext.offered_qos_profiles[0].durability.name == "TRANSIENT_LOCAL"
    tf = TransformBuffer.from_messages((m, False) for _, m in read_bag(drive)["/tf"])
    again = DrivableMap(_config().map)
    for _, g in grids:
        again.update(_grid(g), GridSpec(g.info.resolution, g.info.origin.position.x,
                                        g.info.origin.position.x + g.info.width
                                        * g.info.resolution, g.info.origin.position.y,
                                        g.info.origin.position.y + g.info.height
                                        * g.info.resolution),
                     tf.lookup("odom", "base_footprint", _ns(g.header.stamp)),
                     _ns(g.header.stamp))
    last = maps[-1][1]
    data = np.asarray(last.data, np.int8).reshape(last.info.height, last.info.width)
    np.testing.assert_array_equal(data, again.grid())
    assert (data == 0).sum() > 100 and (data == 100).sum() > 100
    assert last.info.origin.position.x - maps[0][1].info.origin.position.x >= 2.0  # 8 m/s


def test_no_odometry_no_map_and_a_missing_pose_is_warned(tmp_path: Path, drive: Path,
                                                        engine: Any) -> None:
    """A recording without ``map.frame`` writes no map and says nothing more than an info
    line; one whose odometry stops before the last cycle warns and leaves that cycle out."""
    copy_bag(drive, tmp_path / "no_tf", drop=lambda topic, i: topic == "/tf")
    summary = process_bag(tmp_path / "no_tf", tmp_path / "out1", engine, options=_options(),
                          progress=False)
    assert summary.warnings == [] and "/drivable/map" not in read_bag(tmp_path / "out1")
    copy_bag(drive, tmp_path / "cut", drop=lambda topic, i: topic == "/tf" and i == FRAMES - 1)
    summary = process_bag(tmp_path / "cut", tmp_path / "out2", engine, options=_options(),
                          progress=False)
    assert summary.written["/drivable/map"] == FRAMES - 1
    assert len(summary.warnings) == 1 and "no transform odom <- base_footprint" in \
        summary.warnings[0], summary.warnings
