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
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from seg_perception.runtime.engine import SegEngine

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


@dataclass
class Peak:
    """Best rate of a ``size`` x ``size`` matrix product on a device and dtype.

    ``by_library`` holds each library's rate; ``source`` names the fastest, whose rate is
    ``gflops_per_s``.
    """

    size: int
    dtype: str
    gflops_per_s: float
    source: str
    by_library: dict[str, float]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn: Callable[[], object], device: torch.device, per_block: int,
                  min_seconds: float) -> float:
    """Fastest time of ``fn`` after one untimed call, over blocks for ``min_seconds``."""
    fn()
    _sync(device)
    best, spent, blocks = float("inf"), 0.0, 0
    while blocks < 2 or spent < min_seconds:
        t0 = time.perf_counter()
        for _ in range(per_block):
            fn()
        _sync(device)
        dt = (time.perf_counter() - t0) / per_block
        best, spent, blocks = min(best, dt), spent + dt * per_block, blocks + 1
    return best


PEAK_DTYPES = ("fp32", "fp16", "bf16", "int8")
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_name(dtype: torch.dtype | str) -> str:
    """``fp32``/``fp16``/``bf16``/``int8`` for a torch dtype or a precision name."""
    if isinstance(dtype, torch.dtype):
        names = {v: k for k, v in _TORCH_DTYPES.items()} | {torch.int8: "int8"}
        if dtype not in names:
            raise ValueError(f"no peak measurement for {dtype}")
        return names[dtype]
    name = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(dtype, dtype)
    if name not in PEAK_DTYPES:
        raise ValueError(f"no peak measurement for {dtype!r}; choose {', '.join(PEAK_DTYPES)}")
    return name


def _ort_matmul_seconds(size: int, threads: int, min_seconds: float, dtype: str = "fp32"
                        ) -> float | None:
    """ONNX Runtime's own CPU GEMM (MLAS): ``MatMul`` fp32, or ``MatMulInteger`` u8 x s8
    for int8 (VNNI where the CPU has it); None where onnx/onnxruntime are missing."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    if dtype == "int8":
        io = [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
              helper.make_tensor_value_info("b", TensorProto.INT8, [size, size]),
              helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])]
        node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
        feeds = {"a": rng.integers(0, 256, (size, size), dtype=np.uint8),
                 "b": rng.integers(-128, 128, (size, size), dtype=np.int8)}
    else:
        io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "abc"]
        node = helper.make_node("MatMul", ["a", "b"], ["c"])
        feeds = {n: rng.standard_normal((size, size), dtype=np.float32) for n in "ab"}
    graph = helper.make_graph([node], "peak", io[:2], io[2:])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(proto.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    return _best_seconds(lambda: session.run(None, feeds), torch.device("cpu"), 1, min_seconds)


def _openvino_matmul_seconds(size: int, threads: int, min_seconds: float, dtype: str
                             ) -> float | None:
    """OpenVINO's CPU matrix product: f32 or bf16 (precision hint), or int8 (a quantised
    activation times int8 weights, the pattern of a QDQ export); None without openvino."""
    try:
        import openvino as ov
        from openvino import opset13 as ops
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    a = ops.parameter([size, size], ov.Type.f32)
    if dtype == "int8":
        w = ops.constant(rng.integers(-127, 128, (size, size), dtype=np.int8))
        weights = ops.multiply(ops.convert(w, ov.Type.f32), ops.constant(np.float32(0.01)))
        lo, hi = ops.constant(np.float32(-4.0)), ops.constant(np.float32(4.0))
        product = ops.matmul(ops.fake_quantize(a, lo, hi, lo, hi, 256), weights, False, False)
    else:
        weights = ops.constant(rng.standard_normal((size, size), dtype=np.float32))
        product = ops.matmul(a, weights, False, False)
    hint = "f32" if dtype == "fp32" else "bf16"
    compiled = ov.Core().compile_model(ov.Model([product], [a]), "CPU", {
        "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
        "ENABLE_CPU_PINNING": False})
    request = compiled.create_infer_request()
    x = rng.standard_normal((size, size), dtype=np.float32)
    return _best_seconds(lambda: request.infer([x], share_inputs=True), torch.device("cpu"), 1,
                         min_seconds)


def _torch_seconds(device: torch.device, dtype: str, size: int, min_seconds: float
                   ) -> float | None:
    gen = torch.Generator(device=device).manual_seed(0)
    per_block = 10 if device.type == "cuda" else 1
    if dtype == "int8":
        a = torch.randint(-128, 128, (size, size), device=device, dtype=torch.int8,
                          generator=gen)
        b = torch.randint(-128, 128, (size, size), device=device, dtype=torch.int8,
                          generator=gen)
        fn = getattr(torch, "_int_mm", None)
        if fn is None:
            return None
        try:
            fn(a, b)
        except RuntimeError:  # not built for this device
            return None
        with torch.inference_mode():
            return _best_seconds(lambda: fn(a, b), device, per_block, min_seconds)
    a = torch.randn(size, size, device=device, dtype=_TORCH_DTYPES[dtype], generator=gen)
    b = torch.randn(size, size, device=device, dtype=_TORCH_DTYPES[dtype], generator=gen)
    with torch.inference_mode():
        return _best_seconds(lambda: torch.mm(a, b), device, per_block, min_seconds)


def measure_peak(
    device: torch.device, dtype: torch.dtype | str, size: int | None = None,
    min_seconds: float = 1.0,
) -> Peak:
    """The machine's practical peak for ``dtype``: the fastest of repeated large products.

    ``dtype`` is what the network's matrix products run in (fp32, fp16, bf16, int8; a torch
    dtype works too). One untimed product warms up each library (thread pool, cuBLAS
    heuristics); then blocks of products are timed until ``min_seconds`` pass (at least two
    blocks); the best block counts, since the question is what the hardware allows. On a CPU
    the libraries the backends use are timed too (torch's MKL may not use the full vector
    width on non-Intel CPUs: half the rate on AMD Zen 5): ONNX Runtime (fp32 ``MatMul``, int8
    ``MatMulInteger``) and OpenVINO (fp32, bf16, int8); the fastest stands for the hardware.
    int8 rates count 2 operations per int8 multiply-accumulate, like the float ones.
    """
    name = dtype_name(dtype)
    size = size or (8192 if device.type == "cuda" else 4096)
    seconds: dict[str, float] = {}
    t = _torch_seconds(device, name, size, min_seconds)
    if t is not None:
        seconds["torch"] = t
    if device.type == "cpu":
        threads = torch.get_num_threads()
        if name in ("fp32", "int8"):
            t = _ort_matmul_seconds(size, threads, min_seconds, name)
            if t is not None:
                seconds["onnxruntime"] = t
        if name in ("fp32", "bf16", "int8"):
            t = _openvino_matmul_seconds(size, threads, min_seconds, name)
            if t is not None:
                seconds["openvino"] = t
    if not seconds:
        raise ValueError(f"no library here computes {name} matrix products on {device}")
    rates = {lib: 2.0 * size**3 / t / 1e9 for lib, t in seconds.items()}
    source = max(rates, key=rates.__getitem__)
    return Peak(size, name, rates[source], source, rates)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on (and how busy the machine was)."""
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import onnxruntime

        info["onnxruntime_version"] = onnxruntime.__version__
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        info["onnxruntime_version"] = None
    try:
        import openvino

        info["openvino_version"] = openvino.__version__
    except ImportError:
        info["openvino_version"] = None
    from seg_perception.runtime.hw import cpu_bf16_unit, cpu_int8_unit

    info["cpu_bf16_unit"] = cpu_bf16_unit()
    info["cpu_int8_unit"] = cpu_int8_unit()
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = info["cpu_model"]
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return info


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
    if image is None:
        frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        frame = np.ascontiguousarray(image if image.shape[:2] == (h, w) else cv2.resize(
            image, (w, h), interpolation=cv2.INTER_AREA))
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


def _rig_frames(cameras: int, size: tuple[int, int]) -> tuple[list[Any], Any]:
    """``cameras`` frames of a synthetic surround rig at ``size`` (front, left, right, rear,
    then more cameras around the car), with their camera models and poses."""
    import math

    from seg_perception.runtime.geometry import CameraCalibration, CameraMounting
    from seg_perception.runtime.pipeline import CameraFrame
    from seg_perception.sim.rig import Rig, RigCamera, render_rig, surround_rig
    from seg_perception.sim.scene import drive_sequence

    rig = surround_rig(*size)
    if cameras > len(rig.cameras):  # more: spread evenly around the vehicle
        base = rig.cameras[0]
        rig = Rig(tuple(RigCamera(f"cam{i}", base.model, CameraMounting(
            1.0, 0.0, 1.6, 0.0, 0.12, 2 * math.pi * i / cameras - (math.pi if 2 * i > cameras
                                                                    else 0.0)))
            for i in range(cameras)))
    cams = rig.cameras[:cameras]
    spec = next(iter(drive_sequence(1, rng=np.random.default_rng(0))))
    render = render_rig(spec, Rig(cams), _bench_grid(), np.random.default_rng(1))
    frames = [CameraFrame(render.views[c.name].rgb, CameraCalibration.from_model(c.model),
                          c.mounting, camera=c.name) for c in cams]
    return frames, render


def _bench_grid() -> Any:
    from seg_perception.sim.rig import SURROUND_GRID

    return SURROUND_GRID


def _multicam_runs(engine: SegEngine, pipeline: Any, frames: list[Any], config: Any,
                   want: set[str], want_confidence: bool) -> dict[str, Callable[[], None]]:
    """The four cycles ``run_multicam_bench`` times for one N: engine and pipeline, batched
    (one forward pass of every frame) and separate (one pass per frame)."""
    from seg_perception.runtime.pipeline import GridFusion

    rgbs = [f.rgb for f in frames]
    fusion = GridFusion()

    def engine_batched() -> None:
        engine.run_batch(rgbs, want_confidence)

    def engine_separate() -> None:
        for rgb in rgbs:
            engine(rgb, want_confidence)

    def cycle(results: list[Any]) -> None:
        pipeline.fuse(fusion, results, [0] * len(results), config,
                      {"drivable/grid", "drivable/boundary"})

    def pipeline_batched() -> None:
        cycle(pipeline.run(frames, config, want))

    def pipeline_separate() -> None:
        cycle([pipeline.run([f], config, want)[0] for f in frames])

    return {"engine_batched": engine_batched, "engine_separate": engine_separate,
            "pipeline_batched": pipeline_batched, "pipeline_separate": pipeline_separate}


def run_multicam_bench(
    engine: SegEngine,
    cameras: tuple[int, ...] = (1, 2, 4),
    cycles: int = 50,
    warmup: int = 5,
    frame_size: tuple[int, int] = (480, 360),
    want_confidence: bool = False,
) -> dict[str, Any]:
    """Cycle time and frames per second per camera for N cameras in one node, batched (ONE
    forward pass of N frames) against N separate forward passes, side by side.

    For each N the two ways alternate cycle by cycle on the same frames (a synthetic
    surround rig at ``frame_size``), so the machine's load hits both alike. Two cycles are
    timed: the engine's (frames in, labels and drivable masks out at each camera's
    resolution) and the node's pipeline (the engine cycle, then each camera's grid and the
    fused surround grid with its boundary). ``gain`` is separate / batched cycle time.
    """
    from seg_perception.runtime.config import PipelineConfig
    from seg_perception.runtime.pipeline import FramePipeline, GridFusion

    grid = _bench_grid()
    pipeline = FramePipeline(engine)
    out: dict[str, Any] = {"frame_size": list(frame_size), "cycles": cycles, "warmup": warmup,
                           "confidence": want_confidence, "cameras": {}}
    want = {"labels", "drivable/mask", "drivable/grid"} | (
        {"confidence"} if want_confidence else set())
    for n in cameras:
        frames, render = _rig_frames(n, frame_size)
        config = PipelineConfig.from_params({
            "grid.resolution": grid.resolution, "grid.x_min": grid.x_min,
            "grid.x_max": grid.x_max, "grid.y_min": grid.y_min, "grid.y_max": grid.y_max})
        engine.warmup(*frame_size, runs=1, batch_sizes=(1, n))

        runs = _multicam_runs(engine, pipeline, frames, config, want, want_confidence)
        times: dict[str, list[float]] = {k: [] for k in runs}
        for i in range(warmup + cycles):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                if i >= warmup:
                    times[name].append((time.perf_counter() - t0) * 1e3)
        fused = pipeline.fuse(GridFusion(), pipeline.run(frames, config, {"drivable/grid"}),
                              [0] * n, config, {"drivable/grid"})
        seen = render.fused >= 0
        entry: dict[str, Any] = {}
        for name, values in times.items():
            st = stage_stats(values)
            entry[name] = {"cycle_ms": st, "fps_per_camera": 1e3 / st["median"],
                           "fps_total": n * 1e3 / st["median"]}
        for what in ("engine", "pipeline"):
            entry[f"{what}_gain"] = (entry[f"{what}_separate"]["cycle_ms"]["median"]
                                     / entry[f"{what}_batched"]["cycle_ms"]["median"])
        entry["fused_seen_cells"] = int(seen.sum())
        entry["fused_agreement_with_truth"] = (
            float((fused.grid[seen] == render.fused[seen]).mean()) if fused is not None
            and seen.any() else None)
        out["cameras"][str(n)] = entry
    return out


def format_multicam(report: dict[str, Any]) -> str:
    """The table ``seg-perception bench --cameras`` prints."""
    m = report["multicam"]
    fw, fh = m["frame_size"]
    lines = [
        f"{report.get('model', '?')} ({report.get('backend')}, {report.get('precision')}) on "
        f"{report.get('device')}: N cameras at {fw}x{fh}, {m['cycles']} cycles after "
        f"{m['warmup']} warm-up, batched and separate alternating cycle by cycle",
        f"{'N':>2} {'cycle':<9}{'batched ms':>11}{'p95':>7}{'fps/cam':>9}"
        f"{'separate ms':>13}{'p95':>7}{'fps/cam':>9}{'gain':>7}",
    ]
    for n, e in m["cameras"].items():
        for what in ("engine", "pipeline"):
            b, s = e[f"{what}_batched"], e[f"{what}_separate"]
            lines.append(
                f"{n:>2} {what:<9}{b['cycle_ms']['median']:>11.1f}{b['cycle_ms']['p95']:>7.1f}"
                f"{b['fps_per_camera']:>9.1f}{s['cycle_ms']['median']:>13.1f}"
                f"{s['cycle_ms']['p95']:>7.1f}{s['fps_per_camera']:>9.1f}"
                f"{e[f'{what}_gain']:>6.2f}x")
    lines.append("engine: frames in, labels + drivable masks out; pipeline: + each camera's "
                 "grid, the fused grid and its boundary; gain = separate / batched")
    agree = ", ".join(f"N={n}: {e['fused_agreement_with_truth']:.2%} of "
                      f"{e['fused_seen_cells']}" for n, e in m["cameras"].items()
                      if e["fused_agreement_with_truth"] is not None)
    if agree:
        lines.append(f"fused grid vs the generator's exact fused truth (this model, one "
                     f"frame of the synthetic rig): {agree} seen cells")
    mach = report.get("machine", {})
    if mach:
        load = mach.get("load_average")
        lines.append(f"machine: {mach.get('device_name')}, {mach.get('torch_threads')} torch "
                     f"threads of {mach.get('cpus_available')} CPUs"
                     + (f", load average {load[0]:.2f}" if load else ""))
    return "\n".join(lines)


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
    "PEAK_DTYPES",
    "Peak",
    "count_flops",
    "dtype_name",
    "format_multicam",
    "format_report",
    "machine_info",
    "measure_peak",
    "run_bench",
    "run_multicam_bench",
    "stage_stats",
    "time_engine",
]
