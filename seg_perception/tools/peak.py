"""What the hardware allows: the peak rate of a large matrix product, and the machine itself.

Split from the engine bench (:mod:`.bench`), which reads its speeds against these figures:
:func:`measure_peak` times a large matrix product in the dtype the network computes in,
with each library a backend uses (torch, ONNX Runtime's MLAS, OpenVINO), and keeps the
fastest; :func:`machine_info` records what the figures were measured on and how busy the
machine was.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


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


__all__ = [
    "PEAK_DTYPES",
    "Peak",
    "dtype_name",
    "machine_info",
    "measure_peak",
]
