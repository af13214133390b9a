"""``seg-perception process-many``: ``process`` over an archive of bags, one Ray task per bag.

Every bag becomes ``DIR/<bag name>/``, the bag ``seg-perception process BAG DIR/<bag name>``
with the same options would write (the options are ``process``'s own, parsed by the same
code). The bookkeeping (inputs, manifest, resume, summary) is in
:mod:`seg_perception.offline.fleet`, the Ray engine in :mod:`seg_perception.offline.fleet_ray`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from seg_perception.cli import process_cmd

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # a bag failed or is unfinished, or bad frames without --skip-bad-frames
EXIT_USAGE = 2  # nothing ran: no bags, Ray missing, model not loadable, output folder unusable
EXIT_INTERRUPTED = 130


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "process-many",
        help="process an archive of bags (one Ray task per bag; local or on a cluster)",
        description="Run `process` on every bag of an archive: each bag becomes "
        "DIR/<bag name>/, the bag `seg-perception process BAG DIR/<bag name>` writes with the "
        "same options. By default Ray starts inside this process on this machine (loopback "
        "only) with --workers workers, one model each, CPU threads split between them; "
        "--ray-address runs the same tasks on an existing Ray cluster, where bags and DIR "
        "must be at the same paths on every node (shared storage). DIR/manifest.json records "
        "each bag (status, frames, input size, model, weights sha256); a re-run skips the "
        "bags done with the same model, weights and options and redoes failed or "
        "interrupted ones. A bag is written under DIR/.fleet/incomplete/ and renamed to "
        "DIR/<bag name> only when complete. DIR/summary.csv and DIR/summary.json list "
        "frames, bad frames, seconds and frames/s per bag. Exit status: 0 all done, 1 a bag "
        "failed or was not finished (or bad frames without --skip-bad-frames), 2 nothing "
        "ran (no bags, no Ray, model or DIR unusable), 130 interrupted (Ctrl-C or SIGTERM: "
        "the bags in progress are discarded, the manifest says which are done).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a bag folder (with metadata.yaml), a .mcap/.db3 file, a folder of "
                   "bags (searched recursively), a glob (quote it: 'archive/2024-*') or a "
                   "text file listing any of these, one a line")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output folder: DIR/<bag name>/ per bag, DIR/manifest.json, "
                   "DIR/summary.csv, DIR/summary.json (on a cluster: shared storage)")
    process_cmd.add_options(p)
    ray = p.add_argument_group("Ray")
    ray.add_argument("--workers", type=int, default=None, metavar="N",
                     help="workers, each holding one model (default: one per 2 CPUs of the "
                     "Ray cluster, or one per GPU; never more than bags)")
    ray.add_argument("--threads-per-worker", type=int, default=None, metavar="N",
                     help="CPU threads (and Ray CPUs) per worker (default: CPUs // workers)")
    ray.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                     help="GPUs per worker, may be a fraction (default: 1 where the cluster "
                     "has GPUs and --device is not cpu, else 0)")
    ray.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="run on an existing Ray cluster: 'auto' (the cluster this machine "
                     "belongs to, or RAY_ADDRESS), 'HOST:PORT' (its GCS) or "
                     "'ray://HOST:10001' (Ray Client); default: a local Ray in this process")
    ray.add_argument("--start-timeout", type=float, default=600.0, metavar="S",
                     help="seconds to wait for the workers' models to load (default 600)")
    p.add_argument("--force", action="store_true",
                   help="redo bags that are done as well")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar: a log line per bag and every 30 s instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seg_perception.offline import fleet
    from seg_perception.offline.fleet_ray import EngineSpec, RayMissingError, RayPool, import_ray

    try:
        import_ray(local=args.ray_address is None)
    except RayMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for name in ("workers", "threads_per_worker"):
        value = getattr(args, name)
        if value is not None and value < 1:
            log.error("--%s %s must be at least 1", name.replace("_", "-"), value)
            return EXIT_USAGE
    if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
        log.error("--gpus-per-worker %s must not be negative", args.gpus_per_worker)
        return EXIT_USAGE
    try:
        options, params = process_cmd.build_options(args)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    model, checkpoint, device, precision = process_cmd.engine_choice(args, params)
    # Workers may run in another folder (or on another node): pass files as absolute paths.
    if checkpoint and Path(checkpoint).exists():
        checkpoint = str(Path(checkpoint).absolute())
    if model.lower().endswith(".onnx") and Path(model).exists():
        model = str(Path(model).absolute())
    out = args.out.absolute()
    spec = fleet.TaskSpec(out, options, tuple(args.image_topic) if args.image_topic else None,
                          tuple(args.camera_info_topic) if args.camera_info_topic else None)
    options_hash = fleet.options_sha256(options, spec.image_topics, spec.camera_info_topics)
    archive = None
    try:
        bags = fleet.expand_inputs(args.inputs, exclude=[out])
        log.info("%d bag(s), %.1f MB in all", len(bags), sum(b.size for b in bags) / 1e6)
        with fleet.locked_out_dir(out):
            manifest = fleet.Manifest.load(out)
            fleet.check_outputs(manifest, bags)
            with RayPool(EngineSpec(model, checkpoint, device, precision), spec,
                         process_cmd.output_custom_data, n_bags=len(bags),
                         address=args.ray_address, workers=args.workers,
                         threads_per_worker=args.threads_per_worker,
                         gpus_per_worker=args.gpus_per_worker,
                         start_timeout=args.start_timeout,
                         log_level=logging.DEBUG if log.isEnabledFor(logging.DEBUG)
                         else logging.WARNING) as pool:
                ident = pool.identity
                log.info("model %s (%s, sha256 %s) on %s, %s", ident.model, ident.weights,
                         ident.weights_sha256[:12], ident.device, ident.precision)
                if not ident.trained:
                    log.warning("model %s has random weights (seed 0 in every worker): its "
                                "labels are meaningless", ident.model)
                items = fleet.plan(manifest, bags, ident, options_hash, force=args.force)
                for item in items:
                    if item.run and item.reason != "new":
                        log.info("%s: redo, %s", item.bag.name, item.reason)
                skipped = sum(not i.run for i in items)
                if skipped:
                    log.info("%d bag(s) done before with the same model, weights and options: "
                             "skipped", skipped)
                archive = fleet.ArchiveRun(manifest, items, ident, options_hash,
                                           progress=not args.no_progress)
                try:
                    pool.run(archive.todo, archive)
                finally:
                    archive.close()
            csv_path, json_path = fleet.write_summary(manifest)
    except fleet.FleetError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if archive is None:
            print("interrupted before any bag started; nothing changed", file=sys.stderr)
            return EXIT_INTERRUPTED
        raise
    print(archive.report())
    print(f"manifest {manifest.path}; summary {csv_path}, {json_path}")
    status = archive.exit_status(args.skip_bad_frames)
    if status == EXIT_INTERRUPTED:
        print("interrupted: bags in progress were discarded; run the same command again to "
              "finish (done bags are skipped)")
    elif status == EXIT_INCOMPLETE:
        print("exit status 1: " + ("some bags failed or are unfinished (a re-run redoes them)"
                                   if any(r.status != fleet.DONE for r in
                                          (manifest.bags[i.bag.name] for i in items))
                                   else "bad frames (--skip-bad-frames accepts them)"))
    return status
