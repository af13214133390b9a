"""Edge-refined labels equal the argmax of bilinearly upsampled scores, at a fraction of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg_perception.runtime.upsample import bilinear_taps, edge_refined_labels, mixed_cells


def _reference(scores: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(scores)[None]
    up = F.interpolate(t, size=out_hw, mode="bilinear", align_corners=False)
    return up[0].argmax(0).to(torch.uint8).numpy()


def _blobby_scores(rng: np.random.Generator, c: int, h: int, w: int) -> np.ndarray:
    """Smooth random scores: regions with boundaries, like a network's output."""
    noise = rng.standard_normal((c, h // 4 + 2, w // 4 + 2)).astype(np.float32)
    up = F.interpolate(torch.from_numpy(noise)[None], size=(h, w), mode="bicubic",
                       align_corners=False)[0]
    return (3 * up).numpy()


@pytest.mark.parametrize(("c", "hw", "out"), [
    (11, (88, 120), (360, 480)),  # CamVid default model: stride 4, frame != input size
    (19, (64, 128), (1024, 2048)),  # Cityscapes at stride 8... and 16 at full size
    (2, (45, 80), (720, 1280)),
    (5, (30, 40), (31, 97)),  # odd, non-integer scales, one axis barely upsampled
])
def test_edge_refined_labels_equal_bilinear_argmax(c, hw, out) -> None:
    rng = np.random.default_rng(c)
    scores = _blobby_scores(rng, c, *hw)
    ours = edge_refined_labels(scores, out)
    ref = _reference(scores, out)
    assert ours.shape == out and ours.dtype == np.uint8
    assert (ours != ref).mean() < 1e-5  # float summation order may flip exact ties only


def test_taps_match_pytorch_and_mixed_cells() -> None:
    i0, i1, lam = bilinear_taps(10, 4)
    src = np.maximum((np.arange(10) + 0.5) * 0.4 - 0.5, 0)
    np.testing.assert_allclose(i0 + lam, src, atol=1e-6)
    assert i1[-1] == 3 and i0.min() == 0
    low = np.zeros((4, 4), np.uint8)
    low[2:, 2:] = 1
    m = mixed_cells(low)
    assert m[1, 1] and m[1, 2] and m[2, 1] and not m[0, 0] and not m[3, 3]


def test_a_class_that_wins_only_between_the_corners() -> None:
    """Class 2 is never the corners' argmax, yet wins in the middle of the cell: it is below
    neither class 0 nor class 1 at all four corners, so the cell takes the all-class path."""
    scores = np.zeros((3, 2, 2), np.float32)
    scores[0] = [[10, 10], [0, 0]]
    scores[1] = [[0, 0], [10, 10]]
    scores[2] = 9
    ours = edge_refined_labels(scores, (8, 8))
    np.testing.assert_array_equal(ours, _reference(scores, (8, 8)))
    assert set(np.unique(ours)) == {0, 1, 2}
    # Without class 2 the same cell is a two-class one: decided by the sign of 0 - 1.
    np.testing.assert_array_equal(edge_refined_labels(scores[:2], (8, 8)),
                                  _reference(scores[:2], (8, 8)))


def test_same_size_is_plain_argmax() -> None:
    scores = np.random.default_rng(0).standard_normal((3, 8, 9)).astype(np.float32)
    np.testing.assert_array_equal(edge_refined_labels(scores, (8, 9)), scores.argmax(0))


def test_engine_edges_mode_gives_the_logits_labels(camvid_frame: np.ndarray) -> None:
    """The node's default CPU postprocessing labels a real frame as eval's bilinear mode."""
    from seg_perception.runtime.engine import build_engine

    engines = {mode: build_engine("default", device="cpu", backend="torch", precision="fp32",
                                  threads=1, upsample=mode)[0] for mode in ("edges", "logits")}
    assert engines["edges"].upsample == "edges"
    assert build_engine("tiny_seg", device="cpu", backend="torch")[0].upsample == "edges"
    out = {m: e(camvid_frame) for m, e in engines.items()}
    assert (out["edges"].labels != out["logits"].labels).mean() < 1e-4
    np.testing.assert_array_equal(out["edges"].drivable == 255, out["edges"].labels == 3)
    assert out["edges"].confidence.shape == camvid_frame.shape[:2]
