"""What every image decoder here shares: the error it raises, the pixel limits, a byte view.

Split out so the raw (:mod:`.raw`) and the compressed (:mod:`.compressed`) codecs share one
:class:`ImageDecodeError` (with its ``kind``, for rate-limited warnings), one bound on the
pixels decoded (:func:`check_pixels`, before anything is allocated) and one zero-copy view
of a message's payload, whatever buffer type carries it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Largest image decoded by default, in pixels: 8K UHD (7680x4320 = 33.2 M) fits, a 16000x16000
#: "decompression bomb" (256 M pixels, 768 MB as RGB) does not. Callers pass ``max_pixels``.
DEFAULT_MAX_PIXELS = 40_000_000

#: OpenCV's own pixel cap for the files only OpenCV decodes (``OPENCV_IO_MAX_IMAGE_PIXELS``;
#: OpenCV reads it once, when cv2 is first imported, so seg_perception/__init__.py sets it).
OPENCV_MAX_PIXELS = 1 << 27


class ImageDecodeError(ValueError):
    """An image payload cannot be turned into pixels (bad fields, short data, corrupt file).

    ``kind`` names the problem without the values of this message (for rate limiting).
    """

    def __init__(self, message: str, kind: str = "image.invalid") -> None:
        super().__init__(message)
        self.kind = kind


def _mpix(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} M" if pixels >= 100_000 else str(pixels)


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """Raise :class:`ImageDecodeError` (kind ``size.too_large``) when ``width*height``
    exceeds ``max_pixels`` (None or <= 0: no limit)."""
    if max_pixels is None or max_pixels <= 0:
        return
    pixels = int(width) * int(height)
    if pixels > max_pixels:
        raise ImageDecodeError(
            f"{what} of {width}x{height} = {_mpix(pixels)} pixels exceeds the limit of "
            f"{_mpix(int(max_pixels))} pixels (max_image_pixels); not decoded",
            kind="size.too_large")


def as_bytes_view(data: Any) -> np.ndarray:
    """A flat uint8 view of any buffer (bytes, array.array('B'), memoryview, ndarray)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or not data.flags.c_contiguous:
            data = np.ascontiguousarray(data).view(np.uint8)
        return data.reshape(-1)
    if isinstance(data, list):  # some hand-built messages carry a list of ints
        return np.asarray(data, dtype=np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as err:
        raise ImageDecodeError(f"image data is not a byte buffer: {type(data).__name__}",
                               kind="data.not_bytes") from err


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "OPENCV_MAX_PIXELS",
    "ImageDecodeError",
    "as_bytes_view",
    "check_pixels",
]
