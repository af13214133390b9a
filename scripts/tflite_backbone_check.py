"""Dev check: our converted MobileNets (fp32) against the LiteRT interpreter (int8) on ImageNet.

Why: ``load_tflite_backbone`` must put every ImageNet weight where the graph has it. With no
ImageNet here, the check compares top-1 and top-5 of the two on real driving frames of
``../shared/data`` (CamVid, BDD100K, Cityscapes) plus a few crops and flips of them, each
resized to the classifier's input. The interpreter's logits are read before its uint8
softmax (which ties at 1/256). Needs ``ai-edge-litert`` (``pip install ai-edge-litert``);
not a test dependency.

    PYTHONPATH=. python scripts/tflite_backbone_check.py [--shared ../shared] [--symmetric]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seg_perception.runtime.models.mobilenet import MobileNetV1, MobileNetV2, load_tflite_backbone

MODELS = {
    "mobilenet_v1_0.5_160_quant.tflite": lambda tf: MobileNetV1(0.5, tf_padding=tf),
    "mobilenet_v1_0.75_192_quant.tflite": lambda tf: MobileNetV1(0.75, tf_padding=tf),
    "mobilenet_v2_1.0_224_quant.tflite": lambda tf: MobileNetV2(tf_padding=tf),
}


def frames(shared: Path, limit: int) -> list[Image.Image]:
    """Real frames (every 10th CamVid val frame, the BDD and Cityscapes samples) and views."""
    data = shared / "data"
    paths = sorted((data / "camvid" / "val").glob("*.png"))[::10]
    paths += sorted((data / "bdd100k_samples").glob("*.*"))
    paths += sorted((data / "cityscapes_samples").glob("*.*"))
    out = []
    for p in paths:
        if p.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            continue
        im = Image.open(p).convert("RGB")
        w, h = im.size
        out += [im, im.crop((0, 0, w // 2, h // 2)), im.crop((w // 4, h // 4, 3 * w // 4, h)),
                im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return out[:limit]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--limit", type=int, default=64, help="images per model")
    ap.add_argument("--symmetric", action="store_true",
                    help="PyTorch's symmetric padding (as the students) instead of TF SAME")
    args = ap.parse_args()
    from ai_edge_litert.interpreter import Interpreter

    torch.set_num_threads(1)
    shared = Path(args.shared)
    images = frames(shared, args.limit)
    print(f"{len(images)} images; padding: {'symmetric' if args.symmetric else 'TF SAME'}")
    for name, build in MODELS.items():
        path = shared / "models" / "coral" / name
        model = build(not args.symmetric).eval()
        load_tflite_backbone(model, path)
        it = Interpreter(str(path), experimental_preserve_all_tensors=True)
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        size = int(inp["shape"][1])
        ops = it._get_ops_details()
        logits_idx = [op for op in ops if op["op_name"] == "CONV_2D"][-1]["outputs"][0]
        ld = next(t for t in it.get_tensor_details() if t["index"] == logits_idx)
        lscale, lzp = ld["quantization"]
        top1 = overlap = 0
        diffs = []
        for im in images:
            x = np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
            it.set_tensor(inp["index"], x[None])
            it.invoke()
            ref = (it.get_tensor(logits_idx).reshape(-1).astype(np.float32) - lzp) * lscale
            t = torch.from_numpy((x.astype(np.float32) - 128.0) / 128.0).permute(2, 0, 1)[None]
            with torch.no_grad():
                ours = model(t)[0].numpy()
            top1 += int(ours.argmax() == ref.argmax())
            overlap += len(set(np.argsort(-ours)[:5]) & set(np.argsort(-ref)[:5]))
            diffs.append(float(np.abs(ours - ref).max() / (np.abs(ref).max() + 1e-9)))
        n = len(images)
        print(f"{name}: top-1 agreement {top1}/{n} ({100 * top1 / n:.1f} %), top-5 overlap "
              f"{overlap / n:.2f}/5, max |logit diff| / max |logit| median "
              f"{np.median(diffs):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
