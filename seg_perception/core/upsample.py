"""Full-resolution labels from low-resolution class scores, exactly and cheaply.

Segmentation networks predict at a stride (4 or 8); benchmarks score the argmax of the class
scores upsampled bilinearly to the frame. Upsampling 11-19 score maps costs as much as the
network on a CPU, but most of it is wasted: where the four low-resolution pixels a frame
pixel interpolates between share one winning class, the interpolated scores (a convex
combination of four vectors with the same argmax) have that argmax too. So the exact
bilinear-logits labels need interpolated scores only at pixels whose four sources disagree:
about 10% of a 480x360 CamVid frame. :func:`edge_refined_labels` computes exactly those and
copies the winning class everywhere else.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np


@functools.lru_cache(maxsize=16)
def bilinear_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (i0, i1) and weight of i1 for each output index.

    PyTorch's ``interpolate(mode="bilinear", align_corners=False)`` convention: source
    coordinate ``(dst + 0.5) * n_in / n_out - 0.5``, clamped at 0.
    """
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    lam = (src - i0).astype(np.float32)
    lam.setflags(write=False)
    i0.setflags(write=False)
    i1.setflags(write=False)
    return i0, i1, lam


def mixed_cells(low: np.ndarray) -> np.ndarray:
    """Bool (h, w): cells whose 2x2 block with their right/lower neighbours has >1 class."""
    m = np.zeros(low.shape, bool)
    m[:, :-1] |= low[:, :-1] != low[:, 1:]
    m[:-1] |= low[:-1] != low[1:]
    m[:-1, :-1] |= low[:-1, :-1] != low[1:, 1:]  # with the two above: all four agree
    return m


@functools.lru_cache(maxsize=16)
def _blocks(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, int]:
    """First output index and count of outputs whose top-left source is each input index."""
    i0 = bilinear_taps(n_out, n_in)[0]  # non-decreasing
    start = np.searchsorted(i0, np.arange(n_in), "left")
    count = np.searchsorted(i0, np.arange(n_in), "right") - start
    return start, count, int(count.max())


def _pixels_of_cells(cells: np.ndarray, big_h: int, big_w: int) -> tuple[np.ndarray, ...]:
    """Frame pixels (ys, xs) whose top-left bilinear source is a True cell of ``cells``.

    Expands each cell to its block of frame pixels (cheaper than a full-size mask and a
    nonzero over it: a few thousand cells against a frame of pixels).
    """
    h, w = cells.shape
    ci, cj = np.nonzero(cells)
    r_start, r_count, bh = _blocks(big_h, h)
    c_start, c_count, bw = _blocks(big_w, w)
    oy = np.arange(bh)[None, :, None]
    ox = np.arange(bw)[None, None, :]
    keep = (oy < r_count[ci][:, None, None]) & (ox < c_count[cj][:, None, None])
    ys = np.broadcast_to(r_start[ci][:, None, None] + oy, keep.shape)[keep]
    xs = np.broadcast_to(c_start[cj][:, None, None] + ox, keep.shape)[keep]
    return ys, xs


def edge_refined_labels(
    scores: np.ndarray, out_hw: tuple[int, int], low: np.ndarray | None = None
) -> np.ndarray:
    """uint8 (H, W) labels equal to ``argmax(bilinear(scores, out_hw))``.

    ``scores`` is float32 (C, h, w); ``low`` its argmax (uint8 (h, w)) when already known.
    Ties between classes may resolve differently from PyTorch's kernel (summation order).
    """
    c, h, w = scores.shape
    big_h, big_w = int(out_hw[0]), int(out_hw[1])
    if low is None:
        low = scores.argmax(0).astype(np.uint8)
    if (h, w) == (big_h, big_w):
        return low
    # Where all four sources agree, any of them gives the answer: nearest is one of them.
    labels = cv2.resize(low, (big_w, big_h), interpolation=cv2.INTER_NEAREST_EXACT)
    y0, y1, wy = bilinear_taps(big_h, h)
    ys, xs = _pixels_of_cells(mixed_cells(low), big_h, big_w)
    if ys.size == 0:
        return labels
    # Bilinear is separable: interpolate every low-resolution row horizontally (one OpenCV
    # pass, same taps as PyTorch), then only the refined pixels vertically.
    rows = cv2.resize(np.ascontiguousarray(scores.transpose(1, 2, 0)), (big_w, h),
                      interpolation=cv2.INTER_LINEAR).reshape(h, big_w, c)
    top, bottom = rows[y0[ys], xs], rows[y1[ys], xs]
    acc = top + (bottom - top) * wy[ys, None]
    labels[ys, xs] = acc.argmax(1)
    return labels


__all__ = ["bilinear_taps", "edge_refined_labels", "mixed_cells"]
