"""DDRNet-23-slim and DDRNet-23 (Hong et al., 2021): deep dual-resolution networks.

A high-resolution branch stays at 1/8 while a low-resolution branch goes down to 1/64; the
two exchange information twice (bilateral fusion: strided convs high->low, 1x1 conv and
upsampling low->high) and the DAPPM module adds multi-scale context. Written from the paper
and the facts of the official code (github.com/ydhongHIT/DDRNet, ``segmentation/
DDRNet_23_slim.py`` and ``DDRNet_23.py``): module names, where ReLUs sit (the trunk's ReLU is
not in-place, so the stage outputs reused by the fusions are the pre-fusion ones) and
``align_corners=False`` match, so the authors' Cityscapes checkpoints load strictly.

Inference returns only the main head (``final_layer``); the auxiliary head used in training
(``seghead_extra``) is not built. The authors trained with the HRNet framework, whose
``FullModel(model, loss)`` is what gets saved: a flat state_dict with keys ``model.*`` plus
``loss.*`` buffers - the ``ddrnet`` key filter strips and drops those.
"""

from __future__ import annotations

import torch
from torch import nn

from seg_perception.runtime.models.layers import (
    DAPPM,
    BasicBlock,
    Bottleneck,
    SegmentHead,
    cityscapes_key_filter,
    conv_bn,
    init_weights,
    make_layer,
    resize_to,
    stem,
)
from seg_perception.runtime.models.meta import ModelMeta, cityscapes_meta
from seg_perception.runtime.models.registry import register_key_filter, register_model


class DualResNet(nn.Module):
    """``planes``: base width (slim 32, full 64); ``layers``: basic blocks per stage."""

    def __init__(self, num_classes: int = 19, planes: int = 64, spp_planes: int = 128,
                 head_planes: int = 128, layers: tuple[int, int, int, int] = (2, 2, 2, 2)
                 ) -> None:
        super().__init__()
        p = planes
        hi = 2 * p  # width of the high-resolution branch
        self.conv1 = stem(p)
        self.layer1 = make_layer(BasicBlock, p, p, layers[0])
        self.layer2 = make_layer(BasicBlock, p, 2 * p, layers[1], stride=2)
        self.layer3 = make_layer(BasicBlock, 2 * p, 4 * p, layers[2], stride=2)
        self.layer4 = make_layer(BasicBlock, 4 * p, 8 * p, layers[3], stride=2)
        self.compression3 = conv_bn(4 * p, hi)
        self.compression4 = conv_bn(8 * p, hi)
        self.down3 = conv_bn(hi, 4 * p, 3, 2)
        self.down4 = nn.Sequential(
            nn.Conv2d(hi, 4 * p, 3, 2, 1, bias=False), nn.BatchNorm2d(4 * p),
            nn.ReLU(inplace=True),
            nn.Conv2d(4 * p, 8 * p, 3, 2, 1, bias=False), nn.BatchNorm2d(8 * p),
        )
        self.layer3_ = make_layer(BasicBlock, 2 * p, hi, 2)
        self.layer4_ = make_layer(BasicBlock, hi, hi, 2)
        self.layer5_ = make_layer(Bottleneck, hi, hi, 1)
        self.layer5 = make_layer(Bottleneck, 8 * p, 8 * p, 1, stride=2)
        self.spp = DAPPM(16 * p, spp_planes, 4 * p)
        self.final_layer = SegmentHead(4 * p, head_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = torch.relu
        x2 = self.layer2(relu(self.layer1(self.conv1(x))))
        size = x2.shape[-2:]  # 1/8: the high-resolution branch's size
        x3 = self.layer3(relu(x2))
        hi = self.layer3_(relu(x2))
        lo = x3 + self.down3(relu(hi))
        hi = hi + resize_to(self.compression3(relu(x3)), size)
        x4 = self.layer4(relu(lo))
        hi = self.layer4_(relu(hi))
        lo = x4 + self.down4(relu(hi))
        hi = hi + resize_to(self.compression4(relu(x4)), size)
        hi = self.layer5_(relu(hi))
        lo = resize_to(self.spp(self.layer5(relu(lo))), size)
        return self.final_layer(lo + hi)


_DDRNET_TRAINING_ONLY = ("seghead_extra.", "loss.", "criterion.")


ddrnet_key_filter = cityscapes_key_filter("DDRNet", _DDRNET_TRAINING_ONLY)
register_key_filter("ddrnet", ddrnet_key_filter)


def _meta(arch: str, params: str) -> ModelMeta:
    return cityscapes_meta(arch, "github.com/ydhongHIT/DDRNet", params)


@register_model("ddrnet_23_slim", _meta("ddrnet_23_slim", "5.7M"),
                "DDRNet-23-slim, Cityscapes 19 classes, authors' weights: 77.8 val mIoU",
                checkpoint_format="ddrnet", aliases=("ddrnet23_slim", "ddrnet-23-slim"))
def ddrnet_23_slim(num_classes: int = 19) -> nn.Module:
    return DualResNet(num_classes, planes=32, spp_planes=128, head_planes=64)


@register_model("ddrnet_23", _meta("ddrnet_23", "20.1M"),
                "DDRNet-23, Cityscapes 19 classes, authors' weights: 79.5 val mIoU",
                checkpoint_format="ddrnet", aliases=("ddrnet23", "ddrnet-23"))
def ddrnet_23(num_classes: int = 19) -> nn.Module:
    return DualResNet(num_classes, planes=64, spp_planes=128, head_planes=128)


__all__ = ["DualResNet", "ddrnet_23", "ddrnet_23_slim", "ddrnet_key_filter"]
