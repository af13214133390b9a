"""Full-resolution labels from low-resolution class scores, exactly and cheaply.

Segmentation networks predict at a stride (4 or 8); benchmarks score the argmax of the class
scores upsampled bilinearly to the frame. Upsampling 11-19 score maps costs as much as the
network on a CPU, but most of it is wasted: where the four low-resolution pixels a frame
pixel interpolates between share one winning class, the interpolated scores (a convex
combination of four vectors with the same argmax) have that argmax too. So the exact
bilinear-logits labels need interpolated scores only at pixels whose four sources disagree:
about 10% of a 480x360 CamVid frame. :func:`edge_refined_labels` computes exactly those and
copies the winning class everywhere else. Most such cells have two classes that can win
inside them (every other class scores below one of them at all four corners); there the
sign of one interpolated score difference decides, instead of all C scores (0.6x the time).
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


def _pixels_of_cells(ci: np.ndarray, cj: np.ndarray, big_h: int, big_w: int, h: int, w: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Frame pixels whose top-left bilinear source is cell (ci[k], cj[k]) of an (h, w) grid:
    their flat indices into the (big_h, big_w) frame and each one's k.

    Expands each cell to its block of frame pixels (cheaper than a full-size mask and a
    nonzero over it: a few thousand cells against a frame of pixels).
    """
    r_start, r_count, bh = _blocks(big_h, h)
    c_start, c_count, bw = _blocks(big_w, w)
    oy = np.arange(bh)[None, :, None]
    ox = np.arange(bw)[None, None, :]
    keep = (oy < r_count[ci][:, None, None]) & (ox < c_count[cj][:, None, None])
    flat = (r_start[ci][:, None, None] + oy) * big_w + (c_start[cj][:, None, None] + ox)
    cell = np.broadcast_to(np.arange(ci.size)[:, None, None], keep.shape)
    return flat[keep], cell[keep]


def _two_class_cells(s: np.ndarray, corner: np.ndarray) -> tuple[np.ndarray, ...]:
    """For cells with corner scores ``s`` (4, C, n) and corner labels ``corner`` (4, n): the
    cells where only two classes a < b can win anywhere inside (bool (n,)), a, and b.

    Inside a cell a pixel's scores are a convex combination of the four corners', so a class
    whose score is below one class's at all four corners never wins there. Where the corners'
    labels are two classes and every other class is below one of them at all four corners,
    the winner is decided by the sign of one interpolated difference, not C scores.
    """
    a, b = corner.min(0), corner.max(0)
    n = np.arange(corner.shape[1])
    sa, sb = s[:, a, n], s[:, b, n]  # (4, n)
    below_a, below_b = s[0] < sa[0], s[0] < sb[0]  # (C, n)
    two = (corner[0] == a) | (corner[0] == b)
    for q in range(1, 4):
        below_a &= s[q] < sa[q]
        below_b &= s[q] < sb[q]
        two &= (corner[q] == a) | (corner[q] == b)
    beaten = below_a | below_b
    beaten[a, n] = True
    beaten[b, n] = True
    return two & beaten.all(0), a, b


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
    ci, cj = np.nonzero(mixed_cells(low))
    if ci.size == 0:
        return labels
    # A refined pixel interpolates the four corners of its cell (PyTorch's taps i0/i1, the
    # last row or column repeated at the border) with PyTorch's weights, as two lerps.
    y1, x1 = np.minimum(ci + 1, h - 1), np.minimum(cj + 1, w - 1)
    corners = np.concatenate([ci * w + cj, ci * w + x1, y1 * w + cj, y1 * w + x1])
    n = ci.size
    s = scores.reshape(c, h * w).take(corners, axis=1).reshape(c, 4, n).transpose(1, 0, 2)
    fast, a, b = _two_class_cells(s, low.reshape(-1).take(corners).reshape(4, n))
    wy, wx = bilinear_taps(big_h, h)[2], bilinear_taps(big_w, w)[2]
    out = labels.reshape(-1)
    # Two-class cells: a wins where the interpolated a - b is >= 0 (argmax takes the lower
    # index on a tie).
    idx = np.nonzero(fast)[0]
    m = np.arange(n)[idx]
    d = s[:, a[idx], m] - s[:, b[idx], m]  # (4, cells)
    flat, k = _pixels_of_cells(ci[idx], cj[idx], big_h, big_w, h, w)
    fy, fx = wy[flat // big_w], wx[flat % big_w]
    top = d[0, k] + fx * (d[1] - d[0])[k]
    bottom = d[2, k] + fx * (d[3] - d[2])[k]
    top += fy * (bottom - top)
    out[flat] = np.where(top >= 0, a[idx][k], b[idx][k])
    # Other cells: every class's score interpolated.
    idx = np.nonzero(~fast)[0]
    if idx.size:
        sq = s[:, :, idx]  # (4, C, cells)
        flat, k = _pixels_of_cells(ci[idx], cj[idx], big_h, big_w, h, w)
        fy, fx = wy[flat // big_w], wx[flat % big_w]
        top = sq[0][:, k] + fx * (sq[1] - sq[0])[:, k]  # (C, pixels)
        bottom = sq[2][:, k] + fx * (sq[3] - sq[2])[:, k]
        top += fy * (bottom - top)
        out[flat] = top.argmax(0)
    return labels


__all__ = ["bilinear_taps", "edge_refined_labels", "mixed_cells"]
