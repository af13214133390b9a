"""MobileNetV1/V2 backbones matching the Coral ImageNet tflite graphs, and FPN students on them.

Why: a fast CamVid student starts from ImageNet features instead of from scratch. The
ImageNet weights are Google's quantised classifiers of ``../shared/models/coral``
(google-coral/test_data, Apache-2.0): ``mobilenet_v1_0.5_160_quant``,
``mobilenet_v1_0.75_192_quant`` and ``mobilenet_v2_1.0_224_quant``, uint8 graphs with
BatchNorm folded into each convolution. Our networks repeat their layers one for one (Howard
et al. 2017, width multiplier; Sandler et al. 2018, inverted residuals with linear
bottlenecks; ReLU6 where the graph fuses RELU6), and :func:`load_tflite_backbone`
dequantises every convolution into them strictly, in graph order.

BatchNorm choice: each convolution is ``Conv2d(bias=False) + BatchNorm2d`` so the student can
fine-tune normalisation on CamVid. A converted BN starts as the identity plus the folded bias
(weight 1, running mean 0, running variance ``1 - eps``), exact in eval mode.
:func:`calibrate_batchnorm` then sets each BN's running statistics from real frames and
rescales its affine parameters so it is still the same function in eval mode *and* close to
it in training mode (batch statistics ~ running ones), so the first training steps do not
destroy the ImageNet features; ``train --init-from X.tflite`` does both.

Padding: TF "SAME" pads a stride-2 3x3 convolution on an even side by 0 before and 1 after;
PyTorch's symmetric ``padding=1`` shifts the sampling grid by one pixel per stride.
``tf_padding=True`` reproduces the graph exactly and the students use it: with symmetric
padding the converted classifiers agree with the interpreter's top-1 on only 16-45 % of the
check images (against 88-98 % with TF padding), i.e. the shift breaks the ImageNet features.

Input: the graphs take uint8 RGB with scale 1/128 and zero point 128, i.e.
``(x - 128) / 128``; on the 0..1 scale of :class:`.meta.ModelMeta` that is mean = std =
128/255 per channel (:data:`TFLITE_MEAN`, :data:`TFLITE_STD`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seg_perception.runtime.models.meta import ModelMeta, camvid_meta
from seg_perception.runtime.models.registry import register_model
from seg_perception.runtime.models.state import CheckpointError
from seg_perception.runtime.models.tflite_reader import TFLiteGraph, TFLiteTensor, read_tflite

log = logging.getLogger(__name__)

TFLITE_MEAN = (128 / 255,) * 3
TFLITE_STD = (128 / 255,) * 3
IMAGENET_CLASSES = 1001  # TF-slim's ImageNet head: 0 = background, 1..1000 = the classes

# MobileNetV1 after the stem: (output channels at width 1.0, stride) of the 13 separable blocks.
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
             (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
# MobileNetV2: (expansion t, channels c, repeats n, first stride s).
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))


def _divisible(v: float, divisor: int = 8) -> int:
    """TF-slim's channel rounding for width multipliers (nearest multiple of 8, >= 90 %)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class ConvBNAct(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU6 or nothing: one CONV_2D/DEPTHWISE_CONV_2D of tflite."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True, tf_padding: bool = False) -> None:
        super().__init__()
        self.tf_same = tf_padding and stride > 1 and k > 1
        self.conv = nn.Conv2d(cin, cout, k, stride, 0 if self.tf_same else k // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act: nn.Module = nn.ReLU6(inplace=True) if act else nn.Identity()

    @property
    def depthwise(self) -> bool:
        return self.conv.groups > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:
            x = F.pad(x, _same_pad(x, self.conv.kernel_size[0], self.conv.stride[0]))
        return self.act(self.bn(self.conv(x)))


def _same_pad(x: torch.Tensor, k: int, s: int) -> tuple[int, int, int, int]:
    pads = []
    for n in (x.shape[3], x.shape[2]):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)  # type: ignore[return-value]


class _Separable(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int, tf_padding: bool) -> None:
        super().__init__(ConvBNAct(cin, cin, 3, stride, cin, tf_padding=tf_padding),
                         ConvBNAct(cin, cout, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1 (t > 1), depthwise 3x3, linear 1x1 projection, residual."""

    def __init__(self, cin: int, cout: int, stride: int, t: int, tf_padding: bool) -> None:
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = [] if t == 1 else [ConvBNAct(cin, hidden, 1)]
        layers += [ConvBNAct(hidden, hidden, 3, stride, hidden, tf_padding=tf_padding),
                   ConvBNAct(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class _Backbone(nn.Module):
    """Common part: ``features`` (a Sequential), taps at strides 4/8/16/32, optional head."""

    features: nn.Sequential
    taps: tuple[int, int, int, int]  # indices of ``features`` whose outputs are the pyramid
    channels: tuple[int, int, int, int]
    classifier: nn.Conv2d | None

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
            if i == self.taps[-1]:
                break
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``(N, 1001)`` (needs ``num_classes``); class 0 is background."""
        if self.classifier is None:
            raise RuntimeError("backbone built without a classifier")
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(x).flatten(1)

    def tflite_layers(self) -> list[nn.Module]:
        """Our convolutions in the tflite graph's execution order (classifier last)."""
        layers: list[nn.Module] = [m for m in self.features.modules()
                                   if isinstance(m, ConvBNAct)]
        return layers + ([self.classifier] if self.classifier is not None else [])


class MobileNetV1(_Backbone):
    """MobileNetV1 with a width multiplier; ``num_classes=None`` drops the ImageNet head."""

    def __init__(self, width: float = 1.0, num_classes: int | None = IMAGENET_CLASSES,
                 tf_padding: bool = False) -> None:
        super().__init__()
        cin = _divisible(32 * width)
        layers: list[nn.Module] = [ConvBNAct(3, cin, 3, 2, tf_padding=tf_padding)]
        for c, s in V1_BLOCKS:
            cout = _divisible(c * width)
            layers.append(_Separable(cin, cout, s, tf_padding))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.taps = (3, 5, 11, 13)
        self.channels = tuple(_divisible(V1_BLOCKS[i - 1][0] * width)  # type: ignore[assignment]
                              for i in self.taps)
        self.classifier = nn.Conv2d(cin, num_classes, 1) if num_classes else None


class MobileNetV2(_Backbone):
    """MobileNetV2 (width 1.0); ``last_conv=False`` stops at the 320-channel block (a student
    does not need the 1x1 to 1280), ``num_classes=None`` drops the ImageNet head."""

    def __init__(self, num_classes: int | None = IMAGENET_CLASSES, last_conv: bool = True,
                 tf_padding: bool = False) -> None:
        super().__init__()
        cin = 32
        layers: list[nn.Module] = [ConvBNAct(3, cin, 3, 2, tf_padding=tf_padding)]
        ends = {}
        for t, c, n, s in V2_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t, tf_padding))
                cin = c
            ends[c] = len(layers) - 1
        self.has_last_conv = last_conv or bool(num_classes)
        if self.has_last_conv:
            layers.append(ConvBNAct(cin, 1280, 1))
            cin = 1280
        self.features = nn.Sequential(*layers)
        self.taps = (ends[24], ends[32], ends[96], ends[320])
        self.channels = (24, 32, 96, 320)
        self.classifier = nn.Conv2d(cin, num_classes, 1) if num_classes else None


# --- tflite conversion --------------------------------------------------------------------

def _weight(graph: TFLiteGraph, t: TFLiteTensor, depthwise: bool) -> torch.Tensor:
    w = t.dequantize()  # OHWI for CONV_2D, 1HW(C*m) for DEPTHWISE_CONV_2D, OI for FC
    if w.ndim == 4:
        w = w.transpose(3, 0, 1, 2) if depthwise else w.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(w))


def _bias(graph: TFLiteGraph, op_inputs: tuple[int, ...], where: str) -> torch.Tensor:
    x, w, b = (graph.tensors[i] for i in op_inputs[:3])
    if b.data is None:
        raise CheckpointError(f"{where}: bias tensor {b.name!r} has no data")
    if b.dtype is np.float32:
        return torch.from_numpy(b.data.astype(np.float32).copy())
    # int32 bias: real = q * input_scale * weight_scale (per output channel if per-channel).
    scale = np.float64(x.scale[0]) * w.scale.astype(np.float64)  # type: ignore[index,union-attr]
    if b.scale is not None and b.scale.size and not np.allclose(b.scale, scale, rtol=1e-3):
        raise CheckpointError(f"{where}: bias scale {b.scale[:3]} != input x weight scale "
                              f"{scale[:3]}")
    return torch.from_numpy((b.data.astype(np.float64) * scale).astype(np.float32))


def _set_identity_bn(bn: nn.BatchNorm2d, bias: torch.Tensor) -> None:
    with torch.no_grad():
        bn.weight.fill_(1.0)
        bn.bias.copy_(bias)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(1 - eps + eps) = x exactly
        bn.num_batches_tracked.zero_()


def load_tflite_backbone(model: nn.Module, path: str | Path) -> list[str]:
    """Fill ``model``'s MobileNet backbone from a Coral ImageNet ``.tflite``; strict.

    ``model`` is a :class:`MobileNetV1`/:class:`MobileNetV2` or a student holding one as
    ``.backbone``. Every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED of the graph is mapped,
    in order, onto exactly one of our convolutions, with kind, shape, stride and activation
    checked; the only graph layers that may stay unused are the ImageNet classifier (when the
    model has none) and MobileNetV2's final 1x1 to 1280 (when built without it), and they are
    named in the returned list. Anything else left over on either side raises
    :class:`CheckpointError`. Returns the names of the graph layers not loaded.
    """
    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, _Backbone):
        raise CheckpointError(f"{type(model).__name__} has no MobileNet backbone to load "
                              f"{path} into")
    graph = read_tflite(path)
    ops = [op for op in graph.ops
           if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    ours = backbone.tflite_layers()
    skipped: list[str] = []
    if backbone.classifier is None:  # the graph's last conv is the 1001-way head
        skipped.append(graph.tensors[ops.pop().inputs[1]].name)
    if isinstance(backbone, MobileNetV2) and not backbone.has_last_conv:
        skipped.append(graph.tensors[ops.pop().inputs[1]].name)
    if len(ops) != len(ours):
        raise CheckpointError(f"{path}: {len(ops)} convolutions in the graph, {len(ours)} in "
                              f"{type(backbone).__name__}: not this network")
    for n, (op, mod) in enumerate(zip(ops, ours, strict=True)):
        wt = graph.tensors[op.inputs[1]]
        where = f"{path}: layer {n} ({wt.name})"
        depthwise = op.name == "DEPTHWISE_CONV_2D"
        weight = _weight(graph, wt, depthwise)
        bias = _bias(graph, op.inputs, where)
        if op.name == "FULLY_CONNECTED":
            weight = weight.reshape(*weight.shape[:2], 1, 1)
        conv = mod.conv if isinstance(mod, ConvBNAct) else mod
        assert isinstance(conv, nn.Conv2d)
        if isinstance(mod, ConvBNAct):
            if mod.depthwise != depthwise:
                raise CheckpointError(f"{where}: {op.name} onto a "
                                      f"{'depthwise' if mod.depthwise else 'dense'} conv")
            act = "RELU6" if isinstance(mod.act, nn.ReLU6) else "NONE"
            if op.options.get("activation") != act:
                raise CheckpointError(f"{where}: activation {op.options.get('activation')} "
                                      f"vs ours {act}")
        if "stride" in op.options and tuple(op.options["stride"]) != tuple(conv.stride):
            raise CheckpointError(f"{where}: stride {op.options['stride']} vs ours "
                                  f"{tuple(conv.stride)}")
        if tuple(weight.shape) != tuple(conv.weight.shape):
            raise CheckpointError(f"{where}: weight {tuple(weight.shape)} vs ours "
                                  f"{tuple(conv.weight.shape)}")
        with torch.no_grad():
            conv.weight.copy_(weight)
            if isinstance(mod, ConvBNAct):
                _set_identity_bn(mod.bn, bias)
            else:
                assert conv.bias is not None
                conv.bias.copy_(bias)
    log.info("loaded %d tflite convolutions from %s%s", len(ops), path,
             f" (not used: {', '.join(skipped)})" if skipped else "")
    return skipped


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: Iterable[torch.Tensor]) -> int:
    """Give each backbone BN real running statistics without changing its eval-mode function.

    After :func:`load_tflite_backbone` a BN is ``y = x + b``. With the conv output's mean m
    and variance v over ``images`` (normalised ``(N, 3, H, W)`` batches), setting running
    statistics (m, v), weight ``sqrt(v + eps)`` and bias ``m + b`` keeps ``y = x + b`` in eval
    mode, while in training mode the batch statistics (close to m, v) give nearly the same
    function, so fine-tuning starts from the ImageNet features. Returns the BNs calibrated.
    """
    backbone = getattr(model, "backbone", model)
    mods = [m for m in backbone.modules() if isinstance(m, ConvBNAct)]
    sums: dict[int, list[torch.Tensor]] = {}
    hooks = []
    for i, m in enumerate(mods):
        def hook(_mod: nn.Module, _inp: object, out: torch.Tensor, i: int = i) -> None:
            o = out.double()
            s = [o.sum((0, 2, 3)), (o * o).sum((0, 2, 3)),
                 torch.tensor(o.numel() / o.shape[1], dtype=torch.float64)]
            sums[i] = s if i not in sums else [a + b for a, b in zip(sums[i], s, strict=True)]
        hooks.append(m.conv.register_forward_hook(hook))
    was_training = backbone.training
    backbone.eval()
    try:
        for x in images:
            if isinstance(backbone, _Backbone):
                backbone.forward_features(x) if backbone.classifier is None else backbone(x)
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was_training)
    for i, m in enumerate(mods):
        if i not in sums:
            continue
        s, ss, n = sums[i]
        mean = s / n
        var = (ss / n - mean * mean).clamp_min(0.0)
        bn = m.bn
        folded = bn.bias - bn.weight * bn.running_mean / torch.sqrt(bn.running_var + bn.eps)
        bn.running_mean.copy_(mean.float())
        bn.running_var.copy_(var.float())
        bn.weight.copy_(torch.sqrt(var + bn.eps).float())
        bn.bias.copy_(mean.float() + folded)
    return len(sums)


# --- students: backbone + LightFPN's decoder ----------------------------------------------

def _cbr(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


class MobileNetFPN(nn.Module):
    """ImageNet MobileNet encoder (strides 4-32) + LightFPN's top-down decoder at stride 4."""

    def __init__(self, backbone: _Backbone, num_classes: int, decoder: int = 64,
                 fine: int = 32) -> None:
        super().__init__()
        self.backbone = backbone
        c1, c2, c3, c4 = backbone.channels
        self.context = _cbr(c4, decoder)
        self.global_context = _cbr(c4, decoder)
        self.lateral3 = _cbr(c3, decoder)
        self.lateral2 = _cbr(c2, decoder)
        self.lateral1 = _cbr(c1, fine)
        self.smooth3 = _cbr(decoder, decoder, 3)
        self.smooth2 = _cbr(decoder, decoder, 3)
        self.reduce = _cbr(decoder, fine)
        self.smooth1 = _cbr(fine, fine, 3)
        self.classifier = nn.Conv2d(fine, num_classes, 1)
        for name, m in self.named_modules():
            if name.startswith("backbone"):
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3, x4 = self.backbone.forward_features(x)
        ctx = self.context(x4) + self.global_context(F.adaptive_avg_pool2d(x4, 1))
        y = self.smooth3(self.lateral3(x3) + _up(ctx, x3))
        y = self.smooth2(self.lateral2(x2) + _up(y, x2))
        y = self.smooth1(self.lateral1(x1) + _up(self.reduce(y), x1))
        return self.classifier(y)


def _student_meta(arch: str, source: str, input_size: tuple[int, int] = (480, 352)) -> ModelMeta:
    return camvid_meta(arch, input_size, output_stride=4).replace(
        mean=TFLITE_MEAN, std=TFLITE_STD,
        extra={"backbone_init": f"../shared/models/coral/{source} (google-coral/test_data, "
                                "Apache-2.0), ImageNet"})


_INIT = "; train --init-from {} loads the ImageNet backbone"


# 512x384: the default model's input, the largest size tried whose end-to-end time on a real
# CamVid frame stays within 1.35x LightFPN's (1.28x side by side; 608x448, the size it was
# trained for with scale 0.5-2 augmentation, took 1.70x). Chosen on speed alone.
@register_model("mnv1_fpn_050", _student_meta("mnv1_fpn_050", "mobilenet_v1_0.5_160_quant"
                                              ".tflite", (512, 384)),
                "MobileNetV1-0.5 (ImageNet) + FPN decoder, CamVid 11 classes, distilled from "
                "espnetv2_camvid (the default)"
                + _INIT.format("mobilenet_v1_0.5_160_quant.tflite"),
                shipped_weights="mnv1_fpn_050.safetensors")
def mnv1_fpn_050(num_classes: int = 11, **kwargs: object) -> nn.Module:
    backbone = MobileNetV1(0.5, None, tf_padding=True)
    return MobileNetFPN(backbone, num_classes, **kwargs)  # type: ignore[arg-type]


@register_model("mnv1_fpn_075", _student_meta("mnv1_fpn_075", "mobilenet_v1_0.75_192_quant"
                                              ".tflite"),
                "MobileNetV1-0.75 (ImageNet) + FPN decoder, CamVid 11 classes (student)"
                + _INIT.format("mobilenet_v1_0.75_192_quant.tflite"))
def mnv1_fpn_075(num_classes: int = 11, **kwargs: object) -> nn.Module:
    backbone = MobileNetV1(0.75, None, tf_padding=True)
    return MobileNetFPN(backbone, num_classes, **kwargs)  # type: ignore[arg-type]


@register_model("mnv2_fpn", _student_meta("mnv2_fpn", "mobilenet_v2_1.0_224_quant"
                                          ".tflite"),
                "MobileNetV2-1.0 (ImageNet) + FPN decoder, CamVid 11 classes (student)"
                + _INIT.format("mobilenet_v2_1.0_224_quant.tflite"))
def mnv2_fpn(num_classes: int = 11, **kwargs: object) -> nn.Module:
    backbone = MobileNetV2(None, last_conv=False, tf_padding=True)
    return MobileNetFPN(backbone, num_classes, **kwargs)  # type: ignore[arg-type]


__all__ = ["IMAGENET_CLASSES", "TFLITE_MEAN", "TFLITE_STD", "ConvBNAct", "InvertedResidual",
           "MobileNetFPN", "MobileNetV1", "MobileNetV2", "calibrate_batchnorm",
           "load_tflite_backbone", "mnv1_fpn_050", "mnv1_fpn_075", "mnv2_fpn"]
