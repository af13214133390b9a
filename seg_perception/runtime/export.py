"""ONNX export that carries everything the engine needs inside the file.

The exported graph takes ``input`` (N, 3, H, W) float32, already normalised with the model's
mean/std, and returns ``scores`` (and ``drivable_scores`` for multi-task networks) exactly as
the PyTorch module does. The :class:`ModelMeta` JSON and the model name go into the ONNX
``metadata_props`` so a ``.onnx`` file alone is enough to run the node (classes, palette,
normalisation and input size come with it). Checking an export against ONNX Runtime lives
with the runtime (:func:`seg_perception.runtime.engine.onnx_backend.max_abs_difference`), so
this module never imports the backend that reads its files.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seg_perception.runtime.models.checkpoint import META_KEY, MODEL_KEY
from seg_perception.runtime.models.meta import ModelMeta

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAMES = ("scores", "drivable_scores")
WEIGHTS_KEY = "seg_perception.weights"
TRAINED_KEY = "seg_perception.trained"
DYNAMIC_KEY = "seg_perception.dynamic"
PRECISION_KEY = "seg_perception.precision"  # "int8" for quantised exports; absent: fp32
QUANT_KEY = "seg_perception.quantisation"  # JSON: how an int8 export was calibrated
EXPORT_FORMATS = ("onnx",)


class ExportError(ValueError):
    """A model that cannot be exported as asked (message says why)."""


def model_outputs(result: object) -> tuple[torch.Tensor, ...]:
    """The engine's contract: a score tensor, or a (scores, drivable_scores) pair."""
    if isinstance(result, torch.Tensor):
        return (result,)
    if (isinstance(result, (tuple, list)) and len(result) == 2
            and all(isinstance(t, torch.Tensor) for t in result)):
        return tuple(result)
    raise ExportError(
        f"the model returns {type(result).__name__}; expected a score tensor (N, C, h, w) "
        "or a (scores, drivable_scores) pair"
    )


def export_onnx(
    model: nn.Module,
    meta: ModelMeta,
    path: str | Path,
    width: int | None = None,
    height: int | None = None,
    opset: int = 17,
    dynamic: bool = False,
    *,
    model_name: str | None = None,
    weights: str | None = None,
    trained: bool | None = None,
) -> Path:
    """Write ``model`` as ONNX at ``width`` x ``height`` (default: the meta's input size).

    A fixed-size export must be fed that size, so the stored meta's ``input_size`` becomes
    the export size; its batch axis is free (several cameras run as one batch).
    ``dynamic=True`` leaves height and width free too. ``weights`` and
    ``trained`` describe the weights so tools can warn about random ones later. The file is
    checked with ``onnx.checker`` before it is written.
    """
    import onnx

    w = int(width or meta.input_size[0])
    h = int(height or meta.input_size[1])
    if w <= 0 or h <= 0:
        raise ExportError(f"export size must be positive, got {w}x{h}")
    path = Path(path)
    name = model_name or str(getattr(model, "model_name", meta.arch))
    meta = meta.replace(input_size=(w, h))

    # Export a CPU fp32 copy so the caller's module (maybe on CUDA, fp16) is left untouched.
    net = copy.deepcopy(model).float().cpu().eval()
    x = torch.zeros(1, 3, h, w)
    with torch.inference_mode():
        reference = model_outputs(net(x))
    names = list(OUTPUT_NAMES[: len(reference)])
    for out_name, out in zip(names, reference, strict=True):
        if out.ndim != 4 or out.shape[0] != 1:
            raise ExportError(f"output {out_name} has shape {tuple(out.shape)}; expected "
                              "(N, C, h, w)")
    if reference[0].shape[1] != meta.num_classes:
        raise ExportError(f"{name}: the network outputs {reference[0].shape[1]} classes but "
                          f"its metadata lists {meta.num_classes}")

    # The batch axis is always free: the node runs one frame of every camera as a batch.
    dynamic_axes: dict[str, dict[int, str]] = {INPUT_NAME: {0: "batch"}}
    for out_name in names:
        dynamic_axes[out_name] = {0: "batch"}
    if dynamic:
        dynamic_axes[INPUT_NAME].update({2: "height", 3: "width"})
        for out_name in names:
            dynamic_axes[out_name].update({2: f"{out_name}_height", 3: f"{out_name}_width"})
    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The TorchScript exporter needs nothing beyond torch and onnx (the dynamo one needs
        # onnxscript) and handles every network in the zoo.
        torch.onnx.export(
            net, (x,), buf, dynamo=False, input_names=[INPUT_NAME], output_names=names,
            opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True,
        )
    for warning in caught:
        if not issubclass(warning.category, DeprecationWarning):
            log.debug("onnx export: %s", warning.message)

    proto = onnx.load_from_string(buf.getvalue())
    props = {
        META_KEY: meta.to_json(),
        MODEL_KEY: name,
        DYNAMIC_KEY: "true" if dynamic else "false",
    }
    if weights is not None:
        props[WEIGHTS_KEY] = weights
    if trained is not None:
        props[TRAINED_KEY] = "true" if trained else "false"
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"seg-perception {name}: {meta.num_classes} classes, input {w}x{h}"
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    log.info("exported %s (%s, opset %d, %s) to %s", name, f"{w}x{h}", opset,
             "dynamic size" if dynamic else "fixed size", path)
    return path


def exported_input_size(name: str, default: tuple[int, int],
                        fixed_size: tuple[int, int] | None,
                        requested: tuple[int, int] | None,
                        error: type[Exception] = ExportError) -> tuple[int, int]:
    """The size frames of exported file ``name`` are resized to: ``requested`` (any size for
    a dynamic export, only ``fixed_size`` for a fixed one: ``error`` otherwise) or, when
    None, ``default``."""
    if requested is None:
        return default
    requested = (int(requested[0]), int(requested[1]))
    if fixed_size is not None and requested != fixed_size:
        raise error(f"{name} was exported for input {fixed_size[0]}x{fixed_size[1]}, not "
                    f"{requested[0]}x{requested[1]}; re-export with --width/--height (or "
                    "--dynamic)")
    return requested


@dataclass
class OnnxFileInfo:
    """What an exported ``.onnx`` file says about itself (see :func:`export_onnx`)."""

    path: Path
    meta: ModelMeta
    model_name: str
    weights: str
    trained: bool
    dynamic: bool
    fixed_size: tuple[int, int] | None
    precision: str
    props: dict[str, str]

    def resolve_input_size(self, requested: tuple[int, int] | None) -> tuple[int, int]:
        """The size frames are resized to: the exported one, or any for dynamic exports."""
        return exported_input_size(self.path.name, tuple(self.meta.input_size),
                                   self.fixed_size, requested, ExportError)


def read_onnx_info(path: str | Path) -> OnnxFileInfo:
    """Metadata and input shape of a ``.onnx`` written by :func:`export_onnx`.

    Raises :class:`ExportError` (a ValueError) for files without our metadata, naming how to
    export one.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others
        raise ExportError(f"{path} is not a loadable ONNX model: {exc}") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise ExportError(
            f"{path} was not exported by seg-perception; it lacks the model metadata "
            "(classes, palette, normalisation, input size) the engine needs. Export it with "
            "`seg-perception export --model NAME --format onnx`."
        )
    try:
        meta = ModelMeta.from_json(props[META_KEY])
    except ValueError as exc:
        raise ExportError(f"{path}: unreadable model metadata: {exc}") from exc
    graph_inputs = [i for i in proto.graph.input
                    if i.name not in {t.name for t in proto.graph.initializer}]
    if len(graph_inputs) != 1:
        raise ExportError(f"{path}: expected one input, found {[i.name for i in graph_inputs]}")
    dims = graph_inputs[0].type.tensor_type.shape.dim
    fixed = None
    if len(dims) == 4 and dims[2].HasField("dim_value") and dims[3].HasField("dim_value"):
        fixed = (int(dims[3].dim_value), int(dims[2].dim_value))
        if meta.input_size != fixed:
            meta = meta.replace(input_size=fixed)
    source = props.get(WEIGHTS_KEY)
    return OnnxFileInfo(
        path=path, meta=meta, model_name=props.get(MODEL_KEY, meta.arch),
        weights=f"{path} (exported from {source})" if source else str(path),
        trained=props.get(TRAINED_KEY, "true") == "true",
        dynamic=props.get(DYNAMIC_KEY, "false") == "true", fixed_size=fixed,
        precision=props.get(PRECISION_KEY, "fp32"), props=props,
    )


__all__ = [
    "EXPORT_FORMATS",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "ExportError",
    "OnnxFileInfo",
    "export_onnx",
    "model_outputs",
    "read_onnx_info",
]
