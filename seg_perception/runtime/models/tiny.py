"""A very small encoder-decoder used to test plumbing quickly (CamVid classes).

It is a real, trainable network, but with random weights its labels are noise: the node and
the CLI say so in their logs whenever a model runs without trained weights.
"""

from __future__ import annotations

import torch
from torch import nn

from seg_perception.runtime.models.meta import camvid_meta
from seg_perception.runtime.models.registry import register_model


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TinySeg(nn.Module):
    """Three stride-2 stages (output stride 8) and a 1x1 classifier."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn_relu(3, width, 2), conv_bn_relu(width, width * 2, 2),
            conv_bn_relu(width * 2, width * 4, 2), conv_bn_relu(width * 4, width * 4),
        )
        self.classifier = nn.Conv2d(width * 4, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stem(x))


TINY_META = camvid_meta("tiny_seg", (480, 352), output_stride=8)


@register_model("tiny_seg", TINY_META, "tiny 3-stage test network, CamVid classes, 60 k params")
def tiny_seg(num_classes: int = 11, width: int = 16) -> nn.Module:
    return TinySeg(num_classes, width)


__all__ = ["TinySeg", "tiny_seg"]
