"""Speed of the engine per stage, read against what the network costs and the hardware allows.

A bench report holds: per-stage times (median, p95, mean, in ms) of the engine's own stages
(``preprocess`` = upload + resize + normalise, ``inference``, ``postprocess`` = argmax,
confidence, resize back and the one copy to the host, ``total`` = the whole call), end-to-end
frames per second, the network's FLOPs per frame at the input size actually run (counted by
``torch.utils.flop_counter``; FLOPs = 2 x multiply-accumulates, convolutions and matrix
products only), the FLOP rate achieved, and the peak rate of a large matrix product measured
on the same device and dtype in the same run (the dtype the network's matrix products
actually use: fp32, fp16, bf16 or int8), so that a speed reads as a fraction of what the
machine allows. JSON keys: ``model``, ``weights``, ``trained``, ``backend``, ``device``,
``precision``, ``input_size``, ``frame_size``, ``frames``, ``warmup``, ``stages_ms``,
``upsample``, ``confidence``, ``fps``, ``gflops_per_frame``, ``achieved_gflops_per_s`` (at
the median inference time), ``achieved_gflops_per_s_end_to_end``, ``peak`` (``size``,
``dtype``, ``gflops_per_s``, ``source``, ``by_library``), ``peak_fraction``,
``postprocess_fraction`` (median postprocess / median inference), ``machine``.

``bench --against MODEL`` adds ``side_by_side`` (:func:`time_side_by_side`): both engines on
the same camera frame, timed in alternating rounds so that a change in the machine's load
lands on both, and the ratio of their median end-to-end times.

The hardware side (the peak rate, the machine's description) lives in :mod:`.peak`; the
several-camera bench (``bench --cameras``) in :mod:`.multicam_bench`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from seg_perception.runtime.engine import SegEngine
from seg_perception.tools.peak import machine_info, measure_peak

STAGES = ("preprocess", "inference", "postprocess", "total")
STAGE_LABELS = {
    "preprocess": "upload + preprocess",
    "inference": "inference",
    "postprocess": "postprocess + copy back",
    "total": "end to end",
}


def stage_stats(values_ms: list[float]) -> dict[str, float]:
    """Median, 95th percentile and mean of a list of milliseconds."""
    a = np.asarray(values_ms, dtype=np.float64)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "mean": float(a.mean())}


def time_engine(
    engine: SegEngine, frame: np.ndarray, frames: int, warmup: int,
    want_confidence: bool = True,
) -> dict[str, list[float]]:
    """Per-frame stage times (ms) over ``frames`` calls after ``warmup`` untimed ones.

    The engine synchronises CUDA between stages, so each stage's time is its own.
    """
    if frames < 1:
        raise ValueError("frames must be at least 1")
    for _ in range(max(0, warmup)):
        engine(frame, want_confidence)
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    for _ in range(frames):
        t0 = time.perf_counter()
        result = engine(frame, want_confidence)
        total = (time.perf_counter() - t0) * 1e3
        for stage in STAGES[:-1]:
            times[stage].append(result.timings[stage])
        times["total"].append(total)
    return times


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``x`` (2 per multiply-accumulate)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return int(counter.get_total_flops())


def run_bench(
    engine: SegEngine,
    frames: int = 100,
    warmup: int = 10,
    frame_size: tuple[int, int] | None = None,
    flops_model: nn.Module | None = None,
    peak_size: int | None = None,
    want_confidence: bool = True,
    image: np.ndarray | None = None,
) -> dict[str, Any]:
    """Time ``engine`` on a camera-sized frame and put the figures in context.

    ``frame_size`` (width, height) is the camera resolution (default: the network input
    size, so no resize happens); ``flops_model`` is the torch network to count FLOPs on
    (default: the engine's own, if it is a torch module; None for foreign backends).
    ``image`` (RGB uint8, resized to the camera resolution) is the frame timed; without one,
    uniform noise: the worst case for ``upsample`` edges, whose cost grows with the label
    edges (noise has them everywhere, a road scene at about 10% of the pixels).
    """
    w, h = frame_size or engine.input_size
    frame = camera_frame((w, h), image)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    times = time_engine(engine, frame, frames, warmup, want_confidence)
    stages = {s: stage_stats(v) for s, v in times.items()}
    fps = 1e3 * frames / sum(times["total"])

    flops = None
    net = flops_model if flops_model is not None else engine.model
    if isinstance(net, nn.Module):
        iw, ih = engine.input_size
        param = next(net.parameters(), None)
        dev = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        x = torch.zeros(1, 3, ih, iw, device=dev, dtype=dtype)
        flops = count_flops(net, x)  # the same count whatever dtype the backend runs
    precision = engine.precision
    peak = measure_peak(engine.device, precision, peak_size)
    gflops = flops / 1e9 if flops is not None else None
    achieved = gflops / (stages["inference"]["median"] / 1e3) if gflops is not None else None
    machine = machine_info(engine.device)
    if load_before is not None:
        machine["load_average_before"] = [round(v, 2) for v in load_before]
    return {
        "device": str(engine.device),
        "backend": engine.backend_name,
        "precision": precision,
        "upsample": engine.upsample,
        "confidence": want_confidence,
        "input_size": list(engine.input_size),
        "frame_size": [w, h],
        "frame": "noise" if image is None else "image",
        "frames": frames,
        "warmup": warmup,
        "stages_ms": stages,
        "fps": fps,
        "gflops_per_frame": gflops,
        "flops_note": "FLOPs = 2 x multiply-accumulates of convolutions and matrix products",
        "achieved_gflops_per_s": achieved,
        "achieved_gflops_per_s_end_to_end": gflops * fps if gflops is not None else None,
        "peak": {"size": peak.size, "dtype": peak.dtype, "gflops_per_s": peak.gflops_per_s,
                 "source": peak.source, "by_library": peak.by_library},
        "peak_fraction": achieved / peak.gflops_per_s if achieved is not None else None,
        "postprocess_fraction": stages["postprocess"]["median"] / stages["inference"]["median"],
        "machine": machine,
    }


def time_side_by_side(
    engines: dict[str, SegEngine], frame: np.ndarray, frames: int, warmup: int,
    want_confidence: bool = True, rounds: int = 10,
) -> dict[str, Any]:
    """End-to-end times of several engines on one ``frame``, in alternating rounds.

    Timing one engine after the other lets a change in the machine's load (another job, a
    frequency step) fall on one of them only; here each round gives every engine
    ``frames / rounds`` frames in turn, after ``warmup`` untimed frames each. ``ratio`` is
    each engine's median over the first engine's.
    """
    if frames < 1 or not engines:
        raise ValueError("frames must be at least 1, with at least one engine")
    rounds = max(1, min(rounds, frames))
    totals: dict[str, list[float]] = {name: [] for name in engines}
    for engine in engines.values():
        for _ in range(max(0, warmup)):
            engine(frame, want_confidence)
    for r in range(rounds):
        n = frames // rounds + (1 if r < frames % rounds else 0)
        for name, engine in engines.items():
            totals[name] += time_engine(engine, frame, n, 0, want_confidence)["total"]
    stats = {name: stage_stats(v) for name, v in totals.items()}
    first = stats[next(iter(engines))]["median"]
    return {
        "frame_size": [frame.shape[1], frame.shape[0]],
        "frames": frames, "rounds": rounds, "warmup": warmup,
        "engines": {name: {"total_ms": stats[name],
                           "fps": 1e3 * len(totals[name]) / sum(totals[name]),
                           "input_size": list(engine.input_size),
                           "backend": engine.backend_name, "precision": engine.precision,
                           "ratio": stats[name]["median"] / first}
                    for name, engine in engines.items()},
    }


def format_side_by_side(result: dict[str, Any]) -> str:
    """The side-by-side table printed by ``bench --against``."""
    fw, fh = result["frame_size"]
    lines = [f"side by side on {fw}x{fh} frames, {result['frames']} frames each in "
             f"{result['rounds']} alternating rounds:",
             f"{'model':<34}{'input':>10}{'median ms':>11}{'p95 ms':>9}{'frames/s':>10}"
             f"{'ratio':>8}"]
    for name, e in result["engines"].items():
        iw, ih = e["input_size"]
        t = e["total_ms"]
        lines.append(f"{name:<34}{f'{iw}x{ih}':>10}{t['median']:>11.2f}{t['p95']:>9.2f}"
                     f"{e['fps']:>10.1f}{e['ratio']:>8.2f}")
    return "\n".join(lines)


def camera_frame(size: tuple[int, int], image: np.ndarray | None = None) -> np.ndarray:
    """The frame a bench times: ``image`` resized to ``size`` (width, height), or uniform
    noise (the worst case for ``upsample`` edges: label edges everywhere)."""
    w, h = size
    if image is None:
        return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return np.ascontiguousarray(image if image.shape[:2] == (h, w) else cv2.resize(
        image, (w, h), interpolation=cv2.INTER_AREA))


def format_report(report: dict[str, Any]) -> str:
    """The human-readable table printed by ``seg-perception bench``."""
    iw, ih = report["input_size"]
    fw, fh = report["frame_size"]
    lines = [
        f"{report.get('model', '?')} ({report.get('backend', 'torch')}) on {report['device']} "
        f"{report['precision']}, input {iw}x{ih}, frames {fw}x{fh} "
        f"({report.get('frame_source') or report.get('frame', 'noise')}): {report['frames']} "
        "frames "
        f"after {report['warmup']} warm-up; postprocess: {report.get('upsample', 'labels')}"
        f"{'' if report.get('confidence', True) else ', no confidence'}",
        f"{'stage':<26}{'median ms':>10}{'p95 ms':>10}",
    ]
    for stage in STAGES:
        s = report["stages_ms"][stage]
        lines.append(f"{STAGE_LABELS[stage]:<26}{s['median']:>10.2f}{s['p95']:>10.2f}")
    lines.append(f"throughput: {report['fps']:.1f} frames/s (one frame at a time); "
                 f"postprocess = {report['postprocess_fraction'] * 100:.0f}% of inference")
    peak = report["peak"]
    libs = ", ".join(f"{lib} {rate:.1f}" for lib, rate in peak["by_library"].items())
    peak_text = (f"{peak['size']}x{peak['size']} {peak['dtype']} matrix product "
                 f"{peak['gflops_per_s']:.1f} GFLOP/s ({libs})")
    if report["gflops_per_frame"] is not None:
        lines.append(f"network: {report['gflops_per_frame']:.3f} GFLOPs per frame at {iw}x{ih} "
                     "(FLOPs = 2 x MACs)")
        lines.append(f"achieved: {report['achieved_gflops_per_s']:.1f} GFLOP/s in inference "
                     f"(median), {report['achieved_gflops_per_s_end_to_end']:.1f} GFLOP/s "
                     "end to end")
        lines.append(f"peak: {peak_text}; inference runs at "
                     f"{report['peak_fraction'] * 100:.1f}% of it")
    else:
        lines.append(f"network FLOPs not counted (no torch module); peak: {peak_text}")
    m = report["machine"]
    load = m.get("load_average")
    lines.append(
        f"machine: {m['device_name']}, {m['torch_threads']} torch threads of "
        f"{m['cpus_available']} CPUs, torch {m['torch_version']}, onnxruntime "
        f"{m.get('onnxruntime_version')}, openvino {m.get('openvino_version')}"
        + (f", load average {load[0]:.2f}" if load else "")
    )
    return "\n".join(lines)


__all__ = [
    "STAGES",
    "STAGE_LABELS",
    "camera_frame",
    "count_flops",
    "format_report",
    "format_side_by_side",
    "run_bench",
    "stage_stats",
    "time_engine",
    "time_side_by_side",
]
