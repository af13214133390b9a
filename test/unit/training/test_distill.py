"""Distillation: soft-label cache, its warp with the crop's geometry, the KD loss, the CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from seg_perception.runtime.models.checkpoint import (
    file_sha256,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from seg_perception.training import soft_labels
from seg_perception.training.datasets import open_dataset
from seg_perception.training.losses import DistillationLoss
from seg_perception.training.soft_labels import (
    SoftLabelCache,
    SoftLabelError,
    build_cache,
    teacher_logits,
)
from seg_perception.training.transforms import TrainAugment

NUM_CLASSES = 11
IGNORE = 255


def block_label(h: int, w: int, block: int, seed: int) -> np.ndarray:
    """Random classes on square blocks: long edges, so a wrong warp shows up at once."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, NUM_CLASSES, (-(-h // block), -(-w // block)), dtype=np.uint8)
    return np.kron(grid, np.ones((block, block), np.uint8))[:h, :w]


def one_hot(lab: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, C) float32 one-hot."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[lab]


def entry_of(lab: np.ndarray, stride: int) -> np.ndarray:
    """A cache entry (2, H/stride, W/stride, C) built from a label: frame and mirror image."""
    small = lab[stride // 2 :: stride, stride // 2 :: stride]
    return np.stack([one_hot(small), one_hot(np.ascontiguousarray(small[:, ::-1]))])


def write_synthetic_camvid(root: Path, frames: dict[str, int], size: tuple[int, int] = (64, 48)
                           ) -> None:
    """A SegNet-layout CamVid: ``<split>.txt`` with noise images and block labels."""
    rng = np.random.default_rng(5)
    w, h = size
    for split, count in frames.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(count):
            name = f"0001TP_{split}{i:03d}.png"
            cv2.imwrite(str(root / split / name), rng.integers(0, 256, (h, w, 3), np.uint8))
            cv2.imwrite(str(root / f"{split}annot" / name), block_label(h, w, 8, i))
            lines.append(f"{split}/{name} {split}annot/{name}\n")
        (root / f"{split}.txt").write_text("".join(lines))


@pytest.mark.parametrize("stride", [1, 4])
def test_soft_map_follows_the_label_under_augmentation(stride: int) -> None:
    """The one-hot of the label, warped with it, agrees with the warped label (any crop)."""
    h, w = 96, 128
    lab = block_label(h, w, 16, seed=0)
    entry = entry_of(lab, stride)
    aug = TrainAugment(input_size=(w, h), crop=(80, 64), scale_range=(0.4, 2.0),
                       ignore_index=IGNORE)
    img = np.zeros((h, w, 3), np.uint8)
    agree = total = 0
    padded = flipped = 0
    for seed in range(60):
        _, out_lab, soft, valid = aug.with_soft(img, lab, entry, np.random.default_rng(seed),
                                                stride)
        assert soft.shape == (NUM_CLASSES, 64 // stride, 80 // stride)
        assert valid.shape == soft.shape[1:] and soft.dtype == np.float32
        flipped += aug.draw(lab.shape, np.random.default_rng(seed)).flip
        pred = soft.argmax(0)
        if stride == 1:
            # Padding is exactly what the label marks as ignore.
            np.testing.assert_array_equal(valid, out_lab != IGNORE)
            ref, keep = out_lab, valid
        else:
            # Cells of the coarse grid whose label is one class (not straddling an edge).
            cells = out_lab.reshape(64 // stride, stride, 80 // stride, stride)
            cells = cells.transpose(0, 2, 1, 3).reshape(*valid.shape, -1)
            ref = cells[..., 0]
            keep = valid & (cells == ref[..., None]).all(-1) & (ref != IGNORE)
            # A cell is valid only where the label has frame pixels.
            assert not (valid & (cells == IGNORE).all(-1)).any()
        # Where the warp lands exactly between two classes the one-hot has no arg-max.
        top2 = np.sort(soft, 0)[-2:]
        keep &= top2[1] - top2[0] > 1e-3
        padded += int((~valid).any())
        agree += int((pred[keep] == ref[keep]).sum())
        total += int(keep.sum())
    assert padded > 0 and 0 < flipped < 60  # the draws covered padding and both flips
    assert total > 0 and agree / total >= 0.99, agree / total


def test_flip_reads_the_mirrored_entry() -> None:
    """A flipped crop takes entry [1] (the teacher on the mirrored frame), never [0]."""
    h, w = 48, 64
    lab = np.zeros((h, w), np.uint8)
    entry = np.zeros((2, h // 4, w // 4, NUM_CLASSES), np.float16)
    entry[0, ..., 2] = 5.0  # the frame's entry says class 2, the mirror's class 7
    entry[1, ..., 7] = 5.0
    aug = TrainAugment(input_size=(w, h), crop=(32, 32), scale_range=(1.0, 1.5),
                       ignore_index=IGNORE)
    seen = set()
    for seed in range(20):
        flip = aug.draw(lab.shape, np.random.default_rng(seed)).flip
        soft = aug.with_soft(np.zeros((h, w, 3), np.uint8), lab, entry,
                             np.random.default_rng(seed), 4)[2]
        assert set(np.unique(soft.argmax(0))) == {7 if flip else 2}
        seen.add(flip)
    assert seen == {False, True}


def test_augmentation_draws_are_unchanged_by_soft_labels() -> None:
    """The same seed gives the same image and label with or without a soft map."""
    h, w = 48, 64
    rng = np.random.default_rng(9)
    img = rng.integers(0, 256, (h, w, 3), np.uint8)
    lab = block_label(h, w, 8, 1)
    aug = TrainAugment(input_size=(w, h), crop=(40, 32), ignore_index=IGNORE)
    for seed in range(5):
        a = aug(img, lab, np.random.default_rng(seed))
        b = aug.with_soft(img, lab, entry_of(lab, 4), np.random.default_rng(seed), 4)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_distillation_loss_zero_when_equal_and_masks_padding() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(2, NUM_CLASSES, 6, 8)
    valid = torch.ones(2, 6, 8, dtype=torch.bool)
    loss = DistillationLoss(weight=1.0, temperature=2.0)
    assert float(loss(teacher.clone(), teacher, valid)) == pytest.approx(0.0, abs=1e-6)
    # A student at twice the soft map's resolution is averaged down onto its grid first.
    fine = teacher.repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert float(loss(fine, teacher, valid)) == pytest.approx(0.0, abs=1e-6)

    student = torch.randn(2, NUM_CLASSES, 6, 8, requires_grad=True)
    value = loss(student, teacher, valid)
    assert value.item() > 0.01
    value.backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0

    # Invalid cells do not count: changing the student there changes nothing.
    valid[:, :, 5:] = False
    part = float(loss(student, teacher, valid))
    moved = student.detach().clone()
    moved[:, :, :, 5:] += 10 * torch.randn_like(moved[:, :, :, 5:])
    assert float(loss(moved, teacher, valid)) == pytest.approx(part, rel=1e-6)
    # ... nor in the mean: the valid part alone gives the same value.
    alone = loss(student[..., :5], teacher[..., :5], valid[..., :5])
    assert float(alone) == pytest.approx(part, rel=1e-6)
    valid[:] = False
    assert float(loss(student, teacher, valid)) == 0.0
    # The weight scales the term, T^2 is applied.
    plain = DistillationLoss(1.0, 1.0)(student, teacher, torch.ones_like(valid))
    heavy = DistillationLoss(3.0, 1.0)(student, teacher, torch.ones_like(valid))
    assert float(heavy) == pytest.approx(3 * float(plain), rel=1e-5)


@pytest.fixture
def tiny_teacher(tmp_path: Path) -> Path:
    torch.manual_seed(1)
    path = tmp_path / "teacher.safetensors"
    save_checkpoint(load_model("tiny_seg").model, path)
    return path


def test_cache_round_trip_resume_and_mismatch(
    tmp_path: Path, tiny_teacher: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "camvid"
    write_synthetic_camvid(root, {"train": 3})
    data = open_dataset("camvid", root, "train")
    loaded = load_model("tiny_seg", tiny_teacher, map_to=data.info)
    meta = loaded.meta.replace(input_size=(96, 64))
    out = tmp_path / "cache"
    manifest = build_cache(loaded.model, meta, tiny_teacher, data, root, "train", out,
                           stride=4, progress=False, teacher="tiny_seg")
    assert manifest["count"] == 3 and manifest["soft_size"] == [24, 16]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["teacher"] == "tiny_seg" and on_disk["stride"] == 4
    assert on_disk["input_size"] == [96, 64] and len(on_disk["classes"]) == NUM_CLASSES
    assert on_disk["weights_sha256"] == file_sha256(tiny_teacher)
    assert on_disk["splits"] == {"train": 3}

    cache = SoftLabelCache.open(out)
    keys = cache.check(data, root)
    assert keys[0] == "train/0001TP_train000.png"
    entry = cache.load(keys[0])
    assert entry.shape == (2, 16, 24, NUM_CLASSES) and entry.dtype == np.float16
    img = data.load(0)[0]
    fresh = teacher_logits(loaded.model, meta, img, (24, 16), torch.device("cpu"))
    np.testing.assert_array_equal(entry, fresh)
    # [1] is the teacher on the mirrored frame, not [0] mirrored.
    mirrored = teacher_logits(loaded.model, meta, np.ascontiguousarray(img[:, ::-1]),
                              (24, 16), torch.device("cpu"))[0]
    np.testing.assert_array_equal(entry[1], mirrored)
    assert not np.array_equal(entry[1], entry[0][:, ::-1])

    # Resume: only the missing frame is computed again.
    cache.path(keys[1]).unlink()
    calls = []
    real = soft_labels.teacher_logits
    monkeypatch.setattr(soft_labels, "teacher_logits",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    build_cache(loaded.model, meta, tiny_teacher, data, root, "train", out, stride=4,
                progress=False, teacher="tiny_seg")
    assert len(calls) == 1 and cache.path(keys[1]).is_file()

    # Another stride, or other weights, is refused in one line, naming what differs.
    with pytest.raises(SoftLabelError, match="stride=4") as err:
        build_cache(loaded.model, meta, tiny_teacher, data, root, "train", out, stride=2,
                    progress=False, teacher="tiny_seg")
    assert "\n" not in str(err.value)
    other = tmp_path / "other.safetensors"
    save_checkpoint(load_model("tiny_seg").model, other)
    with pytest.raises(SoftLabelError, match="weights_sha256"):
        build_cache(loaded.model, meta, other, data, root, "train", out, stride=4,
                    progress=False, teacher="tiny_seg")
    assert len(calls) == 1

    # A frame without an entry is named.
    cache.path(keys[2]).unlink()
    with pytest.raises(SoftLabelError, match="1 of 3 training frames: train/0001TP_train002"):
        cache.check(data, root)


def test_cli_distill_cache_then_train_with_distillation(
    tmp_path: Path, tiny_teacher: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from seg_perception.cli import main

    root = tmp_path / "camvid"
    write_synthetic_camvid(root, {"train": 4, "val": 2})
    cache = tmp_path / "cache"
    assert main(["distill-cache", "--model", "tiny_seg", "--checkpoint", str(tiny_teacher),
                 "--data-root", str(root), "--split", "train", "--input-size", "96x64",
                 "--stride", "4", "--out", str(cache), "--threads", "1",
                 "--device", "cpu", "--no-progress"]) == 0
    assert len(list(cache.rglob("*.npy"))) == 4

    out = tmp_path / "run"
    args = ["train", "--model", "tiny_seg", "--data-root", str(root), "--limit", "4",
            "--batch-size", "2", "--crop", "64x48", "--scale", "0.1,0.2", "--epochs", "2",
            "--device", "cpu", "--out", str(out), "--no-progress", "--distill", str(cache),
            "--distill-weight", "0.5", "--distill-temperature", "2"]
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    assert "distillation term" in caplog.text
    extra = read_checkpoint(out / "best.safetensors").meta.extra
    assert extra["distill"]["weight"] == 0.5 and extra["distill"]["temperature"] == 2.0
    assert extra["distill"]["teacher"] == "tiny_seg" and extra["distill"]["stride"] == 4
    assert main([*args, "--epochs", "3", "--resume"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3

    # Frames the cache lacks stop the run before its first step, naming them.
    caplog.clear()
    bad = ["train", "--model", "tiny_seg", "--data-root", str(root), "--train-split",
           "train+val", "--device", "cpu", "--out", str(tmp_path / "bad"), "--no-progress",
           "--distill", str(cache)]
    assert main(bad) == 2
    assert "no soft labels for 2 of 6 training frames: val/0001TP_val000.png" in caplog.text
    assert not (tmp_path / "bad" / "last.pt").exists()
