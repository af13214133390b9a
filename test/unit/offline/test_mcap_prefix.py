"""A cut-off .mcap (a recorder killed mid-write): the prefix reader yields every message
before the cut, including those of the chunk the file ends in, and processing it writes
frame-exact outputs for that prefix and says what was lost."""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from bags import IMAGE_OUTPUTS, generated_frames, make_bag, read_bag

from seg_perception.offline.mcap_prefix import McapPrefixReader
from seg_perception.offline.process import process_bag
from seg_perception.offline.reader import open_bag
from seg_perception.offline.topics import BagError
from seg_perception.runtime.engine import build_engine

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
