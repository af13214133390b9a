"""A small two-head network and a synthetic street frame for the engine and export tests."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from seg_perception.runtime.models import ModelMeta


class TwoHead(nn.Module):
    """A multi-task test net: class scores at 1/4, drivable scores at 1/2 of the input."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.cls = nn.Conv2d(8, num_classes, 1)
        self.drv = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.stem(x)
        drivable = self.drv(f)
        return self.cls(self.down(f)), drivable


TWO_HEAD_META = ModelMeta(
    arch="two_head", num_classes=3, class_names=("sky", "road", "car"),
    palette=((70, 130, 180), (128, 64, 128), (0, 0, 142)), drivable_classes=(1,),
    input_size=(64, 48), output_stride=4,
)


def two_head() -> TwoHead:
    torch.manual_seed(0)
    model = TwoHead().eval()
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode BN is really exported
        model.stem[1].running_mean.uniform_(-0.5, 0.5)
        model.stem[1].running_var.uniform_(0.5, 2.0)
    return model


def scene(w: int, h: int) -> np.ndarray:
    """A smooth synthetic street-like RGB frame (sky, buildings, road) with some texture."""
    rng = np.random.default_rng(7)
    img = np.zeros((h, w, 3), dtype=np.float32)
    img[: h // 3] = (135, 170, 220)
    img[h // 3: 2 * h // 3] = (120, 100, 90)
    img[2 * h // 3:] = (90, 90, 95)
    img += rng.normal(0, 12, img.shape)
    img = cv2.GaussianBlur(img, (5, 5), 1.5)
    return np.clip(img, 0, 255).astype(np.uint8)
