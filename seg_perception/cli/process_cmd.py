"""``seg-perception process``: run the node's pipeline on every frame of a rosbag2 bag.

Offline and frame-exact: no frame is dropped, each output message carries its input frame's
header and log time. The heavy lifting is in :mod:`seg_perception.offline.process`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # bad frames (without --skip-bad-frames) or an input unreadable part-way
EXIT_USAGE = 2  # nothing processed: unreadable bag, no camera, output exists, bad options
EXIT_WRITE_FAILED = 4  # writing the output failed part-way (disk full, I/O error, ...)
EXIT_INTERRUPTED = 130


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "process",
        help="segment every frame of a rosbag2 bag into a new bag (offline, frame-exact)",
        description="Read a rosbag2 bag (directory, .mcap or .db3, any ROS 2 distro), run the "
        "segmentation on every frame of its image topics (sensor_msgs/Image or "
        "CompressedImage) and write the node's outputs to a new rosbag2 bag (.mcap). Each "
        "camera's outputs go to the namespace of its image topic, i.e. the topic's parent "
        "after dropping a trailing /compressed: /cam_front/image_raw and "
        "/cam_front/image_raw/compressed both give /cam_front/labels, /cam_front/overlay, "
        "/cam_front/drivable/grid, ...; a top-level /image gives /labels, /overlay, ... . "
        "Every output has the input frame's header stamp and log time (the grid and boundary "
        "are in grid_frame). Camera poses come from the bag's /tf_static and /tf (the image's "
        "frame_id in grid_frame, default base_footprint), else from the camera.* parameters; "
        "frames are paired with the camera_info of the same stamp. Exit status: 0 done, 1 "
        "undecodable frames (unless --skip-bad-frames) or input truncated part-way (a cut-off "
        ".mcap is read up to the cut), 2 nothing processed (no output is left), 130 "
        "interrupted by Ctrl-C or SIGTERM (the output bag stays valid; a second signal does "
        "not stop its finishing), 4 writing the output failed part-way (disk full, I/O error, "
        "...: one line says what; the output is a valid bag with the frames written before).",
    )
    p.add_argument("input", type=Path, metavar="INPUT",
                   help="bag directory (with metadata.yaml) or .mcap/.db3 file")
    p.add_argument("output", type=Path, metavar="OUTPUT",
                   help="bag directory to create (OUTPUT/metadata.yaml, OUTPUT/<name>.mcap)")
    add_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# --- shared with process-many -----------------------------------------------------------------
# SEAM (issue 15): process-many calls add_options, build_options, engine_choice and
# output_custom_data, then offline.process.process_bag; keep these when refactoring.

def add_options(p: argparse.ArgumentParser) -> None:
    """The options that decide a bag's outputs (``process`` and ``process-many`` share them)."""
    p.add_argument("--image-topic", action="extend", nargs="+", default=None, metavar="T",
                   help="image topic(s) to process (default: every image topic; where a "
                   "camera has raw and compressed topics, the raw one)")
    p.add_argument("--camera-info-topic", action="extend", nargs="+", default=None,
                   metavar="T", help="CameraInfo topic(s), one per --image-topic in the same "
                   "order (default: <namespace>/camera_info when present)")
    p.add_argument("--model", default=None,
                   help="registered model or .onnx file (default: the params file's, else "
                   "'default')")
    p.add_argument("--checkpoint", default=None, help="weights file for --model")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--precision", default=None,
                   help="auto, fp32, fp16 (CUDA), bf16, int8 (default: auto)")
    p.add_argument("--params-file", type=Path, default=None, metavar="YAML",
                   help="the node's parameter file (e.g. config/seg.yaml), read and checked "
                   "as the node reads it: grid_frame, use_tf, camera.*, grid.*, mask.*, "
                   "boundary.*, image_type, camera_info_tolerance, overlay_alpha, output_qos.* "
                   "and the model; a section '<namespace>/seg_node' or '<namespace>/**' "
                   "overrides '/**' for that camera. With cameras: [X, ...] camera X is the "
                   "image topic in namespace .../X (its X.* parameters apply), frames go in "
                   "cycles (stamps within fusion.sync_window) and each cycle writes one fused "
                   "/drivable/grid and /drivable/boundary (fusion.max_age), as the node does")
    p.add_argument("--hfov", type=float, default=None, metavar="DEG",
                   help="horizontal field of view for cameras without CameraInfo in the bag "
                   "(pinhole, centred); without it such cameras get no grid or boundary")
    p.add_argument("--no-grid", action="store_true",
                   help="do not write drivable/grid and drivable/boundary")
    p.add_argument("--keep-input", action="store_true",
                   help="copy every message of the input bag into the output as well")
    p.add_argument("--skip-bad-frames", action="store_true",
                   help="exit 0 even when frames cannot be decoded (they are still listed)")
    p.add_argument("--pipeline-depth", type=int, default=None, metavar="N",
                   help="frames that may wait between the overlapped read, network, "
                   "drawing and write threads (default 2); 0 runs them one after the other "
                   "in one thread (same outputs, slower)")


# --- parameters file -------------------------------------------------------------------------

def read_params_file(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``(global, per_namespace)`` parameters of a ROS 2 parameter file (see
    :func:`seg_perception.runtime.config.read_params_file`)."""
    from seg_perception.runtime.config import read_params_file as read

    return read(path)


def _known(params: dict[str, Any], where: str, cameras: Any = ()) -> dict[str, Any]:
    """The parameters of seg_node in ``params`` (with the per-camera ``X.<name>`` ones of
    ``cameras``, ``params``' own by default); others (a ``/**`` section shared with other
    nodes) are skipped with one warning each."""
    from seg_perception.runtime.config import (
        PARAMS_BY_NAME,
        ROS_PARAMETERS,
        camera_names_problem,
        camera_specs,
        unknown_parameter_message,
    )

    names = params.get("cameras", cameras)
    if not isinstance(names, (list, tuple)) or camera_names_problem(tuple(names)) is not None:
        names = ()  # a bad value is refused with its own message by validate_values
    known = set(PARAMS_BY_NAME) | set(camera_specs(names))
    out = {}
    for name, value in params.items():
        if name in known:
            out[name] = value
        elif name not in ROS_PARAMETERS and not name.startswith("qos_overrides."):
            log.warning("%s: %s (ignored)", where, unknown_parameter_message(name))
    return out


def build_options(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """ProcessOptions from the command line and the parameters file; also all parameter
    values (the table's defaults where the file is silent). Raises ValueError (one line)
    for a bad value or combination."""
    from seg_perception.offline.job import ProcessOptions
    from seg_perception.runtime.config import DEFAULTS, PipelineConfig, validate_values

    glob: dict[str, Any] = {}
    per_ns: dict[str, dict[str, Any]] = {}
    where = str(args.params_file)
    if args.params_file is not None:
        glob, per_ns = read_params_file(args.params_file)
    values = validate_values(_known(glob, where), where)
    p = {**DEFAULTS, **values}
    try:
        config = PipelineConfig.from_params(p)
        cameras = tuple(p["cameras"])
        camera_configs = {c: PipelineConfig.from_params(p, camera=c) for c in cameras if c}
    except ValueError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    configs = {}
    for ns, section in per_ns.items():
        here = f"{where} ({ns})"
        extra = validate_values(_known(section, here, cameras), here)
        try:
            configs[ns] = PipelineConfig.from_params({**p, **extra})
        except ValueError as exc:
            raise type(exc)(f"{here}: {exc}") from None
    if args.hfov is not None and not 0.0 < args.hfov < 180.0:
        raise ValueError(f"--hfov {args.hfov} must be between 0 and 180 degrees")
    depth = getattr(args, "pipeline_depth", None)
    if depth is not None and depth < 0:
        raise ValueError(f"--pipeline-depth {depth} must be >= 0")
    options = ProcessOptions(
        config=config,
        configs=configs,
        cameras=cameras,
        camera_configs=camera_configs,
        grid=not args.no_grid,
        hfov_deg=args.hfov,
        keep_input=args.keep_input,
        output_reliability=p["output_qos.reliability"],
        output_depth=p["output_qos.depth"],
        max_pixels=p["max_image_pixels"] or None,
    )
    if depth is not None:
        options.pipeline_depth = depth
    return options, p


def engine_choice(args: argparse.Namespace,
                  params: dict[str, Any]) -> tuple[str, str | None, str, str]:
    """``(model, checkpoint, device, precision)``: the command line over the parameters file."""
    return (args.model or params["model"], args.checkpoint or params["checkpoint"] or None,
            args.device or params["device"], args.precision or params["precision"])


def output_custom_data(info: Any, input_path: str | Path) -> dict[str, str]:
    """metadata.yaml custom data of an output bag: what made it, from which input."""
    return {"seg_perception.model": info.model, "seg_perception.weights": info.weights,
            "seg_perception.device": info.device, "seg_perception.precision": info.precision,
            "seg_perception.input": str(input_path)}


# --- run -------------------------------------------------------------------------------------

def _report(summary: Any, skip_bad: bool, stopped_by: str = "") -> int:
    """Print what ``process`` did; the exit status (see the verb's help)."""
    cams = summary.cameras
    frames = sum(summary.frames.values())
    total = sum(c.count for c in cams)
    print(f"{summary.input} -> {summary.output}")
    for cam in cams:
        n = summary.frames.get(cam.image_topic, 0)
        out_ns = cam.namespace or "/"
        info = cam.camera_info_topic or "no camera_info"
        grids = summary.written.get(cam.output("drivable/grid"), 0)
        missing = summary.no_grid.get(cam.image_topic, 0)
        grid = f"{grids} with grid" + (f", {missing} without" if missing else "")
        pose = summary.poses.get(cam.image_topic)
        print(f"  {cam.image_topic} ({cam.transport}, {info}): {n} of {cam.count} frames read, "
              f"{summary.written.get(cam.output('labels'), 0)} written to {out_ns}/* ({grid}"
              + (f"; pose from {pose}" if pose else "") + ")")
    if summary.cycles:
        left = ", ".join(f"{ns} {n}" for ns, n in sorted(summary.left_out.items()))
        print(f"  fused /drivable/grid, /drivable/boundary: {summary.fused} of "
              f"{summary.cycles} cycles" + (f" (cameras left out: {left})" if left else ""))
    print(f"{summary.processed} frames processed of {total} in {summary.seconds:.1f} s "
          f"({summary.fps:.1f} frames/s); {sum(summary.written.values())} messages written"
          + (f", {summary.copied} input messages copied" if summary.copied else ""))
    for text in summary.warnings:
        print(f"warning: {text}")
    if summary.bad:
        print(f"{len(summary.bad)} bad frame(s), no output for them:")
        for bad in summary.bad:
            print(f"  {bad.describe()}")
    if summary.write_error:
        print(f"error: {summary.write_error}; {_kept(summary)}")
        return EXIT_WRITE_FAILED
    if summary.interrupted:
        how = f" by {stopped_by}" if stopped_by else ""
        print(f"interrupted{how} after {summary.processed} frames; {summary.output} is a valid "
              "bag with every frame processed so far")
        return EXIT_INTERRUPTED
    if summary.processed == 0:
        if summary.error:
            why = f"the input ends before its first good frame ({summary.error})"
        elif summary.bad:
            why = f"all {len(summary.bad)} frames are undecodable"
        else:
            topics = ", ".join(c.image_topic for c in cams)
            why = f"the image topic(s) {topics} have no messages"
        print(f"nothing processed: {why}")
        return EXIT_USAGE
    if summary.error:
        print(f"error: {summary.error}")
        print(f"{summary.output} holds the {frames} frames read before the error")
        return EXIT_INCOMPLETE
    if summary.bad and not skip_bad:
        print("exit status 1 because of the bad frames (--skip-bad-frames accepts them)")
        return EXIT_INCOMPLETE
    return EXIT_OK


def _kept(summary: Any) -> str:
    """What the output holds after a write error (the end of process's one error line)."""
    if summary.unfinished:
        return (f"{summary.output} could not be closed and is not a readable bag "
                f"({summary.processed} frames processed)")
    if summary.kept is None:
        return (f"{summary.output} was closed with what reached it ({summary.processed} "
                "frames processed)")
    lost = summary.processed - summary.kept
    return (f"{summary.output} is a valid bag with the first {summary.kept} of "
            f"{summary.processed} frames processed"
            + (f" ({lost} lost with the failed write)" if lost else ""))


def run(args: argparse.Namespace) -> int:
    from seg_perception.offline.process import process_bag
    from seg_perception.offline.topics import BagError
    from seg_perception.runtime.engine import EngineConfigError, build_engine
    from seg_perception.runtime.signals import stop_signals

    try:
        options, params = build_options(args)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    if args.output.exists():
        log.error("output %s exists; rosbag2 bags are never overwritten (remove it or choose "
                  "another name)", args.output)
        return EXIT_USAGE
    if not args.input.exists():
        log.error("input bag %s does not exist", args.input)
        return EXIT_USAGE
    model, checkpoint, device, precision = engine_choice(args, params)
    try:
        engine, info = build_engine(model, checkpoint, device, precision,
                                    threads=params["cpu_threads"])
    except (EngineConfigError, KeyError, ValueError, FileNotFoundError, OSError) as exc:
        log.error("cannot load model %s: %s", model,
                  exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        return EXIT_USAGE
    log.info("model %s (%s) on %s, %s", info.model, info.weights, info.device, info.precision)
    if not info.trained:
        log.warning("model %s has random weights: its labels are meaningless", info.model)
    engine.warmup()
    custom = output_custom_data(info, args.input)
    with stop_signals("finishing the output bag") as stop:
        try:
            summary = process_bag(
                args.input, args.output, engine, image_topics=args.image_topic,
                camera_info_topics=args.camera_info_topic, options=options,
                progress=not args.no_progress, custom_data=custom)
        except BagError as exc:
            log.error("%s", exc)
            return EXIT_USAGE
        code = _report(summary, args.skip_bad_frames, stop.name)
        if code == EXIT_USAGE and not summary.copied and not any(summary.written.values()):
            _remove_empty_output(args.output)
        return code


def _remove_empty_output(path: Path) -> None:
    """Remove the output bag this run created and wrote nothing to (exit 2 leaves none)."""
    import shutil

    if path.is_dir() and all(p.suffix in (".mcap", ".db3", ".yaml") for p in path.iterdir()):
        shutil.rmtree(path, ignore_errors=True)
        print(f"{path} removed: it held no messages")
