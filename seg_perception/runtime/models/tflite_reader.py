"""A minimal reader of TensorFlow Lite flatbuffers: operators, their options and weights.

Why our own: converting the ImageNet backbones of ``../shared/models/coral`` needs only the
graph's operator list and its constant tensors, dequantised. The ``flatbuffers`` runtime is
already installed (onnxruntime pulls it in), so reading the few tables of the TFLite schema
(``tensorflow/compiler/mlir/lite/schema/schema.fbs``) by field index here avoids a new
dependency (the ``tflite`` package's generated code) and the 60 MB LiteRT interpreter, which
only the dev check (``scripts/tflite_backbone_check.py``) uses.

Dequantisation follows the TFLite spec: ``real = scale * (q - zero_point)``, per tensor or per
channel along ``quantized_dimension``; int32 biases carry scale ``input_scale * weight_scale``
and zero point 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table

# BuiltinOperator codes (schema.fbs) of the operators the converters look at.
BUILTIN_NAMES = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D", 6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC",
    17: "MAX_POOL_2D", 19: "RELU", 21: "RELU6", 22: "RESHAPE", 23: "RESIZE_BILINEAR",
    25: "SOFTMAX", 40: "MEAN", 56: "ARG_MAX", 114: "QUANTIZE",
}
# TensorType (schema.fbs) -> numpy dtype.
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16,
           9: np.int8}
_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}
_PADDING = {0: "SAME", 1: "VALID"}


class TFLiteError(ValueError):
    """A file that is not a TFLite model of the expected form."""


@dataclass
class TFLiteTensor:
    """One tensor of the graph; ``data`` is the raw constant buffer (None for activations)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    data: np.ndarray | None
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    quantized_dimension: int

    def dequantize(self) -> np.ndarray:
        """The constant's real values (float32), undoing per-tensor or per-channel quantisation."""
        if self.data is None:
            raise TFLiteError(f"tensor {self.name!r} is not a constant")
        q = self.data.astype(np.float64)
        if self.scale is None or self.scale.size == 0 or self.dtype in (np.float32, np.float16):
            return q.astype(np.float32)
        scale = self.scale.astype(np.float64)
        zp = (self.zero_point if self.zero_point is not None and self.zero_point.size
              else np.zeros_like(scale)).astype(np.float64)
        if scale.size > 1:  # per channel: broadcast along the quantised axis
            bshape = [1] * q.ndim
            bshape[self.quantized_dimension] = scale.size
            scale, zp = scale.reshape(bshape), zp.reshape(bshape)
        return ((q - zp) * scale).astype(np.float32)


@dataclass
class TFLiteOp:
    """One operator: its builtin name, tensor indices and the options the converters need."""

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, object] = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    """The first subgraph of a model: tensors, operators in execution order, inputs/outputs."""

    tensors: list[TFLiteTensor]
    ops: list[TFLiteOp]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _field(tab: Table, i: int) -> int:
    return tab.Offset(4 + 2 * i)


def _scalar(tab: Table, i: int, flags: object, default: int = 0) -> int:
    o = _field(tab, i)
    return tab.Get(flags, o + tab.Pos) if o else default


def _vector(tab: Table, i: int, flags: object) -> np.ndarray:
    o = _field(tab, i)
    if not o:
        return np.zeros(0, dtype=number_types.to_numpy_type(flags))
    return tab.GetVectorAsNumpy(flags, o)


def _tables(tab: Table, i: int) -> list[Table]:
    o = _field(tab, i)
    if not o:
        return []
    start, n = tab.Vector(o), tab.VectorLen(o)
    return [Table(tab.Bytes, tab.Indirect(start + 4 * j)) for j in range(n)]


def _table(tab: Table, i: int) -> Table | None:
    o = _field(tab, i)
    return Table(tab.Bytes, tab.Indirect(o + tab.Pos)) if o else None


def _string(tab: Table, i: int) -> str:
    o = _field(tab, i)
    return tab.String(o + tab.Pos).decode("utf-8", "replace") if o else ""


_I8, _I32, _U8 = number_types.Int8Flags, number_types.Int32Flags, number_types.Uint8Flags
_I64, _F32, _U64 = number_types.Int64Flags, number_types.Float32Flags, number_types.Uint64Flags


def _options(name: str, opts: Table | None) -> dict[str, object]:
    # Field indices of Conv2DOptions, DepthwiseConv2DOptions and FullyConnectedOptions.
    if opts is None:
        return {}
    if name == "CONV_2D":
        return {"padding": _PADDING[_scalar(opts, 0, _I8)], "stride": (
            _scalar(opts, 2, _I32), _scalar(opts, 1, _I32)),
            "activation": _ACTIVATIONS.get(_scalar(opts, 3, _I8), "?"),
            "dilation": (_scalar(opts, 5, _I32, 1), _scalar(opts, 4, _I32, 1))}
    if name == "DEPTHWISE_CONV_2D":
        return {"padding": _PADDING[_scalar(opts, 0, _I8)], "stride": (
            _scalar(opts, 2, _I32), _scalar(opts, 1, _I32)),
            "depth_multiplier": _scalar(opts, 3, _I32),
            "activation": _ACTIVATIONS.get(_scalar(opts, 4, _I8), "?"),
            "dilation": (_scalar(opts, 6, _I32, 1), _scalar(opts, 5, _I32, 1))}
    if name in ("FULLY_CONNECTED", "ADD"):
        return {"activation": _ACTIVATIONS.get(_scalar(opts, 0, _I8), "?")}
    return {}


def read_tflite(path: str | Path) -> TFLiteGraph:
    """Parse ``path`` (a ``.tflite`` flatbuffer) into its first subgraph's tensors and ops."""
    buf = bytearray(Path(path).read_bytes())
    if len(buf) < 8 or bytes(buf[4:8]) != b"TFL3":
        raise TFLiteError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier)")
    model = Table(buf, encode.Get(packer.uoffset, buf, 0))
    codes = []
    for oc in _tables(model, 1):  # operator_codes
        code = max(_scalar(oc, 0, _I8), _scalar(oc, 3, _I32))
        codes.append(BUILTIN_NAMES.get(code, f"BUILTIN_{code}"))
    buffers = []
    for b in _tables(model, 4):
        data = _vector(b, 0, _U8)
        offset, size = _scalar(b, 1, _U64), _scalar(b, 2, _U64)
        if not data.size and offset > 1:  # large models keep buffers after the flatbuffer
            data = np.frombuffer(bytes(buf[offset:offset + size]), np.uint8)
        buffers.append(data)
    subgraphs = _tables(model, 2)
    if not subgraphs:
        raise TFLiteError(f"{path}: no subgraph")
    sg = subgraphs[0]
    tensors = []
    for i, t in enumerate(_tables(sg, 0)):
        shape = tuple(int(v) for v in _vector(t, 0, _I32))
        ttype = _scalar(t, 1, _I8)
        if ttype not in _DTYPES:
            raise TFLiteError(f"{path}: tensor {i} has unsupported type {ttype}")
        dtype = _DTYPES[ttype]
        raw = buffers[_scalar(t, 2, number_types.Uint32Flags)]
        data = None
        if raw.size:
            data = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)
        q = _table(t, 4)
        scale = zp = None
        qdim = 0
        if q is not None:
            scale = _vector(q, 2, _F32).copy()
            zp = _vector(q, 3, _I64).copy()
            qdim = _scalar(q, 6, _I32)
        tensors.append(TFLiteTensor(i, _string(t, 3), shape, dtype, data, scale, zp, qdim))
    ops = []
    for i, op in enumerate(_tables(sg, 3)):
        name = codes[_scalar(op, 0, number_types.Uint32Flags)]
        ins = tuple(int(v) for v in _vector(op, 1, _I32))
        outs = tuple(int(v) for v in _vector(op, 2, _I32))
        ops.append(TFLiteOp(i, name, ins, outs, _options(name, _table(op, 4))))
    return TFLiteGraph(tensors, ops, tuple(int(v) for v in _vector(sg, 1, _I32)),
                       tuple(int(v) for v in _vector(sg, 2, _I32)))


__all__ = ["BUILTIN_NAMES", "TFLiteError", "TFLiteGraph", "TFLiteOp", "TFLiteTensor",
           "read_tflite"]
