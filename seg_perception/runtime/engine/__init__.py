"""The inference engine and its backends: RGB frames in; class ids, confidence, drivable mask out.

This ``__init__`` is the public surface (import from ``seg_perception.runtime.engine``);
the package is laid out by concern:

- :mod:`.seg_engine`: :class:`SegEngine`, the pre- and postprocessing around the network
  (upload, resize, normalisation; argmax, confidence, upsampling modes, the one copy back);
- :mod:`.backend`: :class:`Backend`, the one protocol the engine runs a network through;
  :mod:`.torch_backend`, :mod:`.openvino_backend` and :mod:`.onnx_backend` keep it (the
  latter two are imported only where chosen: import them by their module names);
- :mod:`.choice`: device, CPU threads and precision from what a user asked for;
- :mod:`.build`: :func:`build_engine` (model or ``.onnx`` file -> engine and
  :class:`EngineInfo`) and the backend choice.

The choices users type and :class:`EngineConfigError` live in the torch-free
:mod:`seg_perception.runtime.engine_options` and are re-exported here.
"""

from seg_perception.runtime.engine.backend import Backend
from seg_perception.runtime.engine.build import (
    EngineInfo,
    build_engine,
    is_onnx_path,
    resolve_backend,
)
from seg_perception.runtime.engine.choice import (
    auto_precision,
    cpu_count,
    precision_name,
    resolve_device,
    resolve_precision,
    resolve_precision_name,
    resolve_threads,
)
from seg_perception.runtime.engine.seg_engine import PendingBatch, SegEngine, SegResult
from seg_perception.runtime.engine.torch_backend import TorchBackend
from seg_perception.runtime.engine_options import (
    BACKEND_CHOICES,
    DEVICE_CHOICES,
    PRECISION_CHOICES,
    UPSAMPLE_CHOICES,
    EngineConfigError,
)

__all__ = [
    "BACKEND_CHOICES",
    "DEVICE_CHOICES",
    "PRECISION_CHOICES",
    "UPSAMPLE_CHOICES",
    "Backend",
    "EngineConfigError",
    "EngineInfo",
    "PendingBatch",
    "SegEngine",
    "SegResult",
    "TorchBackend",
    "auto_precision",
    "build_engine",
    "cpu_count",
    "is_onnx_path",
    "precision_name",
    "resolve_backend",
    "resolve_device",
    "resolve_precision",
    "resolve_precision_name",
    "resolve_threads",
]
