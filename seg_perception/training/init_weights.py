"""Starting weights for a training run: an ImageNet MobileNet backbone or a checkpoint.

Kept apart from the loop in :mod:`.trainer`, which re-exports :func:`init_from`.
"""

from __future__ import annotations

import logging

from torch import nn

from seg_perception.runtime.models.checkpoint import (
    load_state_into,
    read_checkpoint,
    strip_prefixes,
)
from seg_perception.runtime.models.registry import get_entry, key_filter

log = logging.getLogger(__name__)


def init_from(model: nn.Module, path: str) -> None:
    """Start from existing weights.

    A ``.tflite`` file fills a student's MobileNet backbone strictly
    (:func:`..models.mobilenet.load_tflite_backbone`). Models registered with ``strict_init``
    (e.g. ``espnetv2_camvid``) pass checkpoints through their
    checkpoint layout's key filter (which maps a Cityscapes classifier onto CamVid's classes)
    and load strictly; for the others, tensors whose shape differs (a new classifier) keep
    their random initialisation.
    """
    if str(path).lower().endswith(".tflite"):
        # An ImageNet MobileNet (the students' backbone): strict for the backbone, the decoder
        # keeps its random initialisation; train() then calibrates the backbone's BNs.
        from seg_perception.runtime.models.mobilenet import load_tflite_backbone

        load_tflite_backbone(model, path)
        return
    entry = get_entry(getattr(model, "model_name", ""))
    raw = read_checkpoint(path).state
    if entry.strict_init:
        fn = key_filter(entry.checkpoint_format)
        state = fn(raw) if fn else strip_prefixes(raw)
        load_state_into(model, state, str(path))
        log.info("initialised all %d tensors from %s (%s layout)", len(state), path,
                 entry.checkpoint_format)
        return
    state = strip_prefixes(raw)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(usable))
    own.update(usable)
    model.load_state_dict(own)
    log.info("initialised %d/%d tensors from %s", len(usable), len(own), path)
    if skipped:
        log.warning("kept random initialisation for: %s", ", ".join(skipped[:10]))


__all__ = ["init_from"]
