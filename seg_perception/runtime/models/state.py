"""State-dict helpers shared by the model families' key filters and the checkpoint loader.

The lowest layer of :mod:`seg_perception.runtime.models` after :mod:`.meta`: it imports no other
module of the package, so families (which register key filters) and the loader (which applies
them) both build on it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the requested model (message says why)."""


#: Turns an author's checkpoint into a clean state_dict for our module (e.g. dropping
#: training-only heads); registered per checkpoint layout with
#: :func:`seg_perception.runtime.models.registry.register_key_filter`.
KeyFilter = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def strip_prefixes(
    state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = ("module.", "model.")
) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (DataParallel's ``module.``, trainers' ``model.``), repeatedly."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key = key[len(p):]
                    changed = True
        out[key] = value
    return out


__all__ = ["CheckpointError", "KeyFilter", "strip_prefixes"]
