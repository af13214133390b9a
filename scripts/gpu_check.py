#!/usr/bin/env python3
"""GPU check: every registered model on CUDA in fp32 and fp16, the node end to end on the GPU,
and ONNX Runtime's CUDA/TensorRT providers where they import; one JSON with all figures.

Run by ``scripts/gpu_check.sh`` (which sets up the environment); on its own:

    python scripts/gpu_check.py --out gpu_check.json              # CUDA, full run
    python scripts/gpu_check.py --dry-run                         # the plan, runs nothing
    python scripts/gpu_check.py --device cpu --models tiny_seg --camera 96x64 \\
        --precisions fp32 --frames 2 --no-node --out /tmp/g.json  # plumbing test on a CPU

Per model (network at its native input size, camera frames --camera, default 2048x1024):
engine stage times and frames/s (``tools.bench.run_bench``: median/p95 per stage, FLOPs,
fraction of the fp32/fp16 matrix-product peak measured in the same run), peak GPU memory,
and fp16-vs-fp32 label agreement on real frames (../shared Cityscapes/BDD samples where
present, else generated street scenes). Weights: --checkpoint NAME=PATH, else the shipped
ones, else the official TwinLiteNet weights in ../shared, else random (flagged ``trained:
false``: speed figures hold, agreement on random weights is only indicative). Every section
catches its own errors (recorded under ``errors``) and the JSON is rewritten after each
section, so a time-out or a failure still leaves the figures measured so far. A time budget
(--budget-s) skips what would not fit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
REAL_FRAMES = (SHARED / "data" / "cityscapes_samples", SHARED / "data" / "bdd100k_samples")
SHARED_WEIGHTS = {"twinlitenet": SHARED / "models" / "twinlitenet" / "best.pth"}
TRT_MODELS = ("lightfpn", "pidnet_s")  # TensorRT engine builds take minutes for big nets


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return w, h


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_check.json",
                    help="the JSON written (default: %(default)s)")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (plumbing tests)")
    ap.add_argument("--models", default="all",
                    help="comma-separated registered names, or 'all' (default)")
    ap.add_argument("--precisions", default="fp32,fp16", help="default: %(default)s")
    ap.add_argument("--camera", type=parse_size, default=(2048, 1024), metavar="WxH",
                    help="camera frame size fed to the engine (default: 2048x1024)")
    ap.add_argument("--input-size", type=parse_size, default=None, metavar="WxH",
                    help="network input size (default: each model's native size)")
    ap.add_argument("--frames", type=int, default=50, help="timed frames per run")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--agreement-frames", type=int, default=4)
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                    help="weights for a model (official .pt/.pth or ours)")
    ap.add_argument("--no-node", dest="node", action="store_false",
                    help="skip the node + latency probe section")
    ap.add_argument("--node-model", default="default")
    ap.add_argument("--node-frames", type=int, default=60)
    ap.add_argument("--node-rate", type=float, default=10.0)
    ap.add_argument("--no-ort", dest="ort", action="store_false",
                    help="skip the ONNX Runtime CUDA/TensorRT section")
    ap.add_argument("--budget-s", type=float, default=400.0,
                    help="skip sections that would start after this many seconds")
    ap.add_argument("--dry-run", action="store_true", help="print the plan as JSON and exit")
    return ap.parse_args(argv)


class Report:
    """The one JSON, rewritten after every section."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     "errors": []}
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def error(self, where: str, exc: BaseException) -> None:
        self.data["errors"].append({"where": where, "error": f"{type(exc).__name__}: {exc}",
                                    "traceback": traceback.format_exc(limit=4)})
        print(f"[gpu_check] {where}: {type(exc).__name__}: {exc}", file=sys.stderr)

    def save(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


def checkpoints(args: argparse.Namespace) -> dict[str, str]:
    out = {}
    for item in args.checkpoint:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--checkpoint expects NAME=PATH, got {item!r}")
        out[name] = path
    for name, path in SHARED_WEIGHTS.items():
        if name not in out and path.is_file():
            out[name] = str(path)
    return out


def model_names(args: argparse.Namespace) -> list[str]:
    from seg_perception.runtime.models import list_models

    names = list_models() if args.models == "all" else [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in list_models()]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; registered: {list_models()}")
    return names


def real_frames(camera: tuple[int, int], n: int) -> tuple[list[Any], str]:
    """Real street frames resized to the camera size (generated scenes where none exist)."""
    import cv2
    import numpy as np

    paths = [p for d in REAL_FRAMES if d.is_dir() for p in sorted(d.iterdir())
             if p.suffix.lower() in (".png", ".jpg")]
    frames = []
    for p in paths[:n]:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is not None:
            frames.append(cv2.cvtColor(cv2.resize(bgr, camera, interpolation=cv2.INTER_AREA),
                                       cv2.COLOR_BGR2RGB))
    if frames:
        return frames, f"{len(frames)} real frames ({', '.join(p.name for p in paths[:n])})"
    rng = np.random.default_rng(0)
    w, h = camera
    for _ in range(n):  # sky, buildings, road, with texture: not a blank frame
        img = np.empty((h, w, 3), np.uint8)
        img[: h // 3] = (110, 150, 200)
        img[h // 3: h // 2] = (120, 100, 90)
        img[h // 2:] = (90, 90, 95)
        noise = rng.integers(-20, 21, (h, w, 1))
        frames.append(np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return frames, f"{n} generated street-like frames (no real frames found)"


def environment(device: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "device": device,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["cudnn"] = torch.backends.cudnn.version()
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=False)
        env["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        env["nvidia_smi"] = f"unavailable: {exc}"
    return env


def bench_models(args: argparse.Namespace, report: Report, names: list[str],
                 ckpts: dict[str, str]) -> None:
    import numpy as np
    import torch

    from seg_perception.runtime.engine import build_engine
    from seg_perception.tools.bench import run_bench

    frames, source = real_frames(args.camera, args.agreement_frames)
    section: dict[str, Any] = {"camera": list(args.camera), "agreement_frames": source,
                               "results": {}}
    report.data["models"] = section
    precisions = [p for p in args.precisions.split(",") if p]
    cuda = args.device.startswith("cuda")
    for name in names:
        if report.elapsed() > args.budget_s:
            section["results"][name] = {"skipped": "time budget"}
            continue
        entry: dict[str, Any] = {"checkpoint": ckpts.get(name)}
        section["results"][name] = entry
        labels: dict[str, list[Any]] = {}
        for precision in precisions:
            try:
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                engine, info = build_engine(name, ckpts.get(name), args.device, precision,
                                            args.input_size, backend="torch")
                entry.setdefault("trained", info.trained)
                entry.setdefault("weights", info.weights)
                t0 = time.perf_counter()
                engine.warmup(*args.camera, runs=3)
                warm = (time.perf_counter() - t0) * 1e3
                result = run_bench(engine, args.frames, args.warmup, args.camera,
                                   peak_size=None if cuda else 256)
                result["warmup_ms"] = warm
                if cuda:
                    result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
                labels[precision] = [engine(f, want_confidence=False).labels for f in frames]
                entry[precision] = result
                print(f"[gpu_check] {name} {precision}: {result['fps']:.1f} frames/s, "
                      f"inference {result['stages_ms']['inference']['median']:.2f} ms",
                      file=sys.stderr)
                del engine
            except Exception as exc:  # record and go on with the next configuration
                report.error(f"models/{name}/{precision}", exc)
                entry[precision] = {"error": f"{type(exc).__name__}: {exc}"}
        if "fp32" in labels:
            for other in (p for p in labels if p != "fp32"):
                agree = [float((a == b).mean()) for a, b in zip(labels["fp32"], labels[other],
                                                                 strict=True)]
                entry[f"{other}_vs_fp32_label_agreement"] = {
                    "mean": float(np.mean(agree)), "min": float(np.min(agree)),
                    "per_frame": agree}
        report.save()


def bench_ort(args: argparse.Namespace, report: Report, names: list[str],
              ckpts: dict[str, str]) -> None:
    """ONNX Runtime's CUDA provider through the engine, TensorRT through a bare session."""
    section: dict[str, Any] = {}
    report.data["onnxruntime"] = section
    try:
        import onnxruntime as ort
    except ImportError as exc:
        section["skipped"] = f"onnxruntime does not import: {exc}"
        return
    providers = ort.get_available_providers()
    section["providers"] = providers
    if not args.device.startswith("cuda"):
        section["skipped"] = "not a CUDA run"
        return
    if "CUDAExecutionProvider" not in providers:
        section["skipped"] = (f"onnxruntime {ort.__version__} has no CUDA provider (the "
                              "onnxruntime-gpu package provides it)")
        return
    import numpy as np

    from seg_perception.runtime.engine import build_engine
    from seg_perception.runtime.export import export_onnx
    from seg_perception.runtime.models.checkpoint import load_model
    from seg_perception.tools.bench import run_bench

    with tempfile.TemporaryDirectory(prefix="gpu-check-ort-") as tmp:
        for name in names:
            if report.elapsed() > args.budget_s:
                section[name] = {"skipped": "time budget"}
                continue
            entry: dict[str, Any] = {}
            section[name] = entry
            try:
                loaded = load_model(name, ckpts.get(name))
                w, h = args.input_size or loaded.meta.input_size
                path = export_onnx(loaded.model, loaded.meta, Path(tmp) / f"{name}.onnx", w, h,
                                   model_name=loaded.name, weights=loaded.weights,
                                   trained=loaded.trained)
                engine, _ = build_engine(str(path), None, args.device, "fp32", backend="onnx")
                engine.warmup(*args.camera, runs=3)
                entry["cuda_fp32"] = run_bench(engine, args.frames, args.warmup, args.camera,
                                               flops_model=loaded.model)
            except Exception as exc:
                report.error(f"onnxruntime/{name}/cuda", exc)
                entry["cuda_fp32"] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            if "TensorrtExecutionProvider" in providers and name in TRT_MODELS:
                try:
                    opts = {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": tmp}
                    sess = ort.InferenceSession(
                        str(path), providers=[("TensorrtExecutionProvider", opts),
                                              "CUDAExecutionProvider"])
                    x = np.random.default_rng(0).standard_normal((1, 3, h, w), np.float32)
                    t0 = time.perf_counter()
                    sess.run(None, {"input": x})
                    build_s = time.perf_counter() - t0
                    times = []
                    for _ in range(args.frames):
                        t0 = time.perf_counter()
                        sess.run(None, {"input": x})
                        times.append((time.perf_counter() - t0) * 1e3)
                    entry["tensorrt_fp16_host_io"] = {
                        "engine_build_s": build_s, "median_ms": float(np.median(times)),
                        "p95_ms": float(np.percentile(times, 95)),
                        "note": "bare session.run with host input/outputs (copies included)"}
                except Exception as exc:
                    report.error(f"onnxruntime/{name}/tensorrt", exc)
                    entry["tensorrt_fp16_host_io"] = {"error": f"{type(exc).__name__}: {exc}"}
            report.save()


def node_end_to_end(args: argparse.Namespace, report: Report) -> None:
    """seg_node on the device as its own process, measured by the latency probe over DDS."""
    from seg_perception.tools.node_process import NodeProcess, use_fastdds_profile

    section: dict[str, Any] = {"model": args.node_model, "device": args.device,
                               "camera": list(args.camera)}
    report.data["node"] = section
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    use_fastdds_profile(env)
    ns = "/gpu_check"
    with tempfile.TemporaryDirectory(prefix="gpu-check-node-") as tmp:
        probe_json = Path(tmp) / "probe.json"
        node = NodeProcess(Path(tmp) / "node.log",
                           {"device": args.device, "model": args.node_model}, namespace=ns,
                           env=env)
        section["command"] = " ".join(node.command)
        try:
            node.wait_ready(timeout=180)
            probe = [sys.executable, "-m", "seg_perception.ros.latency_probe", "--namespace",
                     ns, "--width", str(args.camera[0]), "--height", str(args.camera[1]),
                     "--rate", str(args.node_rate), "--frames", str(args.node_frames),
                     "--json", str(probe_json)]
            section["probe_command"] = " ".join(probe)
            out = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=240,
                                 check=False)
            section["probe_returncode"] = out.returncode
            if probe_json.is_file():
                section["probe"] = json.loads(probe_json.read_text())
            else:
                section["probe_output"] = (out.stdout + out.stderr)[-3000:]
        except Exception as exc:
            report.error("node", exc)
        finally:
            section["node_returncode"] = node.stop()
            section["node_log_tail"] = node.log()[-4000:]
    report.save()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    ckpts = checkpoints(args)
    names = model_names(args)
    plan = {"device": args.device, "models": names, "precisions": args.precisions.split(","),
            "camera": list(args.camera), "input_size": args.input_size or "native",
            "frames": args.frames, "checkpoints": ckpts, "node": args.node,
            "onnxruntime": args.ort, "budget_s": args.budget_s, "out": args.out}
    if args.dry_run:
        print(json.dumps(plan, indent=2))
        return 0
    report = Report(Path(args.out))
    report.data["plan"] = plan
    try:
        report.data["environment"] = environment(args.device)
    except Exception as exc:
        report.error("environment", exc)
    report.save()
    if args.device.startswith("cuda") and not report.data.get("environment", {}).get(
            "cuda_available"):
        report.data["errors"].append({"where": "environment",
                                      "error": "torch sees no CUDA device"})
        report.save()
        print(f"[gpu_check] torch sees no CUDA device; see {args.out}", file=sys.stderr)
        return 2
    for section, fn in (("models", lambda: bench_models(args, report, names, ckpts)),
                        ("onnxruntime", lambda: bench_ort(args, report, names, ckpts)
                         if args.ort else None),
                        ("node", lambda: node_end_to_end(args, report) if args.node else None)):
        if report.elapsed() > args.budget_s:
            report.data[section] = {"skipped": "time budget"}
            continue
        try:
            fn()
        except Exception as exc:
            report.error(section, exc)
        report.save()
    report.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report.save()
    print(f"[gpu_check] wrote {args.out} in {report.elapsed():.0f} s "
          f"({len(report.data['errors'])} error(s))", file=sys.stderr)
    return 1 if report.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
