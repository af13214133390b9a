"""``seg-perception bench``: per-stage speed, FLOPs and the fraction of peak it reaches."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from seg_perception.cli import arg_types

# The engine's choices (seg_perception.runtime.engine; a test keeps them equal), spelled out
# so that `seg-perception --help` does not import torch.
PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16", "int8")
BACKEND_CHOICES = ("auto", "torch", "openvino", "onnx")
UPSAMPLE_CHOICES = ("auto", "edges", "labels", "logits")

log = logging.getLogger(__name__)


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``lo`` to ``hi``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}, got {value}")
        return value
    return parse


def _camera_counts(text: str) -> tuple[int, ...]:
    """``1,2,4`` -> (1, 2, 4): camera counts from 1 to 16."""
    try:
        counts = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N,..., got {text!r}") from None
    if not counts or any(not 1 <= n <= 16 for n in counts):
        raise argparse.ArgumentTypeError(f"camera counts must be from 1 to 16, got {text!r}")
    return counts


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """A wrong option prints one line (no usage block) and exits 2."""
    def error(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: error: {message}\n")
    parser.error = error  # type: ignore[method-assign]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time the engine's stages; FLOPs per frame and fraction of the measured peak",
        description="Run the inference engine on many frames after a warm-up and print the "
        "median and p95 of each stage (upload + preprocess, inference, postprocess + copy "
        "back), end-to-end frames per second, the network's GFLOPs per frame at the input "
        "size run (FLOPs = 2 x MACs), the achieved GFLOP/s and the peak of a large matrix "
        "product measured on the same device and dtype in the same run.",
    )
    p.add_argument("--model", default="default",
                   help="registered model or exported .onnx file (default: %(default)s)")
    p.add_argument("--checkpoint", default=None,
                   help="weights file (default: the weights shipped with the model)")
    p.add_argument("--width", type=_int_in(1, arg_types.MAX_SIDE), default=None,
                   help="network input width (default: the model's)")
    p.add_argument("--height", type=_int_in(1, arg_types.MAX_SIDE), default=None,
                   help="network input height (default: the model's)")
    p.add_argument("--camera", type=arg_types.size, default=None, metavar="WxH",
                   help="camera frame size fed to the engine (default: the input size)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="auto (fp16 on CUDA; bf16 on CPUs with a bf16 unit, else fp32), fp32, "
                   "fp16 (CUDA), bf16, or int8 (an int8 .onnx from `export --int8`)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="auto (as the node: OpenVINO on a CPU where installed, else torch), "
                   "torch, openvino, or onnx (ONNX Runtime; a registered model is exported "
                   "to a temporary file first)")
    p.add_argument("--upsample", choices=UPSAMPLE_CHOICES, default="auto",
                   help="postprocessing: auto (the node's: edges on a CPU, logits on CUDA), "
                   "edges (logits' labels, interpolating only where classes meet), labels "
                   "(argmax at the output stride, ids resized nearest: cheapest) or logits "
                   "(scores resized bilinearly first)")
    p.add_argument("--no-confidence", dest="confidence", action="store_false",
                   help="skip the confidence map (the node computes it only when subscribed)")
    p.add_argument("--frames", type=_int_in(1, 1_000_000), default=100,
                   help="timed frames (default: %(default)s)")
    p.add_argument("--warmup", type=_int_in(0, 1_000_000), default=10,
                   help="untimed frames first (default: %(default)s)")
    p.add_argument("--threads", type=_int_in(0, 1024), default=None,
                   help="CPU threads for torch and ONNX Runtime (default: half the CPUs, "
                   "at least 1, as the node uses)")
    p.add_argument("--peak-size", type=_int_in(1, 32768), default=None,
                   metavar="N",
                   help="matrix size for the peak measurement (default: 4096 CPU, 8192 CUDA)")
    p.add_argument("--cameras", type=_camera_counts, default=None, metavar="N[,N...]",
                   help="several cameras in one node: for each N (e.g. 1,2,4) the cycle time "
                   "and frames/s per camera of N frames in ONE batched forward pass against N "
                   "separate passes, side by side, for the engine and for the node's pipeline "
                   "(grids, fused grid, boundary), on a synthetic surround rig at --camera "
                   "(default 480x360); --frames is the number of cycles")
    p.add_argument("--image", default=None, metavar="FILE",
                   help="a camera frame (PNG/JPEG) to time on, resized to the camera size "
                   "(default: uniform noise, the worst case for upsample edges: label edges "
                   "everywhere)")
    p.add_argument("--against", default=None, metavar="MODEL",
                   help="also time this registered model (or .onnx file) with the same "
                   "device, precision, backend, threads and camera frame, in alternating "
                   "rounds, and print the ratio of their end-to-end medians (e.g. a new "
                   "model against lightfpn)")
    p.add_argument("--against-checkpoint", default=None, metavar="FILE",
                   help="weights for --against (default: its shipped ones)")
    p.add_argument("--json", default=None, metavar="FILE", help="write all figures as JSON")
    _one_line_errors(p)
    p.set_defaults(func=run)


def _flops_model(name: str, meta: object) -> object | None:
    """A torch module of a registered network to count FLOPs on (random weights suffice)."""
    from seg_perception.runtime.models import create_model

    try:
        return create_model(name, meta=meta).eval()
    except (KeyError, ValueError, TypeError):
        return None


def run(args: argparse.Namespace) -> int:
    from seg_perception.runtime.engine import EngineConfigError, build_engine, is_onnx_path
    from seg_perception.runtime.models.checkpoint import CheckpointError
    from seg_perception.tools.bench import format_report, run_bench

    if args.frames < 1 or args.warmup < 0:
        log.error("--frames must be >= 1 and --warmup >= 0")
        return 2
    if args.against and args.cameras:
        log.error("--against times one camera: it does not go with --cameras")
        return 2
    size = (args.width, args.height) if args.width and args.height else None
    image = None
    if args.image:
        import cv2

        bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if bgr is None:
            log.error("--image %s: not a readable image file", args.image)
            return 2
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def build(model: str, checkpoint: str | None) -> tuple[object, object]:
        return build_engine(model, None if is_onnx_path(model) else checkpoint, args.device,
                            args.precision, size, threads=args.threads, backend=args.backend,
                            upsample=args.upsample)

    try:
        engine, info = build(args.model, args.checkpoint)
        other = build(args.against, args.against_checkpoint) if args.against else None
    except (EngineConfigError, CheckpointError, FileNotFoundError, ValueError,
            KeyError) as exc:
        log.error("%s", exc.args[0] if isinstance(exc, KeyError) else exc)
        return 2
    log.info("model %s, weights: %s; %s (%s)", info.model, info.weights, engine.description,
             info.precision_reason)
    if not info.trained:
        log.info("random weights: speed is unaffected, labels would be meaningless")
    flops_model = None
    if info.backend != "torch":  # FLOPs are counted on the same network as a torch module
        flops_model = _flops_model(info.model, engine.meta)
    report = {"model": info.model, "weights": info.weights, "trained": info.trained,
              "precision_reason": info.precision_reason}
    if args.cameras:
        from seg_perception.tools.multicam_bench import format_multicam, run_multicam_bench
        from seg_perception.tools.peak import machine_info

        report.update({"device": str(engine.device), "backend": engine.backend_name,
                       "precision": engine.precision, "upsample": engine.upsample,
                       "input_size": list(engine.input_size)})
        report["multicam"] = run_multicam_bench(
            engine, args.cameras, args.frames, args.warmup, args.camera or (480, 360),
            want_confidence=args.confidence)
        report["machine"] = machine_info(engine.device)
        print(format_multicam(report))
        from seg_perception.tools.map_bench import bench_map

        report["map_update"] = bench_map(cycles=200)  # per cycle, on the fused grid
        m = report["map_update"]
        print(f"drivable/map update per cycle (map.* defaults, one core): "
              f"{m['map_update']:.2f} ms median, {m['map_update_p95']:.2f} ms p95 "
              f"({int(m['cells'])} cells)")
    else:
        report.update(run_bench(engine, args.frames, args.warmup, args.camera, flops_model,
                                args.peak_size, want_confidence=args.confidence, image=image))
        report["frame_source"] = args.image
        print(format_report(report))
        if other is not None:
            from seg_perception.tools.bench import (
                camera_frame,
                format_side_by_side,
                time_side_by_side,
            )

            other_engine, other_info = other
            names = (info.model, other_info.model if other_info.model != info.model
                     else f"{other_info.model} (--against)")
            frame = camera_frame(args.camera or engine.input_size, image)
            report["side_by_side"] = time_side_by_side(
                dict(zip(names, (engine, other_engine), strict=True)), frame, args.frames,
                args.warmup, want_confidence=args.confidence)
            report["side_by_side"]["weights"] = {names[0]: info.weights,
                                                 names[1]: other_info.weights}
            print(format_side_by_side(report["side_by_side"]))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
        log.info("figures written to %s", path)
    return 0
