"""Checkpoint I/O: our safetensors format with metadata, and authors' PyTorch state_dicts.

Loading never unpickles arbitrary objects (``torch.load(weights_only=True)`` or
safetensors), is strict about keys, and says which keys are missing or unexpected.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seg_perception.runtime.models.class_map import ClassTarget, map_model
from seg_perception.runtime.models.meta import ModelMeta
from seg_perception.runtime.models.registry import create_model, get_entry, key_filter
from seg_perception.runtime.models.state import CheckpointError, strip_prefixes
from seg_perception.runtime.models.zoo import DEFAULT_MODEL

log = logging.getLogger(__name__)

META_KEY = "seg_perception.meta"
MODEL_KEY = "seg_perception.model"


@dataclass
class RawCheckpoint:
    """Tensors read from a file, plus the metadata stored with them (our format only)."""

    state: dict[str, torch.Tensor]
    meta: ModelMeta | None
    model_name: str | None


def read_checkpoint(path: str | Path) -> RawCheckpoint:
    """Read tensors from ``.safetensors`` or a ``torch.save`` file without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
        meta = ModelMeta.from_json(header[META_KEY]) if META_KEY in header else None
        return RawCheckpoint(state, meta, header.get(MODEL_KEY))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint loadable with weights_only=True: {exc}"
        ) from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} holds no state_dict (found {type(obj).__name__})")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path} holds no tensors")
    return RawCheckpoint(state, None, None)


def _describe_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strictly load ``state``; errors name missing/unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe_keys(unexpected)}")
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if shapes:
        meta = getattr(model, "meta", None)
        hint = ""
        if meta is not None:
            # A classifier's output dimension is the class count: name the checkpoint's.
            theirs = sorted({int(state[k].shape[0]) for k, v in own.items()
                             if k in state and v.ndim >= 1 and state[k].ndim >= 1
                             and v.shape[0] == meta.num_classes
                             and state[k].shape[0] != meta.num_classes
                             and tuple(state[k].shape[1:]) == tuple(v.shape[1:])})
            found = f", the checkpoint {'/'.join(map(str, theirs))}" if theirs else ""
            hint = (f" (class-count mismatch? the model has {meta.num_classes} classes"
                    f"{found})")
        problems.append("shape mismatches" + hint + ": " + _describe_keys(shapes, 4))
    if problems:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: " + "; ".join(problems)
        )
    model.load_state_dict(dict(state), strict=True)


def load_checkpoint(model: nn.Module, path: str | Path, fmt: str | None = None) -> None:
    """Load weights from ``path`` into ``model`` (already built), cleaning known prefixes.

    ``fmt`` names the authors' layout (see :func:`.registry.register_key_filter`); by default
    it is the one registered with the model. Files in our own format need no filtering.
    """
    raw = read_checkpoint(path)
    state = raw.state
    if raw.meta is None:
        if fmt is None:
            name = getattr(model, "model_name", None)
            fmt = get_entry(name).checkpoint_format if name else "native"
        fn = key_filter(fmt)
        state = fn(state) if fn else strip_prefixes(state)
    load_state_into(model, state, str(path))


def save_checkpoint(model: nn.Module, path: str | Path, meta: ModelMeta | None = None) -> Path:
    """Write our own format: safetensors with the model name and metadata in the header."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = meta or model.meta
    header = {META_KEY: meta.to_json(), MODEL_KEY: str(getattr(model, "model_name", meta.arch))}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=header)
    return path


@dataclass
class LoadedModel:
    """A ready network with its metadata and a human description of its weights."""

    model: nn.Module
    meta: ModelMeta
    name: str
    weights: str  # e.g. "/path/best.pth" or "random initialisation (no trained weights)"
    trained: bool


def load_model(name: str = "default", checkpoint: str | Path | None = None,
               map_to: ClassTarget | None = None) -> LoadedModel:
    """Resolve ``name`` (or ``default``), build it and load weights.

    Weights come from ``checkpoint`` when given, else from weights shipped in the package for
    that model; with neither, the network keeps random weights and ``trained`` is False so
    callers can warn loudly. ``map_to`` reads the model's classes as another dataset's
    (e.g. a Cityscapes model scored on CamVid, :func:`.class_map.map_model`).
    """
    if name in ("", "default"):
        name = DEFAULT_MODEL
    raw = read_checkpoint(checkpoint) if checkpoint else None
    if raw is not None and raw.meta is not None:
        # Our own format: its metadata (classes, palette, sizes) wins over the registry's.
        if raw.model_name and raw.model_name != get_entry(name).name and name == DEFAULT_MODEL:
            name = raw.model_name
        model = create_model(name, meta=raw.meta)
        load_state_into(model, raw.state, str(checkpoint))
        weights, trained = str(checkpoint), True
    elif checkpoint:
        model = create_model(name)
        load_checkpoint(model, checkpoint)
        weights, trained = str(checkpoint), True
    else:
        entry = get_entry(name)
        shipped = entry.shipped_weights_path()
        if shipped is not None:
            shipped_raw = read_checkpoint(shipped)
            model = create_model(name, meta=shipped_raw.meta)
            load_state_into(model, shipped_raw.state, str(shipped))
            weights, trained = f"{shipped} (shipped with the package)", True
        else:
            model = create_model(name)
            weights, trained = "random initialisation (no trained weights)", False
    model.eval()
    meta = model.meta
    if map_to is not None and tuple(meta.class_names) != tuple(map_to.class_names):
        model, meta = map_model(model, meta, map_to)
        log.info("%s: its %d %s classes read as %s's %d through the class-mapping table",
                 model.model_name, model.net.meta.num_classes, model.net.meta.dataset,
                 map_to.name, meta.num_classes)
    return LoadedModel(model, meta, model.model_name, weights, trained)


def checkpoint_summary(path: str | Path) -> str:
    """One line describing what a checkpoint file holds (for ``models`` and logs)."""
    raw = read_checkpoint(path)
    n = sum(t.numel() for t in raw.state.values())
    extra = f", model {raw.model_name}, {raw.meta.num_classes} classes" if raw.meta else ""
    return f"{path}: {len(raw.state)} tensors, {n / 1e6:.2f} M values{extra}"


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (a weights file's identity)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = [
    "CheckpointError",
    "LoadedModel",
    "checkpoint_summary",
    "file_sha256",
    "load_checkpoint",
    "load_model",
    "read_checkpoint",
    "save_checkpoint",
    "strip_prefixes",
]
