"""Building blocks shared by the PIDNet and DDRNet families (both descend from HRNet code).

Module and attribute names (``conv1``, ``bn1``, ``downsample``, ``scale0`` ... and the
positions inside ``nn.Sequential``) follow the authors' implementations exactly, because the
keys of their published state_dicts are derived from them. Everything here is plain PyTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.runtime.models.state import CheckpointError, KeyFilter, strip_prefixes


def resize_to(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=False``, as every official model here uses."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def init_weights(module: nn.Module) -> None:
    """He init for convs, unit BN: the authors' initialisation for training from scratch."""
    for mod in module.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) + BN as ``Sequential(0: conv, 1: bn)``: the authors' projection layout."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)
    )


def bn_relu_conv(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    """Pre-activation unit ``Sequential(0: bn, 1: relu, 2: conv)`` used by DAPPM/PAPPM."""
    return nn.Sequential(
        nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False),
    )


def stem(planes: int) -> nn.Sequential:
    """Two stride-2 3x3 convs (with bias, as in the originals) to 1/4 resolution."""
    return nn.Sequential(
        nn.Conv2d(3, planes, 3, 2, 1), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
        nn.Conv2d(planes, planes, 3, 2, 1), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block; ``no_relu`` leaves the sum un-activated for a following fusion."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, no_relu: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else F.relu(out)


class Bottleneck(nn.Module):
    """Bottleneck with expansion 2 (not ResNet's 4); un-activated output by default."""

    expansion = 2

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, no_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else F.relu(out)


Block = type[BasicBlock] | type[Bottleneck]


def make_block(block: Block, cin: int, planes: int, stride: int = 1,
               no_relu: bool | None = None) -> nn.Module:
    """One block with a 1x1 conv+BN projection where the shape changes."""
    downsample = None
    if stride != 1 or cin != planes * block.expansion:
        downsample = conv_bn(cin, planes * block.expansion, 1, stride)
    if no_relu is None:
        return block(cin, planes, stride, downsample)
    return block(cin, planes, stride, downsample, no_relu=no_relu)


def make_layer(block: Block, cin: int, planes: int, blocks: int,
               stride: int = 1) -> nn.Sequential:
    """A stage as the authors build it: the first block keeps its class default activation,
    later ones are activated except the last, which feeds a fusion un-activated."""
    layers = [make_block(block, cin, planes, stride)]
    cin = planes * block.expansion
    for i in range(1, blocks):
        layers.append(block(cin, planes, 1, None, no_relu=(i == blocks - 1)))
    return nn.Sequential(*layers)


class SegmentHead(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv1x1 classifier (authors' ``segmenthead``)."""

    def __init__(self, cin: int, mid: int, num_classes: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, mid, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(self.bn1(x)))
        return self.conv2(F.relu(self.bn2(x)))


def _pool_branch(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    # Sequential(0: pool, 1: bn, 2: relu, 3: conv): the key layout of the released weights.
    pool: nn.Module = (nn.AdaptiveAvgPool2d((1, 1)) if kernel == 0
                       else nn.AvgPool2d(kernel, stride, kernel // 2))
    return nn.Sequential(pool, *bn_relu_conv(cin, cout))


class DAPPM(nn.Module):
    """Deep Aggregation Pyramid Pooling (DDRNet): pooled context at 1/2, 1/4, 1/8 and global
    scale, each refined hierarchically with the previous one, then compressed."""

    def __init__(self, cin: int, branch: int, cout: int) -> None:
        super().__init__()
        self.scale1 = _pool_branch(cin, branch, 5, 2)
        self.scale2 = _pool_branch(cin, branch, 9, 4)
        self.scale3 = _pool_branch(cin, branch, 17, 8)
        self.scale4 = _pool_branch(cin, branch, 0, 0)
        self.scale0 = bn_relu_conv(cin, branch)
        self.process1 = bn_relu_conv(branch, branch, 3)
        self.process2 = bn_relu_conv(branch, branch, 3)
        self.process3 = bn_relu_conv(branch, branch, 3)
        self.process4 = bn_relu_conv(branch, branch, 3)
        self.compression = bn_relu_conv(branch * 5, cout)
        self.shortcut = bn_relu_conv(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = [self.scale0(x)]
        pairs = ((self.scale1, self.process1), (self.scale2, self.process2),
                 (self.scale3, self.process3), (self.scale4, self.process4))
        for scale, process in pairs:
            feats.append(process(resize_to(scale(x), size) + feats[-1]))
        return self.compression(torch.cat(feats, 1)) + self.shortcut(x)


class PAPPM(nn.Module):
    """Parallel variant of DAPPM (PIDNet-S/M): the four pooled branches are refined at once
    by one grouped 3x3 conv instead of a chain, which parallelises better."""

    def __init__(self, cin: int, branch: int, cout: int) -> None:
        super().__init__()
        self.scale1 = _pool_branch(cin, branch, 5, 2)
        self.scale2 = _pool_branch(cin, branch, 9, 4)
        self.scale3 = _pool_branch(cin, branch, 17, 8)
        self.scale4 = _pool_branch(cin, branch, 0, 0)
        self.scale0 = bn_relu_conv(cin, branch)
        self.scale_process = bn_relu_conv(branch * 4, branch * 4, 3, groups=4)
        self.compression = bn_relu_conv(branch * 5, cout)
        self.shortcut = bn_relu_conv(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        base = self.scale0(x)
        pooled = [resize_to(s(x), size) + base
                  for s in (self.scale1, self.scale2, self.scale3, self.scale4)]
        out = self.scale_process(torch.cat(pooled, 1))
        return self.compression(torch.cat([base, out], 1)) + self.shortcut(x)


def check_segmentation_keys(state: dict[str, torch.Tensor], family: str,
                            head: str = "final_layer.") -> None:
    """Refuse ImageNet-pretrained backbones with a clear message instead of a key list.

    The authors publish classification-pretrained files (for training initialisation) next
    to the segmentation weights; they hold no segmentation head and cannot label pixels.
    """
    if any(k.startswith(head) for k in state):
        return
    classifier = [k for k in state if k.split(".")[0] in ("linear", "fc", "last_layer",
                                                          "classifier", "down5")]
    kind = ("an ImageNet-pretrained classification backbone" if classifier
            else "not a segmentation checkpoint of this family")
    raise CheckpointError(
        f"this {family} file looks like {kind}: it has no segmentation head ({head}*)"
        f"{' but classifier keys such as ' + classifier[0] if classifier else ''}. "
        "Backbone files only initialise training; use the authors' Cityscapes-finetuned "
        "checkpoint (or one of ours) for inference."
    )


def drop_keys(state: dict[str, torch.Tensor],
              prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Remove training-only entries (loss buffers, auxiliary heads) by key prefix."""
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


__all__ = [
    "DAPPM",
    "PAPPM",
    "BasicBlock",
    "Bottleneck",
    "SegmentHead",
    "bn_relu_conv",
    "check_segmentation_keys",
    "conv_bn",
    "drop_keys",
    "make_block",
    "make_layer",
    "resize_to",
    "stem",
]


def cityscapes_key_filter(family: str, training_only: tuple[str, ...]) -> KeyFilter:
    """Key filter for the Cityscapes families: strip wrapper prefixes, drop training-only
    entries, refuse ImageNet backbones."""

    def key_filter(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        state = drop_keys(strip_prefixes(state), training_only)
        check_segmentation_keys(state, family)
        return state

    key_filter.__doc__ = f"{family} authors' layout -> ours (drops {', '.join(training_only)})"
    return key_filter
