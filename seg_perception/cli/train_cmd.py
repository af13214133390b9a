"""``seg-perception train``: train a registered network on CamVid- or Cityscapes-layout data."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from seg_perception.cli import arg_types

log = logging.getLogger(__name__)


def _range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    try:
        return float(lo), float(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}") from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a registered network on a segmentation dataset",
        description="Train a registered network (random scale/crop/flip/colour augmentation, "
        "poly learning rate, class-balanced or OHEM cross-entropy, validation every N "
        "epochs). Writes OUT/log.csv, OUT/loss.png, OUT/miou.png, OUT/last.pt (for --resume) "
        "and OUT/best.safetensors (best by validation mIoU, loadable with --checkpoint).",
    )
    p.add_argument("--model", default="default",
                   help="registered model name (default: %(default)s)")
    arg_types.add_dataset(p)
    p.add_argument("--train-split", default="train",
                   help="CamVid: list names joined by + with an optional sequence filter, "
                   "e.g. train+val:-0006R0 (all but drive 0006R0) or train:0006R0")
    p.add_argument("--val-split", default="val", help="as --train-split")
    p.add_argument("--ignore-index", type=int, default=None,
                   help="label id ignored in loss and metrics (default: CamVid 11, "
                   "Cityscapes 255)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=arg_types.size_or_square, default=(352, 352),
                   help="crop N or WxH (pixels)")
    p.add_argument("--input-size", type=arg_types.size, default=None, metavar="WxH",
                   help="network input size the weights are trained for and carry in their "
                   "metadata (default: the model's own); --scale is relative to it")
    p.add_argument("--scale", type=_range, default=(0.5, 2.0),
                   help="random scale range relative to the model input size (MIN,MAX)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--loss", choices=("balanced", "ohem", "ce"), default="balanced",
                   help="balanced: ENet class weights from frequencies; ohem: hard pixels")
    p.add_argument("--warmup-iters", type=int, default=100)
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-amp", action="store_true",
                   help="no mixed precision (fp16 on CUDA, bf16 on CPUs with AMX/AVX-512 BF16)")
    p.add_argument("--select", choices=("best", "final"), default="best",
                   help="which weights --export gets: best by validation mIoU, or the final "
                   "epoch's (a fixed schedule; the validation score then is an honest estimate "
                   "when the validation split is held out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=1, help="validate every N epochs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init-from", metavar="WEIGHTS", default=None,
                   help="start from these weights (tensors of another shape are skipped); "
                   "a .tflite ImageNet MobileNet fills a student's backbone (mnv1_fpn_050, "
                   "mnv1_fpn_075, mnv2_fpn) strictly")
    p.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="finish within MIN minutes: the poly schedule runs on whichever of "
                   "iterations or time is further along, and training stops at the end")
    p.add_argument("--export", default=None, metavar="FILE",
                   help="also write the best weights here (atomically) whenever val improves")
    p.add_argument("--limit", type=int, default=None, help="use only the first N frames")
    p.add_argument("--distill", metavar="DIR", default=None,
                   help="add a distillation term towards a teacher's soft labels cached in DIR "
                   "by `seg-perception distill-cache` (warped with each crop's own "
                   "scale/crop/flip; every training frame must have an entry)")
    p.add_argument("--distill-weight", type=float, default=1.0,
                   help="weight of the distillation term (default: %(default)s)")
    p.add_argument("--distill-temperature", type=float, default=1.0,
                   help="softmax temperature of teacher and student in that term "
                   "(default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from seg_perception.runtime.models.zoo import DEFAULT_MODEL
    from seg_perception.training.trainer import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    model = DEFAULT_MODEL if args.model in ("", "default") else args.model
    cfg = TrainConfig(
        model=model, data_root=args.data_root, out=args.out, dataset=args.dataset,
        train_split=args.train_split, val_split=args.val_split, ignore_index=args.ignore_index,
        epochs=args.epochs, batch_size=args.batch_size, crop=args.crop,
        input_size=args.input_size, scale_range=args.scale,
        lr=args.lr, weight_decay=args.weight_decay, optimizer=args.optimizer, loss=args.loss,
        warmup_iters=args.warmup_iters, workers=args.workers, device=args.device,
        seed=args.seed, eval_every=args.eval_every, resume=args.resume,
        init_from=args.init_from, time_budget_min=args.time_budget, export=args.export,
        limit=args.limit, amp=not args.no_amp, progress=not args.no_progress,
        select=args.select, distill=args.distill, distill_weight=args.distill_weight,
        distill_temperature=args.distill_temperature,
        extra={"command": "seg-perception " + shlex.join(sys.argv[1:])},
    )
    try:
        result = train(cfg)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 2
    print(f"best val mIoU {result.best_miou * 100:.2f}% at epoch {result.best_epoch} "
          f"({result.epochs_done} epochs done) -> {result.best_path}")
    return 0
