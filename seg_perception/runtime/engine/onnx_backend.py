"""ONNX Runtime backend with the engine's contract: normalised tensor in, score tensor(s) out.

Only files written by :func:`seg_perception.runtime.export.export_onnx` are accepted: they carry
the :class:`ModelMeta` (classes, palette, normalisation, input size) the engine needs. On
CUDA the tensors stay on the GPU: input and outputs are bound to torch's device memory
(IO binding), so no host round trip happens between preprocessing and postprocessing.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg_perception.runtime.engine_options import EngineConfigError
from seg_perception.runtime.export import (
    DYNAMIC_KEY,
    OUTPUT_NAMES,
    PRECISION_KEY,
    TRAINED_KEY,
    WEIGHTS_KEY,
    exported_input_size,
    model_outputs,
)
from seg_perception.runtime.models.checkpoint import META_KEY, MODEL_KEY
from seg_perception.runtime.models.meta import ModelMeta

log = logging.getLogger(__name__)

_NP_FLOAT = {"tensor(float)": np.float32}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineConfigError(
            "running a .onnx model needs onnxruntime: pip install onnxruntime (CPU) or "
            "onnxruntime-gpu (CUDA)"
        ) from exc
    return onnxruntime


class OnnxBackend:
    """An ONNX Runtime session on ``device`` (CPU, or CUDA through the CUDA provider)."""

    backend_name = "onnx"

    def __init__(self, path: str | Path, device: torch.device, threads: int | None = None
                 ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} does not exist")
        ort = _import_ort()
        self.device = torch.device(device)
        available = ort.get_available_providers()
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise EngineConfigError(
                    f"device {self.device} requested for {self.path.name}, but the installed "
                    f"onnxruntime {ort.__version__} has no CUDA execution provider (it has: "
                    f"{', '.join(available)}); install onnxruntime-gpu"
                    + (f" built for CUDA {torch.version.cuda}" if torch.version.cuda else "")
                    + ", or use device 'cpu'"
                )
            if hasattr(ort, "preload_dlls"):
                try:  # CUDA/cuDNN libraries that came with torch, where ORT can use them
                    ort.preload_dlls()
                except Exception as exc:  # best effort: the session start says what is missing
                    log.debug("onnxruntime.preload_dlls: %s", exc)
            index = self.device.index if self.device.index is not None else 0
            self.device = torch.device("cuda", index)
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index}),
                                    "CPUExecutionProvider"]
        elif self.device.type == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise EngineConfigError(f"ONNX backend: device {self.device} is not supported "
                                    "(use cpu or cuda)")

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Same thread budget as torch, so a shared machine is not oversubscribed and the two
        # backends compare fairly.
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types
            raise EngineConfigError(f"{self.path} is not a loadable ONNX model: {exc}") from exc
        if self.device.type == "cuda" and "CUDAExecutionProvider" not in \
                self.session.get_providers():
            raise EngineConfigError(
                f"onnxruntime could not start its CUDA provider for {self.path.name} (CUDA or "
                "cuDNN libraries missing or mismatched; see the onnxruntime log); "
                "use device 'cpu'"
            )

        props = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in props:
            raise EngineConfigError(
                f"{self.path} was not exported by seg-perception; it lacks the model "
                "metadata (classes, palette, normalisation, input size) the engine needs. "
                "Export it with `seg-perception export --model NAME --format onnx`."
            )
        try:
            meta = ModelMeta.from_json(props[META_KEY])
        except ValueError as exc:
            raise EngineConfigError(f"{self.path}: unreadable model metadata: {exc}") from exc
        self.model_name = props.get(MODEL_KEY, meta.arch)
        # What ran, for logs: the file, and the weights it was exported from when recorded.
        source = props.get(WEIGHTS_KEY)
        self.weights = f"{self.path} (exported from {source})" if source else str(self.path)
        self.trained = props.get(TRAINED_KEY, "true") == "true"
        self.dynamic = props.get(DYNAMIC_KEY, "false") == "true"
        # fp32, or int8 for quantised exports (``export --int8``): what the file computes in.
        self.precision = props.get(PRECISION_KEY, "fp32")

        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].type not in _NP_FLOAT:
            raise EngineConfigError(f"{self.path}: expected one float32 input, found "
                                    f"{[(i.name, i.type) for i in inputs]}")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        #: Most frames per call: 1 for an export whose batch axis is fixed (older files),
        #: None (any) for ours, whose batch axis is always free.
        self.max_batch: int | None = 1 if len(shape) == 4 and shape[0] == 1 else None
        self.fixed_size: tuple[int, int] | None = None
        if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
            self.fixed_size = (shape[3], shape[2])
            if meta.input_size != self.fixed_size:
                meta = meta.replace(input_size=self.fixed_size)
        self.meta = meta
        outputs = [o.name for o in self.session.get_outputs()]
        if len(outputs) not in (1, 2):
            raise EngineConfigError(f"{self.path}: expected 1 or 2 outputs, found {outputs}")
        known = [n for n in OUTPUT_NAMES if n in outputs]
        self.output_names = known if len(known) == len(outputs) else outputs
        self._cuda_shapes: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        log.info("onnx %s: %s on %s, providers %s", self.model_name, self.path.name,
                 self.device, ", ".join(self.session.get_providers()))

    def resolve_input_size(self, requested: tuple[int, int] | None) -> tuple[int, int]:
        """The size frames are resized to: the exported one, or any for dynamic exports."""
        return exported_input_size(self.path.name, tuple(self.meta.input_size),
                                   self.fixed_size, requested, EngineConfigError)

    def _check_shape(self, x: torch.Tensor) -> None:
        if self.fixed_size is not None and (x.shape[3], x.shape[2]) != self.fixed_size:
            raise ValueError(
                f"{self.path.name} takes input {self.fixed_size[0]}x{self.fixed_size[1]}, got "
                f"{x.shape[3]}x{x.shape[2]}; re-export at this size or with --dynamic"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Scores for a normalised (N, 3, H, W) batch, on the backend's device."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) tensor, got {tuple(x.shape)}")
        self._check_shape(x)
        x = x.detach().float().contiguous()
        if self.device.type == "cuda":
            outs = self._run_cuda(x)
        else:
            arrays = self.session.run(self.output_names, {self.input_name: x.cpu().numpy()})
            outs = [torch.from_numpy(a) for a in arrays]
        return outs[0] if len(outs) == 1 else (outs[0], outs[1])

    def _run_cuda(self, x: torch.Tensor) -> list[torch.Tensor]:
        """IO binding on torch's memory: no host copies; torch's stream is synchronised."""
        x = x.to(self.device)
        index = self.device.index or 0
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", index, np.float32, tuple(x.shape),
                           x.data_ptr())
        key = tuple(x.shape)
        shapes = self._cuda_shapes.get(key)
        if shapes is None:
            # First run at this shape: let ORT allocate and learn the output shapes; later
            # runs write straight into fresh torch tensors (cheap: torch's caching allocator).
            for name in self.output_names:
                binding.bind_output(name, "cuda", index)
            torch.cuda.current_stream(self.device).synchronize()
            self.session.run_with_iobinding(binding)
            shapes = [tuple(v.shape()) for v in binding.get_outputs()]
            self._cuda_shapes[key] = shapes
            binding = self.session.io_binding()
            binding.bind_input(self.input_name, "cuda", index, np.float32, tuple(x.shape),
                               x.data_ptr())
        outs = [torch.empty(s, dtype=torch.float32, device=self.device) for s in shapes]
        for name, out in zip(self.output_names, outs, strict=True):
            binding.bind_output(name, "cuda", index, np.float32, tuple(out.shape),
                                out.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return outs


def max_abs_difference(
    path: str | Path, model: torch.nn.Module, width: int, height: int, seed: int = 0
) -> float:
    """Largest |ONNX Runtime - PyTorch| over all outputs for one random normalised input."""
    backend = OnnxBackend(path, torch.device("cpu"))
    net = copy.deepcopy(model).float().cpu().eval()
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = model_outputs(net(x))
    got = backend(x)
    got = got if isinstance(got, tuple) else (got,)
    return max(float((a - b).abs().max()) for a, b in zip(expected, got, strict=True))


__all__ = ["OnnxBackend", "max_abs_difference"]
