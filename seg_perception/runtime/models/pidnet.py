"""PIDNet-S/M/L (Xu, Xiong, Bhattacharyya, CVPR 2023): three-branch real-time segmentation.

A detail (P) branch at 1/8 resolution, a context (I) branch down to 1/64 with a pyramid
pooling module, and a boundary (D) branch whose output gates the fusion of P and I (the
"Bag" module). Written from the paper and the facts of the official implementation
(github.com/XuJiacong/PIDNet, ``models/pidnet.py`` and ``models/model_utils.py``): module
names, channel plans, where ReLUs sit and ``align_corners=False`` all match, so the authors'
Cityscapes checkpoints load strictly.

Inference returns only the main head (``final_layer``). The two training-only heads
(``seghead_p``: auxiliary semantic loss on P; ``seghead_d``: boundary loss on D) are not
built; the ``pidnet`` key filter drops them from the authors' files, which are saved by
their trainer as ``{'state_dict': FullModel.state_dict()}`` - keys prefixed ``model.`` plus
the loss module's buffers (``sem_loss.*``).
"""

from __future__ import annotations

import torch
from torch import nn

from seg_perception.runtime.models.layers import (
    DAPPM,
    PAPPM,
    BasicBlock,
    Bottleneck,
    SegmentHead,
    cityscapes_key_filter,
    conv_bn,
    init_weights,
    make_block,
    make_layer,
    resize_to,
    stem,
)
from seg_perception.runtime.models.meta import ModelMeta, cityscapes_meta
from seg_perception.runtime.models.registry import register_key_filter, register_model


class PagFM(nn.Module):
    """Pixel-attention-guided fusion: per pixel, how much context (I) to mix into detail (P),
    from the similarity of their 1x1 embeddings."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.f_x = conv_bn(channels, mid)
        self.f_y = conv_bn(channels, mid)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y_q = resize_to(self.f_y(y), size)
        sim = torch.sigmoid((self.f_x(x) * y_q).sum(dim=1, keepdim=True))
        return (1 - sim) * x + sim * resize_to(y, size)


class LightBag(nn.Module):
    """Boundary-attention-guided fusion, light version (PIDNet-S/M): two 1x1 conv+BN."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_p = conv_bn(cin, cout)
        self.conv_i = conv_bn(cin, cout)

    def forward(self, p: torch.Tensor, i: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        edge = torch.sigmoid(d)
        return self.conv_p((1 - edge) * i + p) + self.conv_i(i + edge * p)


class Bag(nn.Module):
    """Boundary-attention-guided fusion (PIDNet-L): trust detail at edges, context inside."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        )

    def forward(self, p: torch.Tensor, i: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        edge = torch.sigmoid(d)
        return self.conv(edge * p + (1 - edge) * i)


class PIDNet(nn.Module):
    """``m``/``n``: basic blocks per stage; ``planes``: base width (S 32, M/L 64)."""

    def __init__(self, num_classes: int = 19, m: int = 2, n: int = 3, planes: int = 64,
                 ppm_planes: int = 96, head_planes: int = 128) -> None:
        super().__init__()
        p = planes
        # I branch (context): a ResNet-like trunk to 1/64 with pyramid pooling.
        self.conv1 = stem(p)
        self.layer1 = make_layer(BasicBlock, p, p, m)
        self.layer2 = make_layer(BasicBlock, p, 2 * p, m, stride=2)
        self.layer3 = make_layer(BasicBlock, 2 * p, 4 * p, n, stride=2)
        self.layer4 = make_layer(BasicBlock, 4 * p, 8 * p, n, stride=2)
        self.layer5 = make_layer(Bottleneck, 8 * p, 8 * p, 2, stride=2)
        # P branch (detail) at 1/8, fed by the I branch through PagFM.
        self.compression3 = conv_bn(4 * p, 2 * p)
        self.compression4 = conv_bn(8 * p, 2 * p)
        self.pag3 = PagFM(2 * p, p)
        self.pag4 = PagFM(2 * p, p)
        self.layer3_ = make_layer(BasicBlock, 2 * p, 2 * p, m)
        self.layer4_ = make_layer(BasicBlock, 2 * p, 2 * p, m)
        self.layer5_ = make_layer(Bottleneck, 2 * p, 2 * p, 1)
        # D branch (boundaries) at 1/8.
        self.spp: nn.Module
        self.dfm: nn.Module
        if m == 2:  # PIDNet-S/M
            self.layer3_d = make_block(BasicBlock, 2 * p, p, no_relu=True)
            self.layer4_d = make_layer(Bottleneck, p, p, 1)
            self.diff3 = conv_bn(4 * p, p, 3)
            self.diff4 = conv_bn(8 * p, 2 * p, 3)
            self.spp = PAPPM(16 * p, ppm_planes, 4 * p)
            self.dfm = LightBag(4 * p, 4 * p)
        else:  # PIDNet-L
            self.layer3_d = make_block(BasicBlock, 2 * p, 2 * p, no_relu=True)
            self.layer4_d = make_block(BasicBlock, 2 * p, 2 * p, no_relu=True)
            self.diff3 = conv_bn(4 * p, 2 * p, 3)
            self.diff4 = conv_bn(8 * p, 2 * p, 3)
            self.spp = DAPPM(16 * p, ppm_planes, 4 * p)
            self.dfm = Bag(4 * p, 4 * p)
        self.layer5_d = make_layer(Bottleneck, 2 * p, 2 * p, 1)
        self.final_layer = SegmentHead(4 * p, head_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = torch.relu
        x = self.conv1(x)
        x = relu(self.layer2(relu(self.layer1(x))))
        size = x.shape[-2:]  # 1/8 of the input; the P and D branches stay here
        x_p = self.layer3_(x)
        x_d = self.layer3_d(x)
        x = relu(self.layer3(x))
        x_p = self.pag3(x_p, self.compression3(x))
        x_d = x_d + resize_to(self.diff3(x), size)
        x = relu(self.layer4(x))
        x_p = self.layer4_(relu(x_p))
        x_d = self.layer4_d(relu(x_d))
        x_p = self.pag4(x_p, self.compression4(x))
        x_d = x_d + resize_to(self.diff4(x), size)
        x_p = self.layer5_(relu(x_p))
        x_d = self.layer5_d(relu(x_d))
        x = resize_to(self.spp(self.layer5(x)), size)
        return self.final_layer(self.dfm(x_p, x, x_d))


# Training-only entries in the authors' checkpoints: auxiliary heads and loss buffers.
_PIDNET_TRAINING_ONLY = ("seghead_p.", "seghead_d.", "sem_loss.", "bd_loss.")


pidnet_key_filter = cityscapes_key_filter("PIDNet", _PIDNET_TRAINING_ONLY)
register_key_filter("pidnet", pidnet_key_filter)


def _meta(arch: str, params: str) -> ModelMeta:
    return cityscapes_meta(arch, "github.com/XuJiacong/PIDNet", params)


_DESC = "PIDNet-{} (CVPR 2023), Cityscapes 19 classes, authors' weights: {} val mIoU"


@register_model("pidnet_s", _meta("pidnet_s", "7.6M"), _DESC.format("S", "78.8"),
                checkpoint_format="pidnet", aliases=("pidnet-s", "pidnet_small"))
def pidnet_s(num_classes: int = 19) -> nn.Module:
    return PIDNet(num_classes, m=2, n=3, planes=32, ppm_planes=96, head_planes=128)


@register_model("pidnet_m", _meta("pidnet_m", "34.4M"), _DESC.format("M", "79.9"),
                checkpoint_format="pidnet", aliases=("pidnet-m", "pidnet_medium"))
def pidnet_m(num_classes: int = 19) -> nn.Module:
    return PIDNet(num_classes, m=2, n=3, planes=64, ppm_planes=96, head_planes=128)


@register_model("pidnet_l", _meta("pidnet_l", "36.9M"), _DESC.format("L", "80.9"),
                checkpoint_format="pidnet", aliases=("pidnet-l", "pidnet_large"))
def pidnet_l(num_classes: int = 19) -> nn.Module:
    return PIDNet(num_classes, m=3, n=4, planes=64, ppm_planes=112, head_planes=256)


__all__ = ["PIDNet", "pidnet_key_filter", "pidnet_l", "pidnet_m", "pidnet_s"]
