"""Losses: class-balanced cross-entropy and online hard example mining (OHEM).

Street scenes are dominated by road, sky and building; unweighted cross-entropy learns the
thin classes (pole, sign, bicyclist) last, which a short from-scratch schedule cannot afford.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def balanced_class_weights(frequencies: np.ndarray, c: float = 1.02) -> torch.Tensor:
    """ENet's weights ``1 / ln(c + p_class)``, rescaled to mean 1 (absent classes get 0)."""
    freq = np.asarray(frequencies, dtype=np.float64)
    w = 1.0 / np.log(c + freq)
    w[freq <= 0] = 0.0
    present = w > 0
    if present.any():
        w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


class OhemCrossEntropy(nn.Module):
    """Cross-entropy averaged over the hardest pixels only.

    Keeps the pixels whose true-class probability is below ``thresh``, but at least
    ``min_kept`` per batch (the lowest-probability ones), so easy road/sky pixels stop
    dominating the gradient once learned.
    """

    def __init__(
        self,
        ignore_index: int = 255,
        thresh: float = 0.7,
        min_kept: int = 100_000,
        weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.thresh = thresh
        self.min_kept = min_kept
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pixel_loss = F.cross_entropy(
            logits, target, weight=self.weight, ignore_index=self.ignore_index, reduction="none"
        ).flatten()
        valid = target.flatten() != self.ignore_index
        losses = pixel_loss[valid]
        if losses.numel() == 0:
            return logits.sum() * 0.0
        # Probability of the true class from the unweighted loss: p = exp(-ce).
        with torch.no_grad():
            plain = F.cross_entropy(
                logits.detach(), target, ignore_index=self.ignore_index, reduction="none"
            ).flatten()[valid]
            prob = torch.exp(-plain)
            k = min(self.min_kept, prob.numel()) - 1
            kth = prob.kthvalue(k + 1).values if k >= 0 else prob.min()
            threshold = max(float(kth), self.thresh)
            keep = prob <= threshold
        return losses[keep].mean()


def build_loss(
    kind: str,
    ignore_index: int,
    frequencies: np.ndarray | None = None,
) -> nn.Module:
    """``ce`` (plain), ``balanced`` (ENet class weights) or ``ohem`` (hard pixels)."""
    if kind == "ce":
        return nn.CrossEntropyLoss(ignore_index=ignore_index)
    if kind == "balanced":
        if frequencies is None:
            raise ValueError("balanced loss needs class frequencies")
        return nn.CrossEntropyLoss(
            weight=balanced_class_weights(frequencies), ignore_index=ignore_index
        )
    if kind == "ohem":
        return OhemCrossEntropy(ignore_index=ignore_index)
    raise ValueError(f"unknown loss {kind!r}; choose ce, balanced or ohem")


__all__ = ["OhemCrossEntropy", "balanced_class_weights", "build_loss"]
