"""process-many's core: an archive of bags, one task per bag, resumable.

``seg-perception process-many`` runs :func:`run_task` (which calls
:func:`~seg_perception.offline.process.process_bag`, exactly as ``process`` does) on every bag of
an archive, on Ray (:mod:`seg_perception.offline.fleet_ray`). This module holds what does not
depend on Ray or ROS, so it is tested on its own and another engine could reuse it:

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

This ``__init__`` is the public surface (import from ``seg_perception.offline.fleet``); by
concern: :mod:`.inputs`, :mod:`.identity` (model, weights and options hashes),
:mod:`.manifest` (records, statuses, :func:`plan`), :mod:`.outdir` (the output folder, its
lock), :mod:`.task` (:func:`run_task`), :mod:`.archive` (:class:`ArchiveRun`, summaries).
"""

from seg_perception.offline.fleet.archive import (
    SUMMARY_FIELDS,
    ArchiveRun,
    write_summary,
)
from seg_perception.offline.fleet.identity import (
    RANDOM_INIT_SEED,
    Identity,
    file_sha256,
    options_sha256,
    weights_sha256,
)
from seg_perception.offline.fleet.inputs import (
    BAG_SUFFIXES,
    BagInput,
    bag_size,
    expand_inputs,
    is_bag_dir,
)
from seg_perception.offline.fleet.manifest import (
    DONE,
    FAILED,
    MANIFEST_VERSION,
    PARTIAL,
    PENDING,
    RUNNING,
    BagRecord,
    Manifest,
    PlanItem,
    check_outputs,
    plan,
    utc_now,
)
from seg_perception.offline.fleet.outdir import (
    INCOMPLETE,
    MANIFEST,
    RESERVED_NAMES,
    SUMMARY_CSV,
    SUMMARY_JSON,
    WORK_DIR,
    FleetError,
    check_out_dir,
    locked_out_dir,
)
from seg_perception.offline.fleet.task import (
    MAX_BAD_LISTED,
    ProgressHook,
    Stopped,
    TaskResult,
    TaskSpec,
    run_task,
)

__all__ = [
    "BAG_SUFFIXES",
    "DONE",
    "FAILED",
    "INCOMPLETE",
    "MANIFEST",
    "MANIFEST_VERSION",
    "MAX_BAD_LISTED",
    "PARTIAL",
    "PENDING",
    "RANDOM_INIT_SEED",
    "RESERVED_NAMES",
    "RUNNING",
    "SUMMARY_CSV",
    "SUMMARY_FIELDS",
    "SUMMARY_JSON",
    "WORK_DIR",
    "ArchiveRun",
    "BagInput",
    "BagRecord",
    "FleetError",
    "Identity",
    "Manifest",
    "PlanItem",
    "ProgressHook",
    "Stopped",
    "TaskResult",
    "TaskSpec",
    "bag_size",
    "check_out_dir",
    "check_outputs",
    "expand_inputs",
    "file_sha256",
    "is_bag_dir",
    "locked_out_dir",
    "options_sha256",
    "plan",
    "run_task",
    "utc_now",
    "weights_sha256",
    "write_summary",
]
