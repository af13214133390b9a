"""An archive of bags, one task per bag: inputs, manifest, resume and one bag's task.

``seg-perception process-many`` runs :func:`run_task` (which calls
:func:`~seg_perception.offline.process.process_bag`, exactly as ``process`` does) on every
bag of an archive, on Ray (:mod:`seg_perception.offline.fleet_ray`). This module holds what
does not depend on Ray or ROS, so it is tested on its own and another engine could reuse it:

- :func:`expand_inputs`: bag folders, ``.mcap``/``.db3`` files, folders of bags, globs and
  text files listing them, to a list of :class:`BagInput` with unique output names.
- :class:`Manifest`: ``DIR/manifest.json``, one record per bag (status, frame counts, input
  size, model, weights and options hashes); written atomically by the driver only.
- :func:`plan`: which bags a run skips (done with the same model, weights, options and input)
  and which it (re)does, with the reason.
- :func:`run_task`: one bag into ``DIR/.fleet/incomplete/<name>.<id>``, renamed to
  ``DIR/<name>`` only when every frame was handled, so a crash or Ctrl-C never leaves a half
  bag under a final name.
- :class:`ArchiveRun`: manifest updates, progress (bags, frames/s, ETA) and summary tables.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import glob
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seg_perception.offline.job import ProcessOptions
    from seg_perception.runtime.engine import SegEngine

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
WORK_DIR = ".fleet"  # lock file, run token, incomplete outputs
INCOMPLETE = "incomplete"
MANIFEST_VERSION = 1
BAG_SUFFIXES = (".mcap", ".db3")
RESERVED_NAMES = {MANIFEST, SUMMARY_CSV, SUMMARY_JSON, WORK_DIR}
MAX_BAD_LISTED = 20  # bad frames described per bag in the manifest (the count is exact)

# Bag status in the manifest.
PENDING = "pending"  # selected, not started yet
RUNNING = "running"  # handed to a worker (still so after a driver crash: redone next time)
DONE = "done"  # output complete and in place
FAILED = "failed"  # unreadable bag, bag truncated part-way, worker died: reason in `error`
PARTIAL = "partial"  # stopped by Ctrl-C / SIGTERM; output discarded, redone next time


class FleetError(ValueError):
    """A problem with the inputs or the output folder, found before anything runs."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --- inputs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BagInput:
    """One bag of the archive: output name (``DIR/<name>``), absolute path, size in bytes."""

    name: str
    path: Path
    size: int


def is_bag_dir(path: Path) -> bool:
    return (path / "metadata.yaml").is_file()


def bag_size(path: Path) -> int:
    """Bytes of a bag (every file of a bag directory)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def _bag_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _find_bags(folder: Path, exclude: Sequence[Path]) -> list[Path]:
    """Bags under a folder that is not a bag: directories with metadata.yaml (not descended
    into) and loose .mcap/.db3 files, recursively, skipping hidden folders and ``exclude``."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        keep = []
        for d in sorted(dirs):
            sub = here / d
            if d.startswith(".") or any(_same(sub, e) for e in exclude):
                continue
            if is_bag_dir(sub):
                found.append(sub)
            else:
                keep.append(d)
        dirs[:] = keep
        found.extend(here / f for f in files if Path(f).suffix in BAG_SUFFIXES)
    return sorted(found)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _read_list(path: Path) -> list[str]:
    """Entries of a list file: one per line, blank lines and ``#`` comments skipped,
    relative entries relative to the list file's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(f"{path} is neither a bag (.mcap/.db3, a folder with metadata.yaml) "
                         f"nor a text file listing bags: {exc}") from exc
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = Path(os.path.expanduser(line))
        entries.append(str(entry if entry.is_absolute() else path.parent / entry))
    return entries


def _expand_one(entry: str, exclude: Sequence[Path], in_list: bool) -> list[Path]:
    path = Path(os.path.expanduser(entry))
    if not path.exists():
        if glob.has_magic(entry):
            matches = sorted(glob.glob(os.path.expanduser(entry), recursive=True))
            if not matches:
                raise FleetError(f"{entry}: no file or folder matches")
            out: list[Path] = []
            for match in matches:
                out.extend(_expand_one(match, exclude, in_list) if not glob.has_magic(match)
                           else [Path(match)])
            return out
        raise FleetError(f"input {entry} does not exist")
    if path.is_dir():
        return [path] if is_bag_dir(path) else _find_bags(path, exclude)
    if path.suffix in BAG_SUFFIXES:
        return [path]
    if in_list:
        raise FleetError(f"{entry}: a list file may name bags, folders and globs, not further "
                         "list files")
    out = []
    for item in _read_list(path):
        out.extend(_expand_one(item, exclude, in_list=True))
    return out


def expand_inputs(inputs: Iterable[str | Path], exclude: Sequence[Path] = ()) -> list[BagInput]:
    """Bags named by ``inputs``, in the order given, each once.

    An input is a bag directory (with ``metadata.yaml``), a ``.mcap``/``.db3`` file, a folder
    holding bags (searched recursively; ``exclude``, e.g. the output folder, is skipped), a
    glob (``'archive/2024-*/'``, ``**`` allowed) or a text file listing any of these, one a
    line. The output name is the bag directory's name or the file's stem; two bags with one
    name are refused (give them separate runs or output folders) rather than renamed, so a
    bag keeps its name from run to run. Raises :class:`FleetError`.
    """
    seen: dict[Path, None] = {}
    for entry in inputs:
        for path in _expand_one(str(entry), exclude, in_list=False):
            seen.setdefault(path.absolute(), None)
    if not seen:
        raise FleetError("no bags found in the inputs (bag folders hold metadata.yaml; bag "
                         "files end in .mcap or .db3)")
    bags: list[BagInput] = []
    by_name: dict[str, Path] = {}
    for path in seen:
        name = _bag_name(path)
        if name in RESERVED_NAMES or name.startswith("."):
            raise FleetError(f"bag {path}: its output name {name!r} is reserved; rename it")
        if name in by_name:
            raise FleetError(f"bags {by_name[name]} and {path} would both write to <out>/{name}; "
                             "process them in separate runs (or --out folders)")
        by_name[name] = path
        bags.append(BagInput(name, path, bag_size(path)))
    return bags


# --- what makes an output: model, weights, options --------------------------------------------

def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


RANDOM_INIT_SEED = 0  # workers seed torch with it before building an untrained network


def weights_sha256(model: str, checkpoint: str | None) -> str:
    """SHA-256 of the weights a worker runs: the checkpoint, ``.onnx`` or shipped weights
    file (comparable with ``sha256sum``); for a network without weights, of the tensors its
    random initialisation with :data:`RANDOM_INIT_SEED` gives (whatever backend runs it)."""
    from seg_perception.runtime.engine import is_onnx_path
    from seg_perception.runtime.models.registry import create_model, get_entry
    from seg_perception.runtime.models.zoo import DEFAULT_MODEL

    name = DEFAULT_MODEL if model in ("", "default") else model
    path: Path | None = None
    if checkpoint:
        path = Path(checkpoint)
    elif is_onnx_path(model):
        path = Path(model)
    else:
        path = get_entry(name).shipped_weights_path()
    if path is not None:
        return file_sha256(path)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        state = create_model(name).state_dict()
    digest = hashlib.sha256()
    for key, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def options_sha256(options: ProcessOptions, image_topics: Sequence[str] | None,
                   camera_info_topics: Sequence[str] | None) -> str:
    """Hash of everything besides the model that decides a bag's outputs."""
    doc = {"options": dataclasses.asdict(options), "image_topics": list(image_topics or []),
           "camera_info_topics": list(camera_info_topics or [])}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=repr).encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """What a worker runs (all workers of a run must agree on model and weights)."""

    model: str
    weights_sha256: str
    weights: str  # human description (path, "shipped", "random initialisation")
    trained: bool
    device: str
    precision: str
    host: str
    pid: int
    threads: int
    error: str | None = None  # set when the worker could not load the model


# --- manifest --------------------------------------------------------------------------------

@dataclass
class BagRecord:
    """One bag in the manifest (see the status constants)."""

    name: str
    input: str
    input_bytes: int
    status: str = PENDING
    model: str | None = None
    weights_sha256: str | None = None
    options_sha256: str | None = None
    frames_total: int = 0  # image messages of the processed topics in the bag
    frames_read: int = 0
    frames_processed: int = 0
    bad_frames: int = 0
    bad: list[str] = field(default_factory=list)
    messages_written: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    device: str | None = None
    precision: str | None = None
    worker: str | None = None
    attempts: int = 0
    started: str | None = None
    finished: str | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BagRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})


class Manifest:
    """``DIR/manifest.json``: every bag ever processed into DIR, by name.

    Only the driver writes it, whole, to a temporary file renamed over the old one, so it is
    always a complete JSON document whatever moment a run is stopped at.
    """

    def __init__(self, out_dir: Path, bags: dict[str, BagRecord] | None = None) -> None:
        self.out_dir = out_dir
        self.path = out_dir / MANIFEST
        self.bags: dict[str, BagRecord] = bags or {}

    @classmethod
    def load(cls, out_dir: Path) -> Manifest:
        path = out_dir / MANIFEST
        if not path.exists():
            return cls(out_dir)
        try:
            doc = json.loads(path.read_text())
            bags = {name: BagRecord.from_json(rec) for name, rec in doc["bags"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FleetError(f"{path} is not a process-many manifest ({exc}); remove it to "
                             "start afresh (every bag is then redone)") from exc
        return cls(out_dir, bags)

    def save(self) -> None:
        doc = {"version": MANIFEST_VERSION, "tool": "seg-perception process-many",
               "updated": _now(),
               "bags": {n: dataclasses.asdict(r) for n, r in sorted(self.bags.items())}}
        tmp = self.path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, self.path)


def check_outputs(manifest: Manifest, bags: Sequence[BagInput]) -> None:
    """Refuse to run when ``DIR/<name>`` exists without a manifest record: process-many
    never overwrites what it did not write. Raises :class:`FleetError`."""
    foreign = [manifest.out_dir / b.name for b in bags
               if b.name not in manifest.bags and (manifest.out_dir / b.name).exists()]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise FleetError(f"{foreign[0]}{more} exists but {manifest.path} does not list it; "
                         "process-many never overwrites what it did not write (remove it or "
                         "choose another --out)")


@dataclass(frozen=True)
class PlanItem:
    bag: BagInput
    run: bool
    reason: str  # why it runs ("new", "failed before: ...") or is skipped ("done")


def plan(manifest: Manifest, bags: Sequence[BagInput], identity: Identity, options_hash: str,
         force: bool = False) -> list[PlanItem]:
    """Skip the bags done with the same model, weights, options and input; redo the rest.

    Raises :class:`FleetError` when ``DIR/<name>`` exists without a manifest record (not
    made by process-many: it is never overwritten).
    """
    check_outputs(manifest, bags)
    items = []
    for bag in bags:
        rec = manifest.bags.get(bag.name)
        out = manifest.out_dir / bag.name
        if rec is None:
            items.append(PlanItem(bag, True, "new"))
            continue
        if rec.input != str(bag.path) and out.exists() and rec.status == DONE:
            log.info("%s: input moved from %s to %s", bag.name, rec.input, bag.path)
        reason = None
        if force:
            reason = "--force"
        elif rec.status == FAILED:
            reason = f"failed before ({rec.error})"
        elif rec.status in (PARTIAL, RUNNING, PENDING):
            reason = {PARTIAL: "interrupted before", RUNNING: "was running when the last run "
                      "stopped", PENDING: "not started before"}[rec.status]
        elif rec.model != identity.model:
            reason = f"model changed ({rec.model} -> {identity.model})"
        elif rec.weights_sha256 != identity.weights_sha256:
            reason = (f"weights changed (sha256 {str(rec.weights_sha256)[:12]} -> "
                      f"{identity.weights_sha256[:12]})")
        elif rec.options_sha256 != options_hash:
            reason = "options changed"
        elif rec.input_bytes != bag.size:
            reason = f"input changed ({rec.input_bytes} -> {bag.size} bytes)"
        elif not out.is_dir():
            reason = "output missing"
        items.append(PlanItem(bag, reason is not None, reason or "done"))
    return items


# --- output folder ---------------------------------------------------------------------------

@contextlib.contextmanager
def locked_out_dir(out_dir: Path) -> Iterator[str]:
    """Create ``out_dir`` and hold its lock for the run (one driver per output folder);
    yields a fresh run token that workers check to prove they see the same folder."""
    import fcntl

    try:
        (out_dir / WORK_DIR / INCOMPLETE).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FleetError(f"cannot create output folder {out_dir}: {exc}") from exc
    if not os.access(out_dir, os.W_OK):
        raise FleetError(f"output folder {out_dir} is not writable")
    lock = open(out_dir / WORK_DIR / "lock", "a+")  # noqa: SIM115 - held for the block
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise FleetError(f"another process-many is writing {out_dir} (lock "
                             f"{lock.name} is held)") from exc
        # Leftovers of runs that crashed: never renamed, so never mistaken for outputs.
        for stale in (out_dir / WORK_DIR / INCOMPLETE).iterdir():
            shutil.rmtree(stale, ignore_errors=True)
        token = uuid.uuid4().hex
        (out_dir / WORK_DIR / "run").write_text(token + "\n")
        yield token
    finally:
        lock.close()


def check_out_dir(out_dir: Path, token: str) -> str | None:
    """None when this machine sees the driver's ``out_dir`` (same run token), else why not."""
    host = socket.gethostname()
    try:
        seen = (out_dir / WORK_DIR / "run").read_text().strip()
    except OSError as exc:
        seen = f"unreadable ({exc.strerror or exc})"
    if seen == token and os.access(out_dir, os.W_OK):
        return None
    return (f"--out {out_dir} on worker host {host} is not the folder the driver writes (run "
            f"token {seen[:40]}): on a cluster --out must be shared storage mounted at the same "
            "path on every node and on the machine running process-many")


# --- one bag ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskSpec:
    """What every task of a run shares: output folder and the options of ``process``."""

    out_dir: Path
    options: ProcessOptions
    image_topics: tuple[str, ...] | None = None
    camera_info_topics: tuple[str, ...] | None = None


@dataclass
class TaskResult:
    """What a worker reports for one bag (becomes the bag's manifest record)."""

    name: str
    status: str
    frames_total: int = 0
    frames_read: int = 0
    frames_processed: int = 0
    bad_frames: int = 0
    bad: list[str] = field(default_factory=list)
    messages_written: int = 0
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    worker: str = ""

    @property
    def fps(self) -> float:
        return self.frames_processed / self.seconds if self.seconds > 0 else 0.0


class Stopped(KeyboardInterrupt):
    """Raised from the frame hook when the driver asked the worker to stop."""


ProgressHook = Callable[[int, int], None]  # (frames handled, frames total)


def run_task(bag: BagInput, spec: TaskSpec, engine: SegEngine,
             custom_data: dict[str, str] | None = None, stop: threading.Event | None = None,
             on_progress: ProgressHook | None = None) -> TaskResult:
    """Process one bag as ``process`` does, into a temporary name renamed when complete.

    Never raises for a bad bag: the result's status is DONE, FAILED (``error`` says why; no
    output is left) or PARTIAL (``stop`` was set; the partial output is removed).
    """
    from seg_perception.offline.process import process_bag
    from seg_perception.offline.reader import bag_topics, open_bag, select_cameras
    from seg_perception.offline.topics import BagError

    worker = f"{socket.gethostname()}:{os.getpid()}"
    result = TaskResult(bag.name, FAILED, worker=worker)
    if stop is not None and stop.is_set():
        result.status = PARTIAL
        return result
    if not bag.path.exists():
        result.error = (f"bag {bag.path} does not exist on {socket.gethostname()} (on a "
                        "cluster, bags must be at the same path on every node)")
        return result
    # A folder of its own per attempt; the bag inside has its final name, because rosbag2
    # names the storage file after the bag folder (<name>/<name>.mcap, as `process` writes).
    attempt = spec.out_dir / WORK_DIR / INCOMPLETE / f"{bag.name}.{uuid.uuid4().hex[:8]}"
    tmp = attempt / bag.name
    t0 = time.perf_counter()
    try:
        with open_bag(bag.path) as reader:
            cams = select_cameras(bag_topics(reader), spec.image_topics,
                                  spec.camera_info_topics)
        result.frames_total = sum(c.count for c in cams)
        if on_progress is not None:
            on_progress(0, result.frames_total)

        def hook(processed: int) -> None:
            if on_progress is not None:
                on_progress(processed, result.frames_total)
            if stop is not None and stop.is_set():
                raise Stopped

        attempt.mkdir(parents=True, exist_ok=True)
        summary = process_bag(bag.path, tmp, engine, image_topics=spec.image_topics,
                              camera_info_topics=spec.camera_info_topics,
                              options=spec.options, progress=False, on_frame=hook,
                              custom_data=custom_data)
    except BagError as exc:
        result.error = str(exc)
        _discard(attempt)
        return result
    except Exception as exc:  # a bug or a decoder crash fails this bag only
        log.exception("bag %s failed", bag.path)
        result.error = f"{type(exc).__name__}: {exc}"
        _discard(attempt)
        return result
    finally:
        result.seconds = time.perf_counter() - t0
    result.frames_read = sum(summary.frames.values())
    result.frames_processed = summary.processed
    result.bad_frames = len(summary.bad)
    result.bad = [b.describe() for b in summary.bad[:MAX_BAD_LISTED]]
    result.messages_written = sum(summary.written.values())
    result.warnings = list(summary.warnings)
    result.seconds = summary.seconds
    if on_progress is not None:
        on_progress(result.frames_read, result.frames_total)
    if summary.write_error:  # a full disk, an I/O error: this bag fails, nothing is kept
        result.error = f"{summary.write_error} (after {summary.processed} of " \
                       f"{result.frames_total} frames processed; no output kept)"
    elif summary.interrupted:
        result.status = PARTIAL
    elif summary.error:
        result.error = f"{summary.error} (after {result.frames_read} of {result.frames_total} " \
                       "frames; no output kept)"
    else:
        try:
            _put_in_place(tmp, spec.out_dir / bag.name)
            result.status = DONE
        except OSError as exc:
            result.error = f"cannot move the finished output to {spec.out_dir / bag.name}: {exc}"
    _discard(attempt)
    return result


def _discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _put_in_place(tmp: Path, final: Path) -> None:
    """Rename the finished output to its final name (replacing an older output of that bag:
    the manifest says RUNNING until the driver records the result)."""
    if final.exists():
        old = tmp.with_name(tmp.name + ".old")  # inside the attempt's folder, removed with it
        os.rename(final, old)
        os.rename(tmp, final)
        _discard(old)
    else:
        os.rename(tmp, final)


# --- a run over the archive: manifest updates, progress, summary ------------------------------

def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ArchiveRun:
    """Bookkeeping of one run: manifest records, progress across the archive, summary.

    Progress counts frames handled this run (finished bags plus the workers' running
    counts) over the run's wall time; the ETA comes from input bytes still to do, which are
    known for every bag before it is opened.
    """

    def __init__(self, manifest: Manifest, items: Sequence[PlanItem], identity: Identity,
                 options_hash: str, progress: bool = True, log_every: float = 30.0) -> None:
        self.manifest = manifest
        self.items = list(items)
        self.todo = [i.bag for i in self.items if i.run]
        self.identity = identity
        self.options_hash = options_hash
        self.results: dict[str, TaskResult] = {}
        self.running: dict[str, tuple[int, int]] = {}  # name -> (frames handled, total)
        self.frames_done = 0
        self.bytes_done = 0
        self.t0 = time.monotonic()
        self.t_end: float | None = None
        self.interrupted = False
        self.log_every = log_every
        self._last_log = self.t0
        self._bar = None
        if progress and self.todo:
            from tqdm import tqdm

            self._bar = tqdm(total=len(self.todo), unit="bag", desc="process-many",
                             dynamic_ncols=True, file=sys.stderr)
        for item in self.items:
            rec = manifest.bags.get(item.bag.name)
            if item.run:
                if rec is None:
                    rec = manifest.bags[item.bag.name] = BagRecord(
                        item.bag.name, str(item.bag.path), item.bag.size)
                rec.input, rec.input_bytes, rec.status = str(item.bag.path), item.bag.size, \
                    PENDING
        manifest.save()

    # -- events from the engine --
    def started(self, bag: BagInput, worker: Identity) -> None:
        rec = self.manifest.bags[bag.name]
        rec.status, rec.started, rec.finished = RUNNING, _now(), None
        rec.worker = f"{worker.host}:{worker.pid}"
        rec.attempts += 1
        rec.model, rec.weights_sha256 = worker.model, worker.weights_sha256
        rec.options_sha256 = self.options_hash
        rec.device, rec.precision = worker.device, worker.precision
        self.running[bag.name] = (0, 0)
        self.manifest.save()

    def progress(self, name: str, handled: int, total: int) -> None:
        if name in self.running:
            self.running[name] = (handled, total)
        self._show()

    def finished(self, bag: BagInput, result: TaskResult) -> None:
        self.running.pop(bag.name, None)
        self.results[bag.name] = result
        rec = self.manifest.bags[bag.name]
        for key in ("status", "frames_total", "frames_read", "frames_processed", "bad_frames",
                    "bad", "messages_written", "error", "warnings", "worker"):
            setattr(rec, key, getattr(result, key))
        rec.seconds, rec.fps = round(result.seconds, 3), round(result.fps, 2)
        rec.finished = _now()
        self.manifest.save()
        self.frames_done += result.frames_read
        if result.status == DONE:
            self.bytes_done += bag.size
        n = sum(1 for r in self.results.values() if r.status in (DONE, FAILED))
        if result.status == DONE:
            text = (f"[{n}/{len(self.todo)}] {bag.name}: {result.frames_processed} frames"
                    + (f", {result.bad_frames} bad" if result.bad_frames else "")
                    + f" in {result.seconds:.1f} s ({result.fps:.1f} frames/s)")
        elif result.status == FAILED:
            text = f"[{n}/{len(self.todo)}] {bag.name} FAILED: {result.error}"
        else:
            text = f"{bag.name}: stopped after {result.frames_read} frames, output discarded"
        self._write(text)
        if self._bar is not None and result.status in (DONE, FAILED):
            self._bar.update(1)
        self._show(force=True)

    def abandoned(self, bag: BagInput, reason: str) -> None:
        """A task whose worker did not report back (stopped hard, or the worker died)."""
        self.finished(bag, TaskResult(bag.name, PARTIAL if self.interrupted else FAILED,
                                      error=None if self.interrupted else reason))

    def settle(self) -> None:
        """After the run: a bag still marked running never reported back (the run was
        stopped between handing it out and hearing from its worker)."""
        for bag in self.todo:
            if bag.name in self.running:
                self.abandoned(bag, "no result from its worker")

    # -- progress --
    def rates(self) -> tuple[int, float, float | None]:
        """(frames handled this run, frames/s, ETA seconds or None)."""
        elapsed = max((self.t_end or time.monotonic()) - self.t0, 1e-6)
        frames = self.frames_done + sum(h for h, _ in self.running.values())
        fps = frames / elapsed
        sizes = {b.name: b.size for b in self.todo}
        done_bytes = self.bytes_done + sum(sizes[n] * h / t for n, (h, t) in self.running.items()
                                           if t)
        left = sum(b.size for b in self.todo if b.name not in self.results) - (
            done_bytes - self.bytes_done)
        eta = left / (done_bytes / elapsed) if done_bytes > 0 else None
        return frames, fps, eta

    def status_line(self) -> str:
        frames, fps, eta = self.rates()
        n = sum(1 for r in self.results.values() if r.status in (DONE, FAILED))
        return (f"{n}/{len(self.todo)} bags, {frames} frames, {fps:.1f} frames/s, "
                f"ETA {_fmt_eta(eta)}")

    def _show(self, force: bool = False) -> None:
        frames, fps, eta = self.rates()
        if self._bar is not None:
            self._bar.set_postfix_str(f"{frames} frames, {fps:.1f} frames/s, ETA "
                                      f"{_fmt_eta(eta)}", refresh=True)
            return
        now = time.monotonic()
        if force or now - self._last_log >= self.log_every:
            self._last_log = now
            log.info("progress: %s", self.status_line())

    def _write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            log.info("%s", text)

    def close(self) -> None:
        """The run is over: freeze its clock, close the progress bar."""
        self.t_end = self.t_end or time.monotonic()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -- the end --
    def exit_status(self, skip_bad_frames: bool) -> int:
        """130 interrupted, 1 a bag failed or was not finished (or bad frames without
        --skip-bad-frames, also in bags done before), else 0."""
        if self.interrupted:
            return 130
        recs = [self.manifest.bags.get(i.bag.name) for i in self.items]
        if any(r is None or r.status != DONE for r in recs):
            return 1
        if not skip_bad_frames and any(r.bad_frames for r in recs if r):
            return 1
        return 0

    def report(self) -> str:
        """The end-of-run table of this run's bags (figures of skipped bags from the run
        that made them)."""
        rows = [("bag", "status", "frames", "bad", "seconds", "frames/s", "note")]
        for item in self.items:
            rec = self.manifest.bags.get(item.bag.name)
            if rec is None:
                continue
            if not item.run:
                note = "skipped (done before)"
            elif item.bag.name not in self.results:
                note = "not started"
            else:
                note = rec.error or ("" if item.reason == "new" else f"redone: {item.reason}")
            rows.append((rec.name, rec.status, str(rec.frames_processed), str(rec.bad_frames),
                         f"{rec.seconds:.1f}", f"{rec.fps:.1f}", note or ""))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r[:6], widths, strict=True)))
                 + (f"  {r[6]}" if r[6] else "") for r in rows]
        frames, fps, _ = self.rates()
        elapsed = (self.t_end or time.monotonic()) - self.t0
        counts: dict[str, int] = {}
        for item in self.items:
            rec = self.manifest.bags.get(item.bag.name)
            status = rec.status if rec else PENDING
            counts[status] = counts.get(status, 0) + 1
        skipped = sum(1 for i in self.items if not i.run)
        lines.append(
            f"{len(self.items)} bags: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + (f" ({skipped} skipped: done before with the same model, weights and options)"
               if skipped else "")
            + f"; {frames} frames this run in {elapsed:.1f} s ({fps:.1f} frames/s)")
        for item in self.items:
            rec = self.manifest.bags.get(item.bag.name)
            if rec and item.bag.name in self.results:
                for text in rec.warnings:
                    lines.append(f"warning: {rec.name}: {text}")
                for text in rec.bad:
                    lines.append(f"bad frame: {rec.name}: {text}")
                if rec.bad_frames > len(rec.bad):
                    lines.append(f"bad frame: {rec.name}: ... {rec.bad_frames - len(rec.bad)} "
                                 "more (counted in the manifest)")
        return "\n".join(lines)


SUMMARY_FIELDS = ("bag", "status", "frames", "bad_frames", "seconds", "fps", "frames_total",
                  "input", "input_bytes", "model", "weights_sha256", "error")


def write_summary(manifest: Manifest) -> tuple[Path, Path]:
    """``DIR/summary.csv`` and ``DIR/summary.json``: one row per bag of the manifest."""
    rows = []
    for rec in sorted(manifest.bags.values(), key=lambda r: r.name):
        rows.append({"bag": rec.name, "status": rec.status, "frames": rec.frames_processed,
                     "bad_frames": rec.bad_frames, "seconds": rec.seconds, "fps": rec.fps,
                     "frames_total": rec.frames_total, "input": rec.input,
                     "input_bytes": rec.input_bytes, "model": rec.model,
                     "weights_sha256": rec.weights_sha256, "error": rec.error or ""})
    csv_path = manifest.out_dir / SUMMARY_CSV
    json_path = manifest.out_dir / SUMMARY_JSON
    tmp = csv_path.with_name(f".{SUMMARY_CSV}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, csv_path)
    tmp = json_path.with_name(f".{SUMMARY_JSON}.tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    os.replace(tmp, json_path)
    return csv_path, json_path
