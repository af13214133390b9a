"""``seg-perception process`` and offline.process: bags in, frame-exact outputs out."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bags import (
    ALL_OUTPUTS,
    IMAGE_OUTPUTS,
    LOG0,
    T0,
    H,
    W,
    frames_from,
    generated_frames,
    make_bag,
    make_foxy_bag,
    read_bag,
    stamp,
)

from seg_perception.cli import main as cli_main
from seg_perception.offline.job import ProcessOptions
from seg_perception.offline.process import process_bag
from seg_perception.offline.reader import (
    BagTopic,
    bag_topics,
    iter_frames,
    open_bag,
    select_cameras,
)
from seg_perception.offline.topics import (
    CAMERA_INFO,
    COMPRESSED,
    RAW,
    BagError,
    camera_info_msg,
    camera_namespace,
    image_msg,
    make_header,
    output_topic,
    tf_msg,
    tf_static_qos,
)
from seg_perception.offline.writer import BagWriter
from seg_perception.runtime.engine import build_engine
from seg_perception.runtime.geometry import CameraModel

# --- building bags ---------------------------------------------------------------------------


def assert_frame_exact(out: dict[str, list], expected: dict[str, list[tuple]],
                       skip: dict[str, set[int]] | None = None, grid: bool = True,
                       size: tuple[int, int] = (W, H)) -> None:
    """One message per output topic per good input frame, with its stamp and log time."""
    for topic, frames in expected.items():
        good = [f for i, f in enumerate(frames) if i not in (skip or {}).get(topic, set())]
        ns = camera_namespace(topic)
        for name in ALL_OUTPUTS if grid else IMAGE_OUTPUTS:
            msgs = out.get(f"{ns}/{name}", [])
            assert len(msgs) == len(good), f"{ns}/{name}: {len(msgs)} messages, {len(good)} frames"
            for (log_time, msg), (in_log, (sec, nsec), fid) in zip(msgs, good, strict=True):
                assert log_time == in_log
                assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (sec, nsec)
                if name in IMAGE_OUTPUTS:
                    assert msg.header.frame_id == fid
                    assert (msg.width, msg.height) == size
                else:
                    assert msg.header.frame_id == "base_footprint"
        if not grid:
            assert f"{ns}/drivable/grid" not in out


@pytest.fixture(scope="module")
def engine() -> Any:
    eng, _ = build_engine("tiny_seg", device="cpu")
    return eng


# --- naming and selection --------------------------------------------------------------------

@pytest.mark.parametrize(("topic", "ns"), [
    ("/cam_front/image_raw", "/cam_front"),
    ("/cam_front/image_raw/compressed", "/cam_front"),
    ("/image", ""),
    ("/image/compressed", ""),
    ("/car/camera/color/image_raw", "/car/camera/color"),
    ("camera/image", "/camera"),
])
def test_camera_namespace(topic: str, ns: str) -> None:
    assert camera_namespace(topic) == ns
    assert output_topic(ns, "drivable/grid") == f"{ns}/drivable/grid"


def test_select_cameras_defaults_and_errors() -> None:
    types = {"/a/image_raw": RAW, "/a/image_raw/compressed": COMPRESSED,
             "/a/camera_info": CAMERA_INFO, "/b/image/compressed": COMPRESSED,
             "/chatter": "std_msgs/msg/String"}
    topics = {name: BagTopic(name, msgtype, 3) for name, msgtype in types.items()}
    cams = select_cameras(topics)
    assert [(c.image_topic, c.transport, c.namespace, c.camera_info_topic) for c in cams] == [
        ("/a/image_raw", "raw", "/a", "/a/camera_info"),
        ("/b/image/compressed", "compressed", "/b", None),
    ]
    assert cams[0].output("overlay") == "/a/overlay"
    # The compressed topic of /a can be chosen explicitly ...
    assert select_cameras(topics, ["/a/image_raw/compressed"])[0].namespace == "/a"
    # ... but not together with the raw one: their outputs would collide.
    with pytest.raises(BagError, match="would all write"):
        select_cameras(topics, ["/a/image_raw", "/a/image_raw/compressed"])
    with pytest.raises(BagError, match="not in the bag"):
        select_cameras(topics, ["/nope/image"])
    with pytest.raises(BagError, match="not an image"):
        select_cameras(topics, ["/chatter"])
    with pytest.raises(BagError, match="camera_info"):
        select_cameras(topics, ["/a/image_raw"], ["/chatter"])
    with pytest.raises(BagError, match="no sensor_msgs/Image"):
        select_cameras({"/chatter": topics["/chatter"]})


# --- processing ------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["camvid", "generated"])
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_one_camera(tmp_path: Path, engine: Any, source: str, storage: str,
                    transport: str) -> None:
    topic = "/cam_front/image_raw" + ("/compressed" if transport == "compressed" else "")
    expected = make_bag(tmp_path / "in", {topic: transport}, frames_from(source, 3), storage)
    summary = process_bag(tmp_path / "in", tmp_path / "out", engine, progress=False)
    assert summary.processed == 3 and not summary.bad and not summary.error
    assert summary.frames == {topic: 3}
    out = read_bag(tmp_path / "out")
    assert_frame_exact(out, expected)
    assert topic not in out  # inputs are not copied without keep_input
    assert list((tmp_path / "out").glob("*.mcap"))  # output is always .mcap
    grid = out["/cam_front/drivable/grid"][0][1]
    assert grid.data.size == grid.info.width * grid.info.height
    assert set(np.unique(grid.data)) <= {-1, 0, 100}


def test_two_cameras_cli_keep_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cams = {"/cam_front/image_raw": "raw", "/cam_rear/image_raw/compressed": "compressed"}
    expected = make_bag(tmp_path / "in", cams, generated_frames(3))
    code = cli_main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                     "tiny_seg", "--device", "cpu", "--keep-input", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "6 frames processed of 6" in stdout
    out = read_bag(tmp_path / "out")
    assert_frame_exact(out, expected)
    for topic, frames in expected.items():  # --keep-input: inputs copied unchanged
        assert [t for t, _ in out[topic]] == [f[0] for f in frames]
    assert len(out["/cam_front/camera_info"]) == 3
    with open_bag(tmp_path / "out") as reader:
        assert reader.ros_distro == "rosbags"
        topics = bag_topics(reader)
    assert topics["/cam_rear/drivable/grid"].msgtype == "nav_msgs/msg/OccupancyGrid"
    assert topics["/cam_rear/drivable/boundary"].msgtype == "geometry_msgs/msg/PolygonStamped"


def test_selected_topics_and_single_files(tmp_path: Path, engine: Any) -> None:
    cams = {"/left/image": "raw", "/right/image": "raw"}
    expected = make_bag(tmp_path / "in", cams, generated_frames(2), storage="sqlite3")
    db3 = next((tmp_path / "in").glob("*.db3"))  # the storage file alone, no metadata.yaml
    summary = process_bag(db3, tmp_path / "out", engine, image_topics=["/right/image"],
                          camera_info_topics=["/right/camera_info"], progress=False)
    assert summary.frames == {"/right/image": 2}
    out = read_bag(tmp_path / "out")
    assert_frame_exact(out, {"/right/image": expected["/right/image"]})
    assert not any(t.startswith("/left") for t in out)

    make_bag(tmp_path / "in2", {"/image": "raw"}, generated_frames(2), camera_info=False)
    mcap = next((tmp_path / "in2").glob("*.mcap"))
    summary = process_bag(mcap, tmp_path / "out2", engine, progress=False)
    # No CameraInfo: image outputs at the top level, no grid, and a warning that says so.
    out = read_bag(tmp_path / "out2")
    assert {"/labels", "/overlay", "/drivable/mask"} <= set(out)
    assert "/drivable/grid" not in out
    assert any("no CameraInfo" in w for w in summary.warnings)
    summary = process_bag(mcap, tmp_path / "out3", engine, progress=False,
                          options=ProcessOptions(hfov_deg=90.0))
    assert len(read_bag(tmp_path / "out3")["/drivable/grid"]) == 2


def test_foxy_db3_bag(tmp_path: Path, engine: Any) -> None:
    expected = make_foxy_bag(tmp_path / "foxy", "/camera/image_raw", generated_frames(3))
    with open_bag(tmp_path / "foxy") as reader:
        topic = bag_topics(reader)["/camera/image_raw"]
        assert topic.count == 3 and topic.qos  # recorded QoS parsed from the Foxy text
    summary = process_bag(tmp_path / "foxy", tmp_path / "out", engine, progress=False,
                          options=ProcessOptions(grid=False))
    assert summary.processed == 3
    assert_frame_exact(read_bag(tmp_path / "out"), {"/camera/image_raw": expected}, grid=False)
    # The .db3 file on its own (no metadata.yaml) reads as well.
    db3 = next((tmp_path / "foxy").glob("*.db3"))
    assert process_bag(db3, tmp_path / "out2", engine, progress=False).processed == 3


def test_bad_frames_are_named_and_set_the_exit_status(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    cams = {"/cam_front/image_raw": "raw", "/cam_rear/image_raw/compressed": "compressed"}
    corrupt = {"/cam_front/image_raw": {1}, "/cam_rear/image_raw/compressed": {2}}
    expected = make_bag(tmp_path / "in", cams, generated_frames(4), corrupt=corrupt)
    args = ["process", str(tmp_path / "in"), "--model", "tiny_seg", "--device", "cpu",
            "--no-progress"]
    code = cli_main([*args[:2], str(tmp_path / "out"), *args[2:]])
    stdout = capsys.readouterr().out
    assert code == 1, stdout
    sec, nsec = stamp(0, 1)
    assert re.search(rf"/cam_front/image_raw #1 \(stamp {sec}\.{nsec:09d}, log time "
                     rf"{expected['/cam_front/image_raw'][1][0]}\): .*data has", stdout), stdout
    assert "/cam_rear/image_raw/compressed #2" in stdout and "cannot decode" in stdout
    assert_frame_exact(read_bag(tmp_path / "out"), expected, skip=corrupt)

    code = cli_main([*args[:2], str(tmp_path / "out2"), *args[2:], "--skip-bad-frames",
                     "--pipeline-depth", "0"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "/cam_front/image_raw #1" in stdout and "2 bad frame(s)" in stdout
    assert_frame_exact(read_bag(tmp_path / "out2"), expected, skip=corrupt)
    assert cli_main([*args[:2], str(tmp_path / "out3"), *args[2:], "--pipeline-depth",
                     "-1"]) == 2
    assert not (tmp_path / "out3").exists()
    from seg_perception.cli import build_parser
    from seg_perception.cli.process_cmd import build_options

    parsed = build_parser().parse_args(["process", "in", "out", "--pipeline-depth", "0"])
    assert build_options(parsed)[0].pipeline_depth == 0
    with pytest.raises(ValueError, match="--pipeline-depth -1 must be >= 0"):
        build_options(build_parser().parse_args(["process", "in", "out",
                                                 "--pipeline-depth", "-1"]))


def test_undeserialisable_frame_keeps_its_stamp(tmp_path: Path, engine: Any) -> None:
    """A message cut short inside its payload still reports the stamp from its CDR header."""
    make_bag(tmp_path / "ok", {"/cam/image": "raw"}, generated_frames(2), camera_info=False)
    with open_bag(tmp_path / "ok") as reader, \
            BagWriter(tmp_path / "in") as writer:
        for i, (conn, log_time, raw) in enumerate(reader.messages()):
            data = bytes(raw)[:60] if i == 1 else raw
            writer.write_raw(conn.topic, conn.msgtype, data, log_time)
    summary = process_bag(tmp_path / "in", tmp_path / "out", engine, progress=False)
    assert summary.processed == 1
    [bad] = summary.bad
    assert (bad.topic, bad.index, bad.stamp) == ("/cam/image", 1, stamp(0, 1))
    assert "cannot deserialise" in bad.reason


@pytest.mark.parametrize("damage", ["truncated_mcap", "garbage_db3", "missing_file",
                                    "bad_metadata", "not_a_bag"])
def test_unreadable_bag_is_a_clear_error(tmp_path: Path, damage: str,
                                         caplog: pytest.LogCaptureFixture,
                                         capsys: pytest.CaptureFixture) -> None:
    make_bag(tmp_path / "bag", {"/cam/image_raw": "raw"}, generated_frames(3))
    mcap = next((tmp_path / "bag").glob("*.mcap"))
    if damage == "truncated_mcap":  # cut inside its header: no record is readable
        target = tmp_path / "cut.mcap"  # (a longer prefix is processed: test_mcap_prefix.py)
        target.write_bytes(mcap.read_bytes()[:30])
        hint = "truncated or corrupt"
    elif damage == "garbage_db3":
        target = tmp_path / "junk.db3"
        target.write_bytes(os.urandom(4096))
        hint = "not a rosbag2 database|not a database"
    elif damage == "missing_file":
        mcap.unlink()
        target, hint = tmp_path / "bag", "missing"
    elif damage == "bad_metadata":
        (tmp_path / "bag" / "metadata.yaml").write_text("rosbag2_bagfile_information: [1, 2\n")
        target, hint = tmp_path / "bag", "YAML"
    else:
        target = tmp_path / "notes.txt"
        target.write_text("hello")
        hint = "Unrecognized storage format"
    code = cli_main(["process", str(target), str(tmp_path / "out"), "--model", "tiny_seg",
                     "--device", "cpu", "--no-progress"])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and f"cannot read bag {target}" in errors[0], errors
    assert re.search(hint, errors[0]), errors[0]
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written for an unreadable input


N_FRAMES = 40  # 160x120 rgb8: about 17 frames per 1 MiB chunk, so 3 chunks


def test_cut_off_mcap_in_a_bag_directory_counts_the_lost_frames(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    topic = "/cam/image_raw"
    make_bag(tmp_path / "bag", {topic: "raw"}, generated_frames(N_FRAMES))
    mcap = next((tmp_path / "bag").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: int(mcap.stat().st_size * 0.6)])  # metadata.yaml stays
    code = cli_main(["process", str(tmp_path / "bag"), str(tmp_path / "out"), "--model",
                     "tiny_seg", "--device", "cpu", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 1, stdout
    k = int(re.search(r"(\d+) frames processed of", stdout).group(1))
    assert 0 < k < N_FRAMES
    assert "lost: " in stdout
    assert f"{N_FRAMES - k} of {topic} (of {N_FRAMES} in metadata.yaml)" in stdout
    assert f"holds the {k} frames read before the error" in stdout
    assert len(read_bag(tmp_path / "out")["/cam/labels"]) == k


def test_image_topic_without_messages_exits_2(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    with BagWriter(tmp_path / "in") as bag:
        bag.connection("/cam/image_raw", RAW)  # recorded, but no frame ever came
        info = camera_info_msg(CameraModel.from_fov(160, 120, 90.0),
                                     make_header(1, 0, "c"))
        bag.write("/cam/camera_info", info, 1_000)
    code = cli_main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                     "tiny_seg", "--device", "cpu", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 2, stdout
    assert "nothing processed: the image topic(s) /cam/image_raw have no messages" in stdout
    assert not (tmp_path / "out").exists()  # exit 2 leaves no output behind


def test_all_frames_undecodable_is_nothing_processed(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    make_bag(tmp_path / "in", {"/cam/image_raw": "raw"}, generated_frames(3),
             corrupt={"/cam/image_raw": {0, 1, 2}})
    code = cli_main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                     "tiny_seg", "--device", "cpu", "--no-progress", "--skip-bad-frames"])
    stdout = capsys.readouterr().out
    assert code == 2 and "all 3 frames are undecodable" in stdout, stdout
    assert "/cam/image_raw #2" in stdout  # still listed


def test_output_removed_only_when_this_run_wrote_nothing(tmp_path: Path) -> None:
    from seg_perception.cli.process_cmd import _remove_empty_output

    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    _remove_empty_output(keep)
    assert keep.exists()
    shutil.rmtree(keep)


@pytest.mark.parametrize("depth", [0, 2])
def test_corruption_midway_keeps_a_valid_output(tmp_path: Path, engine: Any,
                                                depth: int) -> None:
    """Damage inside the second MCAP chunk: frames before it are written, the bag closes;
    sequential or overlapped alike."""
    from rosbags.rosbag2.storage_mcap import McapReader

    # 40 frames of 160x120 rgb8 fill about two 1 MiB chunks.
    make_bag(tmp_path / "bag", {"/cam/image_raw": "raw"}, generated_frames(40),
             camera_info=False)
    mcap = next((tmp_path / "bag").glob("*.mcap"))
    reader = McapReader(mcap)
    reader.open()
    offset = reader.chunks[1].chunk_start_offset
    reader.close()
    data = bytearray(mcap.read_bytes())
    data[offset + 49: offset + 69] = b"\xff" * 20  # a message record length inside the chunk
    mcap.write_bytes(bytes(data))

    summary = process_bag(tmp_path / "bag", tmp_path / "out", engine, progress=False,
                          options=ProcessOptions(grid=False, pipeline_depth=depth))
    assert summary.error and "corrupt or cut off" in summary.error
    assert 0 < summary.processed < 40
    out = read_bag(tmp_path / "out")
    assert {len(out[f"/cam/{n}"]) for n in IMAGE_OUTPUTS} == {summary.processed}


@pytest.mark.parametrize("depth", [0, 2])
def test_interrupt_hook_leaves_a_valid_bag(tmp_path: Path, engine: Any, depth: int) -> None:
    expected = make_bag(tmp_path / "in", {"/cam/image_raw": "raw"}, generated_frames(8))

    def interrupt(done: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    summary = process_bag(tmp_path / "in", tmp_path / "out", engine, progress=False,
                          on_frame=interrupt, options=ProcessOptions(pipeline_depth=depth))
    assert summary.interrupted and summary.processed == 3
    out = read_bag(tmp_path / "out")
    assert_frame_exact(out, {"/cam/image_raw": expected["/cam/image_raw"][:3]})


def raw_messages(path: Path) -> list[tuple[str, int, bytes]]:
    """Every message of a bag as written: (topic, log time, serialised bytes), in order."""
    with open_bag(path) as reader:
        return [(conn.topic, log_time, bytes(raw)) for conn, log_time, raw in reader.messages()]


def test_overlapped_outputs_are_byte_identical_to_the_sequential_loop(
        tmp_path: Path, engine: Any) -> None:
    """pipeline_depth 0 (one thread, one stage after the other) and the overlapped default
    write the same messages, byte for byte, at the same log times, in the same order: two
    cameras (raw and JPEG), undecodable frames, camera_info, keep_input."""
    cams = {"/cam_front/image_raw": "raw", "/cam_rear/image_raw/compressed": "compressed"}
    corrupt = {"/cam_front/image_raw": {3}, "/cam_rear/image_raw/compressed": {0, 7}}
    make_bag(tmp_path / "in", cams, generated_frames(12), corrupt=corrupt)
    summaries, outputs = {}, {}
    for depth in (0, ProcessOptions().pipeline_depth, 1):
        out = tmp_path / f"out{depth}"
        summaries[depth] = process_bag(tmp_path / "in", out, engine, progress=False,
                                       options=ProcessOptions(keep_input=True,
                                                              pipeline_depth=depth))
        outputs[depth] = raw_messages(out)
    ref = outputs[0]
    assert ProcessOptions().pipeline_depth > 0
    assert summaries[0].processed == 24 - 3 and len(summaries[0].bad) == 3
    assert len({t for t, _, _ in ref}) == 2 * (len(ALL_OUTPUTS) + 2)  # outputs, inputs, infos
    for depth, msgs in outputs.items():
        assert len(msgs) == len(ref), depth
        for k, (a, b) in enumerate(zip(msgs, ref, strict=True)):
            assert a == b, f"depth {depth}: message {k} ({a[0]} at {a[1]}) differs"
        s, r = summaries[depth], summaries[0]
        assert (s.processed, s.frames, s.written, s.copied, s.no_grid) == \
            (r.processed, r.frames, r.written, r.copied, r.no_grid)
        assert [b.describe() for b in s.bad] == [b.describe() for b in r.bad]


class _FailingEngine:
    """The engine, raising on its n-th frame (a worker thread's error)."""

    def __init__(self, engine: Any, fail_at: int) -> None:
        self._engine, self._fail_at, self.calls = engine, fail_at, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self._fail_at:
            raise RuntimeError("inference failed on purpose")
        return self._engine(*args, **kwargs)

    def run_batch(self, rgbs: list[Any], confidences: list[bool]) -> list[Any]:
        """The pipeline's batched path (one frame per batch in ``process``): same count."""
        return [self(rgb, want_confidence=c) for rgb, c in zip(rgbs, confidences, strict=True)]

    def start_batch(self, rgbs: list[Any], confidences: list[bool]) -> Any:
        """The forward pass of ``process``'s split path: raises on the same frame."""
        self.calls += len(rgbs)
        if self.calls >= self._fail_at > self.calls - len(rgbs):
            raise RuntimeError("inference failed on purpose")
        return self._engine.start_batch(rgbs, confidences)


@pytest.mark.parametrize("depth", [0, 2])
def test_an_error_in_a_worker_thread_reaches_the_caller(tmp_path: Path, engine: Any,
                                                        depth: int) -> None:
    """No hang and no silent drop: the error is raised by process_bag, the frames before it
    are in the (closed, readable) output, and no thread is left behind."""
    expected = make_bag(tmp_path / "in", {"/cam/image_raw": "raw"}, generated_frames(10))
    failing = _FailingEngine(engine, fail_at=5)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="on purpose"):
        process_bag(tmp_path / "in", tmp_path / "out", failing, progress=False,
                    options=ProcessOptions(pipeline_depth=depth))
    assert time.monotonic() - t0 < 120
    assert not [t for t in threading.enumerate() if t.name.startswith("process-")]
    out = read_bag(tmp_path / "out")
    assert_frame_exact(out, {"/cam/image_raw": expected["/cam/image_raw"][:4]})


class _ThreadLog:
    """The engine, noting which thread runs its forward passes and its postprocessing."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.threads: dict[str, set[str]] = defaultdict(set)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def start_batch(self, *args: Any, **kwargs: Any) -> Any:
        self.threads["start"].add(threading.current_thread().name)
        return self._engine.start_batch(*args, **kwargs)

    def finish_batch(self, *args: Any, **kwargs: Any) -> Any:
        self.threads["finish"].add(threading.current_thread().name)
        return self._engine.finish_batch(*args, **kwargs)


def test_the_network_thread_only_runs_forward_passes(tmp_path: Path, engine: Any) -> None:
    """Overlapped, the postprocessing (numpy work holding the GIL) runs in the outputs
    thread, beside the grid and polygon, not in the network's; sequential, both in the
    caller's."""
    make_bag(tmp_path / "in", {"/cam/image_raw": "raw"}, generated_frames(6))
    for depth in (2, 0):
        spy = _ThreadLog(engine)
        summary = process_bag(tmp_path / "in", tmp_path / f"out{depth}", spy, progress=False,
                              options=ProcessOptions(pipeline_depth=depth))
        assert summary.processed == 6
        main = threading.current_thread().name
        expected = ({"start": {"process-segment"}, "finish": {"process-outputs"}} if depth
                    else {"start": {main}, "finish": {main}})
        assert dict(spy.threads) == expected


def test_params_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The node's parameter file sets the grid (all cameras) and mountings (per namespace)."""
    from seg_perception.cli import build_parser
    from seg_perception.cli.process_cmd import build_options

    params = tmp_path / "params.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n    grid_frame: odom\n    overlay_alpha: 0.25\n"
        "    grid:\n      resolution: 0.5\n      x_max: 20.0\n    camera.pitch: 0.2\n"
        "    boundary.max_vertices: 12\n"
        "/cam_rear/seg_node:\n  ros__parameters:\n    camera:\n      yaw: 3.14159\n")
    args = build_parser().parse_args(
        ["process", "in", "out", "--params-file", str(params)])
    options, _ = build_options(args)
    cfg = options.config
    assert (cfg.grid_frame, cfg.overlay_alpha) == ("odom", 0.25)
    assert (cfg.grid.resolution, cfg.grid.x_max, cfg.grid.y_min) == (0.5, 20.0, -10.0)
    assert cfg.mounting.pitch == 0.2 and cfg.mounting.yaw == 0.0
    assert options.config_for("/cam_rear").mounting.yaw == 3.14159
    assert options.config_for("/cam_rear").mounting.pitch == 0.2  # the rest from /**
    assert options.config_for("/cam_front") is cfg
    assert cfg.max_vertices == 12

    cams = {"/cam_front/image_raw": "raw"}
    make_bag(tmp_path / "in", cams, generated_frames(2))
    code = cli_main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                     "tiny_seg", "--device", "cpu", "--no-progress", "--params-file",
                     str(params)])
    assert code == 0, capsys.readouterr().out
    _, grid = read_bag(tmp_path / "out")["/cam_front/drivable/grid"][0]
    assert (grid.header.frame_id, grid.info.resolution) == ("odom", 0.5)
    assert (grid.info.width, grid.info.height) == (40, 40)

    params.write_text("/**:\n  ros__parameters:\n    camera.pitch: 7.0\n")
    code = cli_main(["process", str(tmp_path / "in"), str(tmp_path / "out2"), "--model",
                     "tiny_seg", "--device", "cpu", "--params-file", str(params)])
    assert code == 2 and not (tmp_path / "out2").exists()


def test_iter_frames_and_help(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frames = generated_frames(3)
    make_bag(tmp_path / "bag", {"/cam/image/compressed": "compressed"}, frames,
             corrupt={"/cam/image/compressed": {1}})
    got = list(iter_frames(tmp_path / "bag"))
    assert [(f.topic, f.index, f.error is None) for f in got] == [
        ("/cam/image/compressed", 0, True), ("/cam/image/compressed", 1, False),
        ("/cam/image/compressed", 2, True)]
    assert got[0].rgb.shape == (H, W, 3)
    assert np.abs(got[2].rgb.astype(int) - frames[2]).mean() < 3  # JPEG q90
    with pytest.raises(SystemExit) as exc:
        cli_main(["process", "--help"])
    assert exc.value.code == 0
    assert "namespace" in capsys.readouterr().out


# --- camera pose from the bag's tf, camera models, pairing --------------------------------------

def _scene_bag(path: Path, mountings: list[Any], topic: str = "/cam/image_raw",
               tf: str = "static", info_offset_ns: int = 0, frame: str = "cam_optical",
               calibration: dict[str, Any] | None = None, render_camera: Any = None,
               info_model: Any = None) -> Any:
    """Frames of a synthetic road seen from each mounting, with camera_info and tf.

    ``tf``: "static" puts the first mounting on /tf_static (base_footprint -> camera_link ->
    optical frame), "dynamic" puts every frame's mounting on /tf at its stamp (and half-way
    samples between), "none" writes no tf. Returns the camera model used for the infos.
    """
    from seg_perception.runtime.geometry import BODY_FROM_OPTICAL, GridSpec, Transform
    from seg_perception.sim.scene import SceneSpec, render_scene

    model = CameraModel.from_fov(W, H, 80.0)
    grid = GridSpec(0.2, 0.0, 24.0, -6.0, 6.0)
    optical = Transform.from_matrix(BODY_FROM_OPTICAL, (0.0, 0.0, 0.0))

    def body(m: Any) -> Any:
        return Transform.from_matrix(m.rotation_body, m.position)

    with BagWriter(path) as bag:
        if tf == "static":
            bag.write("/tf_static", tf_msg([("base_footprint", "camera_link",
                                             body(mountings[0])),
                                            ("camera_link", frame, optical)]),
                      LOG0 - 1, qos=tf_static_qos())
        elif tf == "dynamic":
            bag.write("/tf_static", tf_msg([("camera_link", frame, optical)]), LOG0 - 1,
                      qos=tf_static_qos())
        for i, m in enumerate(mountings):
            sec, nsec = T0 + i, 0
            header = make_header(sec, nsec, frame)
            scene = render_scene(SceneSpec(curvature=1 / 90), render_camera or model, m, grid)
            log_time = LOG0 + i * 1_000_000_000
            if tf == "dynamic":
                bag.write("/tf", tf_msg([("base_footprint", "camera_link", body(m))],
                                        sec, nsec), log_time - 2)
            bag.write(topic, image_msg(scene.rgb, "rgb8", header), log_time)
            ih = make_header(sec, nsec + info_offset_ns, frame)
            bag.write("/cam/camera_info",
                      camera_info_msg(info_model or model, ih, **(calibration or {})),
                      log_time + 1)
    return model


def _grids(path: Path) -> list[np.ndarray]:
    from seg_perception.runtime.messages import grid_from_message

    return [grid_from_message(msg)[0] for _, msg in read_bag(path).get("/cam/drivable/grid", [])]


def _truth(mounting: Any, model: Any) -> np.ndarray:
    from seg_perception.runtime.geometry import GridSpec
    from seg_perception.sim.scene import SceneSpec, render_scene

    grid = GridSpec(0.2, 0.0, 24.0, -6.0, 6.0)
    return render_scene(SceneSpec(curvature=1 / 90), model, mounting, grid).grid


PARAMS_GRID = ("/**:\n  ros__parameters:\n    grid.resolution: 0.2\n    grid.x_max: 24.0\n"
               "    grid.y_min: -6.0\n    grid.y_max: 6.0\n")


def test_camera_pose_from_the_bags_tf_static_and_tf(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    from seg_perception.runtime.geometry import CameraMounting

    params = tmp_path / "p.yaml"
    params.write_text(PARAMS_GRID)
    args = ["--model", "tiny_seg", "--device", "cpu", "--no-progress", "--params-file",
            str(params)]
    low = CameraMounting(0.5, 0.0, 1.2, 0.0, 0.05, 0.0)
    high = CameraMounting(0.5, 0.3, 2.2, 0.0, 0.2, 0.1)
    model = _scene_bag(tmp_path / "static", [low, low])
    assert cli_main(["process", str(tmp_path / "static"), str(tmp_path / "o1"), *args]) == 0
    assert "pose from tf (base_footprint <- cam_optical)" in capsys.readouterr().out
    for g in _grids(tmp_path / "o1"):  # what is seen depends on the camera and its pose
        np.testing.assert_array_equal(g == -1, _truth(low, model) == -1)
    # a moving camera: each frame's grid follows its own transform
    _scene_bag(tmp_path / "dynamic", [low, high, low], tf="dynamic")
    assert cli_main(["process", str(tmp_path / "dynamic"), str(tmp_path / "o2"), *args]) == 0
    got = _grids(tmp_path / "o2")
    assert len(got) == 3
    for g, m in zip(got, [low, high, low], strict=True):
        assert ((g == -1) == (_truth(m, model) == -1)).mean() > 0.999
    assert ((got[0] == -1) != (got[1] == -1)).mean() > 0.05
    # no tf for the camera: the camera.* parameters, and the summary says so
    _scene_bag(tmp_path / "notf", [high], tf="none")
    hp = tmp_path / "high.yaml"
    hp.write_text(PARAMS_GRID + "    camera.x: 0.5\n    camera.y: 0.3\n    camera.z: 2.2\n"
                  "    camera.pitch: 0.2\n    camera.yaw: 0.1\n")
    assert cli_main(["process", str(tmp_path / "notf"), str(tmp_path / "o3"), *args[:-1],
                     str(hp)]) == 0
    assert "pose from parameters (the bag has no /tf or /tf_static)" in capsys.readouterr().out
    [g] = _grids(tmp_path / "o3")
    assert ((g == -1) == (_truth(high, model) == -1)).mean() > 0.999


def test_camera_info_is_paired_by_stamp_and_rectified_topics_use_p(
        tmp_path: Path, engine: Any) -> None:
    from seg_perception.runtime.config import PipelineConfig
    from seg_perception.runtime.geometry import CameraMounting

    mount = CameraMounting(0.5, 0.0, 1.4, 0.0, 0.1, 0.0)
    cfg = {"grid.resolution": 0.2, "grid.x_max": 24.0, "grid.y_min": -6.0, "grid.y_max": 6.0}
    # infos stamped 20 ms after their images: exact pairing gives no grid, and says so
    _scene_bag(tmp_path / "late", [mount, mount], info_offset_ns=20_000_000)
    opts = ProcessOptions(config=PipelineConfig.from_params(cfg))
    s = process_bag(tmp_path / "late", tmp_path / "o1", engine, progress=False, options=opts)
    assert s.processed == 2 and s.no_grid["/cam/image_raw"] == 2
    assert any("same stamp" in w and "camera_info_tolerance" in w for w in s.warnings)
    assert len(read_bag(tmp_path / "o1")["/cam/labels"]) == 2  # image outputs still there
    opts = ProcessOptions(config=PipelineConfig.from_params({**cfg,
                                                             "camera_info_tolerance": 0.05}))
    s = process_bag(tmp_path / "late", tmp_path / "o2", engine, progress=False, options=opts)
    assert not s.no_grid and len(_grids(tmp_path / "o2")) == 2
    # image_rect: P (and no distortion) describe the image; K with a strong D does not
    d = (-0.3, 0.1, 0.001, -0.002, -0.02)
    pinhole = CameraModel.from_fov(W, H, 80.0)
    distorted = CameraModel(W, H, pinhole.K, d)
    p = np.zeros(12)
    p[[0, 2, 5, 6, 10]] = [pinhole.K[0], pinhole.K[2], pinhole.K[4], pinhole.K[5], 1.0]
    opts = ProcessOptions(config=PipelineConfig.from_params(cfg))
    for topic, right in (("/cam/image_rect", True), ("/cam/image_raw", False)):
        # the same rectified pixels, once on an image_rect topic, once posing as raw
        name = topic.split("/")[-1]
        _scene_bag(tmp_path / f"in_{name}", [mount], topic=topic, calibration={"p": p},
                   render_camera=pinhole, info_model=distorted)
        process_bag(tmp_path / f"in_{name}", tmp_path / name, engine, progress=False,
                    options=opts)
        [g] = _grids(tmp_path / name)
        agree = float(((g == -1) == (_truth(mount, pinhole) == -1)).mean())
        assert (agree > 0.999) == right, (topic, agree)


def test_non_finite_parameters_in_a_params_file_are_refused(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    make_bag(tmp_path / "in", {"/cam/image_raw": "raw"}, generated_frames(1))
    for i, line in enumerate(("boundary.min_region_area: .inf", "grid.x_min: -1.0e+308",
                              "grid.y_max: 1.0e+308", "camera.z: .nan")):
        params = tmp_path / f"p{i}.yaml"
        params.write_text(f"/**:\n  ros__parameters:\n    {line}\n")
        caplog.clear()
        code = cli_main(["process", str(tmp_path / "in"), str(tmp_path / f"out{i}"),
                         "--model", "tiny_seg", "--device", "cpu", "--params-file",
                         str(params)])
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert code == 2 and len(errors) == 1, errors
        assert line.split(":")[0] in errors[0] and ("finite" in errors[0]
                                                    or "minimum" in errors[0]
                                                    or "maximum" in errors[0])
        assert not (tmp_path / f"out{i}").exists()
