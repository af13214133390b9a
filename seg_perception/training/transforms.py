"""Augmentation for training and the fixed resize/normalise used for evaluation.

Scales are relative to the model's input size: scale 1.0 means the frame resized to the
network's ``input_size``, so training crops see objects at the size they have at inference.
All randomness comes from a ``numpy.random.Generator`` passed in, so a run is reproducible
from its seed whatever the number of loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class CropGeometry:
    """One draw of the geometric augmentation, in pixels of the resized frame."""

    width: int  # the frame resized to this (width, height) before padding
    height: int
    x: int  # crop's top-left corner in the resized, padded frame
    y: int
    crop_w: int
    crop_h: int
    flip: bool  # the crop is mirrored left-right


def warp_soft(
    soft: np.ndarray, g: CropGeometry, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """A whole-frame soft map (Hs, Ws, C) cut to the crop ``g`` on a ``1/stride`` grid.

    One ``cv2.warpAffine`` (bilinear) maps the map straight onto the crop's grid, so the
    channels are never blown up to the frame's resolution. The map covers the same extent as
    the frame whatever its resolution; with ``g.flip`` it must be the entry computed on the
    mirrored frame, which the crop sees unmirrored at ``width - x - crop_w``. Returns
    ``(C, Ho, Wo)`` float32 and a bool mask of the cells whose centre lies inside the frame
    (the padding, which the loss must ignore).
    """
    hs, ws = soft.shape[:2]
    wo, ho = max(1, round(g.crop_w / stride)), max(1, round(g.crop_h / stride))
    # Edge coordinates (pixel i spans [i, i + 1]): crop = source * (resized / map) - offset,
    # then onto the output grid; a mirrored crop of the mirrored frame starts at w - x - cw.
    x0 = g.width - g.x - g.crop_w if g.flip else g.x
    ax, bx = g.width / ws * wo / g.crop_w, -x0 * wo / g.crop_w
    ay, by = g.height / hs * ho / g.crop_h, -g.y * ho / g.crop_h
    # warpAffine works on pixel centres (pixel i at i): shift by half a pixel each side.
    m = np.array([[ax, 0.0, bx + 0.5 * ax - 0.5], [0.0, ay, by + 0.5 * ay - 0.5]])
    src = np.ascontiguousarray(soft, dtype=np.float32)
    out = cv2.warpAffine(src, m, (wo, ho), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    if out.ndim == 2:  # one channel: OpenCV drops the axis
        out = out[..., None]
    # A cell is valid when its centre, mapped back, falls inside the map's extent.
    sx = ((np.arange(wo) + 0.5) - bx) / ax
    sy = ((np.arange(ho) + 0.5) - by) / ay
    valid = ((sy >= 0) & (sy <= hs))[:, None] & ((sx >= 0) & (sx <= ws))[None, :]
    return np.ascontiguousarray(out.transpose(2, 0, 1)), valid


@dataclass(frozen=True)
class TrainAugment:
    """Random scale, crop (padded with ignore), horizontal flip and colour jitter."""

    input_size: tuple[int, int]  # (width, height) of the network input at scale 1
    crop: tuple[int, int]  # (width, height) of training crops
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.03  # fraction of a full turn
    ignore_index: int = 255

    def __call__(
        self, img: np.ndarray, lab: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        geom = self.draw(lab.shape, rng)
        img, lab = self.apply(img, lab, geom)
        return self.photometric(img, rng), lab

    def with_soft(
        self,
        img: np.ndarray,
        lab: np.ndarray,
        soft: np.ndarray,
        rng: np.random.Generator,
        stride: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """As ``__call__``, plus a teacher's soft map warped by the same geometry.

        ``soft`` is a cache entry ``(2, Hs, Ws, C)``: the teacher's logits on the frame and on
        its mirror image, each covering the whole frame (see :mod:`.soft_labels`). Returns
        ``(img, lab, soft (C, ch/stride, cw/stride) float32, valid (same grid) bool)``; the
        draws from ``rng`` are those of ``__call__``, so a run gets the same crops with or
        without distillation.
        """
        geom = self.draw(lab.shape, rng)
        img, lab = self.apply(img, lab, geom)
        warped, valid = warp_soft(soft[1 if geom.flip else 0], geom, stride)
        return self.photometric(img, rng), lab, warped, valid

    def draw(self, shape: tuple[int, int], rng: np.random.Generator) -> CropGeometry:
        """Scale, crop offset and flip for a frame of ``shape`` (H, W)."""
        s = rng.uniform(*self.scale_range)
        w = max(1, round(self.input_size[0] * s))
        h = max(1, round(self.input_size[1] * s))
        cw, ch = self.crop
        y = int(rng.integers(0, max(h, ch) - ch + 1))
        x = int(rng.integers(0, max(w, cw) - cw + 1))
        flip = bool(self.flip and rng.random() < 0.5)
        return CropGeometry(w, h, x, y, cw, ch, flip)

    def apply(
        self, img: np.ndarray, lab: np.ndarray, g: CropGeometry
    ) -> tuple[np.ndarray, np.ndarray]:
        """Resize, pad (image 0, label ignore), crop and flip image and label."""
        h0, w0 = lab.shape
        w, h = g.width, g.height
        if (w, h) != (w0, h0):
            interp = cv2.INTER_AREA if w < w0 else cv2.INTER_LINEAR
            img = cv2.resize(img, (w, h), interpolation=interp)
            # Nearest with pixel centres at +0.5, as the image's resize: plain INTER_NEAREST
            # shifts the label by up to half a source pixel against the image (and the soft map).
            lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        pad_h, pad_w = max(g.crop_h - h, 0), max(g.crop_w - w, 0)
        if pad_h or pad_w:
            img = cv2.copyMakeBorder(img, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
            lab = cv2.copyMakeBorder(
                lab, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=self.ignore_index
            )
        img = img[g.y : g.y + g.crop_h, g.x : g.x + g.crop_w]
        lab = lab[g.y : g.y + g.crop_h, g.x : g.x + g.crop_w]
        if g.flip:
            img, lab = img[:, ::-1], lab[:, ::-1]
        return np.ascontiguousarray(img), np.ascontiguousarray(lab)

    def photometric(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast, saturation and hue jitter on an RGB uint8 image."""
        out = np.ascontiguousarray(img).astype(np.float32)
        if self.brightness:
            out *= rng.uniform(1 - self.brightness, 1 + self.brightness)
        if self.contrast:
            mean = out.mean()
            out = (out - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        if self.saturation:
            grey = out @ np.array([0.299, 0.587, 0.114], np.float32)
            a = rng.uniform(1 - self.saturation, 1 + self.saturation)
            out = (out - grey[..., None]) * a + grey[..., None]
        out = np.clip(out, 0, 255).astype(np.uint8)
        if self.hue:
            shift = round(rng.uniform(-self.hue, self.hue) * 180)
            if shift:
                hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
                hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
                out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return out


def resize_to_input(img: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB frame to the network's (width, height), as inference does."""
    if (img.shape[1], img.shape[0]) == tuple(input_size):
        return img
    interp = cv2.INTER_AREA if img.shape[1] > input_size[0] else cv2.INTER_LINEAR
    return cv2.resize(img, tuple(input_size), interpolation=interp)


def to_tensor(
    img: np.ndarray, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> normalised float (3, H, W): scale to [0, 1], then mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return x.sub_(m).div_(s)


__all__ = ["CropGeometry", "TrainAugment", "resize_to_input", "to_tensor", "warp_soft"]
