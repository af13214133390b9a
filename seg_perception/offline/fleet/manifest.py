"""``DIR/manifest.json`` and the plan: one record per bag, and which bags a run (re)does.

Split from the run's bookkeeping (:mod:`.archive`) and the task (:mod:`.task`): the
:class:`Manifest` is the state a run resumes from (written whole and atomically, by the
driver only), and :func:`plan` reads it to skip the bags done with the same model, weights,
options and input, giving the reason for each bag it redoes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seg_perception.offline.fleet.identity import Identity
from seg_perception.offline.fleet.inputs import BagInput
from seg_perception.offline.fleet.outdir import MANIFEST, FleetError

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1

# Bag status in the manifest.
PENDING = "pending"  # selected, not started yet
RUNNING = "running"  # handed to a worker (still so after a driver crash: redone next time)
DONE = "done"  # output complete and in place
FAILED = "failed"  # unreadable bag, bag truncated part-way, worker died: reason in `error`
PARTIAL = "partial"  # stopped by Ctrl-C / SIGTERM; output discarded, redone next time


def utc_now() -> str:
    """Now, UTC, ISO 8601 to the second: the manifest's timestamps."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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
               "updated": utc_now(),
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


__all__ = [
    "DONE",
    "FAILED",
    "MANIFEST_VERSION",
    "PARTIAL",
    "PENDING",
    "RUNNING",
    "BagRecord",
    "Manifest",
    "PlanItem",
    "check_outputs",
    "plan",
    "utc_now",
]
