"""What makes an output: the model, the hash of its weights, the hash of the options.

Split from the manifest (:mod:`.manifest`), which stores these per bag, so a later run
knows which bags are done with the same model, weights and options: the weights' SHA-256
(of the file, or of a random initialisation's tensors), the options' hash and the
:class:`Identity` a worker reports for what it runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from seg_perception.runtime.models.checkpoint import file_sha256

if TYPE_CHECKING:
    from seg_perception.offline.job import ProcessOptions

RANDOM_INIT_SEED = 0  # workers seed torch with it before building an untrained network


def weights_sha256(model: str, checkpoint: str | None) -> str:
    """SHA-256 of the weights a worker runs: the checkpoint, ``.onnx`` or shipped weights
    file (comparable with ``sha256sum``); for a network without weights, of the tensors its
    random initialisation with :data:`RANDOM_INIT_SEED` gives (whatever backend runs it)."""
    from seg_perception.runtime.engine import is_onnx_path
    from seg_perception.runtime.models.registry import create_model, get_entry
    from seg_perception.runtime.models.zoo import DEFAULT_MODEL

    name = DEFAULT_MODEL if model in ("", "default") else model
    path: Path | None = None
    if checkpoint:
        path = Path(checkpoint)
    elif is_onnx_path(model):
        path = Path(model)
    else:
        path = get_entry(name).shipped_weights_path()
    if path is not None:
        return file_sha256(path)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        state = create_model(name).state_dict()
    digest = hashlib.sha256()
    for key, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def options_sha256(options: ProcessOptions, image_topics: Sequence[str] | None,
                   camera_info_topics: Sequence[str] | None) -> str:
    """Hash of everything besides the model that decides a bag's outputs."""
    doc = {"options": dataclasses.asdict(options), "image_topics": list(image_topics or []),
           "camera_info_topics": list(camera_info_topics or [])}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=repr).encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """What a worker runs (all workers of a run must agree on model and weights)."""

    model: str
    weights_sha256: str
    weights: str  # human description (path, "shipped", "random initialisation")
    trained: bool
    device: str
    precision: str
    host: str
    pid: int
    threads: int
    error: str | None = None  # set when the worker could not load the model


__all__ = [
    "RANDOM_INIT_SEED",
    "Identity",
    "file_sha256",
    "options_sha256",
    "weights_sha256",
]
