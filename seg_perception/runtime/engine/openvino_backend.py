"""OpenVINO backend (CPU) with the engine's contract: normalised tensor in, score tensor(s) out
(or, built with ``uint8_input`` as :func:`~seg_perception.runtime.engine.build_engine` does, the
uint8 frames in: conversion, normalisation and layout then run inside the compiled network,
0.6-1.3 ms less per 480x360 frame than torch's float passes, identical labels).

Why: on CPUs with a bf16 matrix unit OpenVINO runs the networks of the zoo 1.6-2.5x faster
than torch's bf16 autocast (measured on this project's Zen 5 machine, see docs/models.md), and it
runs the int8 exports of ``seg-perception export --int8`` with int8 kernels (VNNI/AMX).

Two sources: a torch module (exported to ONNX in memory and converted at the engine's input
size, so the model's metadata comes from its checkpoint as usual; see :func:`_convert_module`
for why not ``openvino.convert_model`` of the module), or a
``.onnx`` file written by :func:`seg_perception.runtime.export.export_onnx` (metadata read from
the file). The network is compiled for a fixed input shape (static shapes are OpenVINO's
fast path); precision is OpenVINO's ``INFERENCE_PRECISION_HINT`` (bf16 or f32); an int8 file
carries its own quantisation and runs its remaining layers in bf16 where the CPU has a bf16
unit.

Batches (several cameras in one forward pass): the model is kept with a free batch axis and
compiled once per batch size met (batch 1 at start-up, the others on first use or in the
engine's warm-up), each compiled network kept for the next time that size comes; a file
whose batch axis is fixed at 1 runs batches one frame at a time.
"""

from __future__ import annotations

import functools
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seg_perception.runtime import hw
from seg_perception.runtime.engine_options import EngineConfigError
from seg_perception.runtime.export import ExportError, model_outputs, read_onnx_info
from seg_perception.runtime.models.meta import ModelMeta
from seg_perception.runtime.net_output import NetOutput

log = logging.getLogger(__name__)

OPENVINO_PIN = "openvino==2026.4.1"
PRECISIONS = ("fp32", "bf16", "int8")


@functools.cache
def openvino_available() -> bool:
    """Whether ``import openvino`` works (cached: the import costs ~0.3 s)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise EngineConfigError(
            f"backend 'openvino' needs the openvino package: pip install {OPENVINO_PIN} "
            "(or use backend 'torch' or 'onnx')") from exc
    return openvino


class OpenVinoBackend:
    """A compiled OpenVINO model on the CPU, fed from and returning torch tensors."""

    backend_name = "openvino"

    def __init__(
        self,
        ov_model: Any,
        meta: ModelMeta,
        input_size: tuple[int, int],
        precision: str,
        threads: int | None = None,
        *,
        model_name: str,
        weights: str,
        trained: bool,
        fixed_size: tuple[int, int] | None = None,
        uint8_input: bool = False,
        planes: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise EngineConfigError(f"OpenVINO backend runs {', '.join(PRECISIONS)} on the "
                                    f"CPU, not {precision!r}")
        ov = _import_openvino()
        w, h = int(input_size[0]), int(input_size[1])
        inputs = ov_model.inputs
        if len(inputs) != 1:
            raise EngineConfigError(f"{model_name}: expected one input, found {len(inputs)}")
        self._ov = ov
        #: Takes the frames themselves, uint8 (N, H, W, 3) RGB: the conversion to float, the
        #: normalisation and the NCHW layout run inside the compiled network (fused into its
        #: first layer), not as three passes over a float copy in torch.
        self.uint8_input = bool(uint8_input)
        if self.uint8_input:
            ov_model = _with_uint8_input(ov, ov_model, meta)
        n_out = len(ov_model.outputs)
        if n_out not in (1, 2):
            raise EngineConfigError(f"{model_name}: expected 1 or 2 outputs, found {n_out}")
        #: The graph also gives the argmax labels and the confidence at the output stride
        #: (returned in a NetOutput): one fused pass in OpenVINO instead of torch's passes
        #: over the scores after it (0.2-0.4 ms per 480x360 frame here).
        self.planes = bool(planes)
        if self.planes:
            ov_model = _with_planes(ov_model)
        self._ov_model = ov_model
        self.precision = precision
        self.meta = meta.replace(input_size=(w, h))
        self.model_name, self.weights, self.trained = model_name, weights, trained
        self.fixed_size = (w, h) if fixed_size is None else fixed_size
        self.threads = int(threads or torch.get_num_threads())
        # bf16 for the layers that are not quantised, where the CPU computes bf16 natively.
        hint = "bf16" if precision == "bf16" or (precision == "int8" and hw.cpu_bf16_unit()) \
            else "f32"
        self._config = {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            # Like torch: no pinning of the thread to a core another process may hold.
            "ENABLE_CPU_PINNING": False,
        }
        self._batches: dict[int, tuple[Any, Any]] = {}  # batch size -> (compiled, request)
        #: Most frames per forward pass: None (any) unless the model's batch axis is fixed.
        self.max_batch: int | None = None
        batch = inputs[0].get_partial_shape()[0]
        if batch.is_static and batch.get_length() == 1:
            self.max_batch = 1  # e.g. an old fixed-batch export: frames run one by one
        self.compiled, self.request = self._compile(1)
        if self.max_batch == 1:
            self._ov_model = None  # nothing else will be compiled from it
        self.outputs = list(self.compiled.outputs)
        log.info("openvino %s: %s %dx%d, %d thread(s), inference precision %s", model_name,
                 precision, w, h, self.threads, hint)

    def _compile(self, batch: int) -> tuple[Any, Any]:
        """The network compiled for ``batch`` frames of the input size (kept per size)."""
        hit = self._batches.get(batch)
        if hit is not None:
            return hit
        ov = self._ov
        w, h = self.fixed_size
        model = self._ov_model
        if model.is_dynamic() or batch != 1:
            model = model.clone()
            shape = [batch, h, w, 3] if self.uint8_input else [batch, 3, h, w]
            try:
                model.reshape({model.inputs[0]: ov.PartialShape(shape)})
            except RuntimeError as exc:
                raise EngineConfigError(f"OpenVINO cannot reshape {self.model_name} to a batch "
                                        f"of {batch}: {exc}") from exc
        try:
            compiled = ov.Core().compile_model(model, "CPU", self._config)
        except RuntimeError as exc:
            raise EngineConfigError(f"OpenVINO cannot compile {self.model_name}: {exc}"
                                    ) from exc
        entry = (compiled, compiled.create_infer_request())
        self._batches[batch] = entry
        if batch != 1:
            log.info("openvino %s: compiled for a batch of %d", self.model_name, batch)
        return entry

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Batch sizes compiled so far."""
        return tuple(sorted(self._batches))

    @classmethod
    def from_module(
        cls, model: nn.Module, meta: ModelMeta, input_size: tuple[int, int], precision: str,
        threads: int | None = None, *, model_name: str, weights: str, trained: bool,
        uint8_input: bool = False, planes: bool = False,
    ) -> OpenVinoBackend:
        """Convert a torch module (fp32, CPU) at ``input_size`` (width, height)."""
        if precision == "int8":
            raise EngineConfigError(
                "precision 'int8' runs a quantised export: create one with `seg-perception "
                f"export --model {model_name} --int8 --calib-data DIR` and use that .onnx file "
                "as the model")
        ov = _import_openvino()
        w, h = int(input_size[0]), int(input_size[1])
        net = model.float().cpu().eval()
        example = torch.zeros(1, 3, h, w)
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                # The converter traces the module: torch's tracer warnings (shape-dependent
                # branches, its own deprecation) describe the trace at this fixed size.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.filterwarnings("ignore", message=".*torch.jit.trace",
                                        category=DeprecationWarning)
                # A free batch axis: one conversion serves every batch size (each compiled
                # static, see _compile); at batch 1 the same network as a batch-1 conversion.
                ov_model = _convert_module(ov, net, example, [-1, 3, h, w])
        except Exception as exc:  # the converter raises its own error types
            raise EngineConfigError(f"OpenVINO cannot convert {model_name}: {exc}") from exc
        return cls(ov_model, meta, (w, h), precision, threads, model_name=model_name,
                   weights=weights, trained=trained, uint8_input=uint8_input, planes=planes)

    @classmethod
    def from_onnx(
        cls, path: str | Path, precision: str, threads: int | None = None,
        input_size: tuple[int, int] | None = None, uint8_input: bool = False,
        planes: bool = False,
    ) -> OpenVinoBackend:
        """Read an exported ``.onnx`` (fixed size, or dynamic: compiled at ``input_size``)."""
        try:
            info = read_onnx_info(path)
            size = info.resolve_input_size(input_size)
        except ExportError as exc:
            raise EngineConfigError(str(exc)) from exc
        ov = _import_openvino()
        try:
            ov_model = ov.Core().read_model(str(info.path))
        except RuntimeError as exc:
            raise EngineConfigError(f"OpenVINO cannot read {info.path}: {exc}") from exc
        return cls(ov_model, info.meta, size, precision, threads, model_name=info.model_name,
                   weights=info.weights, trained=info.trained, fixed_size=size,
                   uint8_input=uint8_input, planes=planes)

    def resolve_input_size(self, requested: tuple[int, int] | None) -> tuple[int, int]:
        """The size the network was compiled for (any other size is refused)."""
        if requested is not None and tuple(int(v) for v in requested) != self.fixed_size:
            raise EngineConfigError(
                f"{self.model_name} was compiled for input {self.fixed_size[0]}x"
                f"{self.fixed_size[1]}, not {requested[0]}x{requested[1]}")
        return self.fixed_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Scores for a normalised (N, 3, H, W) float32 batch (``uint8_input``: the frames,
        uint8 (N, H, W, 3)), as CPU tensors."""
        w, h = self.fixed_size
        want = (h, w, 3) if self.uint8_input else (3, h, w)
        if x.ndim != 4 or tuple(x.shape[1:]) != want or x.shape[0] < 1:
            raise ValueError(f"{self.model_name} takes an (N, {', '.join(map(str, want))}) "
                             f"tensor, got {tuple(x.shape)}")
        n = int(x.shape[0])
        if self.max_batch is not None and n > self.max_batch:
            raise ValueError(f"{self.model_name} takes at most {self.max_batch} frame(s) per "
                             f"call, got {n}")
        compiled, request = self._compile(n)
        if self.uint8_input:
            if x.dtype != torch.uint8:
                raise ValueError(f"{self.model_name} takes uint8 frames, got {x.dtype}")
            array = np.ascontiguousarray(x.detach().cpu().numpy())
        else:
            array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        result = request.infer({0: array}, share_inputs=True)
        outs = [torch.from_numpy(result[o]) for o in compiled.outputs]
        if self.planes:
            *heads, labels, conf = outs
            return NetOutput(heads[0], heads[1] if len(heads) > 1 else None, labels, conf)
        return outs[0] if len(outs) == 1 else (outs[0], outs[1])


def _convert_module(ov: Any, net: nn.Module, example: torch.Tensor, shape: list[int]) -> Any:
    """The OpenVINO model of a torch module with a free batch axis: exported to ONNX in memory
    (torch's TorchScript exporter) and read by OpenVINO's ONNX frontend; a network that does
    not export goes through ``ov.convert_model`` of the module itself.

    Why not ``ov.convert_model(module)`` always: it traces the module with
    ``torch.jit.trace``, which registers fresh TorchScript types for every submodule in
    torch's global compilation unit, and nothing ever removes them: each conversion of the
    default model kept ~14 MB for the life of the process, so a lifecycle node grew by that
    at every configure/cleanup (issue 23). The exporter's tracing registers nothing (flat
    over repeated conversions), and the compiled network is the same (identical scores for
    the default model).
    """
    buf = io.BytesIO()
    try:
        with torch.inference_mode():
            names = [f"output{i}" for i in range(len(model_outputs(net(example))))]
        with warnings.catch_warnings():
            # Tracer warnings describe the trace at this fixed size; the exporter's own
            # deprecation notice is not the user's concern.
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), buf, dynamo=False, input_names=["input"],
                              output_names=names, opset_version=17,
                              dynamic_axes={"input": {0: "batch"},
                                            **{n: {0: "batch"} for n in names}},
                              do_constant_folding=True)
        buf.seek(0)
        return ov.convert_model(buf)
    except Exception as exc:  # the exporter raises its own error types
        log.debug("ONNX export for OpenVINO failed (%s: %s): converting the module directly",
                  type(exc).__name__, exc)
    return ov.convert_model(net, example_input=example, input=shape)


def _with_uint8_input(ov: Any, ov_model: Any, meta: ModelMeta) -> Any:
    """``ov_model`` taking uint8 NHWC RGB frames: OpenVINO's preprocessing converts them to
    float, subtracts ``meta.mean`` and divides by ``meta.std`` (both x 255, as the engine's
    torch preprocessing) and transposes to the network's NCHW."""
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(ov_model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32) \
        .mean([float(v) * 255.0 for v in meta.mean]).scale([float(v) * 255.0 for v in meta.std])
    return ppp.build()


def _with_planes(ov_model: Any) -> Any:
    """``ov_model`` with two more outputs computed from its class scores (the first output,
    (N, C, h, w)): the argmax labels and the confidence round(255 / sum(exp(s - max))), both
    uint8 (N, h, w), as the engine's torch postprocessing computes them (argmax ties to the
    lower class, as torch)."""
    from openvino import opset13 as ops

    model = ov_model.clone()
    scores = model.get_results()[0].input_value(0)
    axis = ops.constant(np.int64(1))
    top_k = ops.topk(scores, ops.constant(np.int64(1)), axis=1, mode="max", sort="none",
                     index_element_type="i32")
    labels = ops.convert(ops.squeeze(top_k.output(1), axis), "u8")
    denom = ops.reduce_sum(ops.exp(ops.subtract(scores, top_k.output(0))), axis,
                           keep_dims=False)
    conf = ops.convert(ops.round(ops.divide(ops.constant(np.float32(255.0)), denom),
                                 "half_to_even"), "u8")
    model.add_results([ops.result(labels), ops.result(conf)])
    return model


__all__ = ["OPENVINO_PIN", "OpenVinoBackend", "openvino_available"]
