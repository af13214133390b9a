"""TwinLiteNet (Che et al., MAPR 2023): drivable area and lane lines from one 0.44 M encoder.

An ESPNet-C encoder (dilated-convolution pyramids, PReLU, BN eps 1e-3) to 1/8 resolution
with dual attention (position + channel, as in DANet), and two small transposed-conv decoders
back to full input resolution: ``classifier_1`` gives the drivable-area logits (2 maps),
``classifier_2`` the lane-line logits (2 maps). Written from the paper and the facts of the
official code (github.com/chequanghuy/TwinLiteNet, ``model/TwinLite.py``; the released
``pretrained/best.pth`` is a ``DataParallel`` state_dict, keys prefixed ``module.``).

The authors' demo (``test_image.py``) reads BGR with OpenCV, resizes to 640x360
(``cv2.resize``, bilinear), flips to RGB and divides by 255 - no mean/std; it paints lane
pixels (lane head argmax 1) over drivable pixels (drivable head argmax 1). ``forward`` here
returns ``(scores, drivable_scores)``: ``drivable_scores`` is the drivable head's logits and
``scores`` has three classes (0 background, 1 drivable area, 2 lane line) whose argmax is
exactly that picture (see :func:`combine_heads`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.runtime.models.meta import ModelMeta
from seg_perception.runtime.models.registry import register_key_filter, register_model
from seg_perception.runtime.models.state import strip_prefixes


class CBR(nn.Module):
    """Conv (no bias) + BN (eps 1e-3) + PReLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class BR(nn.Module):
    """BN (eps 1e-3) + PReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=1e-3)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class Conv(nn.Module):
    """A bare (optionally dilated) conv wrapped as ``.conv``, the official key layout."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        pad = (k - 1) // 2 * dilation
        self.conv = nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _ESP(nn.Module):
    """Reduce - split into dilations 1, 2, 4, 8, 16 - hierarchical sum - concatenate.

    The hierarchical sum (d2, d2+d4, ...) removes the gridding of large dilations.
    """

    def __init__(self, cin: int, cout: int, reduce_k: int, stride: int) -> None:
        super().__init__()
        n = max(cout // 5, 1)
        n1 = max(cout - 4 * n, 1)
        self.c1 = Conv(cin, n, reduce_k, stride)
        self.d1 = Conv(n, n1, 3, 1, 1)
        self.d2 = Conv(n, n, 3, 1, 2)
        self.d4 = Conv(n, n, 3, 1, 4)
        self.d8 = Conv(n, n, 3, 1, 8)
        self.d16 = Conv(n, n, 3, 1, 16)

    def pyramid(self, x: torch.Tensor) -> torch.Tensor:
        r = self.c1(x)
        add1 = self.d2(r)
        add2 = add1 + self.d4(r)
        add3 = add2 + self.d8(r)
        add4 = add3 + self.d16(r)
        return torch.cat([self.d1(r), add1, add2, add3, add4], 1)


class DownSamplerB(_ESP):
    """Strided ESP module (halves resolution)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, 2)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pyramid(x)))


class DilatedParllelResidualBlockB(_ESP):
    """Residual ESP module (same resolution and width)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 1, 1)
        self.bn = BR(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x + self.pyramid(x))


class PAM(nn.Module):
    """Position attention (self-attention over all pixels of the 1/8 map), scaled by a
    learned ``gamma`` that starts at 0 so the block begins as identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // 8, 1)
        self.key_conv = nn.Conv2d(channels, channels // 8, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query_conv(x).flatten(2).transpose(1, 2)  # (B, HW, C/8)
        k = self.key_conv(x).flatten(2)  # (B, C/8, HW)
        attn = torch.softmax(torch.bmm(q, k), dim=-1)  # (B, HW, HW)
        v = self.value_conv(x).flatten(2)  # (B, C, HW)
        out = torch.bmm(v, attn.transpose(1, 2)).view(b, c, h, w)
        return self.gamma * out + x


class CAM(nn.Module):
    """Channel attention (DANet): channels re-weighted by their mutual (dis)similarity."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.flatten(2)  # (B, C, HW)
        energy = torch.bmm(flat, flat.transpose(1, 2))  # (B, C, C)
        energy = energy.max(dim=-1, keepdim=True).values - energy
        out = torch.bmm(torch.softmax(energy, dim=-1), flat).view(b, c, h, w)
        return self.gamma * out + x


class UPx2(nn.Module):
    """2x transposed conv + BN (eps 1e-3) + PReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.deconv(x)))


def _avg_down(x: torch.Tensor, times: int) -> torch.Tensor:
    # The authors' InputProjectionA: a pyramid of 3x3/2 average pools (no parameters).
    for _ in range(times):
        x = F.avg_pool2d(x, 3, 2, 1)
    return x


class ESPNetEncoder(nn.Module):
    """ESPNet-C with ``p``/``q`` residual ESP modules at 1/4 and 1/8, then dual attention."""

    def __init__(self, p: int = 2, q: int = 3) -> None:
        super().__init__()
        self.level1 = CBR(3, 16, 3, 2)
        self.b1 = CBR(16 + 3, 19, 3)
        self.level2_0 = DownSamplerB(16 + 3, 64)
        self.level2 = nn.ModuleList([DilatedParllelResidualBlockB(64, 64) for _ in range(p)])
        self.b2 = CBR(128 + 3, 131, 3)
        self.level3_0 = DownSamplerB(128 + 3, 128)
        self.level3 = nn.ModuleList([DilatedParllelResidualBlockB(128, 128) for _ in range(q)])
        self.b3 = CBR(256, 32, 3)
        self.sa = PAM(32)
        self.sc = CAM()
        self.conv_sa = CBR(32, 32, 3)
        self.conv_sc = CBR(32, 32, 3)
        self.classifier = CBR(32, 32, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out0 = self.b1(torch.cat([self.level1(x), _avg_down(x, 1)], 1))
        out1_0 = self.level2_0(out0)
        out1 = out1_0
        for layer in self.level2:
            out1 = layer(out1)
        out1_cat = self.b2(torch.cat([out1, out1_0, _avg_down(x, 2)], 1))
        out2_0 = self.level3_0(out1_cat)
        out2 = out2_0
        for layer in self.level3:
            out2 = layer(out2)
        feat = self.b3(torch.cat([out2_0, out2], 1))
        return self.classifier(self.conv_sa(self.sa(feat)) + self.conv_sc(self.sc(feat)))


def combine_heads(da: torch.Tensor, ll: torch.Tensor) -> torch.Tensor:
    """Three-class scores (background, drivable, lane) from the two 2-way heads.

    With ``a`` the lane margin (``ll[1] - ll[0]``) and ``b`` the drivable margin, the scores
    are ``(0, b, a + max(b, 0))``. Their argmax (first index on ties, like ``torch.max``) is
    exactly the official picture: lane iff ``a > 0``; else drivable iff ``b > 0``; else
    background. Their softmax is the "lane first, then drivable" probability model
    (P(lane) = sigmoid(a), the rest split by sigmoid(b)) with the lane odds measured against
    the likelier of the other two classes instead of their sum (which differ by at most a
    factor 2) - the change that makes the argmax agree - so the winning probability is a
    sensible confidence: it is near 1 only when both heads are sure.

    Computed in float32 whatever the heads' precision, and a positive ``a`` too small to
    survive the addition is raised to a few ulps, so rounding cannot turn a lane pixel into
    a tie that the drivable class would win. Only elementwise ops: exports to ONNX.
    """
    da, ll = da.float(), ll.float()
    a = ll[:, 1:2] - ll[:, 0:1]  # the sign of a difference is exact in floating point
    b = da[:, 1:2] - da[:, 0:1]
    m = torch.relu(b)
    a = torch.where(a > 0, torch.maximum(a, m * 2.0**-21 + 1e-30), a)
    return torch.cat([torch.zeros_like(b), b, m + a], dim=1)


class TwinLiteNet(nn.Module):
    """Encoder + two decoders; outputs at the input's resolution (sides divisible by 8)."""

    def __init__(self, num_classes: int = 3, p: int = 2, q: int = 3) -> None:
        super().__init__()
        if num_classes != 3:
            raise ValueError("TwinLiteNet has fixed classes: background, drivable area, lane")
        self.encoder = ESPNetEncoder(p, q)
        self.up_1_1 = UPx2(32, 16)
        self.up_2_1 = UPx2(16, 8)
        self.up_1_2 = UPx2(32, 16)
        self.up_2_2 = UPx2(16, 8)
        self.classifier_1 = UPx2(8, 2)
        self.classifier_2 = UPx2(8, 2)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The official outputs: (drivable-area logits, lane-line logits), each (N, 2, H, W)."""
        feat = self.encoder(x)
        da = self.classifier_1(self.up_2_1(self.up_1_1(feat)))
        ll = self.classifier_2(self.up_2_2(self.up_1_2(feat)))
        return da, ll

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        da, ll = self.heads(x)
        return combine_heads(da, ll), da


def twinlitenet_key_filter(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released weights are a ``DataParallel`` state_dict: strip ``module.``."""
    return strip_prefixes(state, ("module.",))


register_key_filter("twinlitenet", twinlitenet_key_filter)

TWINLITENET_CLASSES = ("background", "drivable area", "lane line")
# Ours, not the demo's (which paints drivable blue and lanes green on the BGR frame): black
# background, green drivable area, red lane lines - readable over road scenes.
TWINLITENET_PALETTE = ((0, 0, 0), (0, 190, 80), (230, 30, 30))

TWINLITENET_META = ModelMeta(
    arch="twinlitenet",
    num_classes=3,
    class_names=TWINLITENET_CLASSES,
    palette=TWINLITENET_PALETTE,
    drivable_classes=(1,),
    input_size=(640, 360),
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    output_stride=1,
    dataset="bdd100k",
    ignore_index=255,
    extra={"source": "github.com/chequanghuy/TwinLiteNet", "paper_params": "0.44M",
           "drivable_head": True},
)


@register_model("twinlitenet", TWINLITENET_META,
                "TwinLiteNet (MAPR 2023), BDD100K drivable area + lane lines, 0.44 M params",
                checkpoint_format="twinlitenet", aliases=("twinlite",))
def twinlitenet(num_classes: int = 3) -> nn.Module:
    return TwinLiteNet(num_classes)


__all__ = ["TWINLITENET_META", "TwinLiteNet", "combine_heads", "twinlitenet",
           "twinlitenet_key_filter"]
