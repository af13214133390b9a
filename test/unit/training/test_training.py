"""Training: augmentation, losses, Cityscapes ids, and short ``train`` runs with resume."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from seg_perception.runtime.models.checkpoint import load_model, read_checkpoint
from seg_perception.training.datasets import (
    CITYSCAPES_ID_TO_TRAINID,
    CityscapesDataset,
    cityscapes_label_to_train_id,
    open_dataset,
)
from seg_perception.training.losses import OhemCrossEntropy, balanced_class_weights, build_loss
from seg_perception.training.trainer import TrainConfig, _poly_lr, train
from seg_perception.training.transforms import TrainAugment, to_tensor


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_cityscapes_label_ids_map_to_train_ids() -> None:
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    train_ids = cityscapes_label_to_train_id(ids)
    assert train_ids[0, 7] == 0  # road
    assert train_ids[0, 8] == 1  # sidewalk
    assert train_ids[1, 10] == 13  # labelId 26 (car)
    flat = train_ids.ravel()
    for label_id in range(256):
        assert flat[label_id] == CITYSCAPES_ID_TO_TRAINID.get(label_id, 255)
    assert sorted(CITYSCAPES_ID_TO_TRAINID.values()) == list(range(19))
    assert CITYSCAPES_ID_TO_TRAINID[26] == 13 and CITYSCAPES_ID_TO_TRAINID[33] == 18
    assert flat[0] == 255 and flat[6] == 255 and flat[34] == 255  # unlabeled, ground, ...


def write_synthetic_cityscapes(root: Path, split: str = "train", frames: int = 2) -> None:
    rng = np.random.default_rng(3)
    for i in range(frames):
        img_dir = root / "leftImg8bit" / split / "testcity"
        lab_dir = root / "gtFine" / split / "testcity"
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        stem = f"testcity_000000_{i:06d}"
        cv2.imwrite(str(img_dir / f"{stem}_leftImg8bit.png"),
                    rng.integers(0, 256, (32, 64, 3), dtype=np.uint8))
        lab = np.full((32, 64), 7, np.uint8)  # road
        lab[:8] = 23  # sky -> 10
        lab[8:12, :10] = 26  # car -> 13
        lab[-2:] = 1  # ego vehicle -> ignored
        cv2.imwrite(str(lab_dir / f"{stem}_gtFine_labelIds.png"), lab)


def test_cityscapes_dataset_reads_layout(tmp_path: Path) -> None:
    write_synthetic_cityscapes(tmp_path, "val")
    data = open_dataset("cityscapes", tmp_path, "val")
    assert isinstance(data, CityscapesDataset) and len(data) == 2
    assert data.info.num_classes == 19 and data.info.ignore_index == 255
    img, lab = data.load(0)
    assert img.shape == (32, 64, 3) and lab.shape == (32, 64)
    assert set(np.unique(lab)) == {0, 10, 13, 255}


def test_camvid_void_becomes_ignore_index(camvid_dir: Path) -> None:
    data = open_dataset("camvid", camvid_dir, "val", ignore_index=255, limit=1)
    lab = data.load(0)[1]
    assert lab.max() == 255 or lab.max() <= 10
    assert not np.isin(lab, [11]).any()


def test_augment_shapes_padding_and_determinism() -> None:
    aug = TrainAugment(input_size=(48, 32), crop=(40, 40), scale_range=(0.5, 0.5),
                       ignore_index=255)
    img = np.full((36, 60, 3), 100, np.uint8)
    lab = np.zeros((36, 60), np.uint8)
    out_img, out_lab = aug(img, lab, np.random.default_rng(0))
    assert out_img.shape == (40, 40, 3) and out_lab.shape == (40, 40)
    # Scale 0.5 of 48x32 is 24x16: the rest of the 40x40 crop is ignore padding.
    assert (out_lab == 255).sum() == 40 * 40 - 24 * 16
    again = aug(img, lab, np.random.default_rng(0))
    np.testing.assert_array_equal(out_img, again[0])
    x = to_tensor(out_img, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (3, 40, 40) and x.dtype == torch.float32


def test_balanced_weights_favour_rare_classes() -> None:
    w = balanced_class_weights(np.array([0.6, 0.3, 0.1, 0.0]))
    assert w[0] < w[1] < w[2] and w[3] == 0
    assert float(w[:3].mean()) == pytest.approx(1.0)


def test_ohem_keeps_hard_pixels() -> None:
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, 0, 0] = 255
    easy = torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 20
    loss = OhemCrossEntropy(ignore_index=255, thresh=0.7, min_kept=4)
    logits = easy.clone()
    logits[:, :, :2, :2] = 0.0  # 8 hard pixels (uniform scores)
    value = loss(logits, target)
    # Mean over the hardest pixels only: close to ln 3, not diluted by the easy ones.
    assert value.item() == pytest.approx(np.log(3), rel=1e-3)
    assert isinstance(build_loss("ce", 255), torch.nn.CrossEntropyLoss)
    with pytest.raises(ValueError):
        build_loss("balanced", 255)


def test_poly_schedule_follows_time_budget() -> None:
    cfg = TrainConfig(model="tiny_seg", data_root="x", out="y", lr=1.0, warmup_iters=0,
                      time_budget_min=1.0)
    assert _poly_lr(cfg, 0, 100, 0.0) == (1.0, 0.0)
    lr, progress = _poly_lr(cfg, 10, 100, 30.0)  # half the time, a tenth of the iterations
    assert progress == 0.5 and lr == pytest.approx(0.5**0.9)
    assert _poly_lr(cfg, 10, 100, 90.0)[1] == 1.0


def test_train_cli_two_epochs_then_resume(camvid_dir: Path, tmp_path: Path) -> None:
    from seg_perception.cli import main

    out = tmp_path / "run"
    args = ["train", "--model", "tiny_seg", "--data-root", str(camvid_dir), "--limit", "4",
            "--batch-size", "2", "--crop", "64x48", "--epochs", "2", "--seed", "3",
            "--device", "cpu", "--out", str(out), "--no-progress",
            "--export", str(tmp_path / "exported.safetensors")]
    assert main(args) == 0
    rows = _rows(out / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(r["val_miou"] for r in rows)  # evaluated every epoch by default
    assert (out / "loss.png").is_file() and (out / "miou.png").is_file()
    loaded = load_model("tiny_seg", out / "best.safetensors")
    assert loaded.trained and loaded.meta.num_classes == 11
    assert read_checkpoint(tmp_path / "exported.safetensors").meta.extra["seed"] == 3
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["iteration"] == 4

    assert main([*args[:-2], "--epochs", "3", "--resume"]) == 0
    rows = _rows(out / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert int(rows[-1]["iterations"]) == 6
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3


def test_train_on_cityscapes_layout_with_init_from(tmp_path: Path) -> None:
    data = tmp_path / "cs"
    write_synthetic_cityscapes(data, "train")
    write_synthetic_cityscapes(data, "val")
    camvid_weights = tmp_path / "camvid.safetensors"
    from seg_perception.runtime.models.checkpoint import save_checkpoint

    save_checkpoint(load_model("tiny_seg").model, camvid_weights)
    cfg = TrainConfig(model="tiny_seg", data_root=str(data), out=str(tmp_path / "run"),
                      dataset="cityscapes", epochs=1, batch_size=2, crop=(32, 32),
                      scale_range=(0.1, 0.15), init_from=str(camvid_weights), progress=False,
                      loss="ohem")
    result = train(cfg)
    assert result.epochs_done == 1
    loaded = load_model("tiny_seg", result.best_path)
    assert loaded.meta.num_classes == 19 and loaded.meta.dataset == "cityscapes"
    assert loaded.meta.drivable_classes == (0,)


def test_input_size_travels_with_the_weights(tmp_path: Path) -> None:
    """--input-size: trained at another size than the registry's, the weights say so."""
    from seg_perception.runtime.models import get_entry

    data = tmp_path / "cs"
    write_synthetic_cityscapes(data, "train")
    write_synthetic_cityscapes(data, "val")
    assert get_entry("tiny_seg").meta.input_size != (96, 64)
    cfg = TrainConfig(model="tiny_seg", data_root=str(data), out=str(tmp_path / "run"),
                      dataset="cityscapes", epochs=1, batch_size=2, crop=(32, 32),
                      input_size=(96, 64), progress=False, device="cpu")
    result = train(cfg)
    assert read_checkpoint(result.best_path).meta.input_size == (96, 64)
    assert load_model("tiny_seg", result.best_path).meta.input_size == (96, 64)


def test_split_expressions_select_whole_sequences(tmp_path: Path) -> None:
    from seg_perception.training.datasets import camvid_sequence, parse_split

    assert parse_split("train+val:-0006R0") == (["train", "val"], set(), {"0006R0"})
    assert parse_split("train:0006R0,0001TP") == (["train"], {"0006R0", "0001TP"}, set())
    assert camvid_sequence(Path("train/0016E5_08159.png")) == "0016E5"
    # A tiny SegNet layout with two drives split over two lists.
    for split, names in (("train", ["0001TP_1", "0006R0_1"]), ("val", ["0006R0_2"])):
        (tmp_path / split).mkdir()
        (tmp_path / f"{split}annot").mkdir()
        for name in names:
            cv2.imwrite(str(tmp_path / split / f"{name}.png"), np.zeros((4, 4, 3), np.uint8))
            cv2.imwrite(str(tmp_path / f"{split}annot" / f"{name}.png"),
                        np.zeros((4, 4), np.uint8))
        (tmp_path / f"{split}.txt").write_text("".join(
            f"{split}/{n}.png {split}annot/{n}.png\n" for n in names))
    held_in = open_dataset("camvid", tmp_path, "train+val:-0006R0")
    assert [p[0].name for p in held_in.pairs] == ["0001TP_1.png"]
    held_out = open_dataset("camvid", tmp_path, "train+val:0006R0")
    assert [p[0].name for p in held_out.pairs] == ["0006R0_1.png", "0006R0_2.png"]
    with pytest.raises(ValueError, match="selects no frames"):
        open_dataset("camvid", tmp_path, "train:0016E5")


def test_select_final_exports_the_last_epoch(camvid_dir: Path, tmp_path: Path) -> None:
    export = tmp_path / "final.safetensors"
    cfg = TrainConfig(model="tiny_seg", data_root=str(camvid_dir), out=str(tmp_path / "run"),
                      epochs=2, batch_size=2, crop=(64, 48), limit=4, progress=False,
                      device="cpu", select="final", export=str(export))
    train(cfg)
    extra = read_checkpoint(export).meta.extra
    assert extra["epoch"] == 2 and extra["selection"] == "final"
    assert (tmp_path / "run" / "latest.safetensors").is_file()
