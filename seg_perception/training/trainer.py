"""The training loop: augmentation, poly schedule, loss, periodic validation, checkpoints.

Everything a run needs to continue after an interruption lives in ``<out>/last.pt``
(weights, optimiser, epoch, iteration, best score, elapsed time); augmentation randomness is
derived from ``(seed, epoch, index)``, so a resumed run draws the same crops it would have
drawn without the interruption. The best-by-validation weights are written in the package's
safetensors format (:func:`~seg_perception.runtime.models.checkpoint.save_checkpoint`) with
the metadata, atomically, so a reader never sees a half-written file.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from seg_perception.runtime.hw import cpu_bf16_unit
from seg_perception.runtime.models.checkpoint import save_checkpoint
from seg_perception.runtime.models.meta import ModelMeta
from seg_perception.runtime.models.registry import create_model, get_entry
from seg_perception.training.datasets import SegDataset, open_dataset
from seg_perception.training.evaluate import evaluate
from seg_perception.training.init_weights import init_from
from seg_perception.training.losses import DistillationLoss, build_loss
from seg_perception.training.metrics import plot_confusion
from seg_perception.training.soft_labels import SoftLabelCache
from seg_perception.training.transforms import TrainAugment, to_tensor

log = logging.getLogger(__name__)

CSV_FIELDS = (
    "epoch", "iterations", "lr", "train_loss", "val_miou", "val_pixel_accuracy",
    "epoch_seconds", "elapsed_seconds",
)


@dataclass
class TrainConfig:
    """One training run; the CLI maps its flags onto these fields one to one."""

    model: str
    data_root: str
    out: str
    dataset: str = "camvid"
    train_split: str = "train"
    val_split: str = "val"
    ignore_index: int | None = None  # None: the dataset's own (CamVid 11, Cityscapes 255)
    epochs: int = 100
    batch_size: int = 8
    crop: tuple[int, int] = (352, 352)  # (width, height)
    input_size: tuple[int, int] | None = None  # (width, height); None: the registry's
    scale_range: tuple[float, float] = (0.5, 2.0)
    lr: float = 2e-3
    weight_decay: float = 0.01
    optimizer: str = "adamw"  # adamw | sgd
    loss: str = "balanced"  # balanced | ohem | ce
    warmup_iters: int = 100
    workers: int = 0
    device: str = "auto"
    seed: int = 0
    eval_every: int = 1
    resume: bool = False
    init_from: str | None = None
    time_budget_min: float | None = None  # poly schedule reaches 0 when this time is used
    export: str | None = None  # also copy best weights here (atomically) on improvement
    limit: int | None = None  # use only the first N frames of each split (tests, smoke runs)
    amp: bool = True  # mixed precision: fp16 on CUDA, bf16 on CPUs with a bf16 unit
    select: str = "best"  # best: weights of the best validation; final: the last epoch's
    progress: bool = True
    distill: str | None = None  # a soft-label cache folder (seg-perception distill-cache)
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    best_miou: float
    best_epoch: int
    epochs_done: int
    best_path: Path
    last_path: Path
    log_path: Path
    stopped_by_budget: bool


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _AugmentedSet(Dataset):
    """Torch view of a :class:`SegDataset` with per-(seed, epoch, index) augmentation.

    With a soft-label cache (and the frames' keys in it), items also carry the teacher's
    soft map warped like the crop and its valid mask.
    """

    def __init__(self, data: SegDataset, aug: TrainAugment, meta: ModelMeta, seed: int,
                 soft: SoftLabelCache | None = None, keys: list[str] | None = None) -> None:
        self.data, self.aug, self.meta, self.seed = data, aug, meta, seed
        self.soft, self.keys = soft, keys
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        img, lab = self.data.load(index)
        if self.soft is None or self.keys is None:
            img, lab = self.aug(img, lab, rng)
            return to_tensor(img, self.meta.mean, self.meta.std), torch.from_numpy(lab).long()
        entry = self.soft.load(self.keys[index])
        img, lab, soft, valid = self.aug.with_soft(img, lab, entry, rng, self.soft.stride)
        return (to_tensor(img, self.meta.mean, self.meta.std), torch.from_numpy(lab).long(),
                torch.from_numpy(soft), torch.from_numpy(valid))


def _atomic_replace(write: Any, path: Path) -> None:
    """Call ``write(tmp_path)`` then rename over ``path`` (same directory, atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        tmp.chmod(0o644)  # a shipped file must be readable by everyone, whatever umask says
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_weights(model: nn.Module, meta: ModelMeta, path: Path) -> None:
    save_checkpoint(model, path, meta)


def _torch_save(obj: Any, path: Path) -> None:
    torch.save(obj, path)


def _meta_for(model_name: str, data: SegDataset,
              input_size: tuple[int, int] | None = None) -> ModelMeta:
    """Registry metadata with the dataset's classes (so e.g. Cityscapes gets 19 classes).

    ``input_size`` replaces the registry's: the weights then carry it, so the engine runs
    them at the size they were trained for.
    """
    info = data.info
    meta = get_entry(model_name).meta
    return meta.replace(
        input_size=tuple(input_size) if input_size else meta.input_size,
        num_classes=info.num_classes,
        class_names=info.class_names,
        palette=info.palette,
        drivable_classes=info.drivable,
        dataset=info.name,
        ignore_index=info.ignore_index,
    )


# Frames whose statistics start the BNs of a backbone converted from tflite (ImageNet weights).
BN_CALIBRATION_FRAMES = 16


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No weight decay on BatchNorm parameters and biases (standard practice).
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _read_log(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(log_path: Path, out_dir: Path) -> None:
    """``loss.png`` and ``miou.png`` from the CSV log (matplotlib's Agg backend)."""
    rows = _read_log(log_path)
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def curve(x: list[int], y: list[float], label: str, ylabel: str, name: str,
              marker: str | None = None) -> None:
        fig, ax = plt.subplots(figsize=(6, 4))
        if x:
            ax.plot(x, y, marker=marker, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)

    curve([int(r["epoch"]) for r in rows], [float(r["train_loss"]) for r in rows],
          "train loss", "loss", "loss.png")
    val = [(int(r["epoch"]), float(r["val_miou"]) * 100) for r in rows if r["val_miou"]]
    curve([v[0] for v in val], [v[1] for v in val], "val mIoU", "mIoU (%)", "miou.png", "o")


def _kd_note(kd_losses: list[float]) -> str:
    """`` (distillation term x.xxx)`` for the epoch's log line, empty without distillation."""
    return f" (distillation term {np.mean(kd_losses):.5f})" if kd_losses else ""


def _poly_lr(cfg: TrainConfig, it: int, total: int, elapsed: float) -> tuple[float, float]:
    """Learning rate and schedule progress in [0, 1] (by iterations or by the time budget)."""
    progress = it / max(total, 1)
    if cfg.time_budget_min:
        progress = max(progress, elapsed / (cfg.time_budget_min * 60.0))
    progress = min(progress, 1.0)
    lr = cfg.lr * (1.0 - progress) ** 0.9
    if cfg.warmup_iters and it < cfg.warmup_iters:
        lr *= (it + 1) / cfg.warmup_iters
    return lr, progress


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) training as configured; returns where the results were written."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    device = resolve_device(cfg.device)
    if cfg.select not in ("best", "final"):
        raise ValueError(f"select {cfg.select!r}: choose best or final")
    use_amp = cfg.amp and device.type == "cuda"
    # bf16 autocast on a CPU with a bf16 unit: 1.3x per training step on 2 Zen 5 cores.
    cpu_bf16 = cfg.amp and device.type == "cpu" and cpu_bf16_unit() is not None
    amp_dtype = torch.float16 if use_amp else torch.bfloat16
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path, log_path = out / "last.pt", out / "best.safetensors", out / "log.csv"
    latest_path = out / "latest.safetensors"

    train_set = open_dataset(cfg.dataset, cfg.data_root, cfg.train_split, cfg.ignore_index,
                             cfg.limit)
    val_set = open_dataset(cfg.dataset, cfg.data_root, cfg.val_split, cfg.ignore_index,
                           cfg.limit)
    soft, soft_keys, distiller, distill_info = None, None, None, {}
    if cfg.distill:
        # Checked before anything is built: a cache that cannot serve the run fails now.
        soft = SoftLabelCache.open(cfg.distill)
        soft_keys = soft.check(train_set, cfg.data_root)
        distiller = DistillationLoss(cfg.distill_weight, cfg.distill_temperature).to(device)
        distill_info = {"distill": {
            "cache": str(cfg.distill), "teacher": soft.manifest.get("teacher"),
            "teacher_weights_sha256": soft.manifest.get("weights_sha256"),
            "stride": soft.stride, "weight": cfg.distill_weight,
            "temperature": cfg.distill_temperature}}
        log.info("distillation from %s (teacher %s, stride %d): weight %g, temperature %g",
                 cfg.distill, soft.manifest.get("teacher"), soft.stride, cfg.distill_weight,
                 cfg.distill_temperature)
    meta = _meta_for(cfg.model, train_set, cfg.input_size)
    model = create_model(cfg.model, meta=meta)
    if cfg.init_from:
        init_from(model, cfg.init_from)
    model.to(device)
    log.info("model %s: %.2f M parameters, %d classes, input %dx%d, device %s%s",
             cfg.model, sum(p.numel() for p in model.parameters()) / 1e6, meta.num_classes,
             *meta.input_size, device, " (bf16 autocast)" if cpu_bf16 else "")

    log.info("%d training / %d validation frames; computing class frequencies",
             len(train_set), len(val_set))
    freq = train_set.class_frequencies()
    criterion = build_loss(cfg.loss, train_set.info.ignore_index, freq).to(device)
    if cfg.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            _param_groups(model, cfg.weight_decay), lr=cfg.lr)
    elif cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(_param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                    momentum=0.9, nesterov=True)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adamw or sgd")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    aug = TrainAugment(meta.input_size, tuple(cfg.crop), tuple(cfg.scale_range),
                       ignore_index=train_set.info.ignore_index)
    train_view = _AugmentedSet(train_set, aug, meta, cfg.seed, soft, soft_keys)
    if cfg.init_from and str(cfg.init_from).lower().endswith(".tflite"):
        from seg_perception.runtime.models.mobilenet import calibrate_batchnorm

        n = min(len(train_view), BN_CALIBRATION_FRAMES)
        frames = [train_view[i][0][None].to(device) for i in range(n)]
        log.info("calibrated %d backbone BatchNorms on %d training frames",
                 calibrate_batchnorm(model, frames), n)
    drop_last = len(train_set) >= cfg.batch_size
    steps_per_epoch = (len(train_set) // cfg.batch_size if drop_last else 1)
    total_iters = steps_per_epoch * cfg.epochs

    epoch, iteration, elapsed = 0, 0, 0.0
    best_miou, best_epoch = -1.0, 0
    if cfg.resume:
        if last_path.is_file():
            state = torch.load(last_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if use_amp and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            epoch, iteration = int(state["epoch"]), int(state["iteration"])
            elapsed = float(state["elapsed"])
            best_miou, best_epoch = float(state["best_miou"]), int(state["best_epoch"])
            log.info("resumed from %s at epoch %d (iteration %d, best mIoU %.4f)",
                     last_path, epoch, iteration, best_miou)
        else:
            log.warning("--resume: %s does not exist; starting from scratch", last_path)

    stopped_by_budget = False
    progress_done = _poly_lr(cfg, iteration, total_iters, elapsed)[1] >= 1.0
    while epoch < cfg.epochs and not progress_done:
        epoch += 1
        train_view.epoch = epoch
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        loader = DataLoader(train_view, batch_size=cfg.batch_size, shuffle=True,
                            drop_last=drop_last, num_workers=cfg.workers, generator=gen,
                            pin_memory=device.type == "cuda",
                            persistent_workers=False)
        model.train()
        t0 = time.perf_counter()
        elapsed_before = elapsed
        losses: list[float] = []
        kd_losses: list[float] = []
        lr = cfg.lr
        batches = loader
        if cfg.progress:
            from tqdm import tqdm

            batches = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                           leave=False, mininterval=1.0 if sys.stderr.isatty() else 60.0)
        for images, labels, *teacher in batches:
            lr, progress = _poly_lr(cfg, iteration, total_iters,
                                    elapsed + time.perf_counter() - t0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp or cpu_bf16):
                raw = model(images)
                logits = F.interpolate(raw, size=labels.shape[1:], mode="bilinear",
                                       align_corners=False)
                loss = criterion(logits.float(), labels)
                if distiller is not None:
                    soft_map, valid = (t.to(device, non_blocking=True) for t in teacher)
                    kd = distiller(raw.float(), soft_map, valid)
                    kd_losses.append(float(kd.detach()))
                    loss = loss + kd
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            iteration += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at iteration {iteration}")
            losses.append(value)
            if cfg.progress and hasattr(batches, "set_postfix"):
                batches.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.2e}", refresh=False)
            if progress >= 1.0:
                stopped_by_budget = True
                break
        epoch_seconds = time.perf_counter() - t0
        elapsed += epoch_seconds
        progress_done = _poly_lr(cfg, iteration, total_iters, elapsed)[1] >= 1.0
        if progress_done and epoch < cfg.epochs:
            stopped_by_budget = True
        last_epoch = epoch >= cfg.epochs or progress_done
        row: dict[str, Any] = {
            "epoch": epoch, "iterations": iteration, "lr": f"{lr:.6g}",
            "train_loss": f"{np.mean(losses):.5f}" if losses else "",
            "val_miou": "", "val_pixel_accuracy": "",
            "epoch_seconds": f"{epoch_seconds:.1f}", "elapsed_seconds": f"{elapsed:.1f}",
        }
        if epoch % cfg.eval_every == 0 or last_epoch:
            result = evaluate(model, meta, val_set, device)
            cm = result.confusion
            miou = cm.miou()
            row["val_miou"] = f"{miou:.5f}"
            row["val_pixel_accuracy"] = f"{cm.pixel_accuracy():.5f}"
            log.info("epoch %d: loss %s%s, val mIoU %.2f%%, pixel acc %.2f%% (%.0f s eval)",
                     epoch, row["train_loss"], _kd_note(kd_losses), miou * 100,
                     cm.pixel_accuracy() * 100, result.seconds)
            epoch_meta = meta.replace(extra={
                **cfg.extra, **distill_info, "val_miou": round(miou, 5),
                "val_split": cfg.val_split, "epoch": epoch, "epochs": cfg.epochs, "seed": cfg.seed,
                "train_split": cfg.train_split, "selection": cfg.select,
            })
            write = functools.partial(_save_weights, model, epoch_meta)
            if cfg.select == "final":
                # A fixed schedule: the weights of the latest epoch, never picked by a score.
                _atomic_replace(write, latest_path)
                if cfg.export:
                    _atomic_replace(write, Path(cfg.export))
            if miou > best_miou:
                best_miou, best_epoch = miou, epoch
                summary = cm.summary(meta.class_names)
                _atomic_replace(write, best_path)
                if cfg.export and cfg.select == "best":
                    _atomic_replace(write, Path(cfg.export))
                (out / "best_val.json").write_text(json.dumps(
                    {**summary, "epoch": epoch}, indent=2))
                plot_confusion(cm, meta.class_names, out / "confusion_best.png",
                               f"{cfg.val_split} epoch {epoch}: mIoU {miou * 100:.1f}%")
                log.info("new best val mIoU %.2f%% -> %s", miou * 100, best_path)
        else:
            log.info("epoch %d: loss %s%s (%.0f s)", epoch, row["train_loss"],
                     _kd_note(kd_losses), epoch_seconds)
        # The budget is wall-clock: evaluation, plots and saving count too.
        elapsed = elapsed_before + time.perf_counter() - t0
        row["elapsed_seconds"] = f"{elapsed:.1f}"
        new_log = not log_path.is_file()
        with log_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            if new_log:
                writer.writeheader()
            writer.writerow(row)
        if row["val_miou"]:
            plot_curves(log_path, out)
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if use_amp else {}, "epoch": epoch,
            "iteration": iteration, "elapsed": elapsed, "best_miou": best_miou,
            "best_epoch": best_epoch, "config": json.dumps(asdict(cfg), default=str),
        }
        _atomic_replace(functools.partial(_torch_save, state), last_path)
    if stopped_by_budget:
        log.info("time budget of %.1f min used up after epoch %d", cfg.time_budget_min, epoch)
    return TrainResult(best_miou, best_epoch, epoch, best_path, last_path, log_path,
                       stopped_by_budget)


__all__ = ["TrainConfig", "TrainResult", "init_from", "plot_curves", "resolve_device", "train"]
