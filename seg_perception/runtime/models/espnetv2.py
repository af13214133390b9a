"""ESPNetv2 (Mehta et al., CVPR 2019) segmentation network, width s=2.0, EdgeNets layout.

Written from the paper and the facts of the official implementation (github.com/sacmehta/
EdgeNets at commit 2b232d3: ``model/segmentation/espnetv2.py`` on the ``EESPNet`` base net of
``model/classification/espnetv2.py``): module names, channel plans, kernel/dilation choices,
the input-reinforcement shortcuts and ``align_corners=True`` resizes all match, so the
authors' Cityscapes checkpoint (a plain state_dict) loads strictly with its own key names, no
key mapping.

Encoder (the ImageNet base net without its level 5 and classifier): a strided 3x3 CBR, then
three down-samplers (average pool || strided EESP block, plus a projection of the pooled
input image) and 3 + 7 EESP blocks (reduce with a grouped 1x1, four depth-wise dilated 3x3
branches fused hierarchically, grouped 1x1 expand, residual). Decoder: efficient pyramid
pooling at 1/16, then three times: upsample x2, add a gated projection of the encoder's skip,
BN+PReLU, pyramid pooling; the last one has 20 outputs at 1/2 of the input.

Two departures from the official forward, both exact where the official model runs: the
authors' final ``interpolate(..., align_corners=True)`` to the input size is left to the
engine (which upsamples the stride-2 logits as it does every model's), and the decoder's x2
upsampling targets the skip's size, which is the same thing for sides divisible by 16 (the
official model needs those; ours also runs on other sizes).

``espnetv2_camvid`` is the same network, 20-way classifier included, ending in a fixed
grouping (:class:`.class_map.GroupLogSumExp`): each CamVid class's logit is the logsumexp of
its Cityscapes classes' logits (:data:`.class_map.CITYSCAPES_TO_CAMVID`). Its state_dict is
the official checkpoint's, key for key, so the authors' file loads into it strictly and the
fresh model is exactly the mapped zero-shot model (52.0 % mIoU on CamVid drive 0006R0 at
704x528), the score fine-tuning starts from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.runtime.datasets_info import (
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
)
from seg_perception.runtime.models.class_map import (
    CITYSCAPES_TO_CAMVID,
    GroupLogSumExp,
    class_sources,
)
from seg_perception.runtime.models.meta import ModelMeta, camvid_meta
from seg_perception.runtime.models.registry import register_key_filter, register_model
from seg_perception.runtime.models.state import CheckpointError, strip_prefixes

# Feature widths of EESPNet at s=2.0 (levels 1-4; level 5 is not part of the segmenter).
WIDTHS_S2 = (32, 128, 256, 512)
LEVEL3_BLOCKS, LEVEL4_BLOCKS = 3, 7
BRANCHES = 4
INPUT_CHANNELS = 3  # the pooled RGB input fed to every down-sampler
# Decoder widths for Cityscapes (EdgeNets: base 16 -> 64, 48, 32 before the classifier).
DECODER_WIDTHS = (64, 48, 32)
# The pyramid's projection width: min(classes // 2, 16) for the 20 Cityscapes outputs. A
# re-headed model keeps 10 so every decoder tensor of the Cityscapes weights still fits.
PYRAMID_WIDTH = 10
PYRAMID_SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)


def _up(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class ConvBnAct(nn.Module):
    """Conv (no bias) + BN + PReLU, attributes ``conv``/``bn``/``act`` (EESP's layout)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ConvBn(nn.Module):
    """Conv (no bias) + BN, no activation (EESP's expansion and the input projection)."""

    def __init__(self, cin: int, cout: int, k: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, 1, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class BnAct(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class DepthwiseDilated(nn.Module):
    """One EESP branch: a depth-wise 3x3 with dilation ``d`` (attribute ``conv``)."""

    def __init__(self, channels: int, stride: int, d: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride, d, dilation=d, groups=channels,
                              bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def branch_dilations(branches: int, receptive_limit: int) -> list[int]:
    """Dilations of EESP's branches: kernel sizes 3, 5, 7, ... (3 once past the limit),
    sorted, each an effective size of a 3x3 with dilation (size - 1) / 2."""
    sizes = sorted(3 + 2 * i if 3 + 2 * i <= receptive_limit else 3 for i in range(branches))
    return [(s - 1) // 2 for s in sizes]


class EESP(nn.Module):
    """Reduce (grouped 1x1) -> split into dilated depth-wise branches -> hierarchical feature
    fusion (each branch adds the previous one's output) -> BN+PReLU -> grouped 1x1 expand.

    A strided block returns the expansion as is (its down-sampler adds and activates);
    otherwise the input is added back and PReLU applied.
    """

    def __init__(self, cin: int, cout: int, stride: int, branches: int, limit: int) -> None:
        super().__init__()
        width = cout // branches
        if width * branches != cout:
            raise ValueError(f"EESP: {cout} outputs do not split into {branches} branches")
        self.stride = stride
        self.proj_1x1 = ConvBnAct(cin, width, 1, groups=branches)
        self.spp_dw = nn.ModuleList(
            DepthwiseDilated(width, stride, d) for d in branch_dilations(branches, limit))
        self.conv_1x1_exp = ConvBn(cout, cout, 1, groups=branches)
        self.br_after_cat = BnAct(cout)
        self.module_act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.proj_1x1(x)
        outs = [self.spp_dw[0](reduced)]
        for branch in self.spp_dw[1:]:
            outs.append(branch(reduced) + outs[-1])
        y = self.conv_1x1_exp(self.br_after_cat(torch.cat(outs, 1)))
        if self.stride == 2:
            return y
        if y.shape == x.shape:
            y = y + x
        return self.module_act(y)


class DownSampler(nn.Module):
    """Halve the resolution: [avg-pool(x), strided EESP(x)] + a projection of the RGB input
    pooled to the same size (input reinforcement), then PReLU."""

    def __init__(self, cin: int, cout: int, limit: int) -> None:
        super().__init__()
        self.eesp = EESP(cin, cout - cin, 2, BRANCHES, limit)
        self.inp_reinf = nn.Sequential(
            ConvBnAct(INPUT_CHANNELS, INPUT_CHANNELS, 3), ConvBn(INPUT_CHANNELS, cout, 1))
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, 3, 2, 1)
        y = torch.cat([pooled, self.eesp(x)], 1)
        # Pool the image with the same 3x3/2 average pool until it has the feature's size
        # (the official loop, which compares heights only).
        while image.shape[2] > pooled.shape[2]:
            image = F.avg_pool2d(image, 3, 2, 1)
        return self.act(y + self.inp_reinf(image))


class EESPNetEncoder(nn.Module):
    """EESPNet levels 1-4 at s=2.0 (attribute names of EdgeNets' ``base_net``)."""

    def __init__(self, widths: tuple[int, int, int, int] = WIDTHS_S2) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.level1 = ConvBnAct(3, w1, 3, stride=2)
        self.level2_0 = DownSampler(w1, w2, limit=13)
        self.level3_0 = DownSampler(w2, w3, limit=11)
        self.level3 = nn.ModuleList(EESP(w3, w3, 1, BRANCHES, 9) for _ in range(LEVEL3_BLOCKS))
        self.level4_0 = DownSampler(w3, w4, limit=9)
        self.level4 = nn.ModuleList(EESP(w4, w4, 1, BRANCHES, 7) for _ in range(LEVEL4_BLOCKS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        l1 = self.level1(x)
        l2 = self.level2_0(l1, x)
        l3 = self.level3_0(l2, x)
        for block in self.level3:
            l3 = block(l3)
        l4 = self.level4_0(l3, x)
        for block in self.level4:
            l4 = block(l4)
        return l1, l2, l3, l4


class _CBRSeq(nn.Module):
    """Conv + BN + PReLU held in ``cbr`` (a Sequential), the decoder's layout."""

    def __init__(self, cin: int, cout: int, k: int, groups: int = 1) -> None:
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(cin, cout, k, 1, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.PReLU(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbr(x)


class _BRSeq(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.br = nn.Sequential(nn.BatchNorm2d(channels), nn.PReLU(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.br(x)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class PyramidPool(nn.Module):
    """Efficient pyramid pooling: project, one depth-wise 3x3 per scale (2, 1.5, 1, 0.5, 0.1;
    at least 5 pixels a side) resized back, BN+PReLU, shuffle, grouped 3x3, 1x1 out."""

    def __init__(self, cin: int, proj: int, cout: int, last: bool = False) -> None:
        super().__init__()
        n = len(PYRAMID_SCALES)
        self.projection_layer = _CBRSeq(cin, proj, 1)
        self.stages = nn.ModuleList(
            nn.Conv2d(proj, proj, 3, 1, 1, groups=proj, bias=False) for _ in range(n))
        self.merge_layer = nn.Sequential(
            _BRSeq(proj * n), ChannelShuffle(n), _CBRSeq(proj * n, proj, 3, groups=proj),
            nn.Conv2d(proj, cout, 1, bias=last))
        self.br = None if last else _BRSeq(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection_layer(x)
        h, w = x.shape[2:]
        outs = []
        for scale, stage in zip(PYRAMID_SCALES, self.stages, strict=True):
            size = (max(math.ceil(h * scale), 5), max(math.ceil(w * scale), 5))
            if scale > 1.0:
                outs.append(F.adaptive_avg_pool2d(stage(_up(x, size)), (h, w)))
            elif scale < 1.0:
                outs.append(_up(stage(F.adaptive_avg_pool2d(x, size)), (h, w)))
            else:
                outs.append(stage(x))
        y = self.merge_layer(torch.cat(outs, 1))
        return y if self.br is None else self.br(y)


class GatedProjection(nn.Module):
    """Grouped 3x3 CBR of an encoder skip, scaled per channel by a sigmoid of its global
    average (EdgeNets' ``EfficientPWConv``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.wt_layer = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.Sigmoid())
        self.expansion_layer = _CBRSeq(cin, cout, 3, groups=math.gcd(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expansion_layer(x) * self.wt_layer(x)


class ESPNetv2Seg(nn.Module):
    """ESPNetv2 s=2.0 segmenter; logits at 1/2 of the input (sides divisible by 16).

    ``groups`` (optional) merges the ``num_classes`` classifier outputs into one logit per
    group (logsumexp, :class:`.class_map.GroupLogSumExp`; buffers only, nothing saved).
    """

    def __init__(self, num_classes: int = 20, pyramid_width: int = PYRAMID_WIDTH,
                 groups: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        w1, w2, w3, w4 = WIDTHS_S2
        d1, d2, d3 = DECODER_WIDTHS
        p = pyramid_width
        self.base_net = EESPNetEncoder()
        self.bu_dec_l1 = PyramidPool(w4, p, d1)
        self.bu_dec_l2 = PyramidPool(d1, p, d2)
        self.bu_dec_l3 = PyramidPool(d2, p, d3)
        self.bu_dec_l4 = PyramidPool(d3, p, num_classes, last=True)
        self.merge_enc_dec_l2 = GatedProjection(w3, d1)
        self.merge_enc_dec_l3 = GatedProjection(w2, d2)
        self.merge_enc_dec_l4 = GatedProjection(w1, d3)
        self.bu_br_l2 = nn.Sequential(nn.BatchNorm2d(d1), nn.PReLU(d1))
        self.bu_br_l3 = nn.Sequential(nn.BatchNorm2d(d2), nn.PReLU(d2))
        self.bu_br_l4 = nn.Sequential(nn.BatchNorm2d(d3), nn.PReLU(d3))
        self.merge = GroupLogSumExp(groups) if groups is not None else None
        self._init_weights()

    def _init_weights(self) -> None:
        # EdgeNets' initialisation: Kaiming (fan out) convs, unit BN, zero biases.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def classifier(self) -> nn.Conv2d:
        """The last 1x1 convolution (class scores; before the grouping, if any)."""
        return self.bu_dec_l4.merge_layer[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        l1, l2, l3, l4 = self.base_net(x)
        y = self.bu_dec_l1(l4)
        for skip, merge, br, dec in (
            (l3, self.merge_enc_dec_l2, self.bu_br_l2, self.bu_dec_l2),
            (l2, self.merge_enc_dec_l3, self.bu_br_l3, self.bu_dec_l3),
            (l1, self.merge_enc_dec_l4, self.bu_br_l4, self.bu_dec_l4),
        ):
            y = dec(br(merge(skip) + _up(y, skip.shape[2:])))
        return y if self.merge is None else self.merge(y)


ESPNETV2_SOURCE = ("github.com/sacmehta/EdgeNets (MIT), model/segmentation/model_zoo/espnetv2/"
                   "espnetv2_s_2.0_city_1024x512.pth, commit 2b232d3")
# EdgeNets' output order: the 19 Cityscapes train ids, then the void/background output.
ESPNETV2_CITY_CLASSES = (*CITYSCAPES_CLASSES, "background")
ESPNETV2_CITY_META = ModelMeta(
    arch="espnetv2_city",
    num_classes=len(ESPNETV2_CITY_CLASSES),
    class_names=ESPNETV2_CITY_CLASSES,
    palette=(*CITYSCAPES_PALETTE, (0, 0, 0)),
    drivable_classes=(0,),
    input_size=(1024, 512),  # the authors' training and test size for this checkpoint
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    output_stride=2,
    dataset="cityscapes",
    ignore_index=255,
    extra={"source": ESPNETV2_SOURCE, "licence": "MIT", "paper_params": "0.79M",
           "input_divisor": 16, "background_class": 19},
)


@register_model("espnetv2_city", ESPNETV2_CITY_META,
                "ESPNetv2 s=2.0 (CVPR 2019), Cityscapes 19 classes + background, authors' "
                "weights (EdgeNets, MIT): 66.2 test mIoU at 1024x512",
                checkpoint_format="espnetv2", aliases=("espnetv2",))
def espnetv2_city(num_classes: int = 20) -> nn.Module:
    return ESPNetv2Seg(num_classes)


CLASSIFIER_KEYS = ("bu_dec_l4.merge_layer.3.weight", "bu_dec_l4.merge_layer.3.bias")
#: For each CamVid class, the EdgeNets outputs whose logsumexp is its logit.
CAMVID_GROUPS = class_sources(ESPNETV2_CITY_CLASSES, CAMVID_CLASSES, CITYSCAPES_TO_CAMVID)


def espnetv2_camvid_key_filter(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EdgeNets' Cityscapes weights (or a CamVid-trained ``espnetv2_camvid``) as they are.

    The model keeps the 20-way classifier, so only its size is checked: an 11-row file is
    the earlier re-headed layout (one classifier row per CamVid class), which cannot be
    read as a grouping of 20 outputs.
    """
    state = strip_prefixes(state)
    rows = state[CLASSIFIER_KEYS[0]].shape[0] if CLASSIFIER_KEYS[0] in state else None
    if rows not in (None, len(ESPNETV2_CITY_CLASSES)):
        old = " (11 rows: the earlier re-headed layout)" if rows == len(CAMVID_CLASSES) else ""
        raise CheckpointError(
            f"ESPNetv2 classifier with {rows} classes{old}: espnetv2_camvid keeps the "
            f"{len(ESPNETV2_CITY_CLASSES)}-class Cityscapes classifier (EdgeNets' file or a "
            "checkpoint of this model)")
    return state


register_key_filter("espnetv2_camvid", espnetv2_camvid_key_filter)

# 704x528: the zero-shot Cityscapes model scores 52.0 % on CamVid drive 0006R0 at this input,
# 47.6 % at 480x352 (`seg-perception eval --split train:0006R0 --input-size ...`).
ESPNETV2_CAMVID_META = camvid_meta("espnetv2_camvid", (704, 528), output_stride=2).replace(
    extra={"source": "fine-tuned from " + ESPNETV2_SOURCE, "licence": "MIT",
           "input_divisor": 16, "class_map": "cityscapes -> camvid (logsumexp groups)"})


@register_model("espnetv2_camvid", ESPNETV2_CAMVID_META,
                "ESPNetv2 s=2.0, Cityscapes classifier grouped into CamVid's 11 classes "
                "(logsumexp); --init-from the Cityscapes weights starts at the zero-shot score",
                checkpoint_format="espnetv2_camvid", strict_init=True,
                shipped_weights="espnetv2_camvid.safetensors")
def espnetv2_camvid(num_classes: int = 11) -> nn.Module:
    if num_classes != len(CAMVID_CLASSES):
        raise ValueError(f"espnetv2_camvid groups Cityscapes outputs into CamVid's "
                         f"{len(CAMVID_CLASSES)} classes, not {num_classes}")
    return ESPNetv2Seg(len(ESPNETV2_CITY_CLASSES), groups=CAMVID_GROUPS)


__all__ = ["CAMVID_GROUPS", "CLASSIFIER_KEYS", "ESPNETV2_CAMVID_META", "ESPNETV2_CITY_CLASSES",
           "ESPNETV2_CITY_META", "ESPNetv2Seg", "branch_dilations", "espnetv2_camvid",
           "espnetv2_camvid_key_filter", "espnetv2_city"]
