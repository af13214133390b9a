"""Segmentation networks, their registry, metadata and checkpoint loading."""

from . import zoo  # noqa: F401 - registers every built-in network before any lookup
from .meta import ModelMeta
from .registry import (
    ModelEntry,
    create_model,
    get_entry,
    list_aliases,
    list_models,
    register_model,
    resolve_name,
)

__all__ = [
    "ModelEntry",
    "ModelMeta",
    "create_model",
    "get_entry",
    "list_aliases",
    "list_models",
    "register_model",
    "resolve_name",
]
