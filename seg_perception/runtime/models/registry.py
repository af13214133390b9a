"""Model registry in the timm/torchvision habit: ``register_model`` and ``create_model``.

A registry entry binds a name to a builder (returns an ``nn.Module`` that maps a normalised
``(N, 3, H, W)`` float tensor to class scores ``(N, C, h, w)``, where a softmax over C gives
class probabilities), the model's :class:`ModelMeta`, the checkpoint layout its authors
publish, and optionally weights shipped inside this package. Checkpoint layouts register
their key filters here too (:func:`register_key_filter`).

This module only holds what was registered; it imports no model family. The families
register themselves when :mod:`.zoo` imports them, and the package ``__init__`` imports
:mod:`.zoo` first, so any import of ``seg_perception.runtime.models...`` sees every network.
Layers: meta, state <- registry <- families <- zoo <- checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from seg_perception.runtime.models.meta import ModelMeta
from seg_perception.runtime.models.state import KeyFilter

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """One registered network and the facts about it."""

    name: str
    builder: Builder
    meta: ModelMeta
    description: str
    checkpoint_format: str = "native"
    shipped_weights: str | None = None  # file name under seg_perception/weights/
    # True: ``train --init-from`` must fill every tensor (after the layout's key filter),
    # as for a re-headed model whose filter maps the classifier; False: tensors of another
    # shape keep their random initialisation.
    strict_init: bool = False

    def shipped_weights_path(self) -> Path | None:
        """Absolute path of the weights shipped in the package, or None if there are none."""
        if not self.shipped_weights:
            return None
        path = Path(__file__).resolve().parent.parent.parent / "weights" / self.shipped_weights
        return path if path.is_file() else None


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}
_KEY_FILTERS: dict[str, KeyFilter] = {}


def register_key_filter(fmt: str, fn: KeyFilter) -> None:
    """Register how checkpoints in the authors' layout ``fmt`` become our state_dicts."""
    _KEY_FILTERS[fmt] = fn


def key_filter(fmt: str) -> KeyFilter | None:
    """The key filter registered for layout ``fmt``, or None (plain prefix stripping)."""
    return _KEY_FILTERS.get(fmt)


def register_model(
    name: str,
    meta: ModelMeta,
    description: str,
    checkpoint_format: str = "native",
    shipped_weights: str | None = None,
    aliases: tuple[str, ...] = (),
    strict_init: bool = False,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name`` (and ``aliases``)."""

    def deco(builder: Builder) -> Builder:
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(
            name, builder, meta, description, checkpoint_format, shipped_weights, strict_init
        )
        for alias in aliases:
            _ALIASES[alias] = name
        return builder

    return deco


def resolve_name(name: str) -> str:
    """Canonical registry name for ``name`` or an alias; raises naming the valid choices."""
    name = _ALIASES.get(name, name)
    if name not in _REGISTRY:
        choices = ", ".join(sorted(list(_REGISTRY) + list(_ALIASES)))
        raise KeyError(f"unknown model {name!r}; registered models: {choices}")
    return name


def get_entry(name: str) -> ModelEntry:
    return _REGISTRY[resolve_name(name)]


def list_models() -> list[str]:
    """Canonical names of all registered models, sorted."""
    return sorted(_REGISTRY)


def list_aliases() -> dict[str, str]:
    return dict(_ALIASES)


def create_model(name: str, meta: ModelMeta | None = None, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name`` with fresh (random) weights.

    ``meta`` overrides the registered metadata (e.g. from a checkpoint with another class
    set); its ``num_classes`` is passed to the builder. The returned module carries
    ``.meta`` (the :class:`ModelMeta`) and ``.model_name``. Loading weights is a separate
    step (:func:`seg_perception.runtime.models.checkpoint.load_checkpoint`).
    """
    entry = get_entry(name)
    meta = meta or entry.meta
    model = entry.builder(num_classes=meta.num_classes, **kwargs)
    model.meta = meta  # type: ignore[assignment]
    model.model_name = entry.name  # type: ignore[assignment]
    return model
