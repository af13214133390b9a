"""``process`` when writing the output fails part-way (a full disk, EIO, EFBIG, a quota):
one line, exit status 4, and a valid bag holding the whole frames written before."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bags import ALL_OUTPUTS, IMAGE_OUTPUTS, generated_frames, make_bag
from shared_data import REPO

from seg_perception.cli import main as cli_main
from seg_perception.offline import fleet, mcap_writer
from seg_perception.offline.job import ProcessOptions
from seg_perception.offline.process import process_bag
from seg_perception.runtime.engine import build_engine

CAM = "/cam/image_raw"


def fail_after(monkeypatch: pytest.MonkeyPatch, budget: int, code: int = errno.ENOSPC,
               at_close: bool = False) -> dict[str, int]:
    """The .mcap's writes fail with ``code`` once ``budget`` bytes are in it (the write that
    crosses it writes what fits, as write(2) on a filling disk does); later writes work, as
    after the reserve is freed. ``at_close``: only writes after the data (summary) fail."""
    state = {"written": 0, "failed": 0}
    real = mcap_writer._File.write_once

    def write_once(self: Any, view: memoryview) -> int:
        if not state["failed"] and (not at_close or self.closing):
            room = budget - state["written"]
            if room <= 0:
                state["failed"] += 1
                raise OSError(code, os.strerror(code))
            view = view[:room]
        n = real(self, view)
        state["written"] += n
        return n

    monkeypatch.setattr(mcap_writer._File, "write_once", write_once)
    return state


def one_error_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out
    return lines[0]


def assert_whole_frames(path: Path, expected: list[tuple], k: int, grid: bool = True) -> None:
    """``path`` opens with rosbags' own reader (summary, footer, metadata.yaml) and holds
    exactly the first ``k`` frames, every output of each, in order."""
    from rosbags.highlevel import AnyReader

    assert (path / "metadata.yaml").is_file()
    assert not (path / mcap_writer.RESERVE_NAME).exists()
    with AnyReader([path]) as reader:
        got: dict[str, list[int]] = {}
        for conn, log_time, _raw in reader.messages():
            got.setdefault(conn.topic, []).append(log_time)
        counts = {c.topic: c.msgcount for c in reader.connections}
    want = [log for log, _, _ in expected[:k]]
    for name in ALL_OUTPUTS if grid else IMAGE_OUTPUTS:
        assert got.get(f"/cam/{name}", []) == want, name
        assert counts.get(f"/cam/{name}", 0) == k, name
    meta = (path / "metadata.yaml").read_text()
    assert f"message_count: {sum(counts.values())}" in meta


@pytest.mark.parametrize(("budget", "code"), [
    (200_000, errno.ENOSPC),  # inside the first chunk: nothing kept, still a bag
    (2_500_000, errno.ENOSPC),
    (4_300_000, errno.EIO),
    (3_100_000, errno.EFBIG),
    (1_600_000, errno.EDQUOT),
])
def test_a_failed_write_leaves_a_valid_bag_of_whole_frames(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        budget: int, code: int) -> None:
    n = 40
    expected = make_bag(tmp_path / "in", {CAM: "raw"}, generated_frames(n))[CAM]
    state = fail_after(monkeypatch, budget, code)
    rc = cli_main(["process", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                   "tiny_seg", "--device", "cpu", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 4, out
    assert state["failed"] == 1
    line = one_error_line(out)
    name = errno.errorcode[code]
    assert f"writing {tmp_path / 'out' / 'out.mcap'} failed: {os.strerror(code)} ({name})" \
        in line
    kept, processed = map(int, line.split("with the first ")[1].split(" frames")[0]
                          .split(" of "))
    assert kept <= processed < n
    assert f"{tmp_path / 'out'} is a valid bag" in line
    if budget > 1_500_000:
        assert kept > 0
    assert_whole_frames(tmp_path / "out", expected, kept)


@pytest.fixture(scope="module")
def engine() -> Any:
    eng, _ = build_engine("tiny_seg", device="cpu")
    return eng


def test_a_failed_summary_is_written_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          engine: Any) -> None:
    """The disk fills while the summary is written: it is cut off and written again (the
    reserve is free by then); every frame stays."""
    n = 12
    expected = make_bag(tmp_path / "in", {CAM: "raw"}, generated_frames(n))[CAM]
    monkeypatch.setattr(mcap_writer._File, "closing", False, raising=False)
    orig = mcap_writer.LeanMcapWriter.finish_data

    def finish_data(self: Any) -> None:
        orig(self)
        self.bio.closing = True

    monkeypatch.setattr(mcap_writer.LeanMcapWriter, "finish_data", finish_data)
    state = fail_after(monkeypatch, 0, at_close=True)
    summary = process_bag(tmp_path / "in", tmp_path / "out", engine, progress=False,
                          options=ProcessOptions(pipeline_depth=0))
    assert state["failed"] == 1
    assert summary.write_error and "No space left on device" in summary.write_error
    assert summary.kept == summary.processed == n
    assert_whole_frames(tmp_path / "out", expected, n)


def test_process_many_fails_the_bag_with_the_reason(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   engine: Any) -> None:
    make_bag(tmp_path / "in", {CAM: "raw"}, generated_frames(20))
    fail_after(monkeypatch, 1_500_000)
    spec = fleet.TaskSpec(tmp_path / "archive", ProcessOptions())
    bag = fleet.BagInput("in", tmp_path / "in", 1)
    result = fleet.run_task(bag, spec, engine)
    assert result.status == fleet.FAILED
    assert result.error and "No space left on device (ENOSPC)" in result.error
    assert not (tmp_path / "archive" / "in").exists()


# --- a real full disk --------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 3 MiB tmpfs (root and a mount permission needed; skipped elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)


def test_process_into_a_full_tmpfs(tmp_path: Path, small_disk: Path) -> None:
    """`seg-perception process` into a 3 MiB filesystem, output far larger: exit 4, one
    line, and a bag rosbags opens with every frame that reached the disk whole."""
    n = 60
    expected = make_bag(tmp_path / "in", {CAM: "raw"}, generated_frames(n))[CAM]
    out = small_disk / "out"
    cmd = [sys.executable, "-m", "seg_perception", "process", str(tmp_path / "in"), str(out),
           "--model", "tiny_seg", "--device", "cpu", "--no-progress"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    line = one_error_line(done.stdout)
    assert f"writing {out / 'out.mcap'} failed: No space left on device (ENOSPC)" in line
    kept = int(line.split("with the first ")[1].split(" of ")[0])
    assert kept > 0
    assert_whole_frames(out, expected, kept)
