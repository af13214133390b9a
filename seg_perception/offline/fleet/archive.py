"""A run over the archive, as the driver sees it: manifest updates, progress, summaries.

Split from the task (:mod:`.task`) and the manifest (:mod:`.manifest`): :class:`ArchiveRun`
records each bag's start and result in the manifest as workers report them, shows
progress across the archive (bags, frames/s, an ETA from the input bytes still to do),
prints the end-of-run table and gives the exit status; :func:`write_summary` writes
``DIR/summary.csv`` and ``DIR/summary.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from seg_perception.offline.fleet.identity import Identity
from seg_perception.offline.fleet.inputs import BagInput
from seg_perception.offline.fleet.manifest import (
    DONE,
    FAILED,
    PARTIAL,
    PENDING,
    RUNNING,
    BagRecord,
    Manifest,
    PlanItem,
    utc_now,
)
from seg_perception.offline.fleet.outdir import SUMMARY_CSV, SUMMARY_JSON
from seg_perception.offline.fleet.task import TaskResult

log = logging.getLogger(__name__)

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
        rec.status, rec.started, rec.finished = RUNNING, utc_now(), None
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
        rec.finished = utc_now()
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


__all__ = [
    "SUMMARY_FIELDS",
    "ArchiveRun",
    "write_summary",
]
