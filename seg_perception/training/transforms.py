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
        h0, w0 = lab.shape
        s = rng.uniform(*self.scale_range)
        w = max(1, round(self.input_size[0] * s))
        h = max(1, round(self.input_size[1] * s))
        if (w, h) != (w0, h0):
            interp = cv2.INTER_AREA if w < w0 else cv2.INTER_LINEAR
            img = cv2.resize(img, (w, h), interpolation=interp)
            lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
        cw, ch = self.crop
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        if pad_h or pad_w:
            img = cv2.copyMakeBorder(img, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
            lab = cv2.copyMakeBorder(
                lab, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=self.ignore_index
            )
            h, w = lab.shape
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        img = img[y : y + ch, x : x + cw]
        lab = lab[y : y + ch, x : x + cw]
        if self.flip and rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        img = self.photometric(np.ascontiguousarray(img), rng)
        return img, np.ascontiguousarray(lab)

    def photometric(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast, saturation and hue jitter on an RGB uint8 image."""
        out = img.astype(np.float32)
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


__all__ = ["TrainAugment", "resize_to_input", "to_tensor"]
