"""Check ``espnetv2_city`` against the official EdgeNets implementation (a dev tool).

The project's ESPNetv2 is its own code; this script runs the authors' model once as the
reference, on the same input tensor, and reports the largest logit difference and the label
agreement. It needs a checkout of github.com/sacmehta/EdgeNets (commit 2b232d3; only
``model/``, ``nn_layers/``, ``utilities/`` and ``commons/`` are imported, torchvision is not
needed) and is not run by the tests; ``test/unit/runtime/test_espnetv2.py`` holds the numbers
it printed.

    git clone https://github.com/sacmehta/EdgeNets /tmp/edgenets
    PYTHONPATH=. python scripts/espnetv2_reference.py --edgenets /tmp/edgenets \\
        --weights ../shared/models/espnetv2_city/espnetv2_s_2.0_city_1024x512.pth \\
        --image ../shared/data/cityscapes_samples/frankfurt_000000_002196_leftImg8bit.png

The frame is prepared as the project does (OpenCV resize to 1024x512, ImageNet mean/std);
both networks get that tensor. The official model upsamples its stride-2 scores to the input
size with ``align_corners=True`` inside its forward; ours leaves that to the engine, so the
comparison is made twice: at stride 2 (the official decoder's output, taken with a forward
hook) and at full size after the same ``align_corners=True`` resize. The last lines print the
official logits at the fixed pixels the test checks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seg_perception.runtime.models.checkpoint import load_model
from seg_perception.training.datasets import read_rgb
from seg_perception.training.transforms import resize_to_input, to_tensor

# (row, column) in the stride-2 output of a 1024x512 input, i.e. 256x512: road below the
# middle, building and sky up top, a few in between; the test reads the same pixels.
PROBE_PIXELS = ((240, 256), (200, 128), (20, 256), (10, 180), (128, 256), (150, 400))


def official_model(edgenets: Path, weights: Path) -> torch.nn.Module:
    """The authors' ESPNetv2 segmenter (s=2.0, 20 Cityscapes outputs), strictly loaded."""
    sys.path.insert(0, str(edgenets))
    from model.segmentation.espnetv2 import ESPNetv2Segmentation

    args = argparse.Namespace(s=2.0, classes=20, dataset="city", weights="", channels=3,
                              num_classes=1000)
    model = ESPNetv2Segmentation(args, classes=20, dataset="city")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--edgenets", type=Path, required=True, help="EdgeNets checkout")
    p.add_argument("--weights", type=Path, required=True, help="espnetv2_s_2.0_city_1024x512.pth")
    p.add_argument("--image", type=Path, required=True, help="an RGB frame (any size)")
    p.add_argument("--size", default="1024x512", help="network input WxH (default 1024x512)")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    ours = load_model("espnetv2_city", args.weights)
    theirs = official_model(args.edgenets, args.weights)
    meta = ours.meta
    x = to_tensor(resize_to_input(read_rgb(args.image), (w, h)), meta.mean, meta.std)[None]

    grabbed: dict[str, torch.Tensor] = {}
    hook = theirs.bu_dec_l4.register_forward_hook(
        lambda _m, _i, out: grabbed.__setitem__("stride2", out.detach()))
    with torch.inference_mode():
        ref_full = theirs(x)
        mine = ours.model(x)
    hook.remove()
    ref2 = grabbed["stride2"]
    mine_full = F.interpolate(mine, size=(h, w), mode="bilinear", align_corners=True)

    for name, a, b in (("stride 2", mine, ref2), ("full size", mine_full, ref_full)):
        diff = (a - b).abs()
        agree = (a.argmax(1) == b.argmax(1)).float().mean().item()
        print(f"{name}: shape {tuple(a.shape)}, max |logit diff| {diff.max().item():.3g}, "
              f"mean {diff.mean().item():.3g}, logit range [{b.min().item():.2f}, "
              f"{b.max().item():.2f}], label agreement {agree * 100:.4f}%")
    labels = ref2.argmax(1)[0]
    counts = np.bincount(labels.flatten().numpy(), minlength=meta.num_classes)
    top = np.argsort(counts)[::-1][:5]
    print("official labels, top classes: " + ", ".join(
        f"{meta.class_names[c]} {counts[c] / counts.sum() * 100:.1f}%" for c in top))
    print("official stride-2 logits at probe pixels (row, col): argmax, then "
          "(class, logit) for road, building, vegetation, sky, car:")
    probe_classes = (0, 2, 8, 10, 13)
    for r, c in PROBE_PIXELS:
        vals = ref2[0, :, r, c]
        shown = ", ".join(f"({k}, {vals[k].item():.4f})" for k in probe_classes)
        print(f"  ({r}, {c}): argmax {meta.class_names[int(vals.argmax())]}; {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
