"""The lean MCAP writer writes rosbags' bytes exactly, with fewer copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from seg_perception.offline import mcap_writer
from seg_perception.offline.mcap_writer import CHUNK_BYTES, LeanWriter
from seg_perception.offline.reader import iter_frames
from seg_perception.offline.topics import image_msg, make_header, typestore
from seg_perception.offline.writer import WRITE_VERSION, BagWriter


def _fill(cls: type, path: Path, seed: int) -> None:
    """Images over several chunks, a second topic added part-way, small and big messages."""
    rng = np.random.default_rng(seed)
    ts = typestore()
    w = cls(path, version=WRITE_VERSION, storage_plugin=StoragePlugin.MCAP)
    w.open()
    img = w.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=ts)
    text = None
    for i in range(40):
        rgb = rng.integers(0, 256, (90 + i, 160, 3), dtype=np.uint8)
        msg = image_msg(rgb, "rgb8", make_header(i, 7, "cam"))
        w.write(img, 1_000 + 10 * i, ts.serialize_cdr(msg, msg.__msgtype__))
        if i == 12:
            text = w.add_connection("/note", "std_msgs/msg/String", typestore=ts)
        if text is not None:
            note = ts.types["std_msgs/msg/String"](data="n" * i)
            w.write(text, 1_000 + 10 * i + 1, ts.serialize_cdr(note, "std_msgs/msg/String"))
    w.close()


def test_same_bytes_as_rosbags_writer(tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    (tmp_path / "lean").mkdir()
    _fill(Writer, tmp_path / "ref" / "bag", 3)
    _fill(LeanWriter, tmp_path / "lean" / "bag", 3)
    ref = (tmp_path / "ref" / "bag" / "bag.mcap").read_bytes()
    lean = (tmp_path / "lean" / "bag" / "bag.mcap").read_bytes()
    assert len(ref) > 2 * CHUNK_BYTES  # several chunks, one closed by close()
    assert lean == ref
    with Reader(tmp_path / "lean" / "bag") as reader:
        topics = [c.topic for c, _, _ in reader.messages()]
    assert topics.count("/cam/image") == 40 and topics.count("/note") == 28


def test_bag_writer_uses_it_and_keeps_each_message_as_written(tmp_path: Path) -> None:
    """BagWriter's messages read back equal, though their buffers were kept uncopied."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(12)]
    with BagWriter(tmp_path / "out") as bag:
        assert isinstance(bag._writer, mcap_writer.writer_class())
        for i, rgb in enumerate(frames):
            bag.write("/x", image_msg(rgb, "rgb8", make_header(i, 0, "c")), 5 + i)
    back = [f.rgb for f in iter_frames(tmp_path / "out", ["/x"])]
    assert len(back) == len(frames)
    for a, b in zip(back, frames, strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_unchecked_rosbags_release_gets_rosbags_own_writer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert mcap_writer.writer_class() is LeanWriter  # the pinned release (requirements.txt)
    monkeypatch.setattr(mcap_writer, "version", lambda _name: "0.12.0")
    assert mcap_writer.writer_class() is Writer
