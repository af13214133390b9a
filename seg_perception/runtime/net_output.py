"""What a backend of the engine may return besides bare scores (ROS-free, no engine import:
the backends and the engine both use it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class NetOutput:
    """What a backend may return instead of bare scores: the class scores (N, C, h, w), the
    drivable head's (N, 2, h, w) or None, and the argmax ``labels`` and ``confidence`` (uint8
    (N, h, w), winning probability x 255) when its graph computes them (OpenVINO's does:
    cheaper there than as torch passes over the scores afterwards)."""

    scores: torch.Tensor
    drivable_scores: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    confidence: torch.Tensor | None = None

    def item(self, i: int) -> NetOutput:
        """Frame ``i``, batch axis kept."""
        return NetOutput(*(None if t is None else t[i:i + 1] for t in (
            self.scores, self.drivable_scores, self.labels, self.confidence)))

    @staticmethod
    def cat(parts: Sequence[NetOutput]) -> NetOutput:
        """The outputs of consecutive batches as one."""
        fields = zip(*((p.scores, p.drivable_scores, p.labels, p.confidence) for p in parts),
                     strict=True)
        return NetOutput(*(None if f[0] is None else torch.cat(list(f), dim=0)
                           for f in fields))


__all__ = ["NetOutput"]
