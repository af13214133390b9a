"""Issue 14 regressions on ``process``: SIGTERM and repeated signals still leave a finished
bag, a cut-off .mcap yields its readable prefix (and says what was lost), and an image topic
without messages is "nothing processed"."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from bags import IMAGE_OUTPUTS, generated_frames, make_bag, read_bag, start_process

from seg_perception.cli import main as cli_main
from seg_perception.offline.mcap_prefix import McapPrefixReader
from seg_perception.offline.process import process_bag
from seg_perception.offline.reader import open_bag
from seg_perception.offline.topics import RAW, BagError, camera_info_msg, make_header
from seg_perception.offline.writer import BagWriter
from seg_perception.runtime.engine import build_engine
from seg_perception.runtime.geometry import CameraModel
from seg_perception.runtime.signals import STOP_SIGNALS, hold_stop_signals, stop_signals

N_FRAMES = 40  # 160x120 rgb8: about 17 frames per 1 MiB chunk, so 3 chunks


@pytest.fixture(scope="module")
def engine() -> Any:
    eng, _ = build_engine("tiny_seg", device="cpu")
    return eng


def mcap_bytes(bag: Path) -> bytes:
    return next(bag.glob("*.mcap")).read_bytes()


def recompress(data: bytes, codec: str) -> bytes:
    """The data section of an uncompressed .mcap with every chunk compressed by ``codec``
    (the summary is dropped: the result is cut off anyway)."""
    import lz4.frame

    if sys.version_info >= (3, 14):
        from compression import zstd
    else:
        from backports import zstd
    pack = {"lz4": lz4.frame.compress, "zstd": zstd.compress}[codec]
    out, i = bytearray(data[:8]), 8
    while i + 9 <= len(data):
        op, n = struct.unpack_from("<BQ", data, i)
        body = data[i + 9:i + 9 + n]
        if op == 0x06:
            start, end, usize, _ = struct.unpack_from("<QQQI", body, 0)
            (clen,) = struct.unpack_from("<I", body, 28)
            assert body[32:32 + clen] == b""
            (csize,) = struct.unpack_from("<Q", body, 32 + clen)
            packed = pack(body[40 + clen:40 + clen + csize])
            body = (struct.pack("<QQQI", start, end, usize, 0) + struct.pack("<I", len(codec))
                    + codec.encode() + struct.pack("<Q", len(packed)) + packed)
        out += struct.pack("<BQ", op, len(body)) + body
        if op == 0x0F:  # data end: what follows is the summary
            break
        i += 9 + n
    return bytes(out)


def complete_chunk_frames(bag: Path, cut: int, topic: str) -> int:
    """Frames of ``topic`` in the chunks of ``bag``'s (intact) .mcap that end before ``cut``,
    in a file cut at byte ``cut``: the least a prefix reader must give."""
    from rosbags.rosbag2.storage_mcap import McapReader

    reader = McapReader(next(bag.glob("*.mcap")))
    reader.open()
    try:
        cid = next(c.id for c in reader.connections if c.topic == topic)
        return sum(c.channel_count.get(cid, 0) for c in reader.chunks
                   if c.chunk_start_offset + c.chunk_length <= cut)
    finally:
        reader.close()


# --- item 7: a cut-off .mcap is processed up to the cut --------------------------------------

@pytest.mark.parametrize("codec", ["", "zstd", "lz4"])
@pytest.mark.parametrize("fraction", [0.45, 0.8])
def test_cut_off_mcap_yields_its_prefix(tmp_path: Path, engine: Any, codec: str,
                                        fraction: float) -> None:
    topic = "/cam/image_raw"
    expected = make_bag(tmp_path / "bag", {topic: "raw"}, generated_frames(N_FRAMES))[topic]
    data = mcap_bytes(tmp_path / "bag")
    cut = int(len(data) * fraction)
    least = complete_chunk_frames(tmp_path / "bag", cut, topic) if not codec else 0
    body = recompress(data, codec) if codec else data
    cut = int(len(body) * fraction)
    src = tmp_path / "cut.mcap"
    src.write_bytes(body[:cut])

    summary = process_bag(src, tmp_path / "out", engine, progress=False)
    assert summary.error and "cut off at byte" in summary.error, summary.error
    k = summary.processed
    assert max(1, least) <= k < N_FRAMES
    if not codec:
        assert k > least  # messages of the chunk the file ends in were salvaged too
    assert summary.frames[topic] == k and not summary.bad
    assert f" {k} of {topic}" in summary.error
    assert "how many messages followed is unknown" in summary.error
    # Frame-exact: the first k frames of the recording, every output, nothing else.
    out = read_bag(tmp_path / "out")
    for name in (*IMAGE_OUTPUTS, "drivable/grid", "drivable/boundary"):
        got = [(t, (m.header.stamp.sec, m.header.stamp.nanosec)) for t, m in out[f"/cam/{name}"]]
        want = [(lt, st) for lt, st, _ in expected[:k]]
        if name.startswith("drivable/"):
            # Frames are paired with the camera_info of their stamp: the last frame's may lie
            # beyond the cut, and that frame then has image outputs only.
            assert got in (want, want[:-1]), name
        else:
            assert got == want, name


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


def test_prefix_reader_matches_rosbags_on_the_intact_part(tmp_path: Path) -> None:
    make_bag(tmp_path / "bag", {"/a/image": "raw", "/b/image/compressed": "compressed"},
             generated_frames(N_FRAMES))
    data = mcap_bytes(tmp_path / "bag")
    with open_bag(tmp_path / "bag") as reader:
        whole = [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
    (tmp_path / "cut.mcap").write_bytes(data[: int(len(data) * 0.7)])
    prefix = McapPrefixReader(tmp_path / "cut.mcap")
    prefix.open()
    got = []
    with pytest.raises(Exception, match="cut off at byte"):
        for c, t, raw in prefix.messages():
            got.append((c.topic, t, bytes(raw)))
    prefix.close()
    assert 0 < len(got) < len(whole)
    assert got == whole[: len(got)]  # same order, same bytes
    counts = {c.topic: c.msgcount for c in prefix.connections}
    assert sum(counts.values()) == len(got)


def test_prefix_reader_salvages_the_cut_chunk_that_mcap_drops(tmp_path: Path) -> None:
    """Why mcap_prefix keeps its own salvage code: the ``mcap`` package's StreamReader stops
    at the chunk the file ends in and yields none of its messages."""
    from mcap.exceptions import EndOfFile
    from mcap.records import Message
    from mcap.stream_reader import StreamReader

    make_bag(tmp_path / "bag", {"/cam/image_raw": "raw"}, generated_frames(N_FRAMES))
    data = mcap_bytes(tmp_path / "bag")
    (tmp_path / "cut.mcap").write_bytes(data[: int(len(data) * 0.8)])
    by_library = []
    with (tmp_path / "cut.mcap").open("rb") as f, pytest.raises(EndOfFile):
        for rec in StreamReader(f).records:
            if isinstance(rec, Message):
                by_library.append((rec.log_time, rec.data))
    with McapPrefixReader(tmp_path / "cut.mcap") as prefix:
        got = []
        with pytest.raises(Exception, match="cut off at byte"):
            got.extend((t, bytes(raw)) for _, t, raw in prefix.messages())
    assert len(got) > len(by_library) > 0
    assert sorted(by_library) == got[: len(by_library)]


def test_mcap_cut_inside_its_header_is_still_a_clear_error(tmp_path: Path) -> None:
    make_bag(tmp_path / "bag", {"/cam/image_raw": "raw"}, generated_frames(2))
    (tmp_path / "cut.mcap").write_bytes(mcap_bytes(tmp_path / "bag")[:30])
    with pytest.raises(BagError, match=r"cannot read bag .*truncated or corrupt"), \
            open_bag(tmp_path / "cut.mcap"):
        pass


# --- item 7: an image topic with no messages is "nothing processed" -----------------------

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


# --- item 5: SIGTERM like SIGINT; a second signal never cuts the finishing short ----------


def _finish(proc: subprocess.Popen, err: bytearray, reader: Any,
            repeat: list[int] | None = None) -> tuple[str, str]:
    """Wait for the exit, sending the signals of ``repeat`` every millisecond meanwhile (they
    land while the bag is being finished)."""
    deadline = time.monotonic() + 120
    while repeat and proc.poll() is None and time.monotonic() < deadline:
        for sig in repeat:
            with contextlib.suppress(ProcessLookupError):  # it may exit meanwhile
                proc.send_signal(sig)
        time.sleep(0.001)
    stdout = proc.stdout.read()
    proc.wait(timeout=120)
    reader.join(timeout=5)
    return stdout.decode(), bytes(err).decode()


def _assert_finished_bag(out: Path, n: int) -> int:
    """The output is a complete rosbag2 bag (metadata.yaml, .mcap with summary: rosbags'
    own reader opens it, not the prefix fallback) with whole frames only."""
    from rosbags.rosbag2 import Reader

    assert (out / "metadata.yaml").is_file()
    with Reader(out) as reader:  # raises on an .mcap without summary
        counts = {c.topic: c.msgcount for c in reader.connections}
    per_output = {counts.get(f"/cam/{name}", 0) for name in IMAGE_OUTPUTS}
    assert len(per_output) == 1, counts
    k = per_output.pop()
    assert 0 < k < n
    assert {len(read_bag(out)[f"/cam/{name}"]) for name in IMAGE_OUTPUTS} == {k}
    return k


@pytest.mark.slow
def test_sigterm_finishes_the_bag_and_exits_130(tmp_path: Path) -> None:
    n = 1500
    proc, err, reader = start_process(tmp_path, n)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = _finish(proc, err, reader)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted by SIGTERM" in stdout and "is a valid bag" in stdout, stdout
    assert "Traceback" not in stderr
    k = _assert_finished_bag(tmp_path / "out", n)
    assert f"interrupted by SIGTERM after {k} frames" in stdout


@pytest.mark.slow
@pytest.mark.parametrize(("first", "again"), [
    (signal.SIGINT, [signal.SIGINT]),
    (signal.SIGTERM, [signal.SIGTERM, signal.SIGINT]),
])
def test_repeated_signals_while_finishing_still_finish_the_bag(tmp_path: Path, first: int,
                                                              again: list[int]) -> None:
    """Ctrl-C, then Ctrl-C again and again while the bag is being finished (every ms until
    the process exits): the bag still gets its summary and metadata.yaml, exit 130, no
    traceback."""
    n = 1500
    proc, err, reader = start_process(tmp_path, n)
    proc.send_signal(first)
    stdout, stderr = _finish(proc, err, reader, repeat=again)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert "is a valid bag" in stdout, stdout
    assert stderr.count("still finishing") <= 1  # said once, however many came
    _assert_finished_bag(tmp_path / "out", n)


def test_stop_signals_restores_handlers_and_holds_back_repeats() -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    with stop_signals() as state:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises here
        os.kill(os.getpid(), signal.SIGINT)  # ignored now: finishing
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    assert state.name == "SIGTERM" and state.count == 3
    # Stopping: later signals stay ignored so none cuts the exit short ...
    assert all(signal.getsignal(s) == signal.SIG_IGN for s in STOP_SIGNALS)
    for s, handler in before.items():
        signal.signal(s, handler)
    with stop_signals():  # ... while a run without signal restores the handlers
        pass
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before
    # A frame's writes are never split: the signal comes after the held block.
    order = []
    try:
        with stop_signals(), pytest.raises(KeyboardInterrupt):
            with hold_stop_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                order.append("block done")
            order.append("not reached")
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert order == ["block done"]


def test_output_removed_only_when_this_run_wrote_nothing(tmp_path: Path) -> None:
    from seg_perception.cli.process_cmd import _remove_empty_output

    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    _remove_empty_output(keep)
    assert keep.exists()
    shutil.rmtree(keep)
