"""Test frames and an independent restatement of cv_bridge's decoding, for the codec tests."""

from __future__ import annotations

import cv2
import numpy as np
from shared_data import CAMVID

BAYER = ("bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8")


YUV = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv")


def smooth_frame(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth colour frame: demosaicing and 4:2:2 chroma are near-lossless on it."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(x / w * np.pi)
    g = 40 + 180 * y / h
    b = 128 + 90 * np.cos((x + y) / (w + h) * 2 * np.pi)
    return np.clip(np.dstack([r, g, b]), 0, 255).astype(np.uint8)


def gradient_frame(h: int = 60, w: int = 80) -> np.ndarray:
    """A colour ramp with sharp wrap-arounds: compresses to a small, non-trivial JPEG/PNG."""
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 3 % 256, y * 4 % 256, (x + y) % 256]).astype(np.uint8)


def textured_frame(rng: np.random.Generator, h: int = 37, w: int = 50) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def gray3(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def interior_err(a: np.ndarray, b: np.ndarray, border: int = 2) -> np.ndarray:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return d[border:-border, border:-border]


# What cv_bridge.imgmsg_to_cv2(msg, "rgb8") does (vision_opencv, ROS 2 branch), restated
# independently of the module under test: a numpy view of the buffer, padding sliced off,
# byte swap when the message's order is not the machine's, then cv_bridge's OpenCV codes;
# mono16 is converted GRAY2RGB and then to 8 bits with alpha 255/65535.
_BRIDGE_CODES = {
    "rgb8": None, "bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB, "mono16": cv2.COLOR_GRAY2RGB,
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB, "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB, "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuyv": cv2.COLOR_YUV2RGB_YUY2,
}


_BRIDGE_TYPES = {"rgb8": (1, 3), "bgr8": (1, 3), "rgba8": (1, 4), "bgra8": (1, 4),
                 "mono8": (1, 1), "mono16": (2, 1), **dict.fromkeys(BAYER, (1, 1)),
                 **dict.fromkeys(YUV, (1, 2))}


def cv_bridge_reference(encoding: str, width: int, height: int, step: int, is_bigendian: int,
                        data: object) -> np.ndarray:
    itemsize, channels = _BRIDGE_TYPES[encoding]
    dtype = np.dtype(f"{'>' if is_bigendian else '<'}u{itemsize}")
    im = np.ndarray(shape=(height, step // itemsize // channels, channels), dtype=dtype,
                    buffer=memoryview(data).cast("B"))
    im = np.ascontiguousarray(im[:, :width, :])
    im = im.astype(dtype.newbyteorder("="))
    if channels == 1:
        im = im[..., 0]
    code = _BRIDGE_CODES[encoding]
    out = im if code is None else cv2.cvtColor(im, code)
    if encoding == "mono16":
        out = np.clip(np.rint(out.astype(np.float64) * (255.0 / 65535.0)), 0, 255)
    return out.astype(np.uint8)


def driving_frames(n: int = 3) -> list[np.ndarray]:
    """Real CamVid frames when ../shared is there, else generated 480x360 road-like frames."""
    files = sorted((CAMVID / "val").glob("*.png"))[:n] if CAMVID.is_dir() else []
    if files:
        return [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    frames = []
    for i in range(n):
        img = np.zeros((360, 480, 3), np.uint8)
        img[:150] = (120 + 10 * i, 160, 220)  # sky
        img[150:] = (90, 90, 95)  # road
        cv2.rectangle(img, (60 + 30 * i, 120), (160 + 30 * i, 220), (200, 30, 30), -1)
        frames.append(img)
    return frames
