"""Quickstart: build UNetResAttnV3 and segment one image.

Small settings (the default) build a narrow, randomly initialised model and segment a
synthetic SUIM-style scene on the CPU in a couple of seconds:

    python examples/quickstart.py

It writes one file, ``overlay.png``, to ``--out`` (default ``./suimseg-examples/quickstart``).

Full scale, on a GPU, with a trained checkpoint and a real SUIM test image:

    suimseg train --data SUIM --out runs/v3          # or examples/trainer.py --full
    python examples/quickstart.py --checkpoint runs/v3/best.pt \
        --image SUIM/TEST/images/d_r_47_.jpg --size 384 --device cuda

Without ``--checkpoint``, ``--full`` builds the full 74.3M-parameter model (ResNet-50
encoder; add ``--encoder-weights imagenet`` to load ImageNet weights, which downloads
them once). An untrained model's labels are noise: train it first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from suimseg import CLASS_NAMES, UNetResAttnV3, load_model
from suimseg.data import eval_transforms, overlay, render_scene


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Full scale: --checkpoint runs/v3/best.pt --image SUIM/TEST/images/X.jpg "
        "--size 384 --device cuda",
    )
    parser.add_argument("--image", type=Path, help="image file (default: a synthetic scene)")
    parser.add_argument("--checkpoint", type=Path, help="a trained suimseg best.pt/last.pt")
    parser.add_argument("--full", action="store_true", help="the full-size V3 model")
    parser.add_argument(
        "--encoder-weights", default=None, help="'imagenet' or a local .pth (with --full)"
    )
    parser.add_argument("--size", type=int, default=64, help="model input size (384 on SUIM)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("suimseg-examples/quickstart"),
        help="output folder (default: ./suimseg-examples/quickstart)",
    )
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> torch.nn.Module:
    if args.checkpoint is not None:
        return load_model(args.checkpoint, map_location=args.device)  # eval mode
    if args.full:
        model = UNetResAttnV3(encoder_weights=args.encoder_weights)  # 74.3M parameters
    else:
        model = UNetResAttnV3(
            encoder="resnet18", decoder_channels=(16, 16, 8, 8), bridge_channels=16
        )
    return model.to(args.device).eval()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = args.out.resolve()
    print(f"output folder: {out}")
    torch.manual_seed(0)
    model = build(args)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {type(model).__name__}, {n_params / 1e6:.2f}M parameters")

    if args.image is not None:
        image = Image.open(args.image).convert("RGB")
    else:
        image, _ = render_scene(np.random.default_rng(0), (160, 120))

    # Preprocess exactly as training's evaluation does: resize (antialiased bilinear, in
    # uint8), scale to [0, 1], ImageNet-normalise. The transform is joint (image, mask);
    # there is no mask here, so it gets an empty one. (suimseg.inference.Predictor does
    # all of this, and the resizing back, for any number of images.)
    blank = np.zeros((image.height, image.width), np.uint8)
    x, _ = eval_transforms(args.size)(image, blank)
    x = x.unsqueeze(0).to(args.device)  # (1, 3, size, size)

    with torch.inference_mode():
        small = model(x)  # (1, num_classes, size, size)
    # Back to the image's own size before the argmax.
    logits = torch.nn.functional.interpolate(
        small, size=(image.height, image.width), mode="bilinear", align_corners=False
    )
    labels = logits.argmax(1)[0].cpu()  # (H, W) int64
    print(
        f"image {image.width}x{image.height} -> model input {tuple(x.shape)} -> logits "
        f"{tuple(small.shape)}, resized to {tuple(logits.shape)}"
    )

    counts = torch.bincount(labels.flatten(), minlength=len(CLASS_NAMES))
    for name, count in zip(CLASS_NAMES, counts.tolist(), strict=True):
        print(f"  {name:<32} {100 * count / labels.numel():6.2f}%")

    out.mkdir(parents=True, exist_ok=True)
    overlay(image, labels, alpha=0.5, show_legend=True).save(out / "overlay.png")
    print(f"overlay written to {out / 'overlay.png'}")
    print(f"output folder: {out}")


if __name__ == "__main__":
    main()
