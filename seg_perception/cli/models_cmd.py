"""``seg-perception models``: what networks are registered and what each one expects.

So that choosing ``model:=`` for the node, or ``--model`` for the tools, needs no source
reading: classes, input size, normalisation, the checkpoint layout it accepts and whether
weights ship with the package.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list registered networks and what they expect",
        description="List every registered network: aliases, classes, native input size, "
        "input normalisation, accepted checkpoint format, parameter count and whether "
        "trained weights ship with the package.",
    )
    p.add_argument("name", nargs="?", default=None,
                   help="show only this model (name or alias), with its class list")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def _normalisation(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    if tuple(mean) == IMAGENET_MEAN and tuple(std) == IMAGENET_STD:
        return "RGB/255, ImageNet mean/std"
    if all(m == 0 for m in mean) and all(s == 1 for s in std):
        return "RGB/255 only"
    return f"RGB/255, mean {tuple(mean)}, std {tuple(std)}"


def count_parameters(name: str) -> int | None:
    """Parameters of the registered network, built on the meta device (no memory, fast)."""
    import torch

    from seg_perception.runtime.models import create_model

    try:
        with torch.device("meta"):
            model = create_model(name)
        return sum(p.numel() for p in model.parameters())
    except Exception as exc:  # a builder that cannot run on the meta device
        log.debug("meta build of %s failed (%s); counting on the CPU", name, exc)
        try:
            return sum(p.numel() for p in create_model(name).parameters())
        except Exception as exc2:
            log.warning("cannot build %s: %s", name, exc2)
            return None


def describe(name: str) -> dict[str, Any]:
    """Everything ``models`` reports about one registered network."""
    from seg_perception.runtime.models import get_entry, list_aliases
    from seg_perception.runtime.models.zoo import DEFAULT_MODEL

    entry = get_entry(name)
    meta = entry.meta
    params = count_parameters(entry.name)
    shipped = entry.shipped_weights_path()
    return {
        "name": entry.name,
        "default": entry.name == DEFAULT_MODEL,
        "aliases": sorted(a for a, n in list_aliases().items() if n == entry.name),
        "description": entry.description,
        "dataset": meta.dataset,
        "num_classes": meta.num_classes,
        "class_names": list(meta.class_names),
        "palette": [list(c) for c in meta.palette],
        "drivable_classes": list(meta.drivable_classes),
        "input_size": list(meta.input_size),
        "mean": list(meta.mean),
        "std": list(meta.std),
        "normalisation": _normalisation(meta.mean, meta.std),
        "output_stride": meta.output_stride,
        "checkpoint_format": entry.checkpoint_format,
        "parameters": params,
        "parameters_m": None if params is None else round(params / 1e6, 3),
        "shipped_weights": shipped is not None,
        "shipped_weights_path": str(shipped) if shipped else None,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    headers = ("name", "aliases", "classes", "input", "normalisation", "checkpoint",
               "params", "weights")
    cells = []
    for r in rows:
        cells.append((
            r["name"] + (" (default)" if r["default"] else ""),
            ", ".join(r["aliases"]) or "-",
            f"{r['num_classes']} {r['dataset']}".strip(),
            "{}x{}".format(*r["input_size"]),
            r["normalisation"],
            r["checkpoint_format"],
            "?" if r["parameters_m"] is None else f"{r['parameters_m']:.2f} M",
            "shipped" if r["shipped_weights"] else "none",
        ))
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from seg_perception.runtime.models import list_models, resolve_name

    try:
        names = [resolve_name(args.name)] if args.name else list_models()
    except KeyError as exc:
        log.error("%s", exc.args[0])
        return 2
    rows = [describe(n) for n in names]
    if args.json:
        print(json.dumps(rows if not args.name else rows[0], indent=2))
        return 0
    print(_table(rows))
    if args.name:
        r = rows[0]
        print(f"\n{r['description']}")
        print(f"output stride {r['output_stride']}; drivable classes "
              f"{[r['class_names'][i] for i in r['drivable_classes']]}")
        for i, (cls, rgb) in enumerate(zip(r["class_names"], r["palette"], strict=True)):
            print(f"  {i:3d} {cls:<20s} rgb{tuple(rgb)}")
    else:
        print("\nWithout shipped weights a model runs with random weights unless a "
              "checkpoint is given: the authors' file in the listed format, or ours "
              "(.safetensors).")
    return 0
