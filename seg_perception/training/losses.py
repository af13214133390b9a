"""Losses: class-balanced cross-entropy, online hard example mining (OHEM), distillation.

Street scenes are dominated by road, sky and building; unweighted cross-entropy learns the
thin classes (pole, sign, bicyclist) last, which a short from-scratch schedule cannot afford.
A teacher's soft labels (:class:`DistillationLoss`) carry what it knows about every pixel,
void ones included, which is what a small student learns from fastest.
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


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits (N, C, h, w) onto an (H, W) grid: averaged when shrinking, bilinear otherwise.

    Averaging keeps every fine cell's vote when a finer map is brought down (a bilinear
    sample would read 4 of them and alias); bilinear is what the trainer uses to upsample.
    """
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    if logits.shape[-2] >= size[0] and logits.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(logits, size)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class DistillationLoss(nn.Module):
    """``weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))`` per valid cell.

    Computed on the soft map's own grid (``1/stride`` of the crop, 4 by default): the
    student's logits are brought there with :func:`resize_logits`, not the teacher's map up
    to full resolution. The cached map holds no detail finer than its grid, so upsampling it
    would add nothing but 16x the memory and time per term, while the cross-entropy term
    still supervises the student at full resolution; the students' own logits come at stride
    4 (``mnv1_fpn_*``), so there they are compared as they are. ``T^2`` keeps the gradient's
    size independent of the temperature (Hinton et al. 2015). Cells marked invalid (the
    padding outside the frame) count neither in the sum nor in the mean.
    """

    def __init__(self, weight: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"distillation temperature must be > 0, got {temperature}")
        self.weight = float(weight)
        self.temperature = float(temperature)

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """``student`` (N, C, h, w) logits, ``teacher`` (N, C, H, W), ``valid`` (N, H, W)."""
        if student.shape[1] != teacher.shape[1]:
            raise ValueError(f"student has {student.shape[1]} classes, the soft labels "
                             f"{teacher.shape[1]}")
        t = self.temperature
        log_s = F.log_softmax(resize_logits(student.float(), teacher.shape[-2:]) / t, dim=1)
        log_t = F.log_softmax(teacher.float() / t, dim=1)
        kl = (log_t.exp() * (log_t - log_s)).sum(1)  # (N, H, W)
        valid = valid.bool()
        count = int(valid.sum())
        if count == 0:
            return student.sum() * 0.0
        # where(), not a product with the mask: a non-finite value outside stays out.
        kl = torch.where(valid, kl, torch.zeros((), dtype=kl.dtype, device=kl.device))
        return self.weight * t * t * kl.sum() / count


__all__ = [
    "DistillationLoss",
    "OhemCrossEntropy",
    "balanced_class_weights",
    "build_loss",
    "resize_logits",
]
