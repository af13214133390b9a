"""``seg-perception process-many``: an archive of bags on Ray, resumable, identical to ``process``.

The Ray tests share one local Ray (2 CPUs, loopback only, its own temp folder) started by a
module fixture; the interrupt test runs the verb in a subprocess with a Ray of its own. Every
Ray process started here carries a marker in its environment, and the fixtures check that
none is left when they end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from bags import generated_frames, make_bag
from shared_data import REPO

from seg_perception.cli import main as cli_main
from seg_perception.offline import fleet
from seg_perception.offline.job import ProcessOptions
from seg_perception.offline.reader import bag_topics, open_bag
from seg_perception.runtime.config import PipelineConfig
from seg_perception.runtime.engine import build_engine
from seg_perception.runtime.models.checkpoint import save_checkpoint
from seg_perception.runtime.models.registry import create_model

CAMS = {"/cam_front/image_raw": "raw", "/cam_rear/image_raw/compressed": "compressed"}
MARKER_VAR = "SEG_PERCEPTION_TEST_RAY"
BIG = 4000  # frames (64x48) of the bag the interrupt test stops part-way
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": local Ray on 127.0.0.1 only


# --- helpers ---------------------------------------------------------------------------------

def cmdline(pid: int) -> bytes:
    """A process's command line (Ray workers rewrite theirs: ``ray::BagWorker``); b"" once
    it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def ray_processes(temp_dir: str, marker: str) -> list[int]:
    """PIDs of live processes of the Ray whose temp folder is ``temp_dir``.

    Every Ray process keeps its logs there open (workers and agents rewrite their command
    line and environment with setproctitle, so neither identifies them); the ``marker``
    environment variable catches the others.
    """
    found = []
    needle = f"{MARKER_VAR}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            ours = needle in (entry / "environ").read_bytes().split(b"\0")
            if not ours:
                for fd in (entry / "fd").iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd).startswith(temp_dir):
                            ours = True
                            break
        except OSError:
            continue
        if ours:
            found.append(int(entry.name))
    return found


def wait_no_ray_processes(temp_dir: str, marker: str, timeout: float = 90.0) -> list[int]:
    """Wait for Ray's processes to exit; kill (and return) any still there after ``timeout``.

    They are ours: the temp folder and the marker are fresh and only our Ray uses them.
    """
    deadline = time.monotonic() + timeout
    while (left := ray_processes(temp_dir, marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def bag_messages(path: Path) -> tuple[dict[str, tuple], list[tuple[str, int, bytes]]]:
    """Topics (type, count, QoS) and every message (topic, log time, raw CDR) of a bag."""
    with open_bag(path) as reader:
        topics = {name: (t.msgtype, t.count, tuple(str(q) for q in t.qos))
                  for name, t in bag_topics(reader).items()}
        messages = [(conn.topic, log_time, bytes(raw))
                    for conn, log_time, raw in reader.messages()]
    return topics, messages


def assert_same_bag(a: Path, b: Path) -> None:
    topics_a, msgs_a = bag_messages(a)
    topics_b, msgs_b = bag_messages(b)
    assert topics_a == topics_b
    assert len(msgs_a) == len(msgs_b)
    for i, (x, y) in enumerate(zip(msgs_a, msgs_b, strict=True)):
        assert x == y, f"message {i} differs: {x[:2]} vs {y[:2]}"


def manifest(out: Path) -> dict[str, dict[str, Any]]:
    return json.loads((out / fleet.MANIFEST).read_text())["bags"]


def incomplete(out: Path) -> list[Path]:
    return list((out / fleet.WORK_DIR / fleet.INCOMPLETE).iterdir())


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_seg with fixed weights: every process and worker runs the same network."""
    torch.manual_seed(7)
    return save_checkpoint(create_model("tiny_seg"),
                           tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four bags: a bag folder, a loose .db3, one with bad frames in a sub-folder, a
    truncated .mcap."""
    root = tmp_path_factory.mktemp("archive")
    bags = root / "bags"
    make_bag(bags / "drive_a", CAMS, generated_frames(5))
    src = root / "src_b"
    make_bag(src, {"/camera/image_raw": "raw"}, generated_frames(4), storage="sqlite3")
    shutil.copy(next(src.glob("*.db3")), bags / "drive_b.db3")
    make_bag(bags / "2024-05-01" / "drive_c", {"/cam/image/compressed": "compressed"},
             generated_frames(5), corrupt={"/cam/image/compressed": {2}})
    good = next((bags / "drive_a").glob("*.mcap")).read_bytes()
    (bags / "drive_d.mcap").write_bytes(good[: len(good) // 3])
    return {"root": bags, "drive_a": bags / "drive_a", "drive_b": bags / "drive_b.db3",
            "drive_c": bags / "2024-05-01" / "drive_c", "drive_d": bags / "drive_d.mcap"}


@pytest.fixture
def ray_local() -> Iterator[Any]:
    """A local Ray for the test: 2 CPUs, loopback, bounded start, nothing left after. One per
    test, not per module: the Ray tests then run side by side under pytest-xdist (each local
    Ray takes free ports)."""
    os.environ.setdefault(LOOPBACK_ENV, "0")
    ray = pytest.importorskip("ray", reason="Ray is absent (pip install 'seg_perception[fleet]')")
    marker = uuid.uuid4().hex
    temp = tempfile.mkdtemp(prefix="sp-ray-", dir="/tmp")  # short: Ray's socket paths
    old = os.environ.get(MARKER_VAR)
    os.environ[MARKER_VAR] = marker
    done = threading.Event()
    timer = threading.Timer(180, lambda: done.is_set() or os.kill(os.getpid(), signal.SIGINT))
    timer.start()  # a Ray that does not come up in 3 minutes interrupts the test run
    try:
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
                 _node_ip_address="127.0.0.1", _temp_dir=temp,
                 object_store_memory=100 * 2**20, logging_level="WARNING",
                 _system_config={"worker_niceness": 0})  # as process-many's own Ray
    finally:
        done.set()
        timer.cancel()
    try:
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop(MARKER_VAR, None)
        else:
            os.environ[MARKER_VAR] = old
        left = wait_no_ray_processes(temp, marker)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes {left} outlived ray.shutdown() (killed)"


def many(*args: Any) -> list[str]:
    return ["process-many", *map(str, args), "--model", "tiny_seg", "--device", "cpu",
            "--no-progress"]


# --- inputs, manifest, one task: no Ray ------------------------------------------------------

def test_expand_inputs(tmp_path: Path) -> None:
    make_bag(tmp_path / "a" / "drive_1", {"/image": "raw"}, generated_frames(1))
    make_bag(tmp_path / "a" / "deeper" / "drive_2", {"/image": "raw"}, generated_frames(1))
    make_bag(tmp_path / "src", {"/image": "raw"}, generated_frames(1))
    mcap = next((tmp_path / "src").glob("*.mcap"))
    shutil.copy(mcap, tmp_path / "a" / "loose.mcap")
    (tmp_path / "a" / ".hidden").mkdir()
    shutil.copytree(tmp_path / "src", tmp_path / "a" / ".hidden" / "drive_x")
    shutil.copytree(tmp_path / "src", tmp_path / "a" / "out" / "drive_y")  # the output folder
    (tmp_path / "a" / "notes.md").write_text("not a bag")

    bags = fleet.expand_inputs([tmp_path / "a"], exclude=[tmp_path / "a" / "out"])
    assert [b.name for b in bags] == ["drive_2", "drive_1", "loose"]
    assert all(b.path.is_absolute() and b.size > 0 for b in bags)
    assert bags[2].size == mcap.stat().st_size

    # Globs (recursive too), duplicates once, order as given.
    got = fleet.expand_inputs([str(tmp_path / "a" / "drive_*"), str(tmp_path / "a" / "**" /
                                                                   "drive_2"),
                               tmp_path / "a" / "drive_1"])
    assert [b.name for b in got] == ["drive_1", "drive_2"]

    # A list file: comments, blank lines, paths relative to the list, globs.
    listing = tmp_path / "a" / "bags.txt"
    listing.write_text("# the drives\n\ndrive_1\n" + str(tmp_path / "a" / "*.mcap") + "\n")
    assert [b.name for b in fleet.expand_inputs([listing])] == ["drive_1", "loose"]

    with pytest.raises(fleet.FleetError, match="does not exist"):
        fleet.expand_inputs([tmp_path / "nope"])
    with pytest.raises(fleet.FleetError, match="no file or folder matches"):
        fleet.expand_inputs([str(tmp_path / "zz*")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(fleet.FleetError, match="no bags found"):
        fleet.expand_inputs([tmp_path / "empty"])
    shutil.copy(mcap, tmp_path / "drive_1.mcap")
    with pytest.raises(fleet.FleetError, match="both write to <out>/drive_1"):
        fleet.expand_inputs([tmp_path / "a" / "drive_1", tmp_path / "drive_1.mcap"])
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(fleet.FleetError, match="nor a text file listing bags"):
        fleet.expand_inputs([tmp_path / "blob.bin"])


def test_plan_skips_only_what_is_done_the_same_way(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ident = fleet.Identity("tiny_seg", "w1", "ckpt", True, "cpu", "fp32", "host", 1, 1)
    bags = [fleet.BagInput(n, tmp_path / n, 100) for n in
            ("new", "done", "failed", "partial", "running", "model", "weights", "options",
             "resized", "gone")]
    m = fleet.Manifest(out)
    for bag in bags[1:]:
        m.bags[bag.name] = fleet.BagRecord(bag.name, str(bag.path), 100, status=fleet.DONE,
                                           model="tiny_seg", weights_sha256="w1",
                                           options_sha256="o1")
        if bag.name != "gone":
            (out / bag.name).mkdir()
    m.bags["failed"].status, m.bags["failed"].error = fleet.FAILED, "cannot read bag"
    m.bags["partial"].status = fleet.PARTIAL
    m.bags["running"].status = fleet.RUNNING
    m.bags["model"].model = "lightfpn"
    m.bags["weights"].weights_sha256 = "w0"
    m.bags["options"].options_sha256 = "o0"
    m.bags["resized"].input_bytes = 99
    m.save()
    m = fleet.Manifest.load(out)  # round trip through the JSON file
    reasons = {i.bag.name: (i.run, i.reason) for i in fleet.plan(m, bags, ident, "o1")}
    assert reasons == {
        "new": (True, "new"),
        "done": (False, "done"),
        "failed": (True, "failed before (cannot read bag)"),
        "partial": (True, "interrupted before"),
        "running": (True, "was running when the last run stopped"),
        "model": (True, "model changed (lightfpn -> tiny_seg)"),
        "weights": (True, "weights changed (sha256 w0 -> w1)"),
        "options": (True, "options changed"),
        "resized": (True, "input changed (99 -> 100 bytes)"),
        "gone": (True, "output missing"),
    }
    assert all(i.run for i in fleet.plan(m, bags, ident, "o1", force=True))
    # A folder process-many did not write is never overwritten.
    (out / "new").mkdir()
    with pytest.raises(fleet.FleetError, match="does not list it"):
        fleet.plan(m, bags, ident, "o1")


def test_output_folder_lock_and_leftovers(tmp_path: Path) -> None:
    """One driver per output folder; a crashed run's incomplete outputs are removed."""
    out = tmp_path / "out"
    stale = out / fleet.WORK_DIR / fleet.INCOMPLETE / "drive.0badc0de" / "drive"
    stale.mkdir(parents=True)
    with fleet.locked_out_dir(out) as token:
        assert not stale.parent.exists()
        assert fleet.check_out_dir(out, token) is None
        with pytest.raises(fleet.FleetError, match="another process-many"), \
                fleet.locked_out_dir(out):
            pass
    with fleet.locked_out_dir(out) as again:  # released at the end of the run
        assert again != token


def test_options_hash_follows_the_options() -> None:
    base = fleet.options_sha256(ProcessOptions(), None, None)
    assert base == fleet.options_sha256(ProcessOptions(), None, None)
    assert base != fleet.options_sha256(ProcessOptions(grid=False), None, None)
    tinted = ProcessOptions(config=PipelineConfig.from_params({"overlay_alpha": 0.3}))
    assert base != fleet.options_sha256(tinted, None, None)
    assert base != fleet.options_sha256(ProcessOptions(), ("/cam/image",), None)


def test_run_task_renames_only_complete_bags(tmp_path: Path, checkpoint: Path) -> None:
    engine, _ = build_engine("tiny_seg", checkpoint, "cpu")
    make_bag(tmp_path / "in" / "drive", {"/cam/image_raw": "raw"}, generated_frames(6))
    out = tmp_path / "out"
    (out / fleet.WORK_DIR / fleet.INCOMPLETE).mkdir(parents=True)
    spec = fleet.TaskSpec(out, ProcessOptions())
    [bag] = fleet.expand_inputs([tmp_path / "in" / "drive"])
    seen: list[tuple[int, int]] = []

    result = fleet.run_task(bag, spec, engine, on_progress=lambda h, t: seen.append((h, t)))
    assert result.status == fleet.DONE and result.frames_processed == 6, result
    assert (out / "drive" / "drive.mcap").is_file()  # named as `process` names it
    assert seen[0] == (0, 6) and seen[-1] == (6, 6)
    assert not incomplete(out)
    first = (out / "drive" / "drive.mcap").stat().st_ino

    # Stopped part-way: the output is discarded, the finished bag from before stays.
    stop = threading.Event()

    def stop_at_3(handled: int, _total: int) -> None:
        if handled == 3:
            stop.set()

    result = fleet.run_task(bag, spec, engine, stop=stop, on_progress=stop_at_3)
    assert result.status == fleet.PARTIAL and result.frames_processed == 3
    assert (out / "drive" / "drive.mcap").stat().st_ino == first
    assert not incomplete(out)

    # A redo replaces the old output in one rename.
    result = fleet.run_task(bag, spec, engine)
    assert result.status == fleet.DONE
    assert (out / "drive" / "drive.mcap").stat().st_ino != first
    assert not incomplete(out)

    # Cut off part-way: failed, nothing kept (a half bag never gets the final name).
    mcap = next((tmp_path / "in" / "drive").glob("*.mcap"))
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(mcap.read_bytes()[:-200])
    result = fleet.run_task(fleet.expand_inputs([cut])[0], spec, engine)
    assert result.status == fleet.FAILED and result.error
    assert not (out / "cut").exists() and not incomplete(out)
    result = fleet.run_task(fleet.BagInput("lost", tmp_path / "lost", 0), spec, engine)
    assert result.status == fleet.FAILED and "does not exist" in result.error


def test_worker_reports_progress_and_stops(tmp_path: Path, checkpoint: Path) -> None:
    """The actor class on its own: progress() and stop() answer while run() works."""
    from seg_perception.cli.process_cmd import output_custom_data
    from seg_perception.offline.fleet_ray import BagWorker, EngineSpec

    make_bag(tmp_path / "in" / "drive", {"/cam/image_raw": "raw"}, generated_frames(400),
             camera_info=False)
    out = tmp_path / "out"
    (out / fleet.WORK_DIR / fleet.INCOMPLETE).mkdir(parents=True)
    (out / fleet.WORK_DIR / "run").write_text("token\n")
    worker = BagWorker(EngineSpec("tiny_seg", str(checkpoint), "cpu", "auto"),
                       fleet.TaskSpec(out, ProcessOptions(grid=None)), 1, output_custom_data)
    ident = worker.identity()
    assert ident.error is None and ident.model == "tiny_seg" and ident.trained
    assert ident.weights_sha256 == fleet.file_sha256(checkpoint)
    assert worker.check_out_dir("token") is None
    assert "shared storage" in worker.check_out_dir("another")
    [bag] = fleet.expand_inputs([tmp_path / "in" / "drive"])
    results: list[fleet.TaskResult] = []
    thread = threading.Thread(target=lambda: results.append(worker.run(bag)))
    thread.start()
    deadline = time.monotonic() + 120
    while worker.progress()[1] < 2 and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    name, handled, total = worker.progress()
    assert (name, total) == ("drive", 400) and handled >= 2
    worker.stop()
    thread.join(timeout=120)
    [result] = results
    assert result.status == fleet.PARTIAL and 2 <= result.frames_processed < 400
    assert not (out / "drive").exists() and not incomplete(out)


def test_random_weights_are_the_same_in_every_worker(tmp_path: Path) -> None:
    from seg_perception.cli.process_cmd import output_custom_data
    from seg_perception.offline.fleet_ray import BagWorker, EngineSpec

    spec = fleet.TaskSpec(tmp_path, ProcessOptions())
    workers = [BagWorker(EngineSpec("tiny_seg", None, "cpu", "auto"), spec, 1,
                         output_custom_data) for _ in range(2)]
    a, b = (w.identity() for w in workers)
    assert not a.trained and a.weights_sha256 == b.weights_sha256
    # The hash is that of the tensors the worker's network really holds (where the backend
    # is torch; others convert the same seeded network).
    import hashlib

    net = workers[0].engine.model
    if not hasattr(net, "state_dict"):
        return
    digest = hashlib.sha256()
    for key, t in sorted(net.state_dict().items()):
        t = t.detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    assert digest.hexdigest() == a.weights_sha256
    bad = BagWorker(EngineSpec("no_such_model", None, "cpu", "auto"), spec, 1,
                    output_custom_data).identity()
    assert bad.error and "no_such_model" in bad.error


def test_without_ray_the_verb_says_how_to_install_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    make_bag(tmp_path / "drive", {"/image": "raw"}, generated_frames(1))
    assert cli_main(many(tmp_path / "drive", "--out", tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "pip install 'seg_perception[fleet]'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_help_names_the_cluster_requirements(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["process-many", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--ray-address", "--workers", "--threads-per-worker", "--params-file",
                 "--skip-bad-frames", "--keep-input", "shared storage"):
        assert flag in text


# --- on Ray ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_archive_on_ray_matches_process_and_resumes(
        ray_local: Any, archive: dict[str, Path], checkpoint: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    args = many(archive["root"], "--out", out, "--checkpoint", checkpoint, "--workers", 2)
    code = cli_main(args)
    stdout = capsys.readouterr().out
    assert code == 1, stdout  # the truncated bag failed; drive_c has a bad frame
    bags = manifest(out)
    assert {n: r["status"] for n, r in bags.items()} == {
        "drive_a": "done", "drive_b": "done", "drive_c": "done", "drive_d": "failed"}
    assert "is incomplete" in bags["drive_d"]["error"]  # read up to the cut, then failed
    assert not (out / "drive_d").exists() and not incomplete(out)
    assert (bags["drive_a"]["frames_total"], bags["drive_a"]["frames_processed"]) == (10, 10)
    assert (bags["drive_c"]["frames_processed"], bags["drive_c"]["bad_frames"]) == (4, 1)
    assert "/cam/image/compressed #2" in bags["drive_c"]["bad"][0]
    for name in ("drive_a", "drive_b", "drive_c"):
        rec = bags[name]
        assert rec["model"] == "tiny_seg" and rec["attempts"] == 1
        assert rec["weights_sha256"] == fleet.file_sha256(checkpoint)
        assert rec["input_bytes"] == fleet.bag_size(archive[name])
    assert "drive_d  failed" in stdout and "4 bags: 3 done, 1 failed" in stdout

    # Identical to `process`, bag by bag, message by message.
    for name in ("drive_a", "drive_b", "drive_c"):
        single = tmp_path / "single" / name
        code = cli_main(["process", str(archive[name]), str(single), "--model", "tiny_seg",
                         "--checkpoint", str(checkpoint), "--device", "cpu", "--no-progress"])
        assert code == (1 if name == "drive_c" else 0)
        assert_same_bag(out / name, single)
        assert sorted(p.name for p in (out / name).iterdir()) == [f"{name}.mcap",
                                                                  "metadata.yaml"]

    rows = json.loads((out / fleet.SUMMARY_JSON).read_text())
    assert [(r["bag"], r["status"], r["frames"], r["bad_frames"]) for r in rows] == [
        ("drive_a", "done", 10, 0), ("drive_b", "done", 4, 0), ("drive_c", "done", 4, 1),
        ("drive_d", "failed", 2, 0)]  # 2 frames read before the cut
    header = (out / fleet.SUMMARY_CSV).read_text().splitlines()[0]
    assert header.startswith("bag,status,frames,bad_frames,seconds,fps")

    # Re-run: the done bags are skipped, the failed one is tried again.
    mtimes = {n: (out / n / f"{n}.mcap").stat().st_mtime_ns for n in ("drive_a", "drive_b")}
    assert cli_main(args) == 1
    stdout = capsys.readouterr().out
    bags = manifest(out)
    assert [bags[n]["attempts"] for n in ("drive_a", "drive_b", "drive_c", "drive_d")] == \
        [1, 1, 1, 2]
    assert "3 skipped" in stdout
    assert mtimes == {n: (out / n / f"{n}.mcap").stat().st_mtime_ns for n in mtimes}

    # The good bags from a list file, bad frames accepted: nothing to do, exit 0.
    listing = tmp_path / "good.txt"
    listing.write_text("\n".join(str(archive[n]) for n in ("drive_a", "drive_b", "drive_c")))
    assert cli_main([*many(listing, "--out", out, "--checkpoint", checkpoint),
                     "--skip-bad-frames"]) == 0
    capsys.readouterr()

    # Other weights: every bag is redone.
    torch.manual_seed(8)
    other = save_checkpoint(create_model("tiny_seg"), tmp_path / "other.safetensors")
    assert cli_main([*many(archive["drive_b"], "--out", out, "--checkpoint", other)]) == 0
    assert "redone: weights changed" in capsys.readouterr().out
    assert manifest(out)["drive_b"]["weights_sha256"] == fleet.file_sha256(other)


@pytest.mark.slow
def test_a_worker_that_dies_fails_only_its_bag(ray_local: Any, checkpoint: Path,
                                               tmp_path: Path) -> None:
    """SIGKILL the worker mid-bag (as the OOM killer would): that bag fails with the reason,
    a new worker takes the other bags."""
    from seg_perception.cli.process_cmd import output_custom_data
    from seg_perception.offline.fleet_ray import EngineSpec, RayPool

    # big enough to be mid-bag when killed however fast the worker is (it reports progress
    # only once a second: the kill comes on the first report or half a second after start)
    make_bag(tmp_path / "bags" / "a_big", {"/cam/image_raw": "raw"}, generated_frames(1200),
             camera_info=False)
    for name in ("b_small", "c_small"):
        make_bag(tmp_path / "bags" / name, {"/cam/image_raw": "raw"}, generated_frames(2),
                 camera_info=False)
    out = tmp_path / "out"
    spec = fleet.TaskSpec(out, ProcessOptions(grid=None))
    bags = fleet.expand_inputs([tmp_path / "bags"])
    with fleet.locked_out_dir(out):
        m = fleet.Manifest.load(out)
        with RayPool(EngineSpec("tiny_seg", str(checkpoint), "cpu", "auto"), spec,
                     output_custom_data, n_bags=len(bags), workers=1) as pool:
            ident = pool.identity
            items = fleet.plan(m, bags, ident, "opts")
            run = fleet.ArchiveRun(m, items, ident, "opts", progress=False)

            def kill_when_busy() -> None:
                deadline = time.monotonic() + 120
                while "a_big" not in run.running and time.monotonic() < deadline:
                    time.sleep(0.01)
                soon = time.monotonic() + 0.5
                while run.running.get("a_big", (0, 0))[0] < 1 and time.monotonic() < soon:
                    time.sleep(0.01)
                os.kill(ident.pid, signal.SIGKILL)

            killer = threading.Thread(target=kill_when_busy, daemon=True)
            killer.start()
            pool.run(run.todo, run)
            killer.join(timeout=10)
            assert pool.actors and pool.actors[0].identity.pid != ident.pid  # replaced
    state = manifest(out)
    assert {n: r["status"] for n, r in state.items()} == {
        "a_big": "failed", "b_small": "done", "c_small": "done"}
    assert "died while processing" in state["a_big"]["error"]
    assert not (out / "a_big").exists() and (out / "b_small" / "b_small.mcap").is_file()
    assert not incomplete(out) or all(p.name.startswith("a_big.") for p in incomplete(out))
    assert run.exit_status(skip_bad_frames=False) == 1


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupt_leaves_a_consistent_manifest_and_resumes(
        ray_local: Any, checkpoint: Path, tmp_path: Path, signum: int,
        capsys: pytest.CaptureFixture) -> None:
    """SIGTERM or Ctrl-C mid-bag: exit 130, done bags kept, the bag in progress discarded
    (never under its final name), no Ray process left; the re-run finishes the rest."""
    bags = tmp_path / "bags"
    make_bag(bags / "a_small", {"/cam/image_raw": "raw"}, generated_frames(3),
             camera_info=False)
    # Long enough that the fastest backend is still inside it when the signal arrives, a
    # second or more after the bag started (the pool polls progress once a second): OpenVINO
    # bf16 runs tiny_seg at ~520 frames/s here (the network's input size, whatever the
    # frame's), torch fp32 at ~45; small frames keep the bag small.
    make_bag(bags / "b_big", {"/cam/image_raw": "raw"}, generated_frames(BIG, 64, 48),
             camera_info=False)
    make_bag(bags / "c_small", {"/cam/image_raw": "raw"}, generated_frames(3),
             camera_info=False)
    out = tmp_path / "out"
    args = many(bags, "--out", out, "--checkpoint", checkpoint, "--no-grid", "--workers", 1,
                "--threads-per-worker", 1)
    bar_args = [a for a in args if a != "--no-progress"]  # the bar shows workers' progress
    marker = uuid.uuid4().hex
    ray_tmp = tempfile.mkdtemp(prefix="sp-ray-", dir="/tmp")
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_TMPDIR=ray_tmp, **{MARKER_VAR: marker})
    env.pop("RAY_ADDRESS", None)
    log_path = tmp_path / "log.txt"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "seg_perception", *bar_args], cwd=REPO,
                                stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 240
            state: dict[str, Any] = {}
            frames = 0
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(OSError, KeyError):  # not written yet
                    state = manifest(out)
                # The bar counts the frames the worker reports while b_big is running.
                frames = max([0, *map(int, re.findall(r"(\d+) frames, ",
                                                      log_path.read_text()))])
                if state.get("b_big", {}).get("status") == "running" and frames >= 3 + 5:
                    break
                time.sleep(0.1)
            assert proc.poll() is None, log_path.read_text()
            assert state["a_small"]["status"] == "done", (state, log_path.read_text())
            # The worker busy with b_big runs at the default priority, not Ray's nice 15.
            workers = [p for p in ray_processes(ray_tmp, marker)
                       if b"BagWorker" in cmdline(p)]
            assert workers and all(os.getpriority(os.PRIO_PROCESS, p) == 0 for p in workers)
            proc.send_signal(signum)
            code = proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log_path.read_text()
    left = wait_no_ray_processes(ray_tmp, marker)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not left, f"Ray processes {left} outlived the interrupted run (killed)\n{text}"
    assert code == 130, text
    assert "Traceback" not in text, text
    state = manifest(out)
    assert {n: r["status"] for n, r in state.items()} == {
        "a_small": "done", "b_big": "partial", "c_small": "pending"}, text
    assert frames - 3 <= state["b_big"]["frames_read"] < BIG
    assert (out / "a_small").is_dir()
    assert not (out / "b_big").exists() and not (out / "c_small").exists()
    assert not incomplete(out)
    if signum == signal.SIGINT:
        return  # the resume is the same after either signal

    assert cli_main(args) == 0
    capsys.readouterr()
    state = manifest(out)
    assert {n: (r["status"], r["attempts"]) for n, r in state.items()} == {
        "a_small": ("done", 1), "b_big": ("done", 2), "c_small": ("done", 1)}
    assert bag_messages(out / "b_big")[0]["/cam/labels"][1] == BIG
    single = tmp_path / "single"
    assert cli_main(["process", str(bags / "c_small"), str(single), "--model", "tiny_seg",
                     "--checkpoint", str(checkpoint), "--device", "cpu", "--no-grid",
                     "--no-progress"]) == 0
    assert_same_bag(out / "c_small", single)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_existing_cluster_by_address(archive: dict[str, Path], checkpoint: Path,
                                     tmp_path: Path) -> None:
    """`ray start --head` (loopback, token auth), then process-many by GCS address and by
    Ray Client address: same outputs as `process`, and the second run resumes the first."""
    pytest.importorskip("ray", reason="Ray is absent (pip install 'seg_perception[fleet]')")
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.exists():
        pytest.skip("the `ray` command is not installed beside this Python")
    temp = tempfile.mkdtemp(prefix="sp-ray-", dir="/tmp")
    marker = uuid.uuid4().hex
    gcs, client = _free_port(), _free_port()
    env = dict(os.environ, RAY_TMPDIR=temp, PYTHONUNBUFFERED="1", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=uuid.uuid4().hex, **{MARKER_VAR: marker, LOOPBACK_ENV: "0"})
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "out"
    base = [sys.executable, "-m", "seg_perception",
            *many(archive["root"], "--out", out, "--checkpoint", checkpoint, "--workers", 2)]
    try:
        start = subprocess.run(
            [str(ray_cli), "start", "--head", "--num-cpus", "2", "--num-gpus", "0",
             "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--ray-client-server-port",
             str(client), "--include-dashboard", "false", "--disable-usage-stats"],
            env=env, capture_output=True, text=True, timeout=180)
        assert start.returncode == 0, start.stdout + start.stderr
        run = subprocess.run([*base, "--ray-address", f"127.0.0.1:{gcs}"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 1, run.stdout + run.stderr  # drive_d is truncated
        assert "2 worker(s)" in run.stderr and f"at 127.0.0.1:{gcs}" in run.stderr, run.stderr
        bags = manifest(out)
        assert [bags[n]["status"] for n in sorted(bags)] == ["done", "done", "done", "failed"]
        for _attempt in range(2):
            run = subprocess.run([*base, "--ray-address", f"ray://127.0.0.1:{client}"],
                                 cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            # Ray's client proxy now and then fails to start the per-client server on this
            # shared machine (a re-run of the command is what a user does then).
            if "Starting Ray client server failed" not in run.stderr:
                break
        assert run.returncode == 1, run.stdout + run.stderr + _client_logs(temp)
        assert "3 skipped" in run.stdout, run.stdout + run.stderr
        assert manifest(out)["drive_d"]["attempts"] == 2
    finally:
        for pid in ray_processes(temp, marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        wait_no_ray_processes(temp, marker, timeout=10)  # what ignores SIGTERM gets SIGKILL
        shutil.rmtree(temp, ignore_errors=True)
    single = tmp_path / "single"
    assert cli_main(["process", str(archive["drive_a"]), str(single), "--model", "tiny_seg",
                     "--checkpoint", str(checkpoint), "--device", "cpu", "--no-progress"]) == 0
    assert_same_bag(out / "drive_a", single)


def _client_logs(temp: str) -> str:
    """The Ray Client servers' logs (for a failure message)."""
    return "".join(f"\n--- {p}\n{p.read_text()[-3000:]}"
                   for p in sorted(Path(temp).glob("ray/session_*/logs/ray_client_server*")))
