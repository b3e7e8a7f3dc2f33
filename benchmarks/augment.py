"""Benchmark augmentation cost: loader-side per transform (CPU) and device-side per batch.

Two parts:

- ``loader``: the CPU cost of every step of :func:`~suimseg.data.train_transforms` at the
  target size, each timed alone, ms per image: the antialiased uint8 resize from 640x480
  and from 1920x1080 sources, horizontal and vertical flip, ``RandomAffine``,
  ``ColorJitter``, ``GaussianBlur`` and ``ToDtype + Normalize``, on the ``(Image, Mask)``
  pair the pipeline passes (uint8 ``(3, S, S)`` image, uint8 ``(S, S)`` mask). Random
  steps are forced on (``p = 1``) so the figure is the cost *when applied*; the
  ``expected`` column weights it by ``train_transforms``' default probability. Whole
  pipelines (``train_transforms(S)`` float output, and the resize-only
  ``train_transforms(S, augment=False, output="uint8")`` that pairs with device-side
  augmentation) are timed too. One torch thread by default, as in a DataLoader worker.
- ``device``: :class:`~suimseg.data.DeviceAugment` (default settings, every probability
  1, and one step at a time) and :class:`~suimseg.data.DeviceNormalize` on a uint8 batch
  on ``--device`` (CUDA if available by default), ms per batch and per image; on CUDA
  every repetition is synchronised.

Timings are medians over ``--repeats`` repetitions after ``--warmup`` untimed ones.

Usage::

    python benchmarks/augment.py            # quick: batch 8 at 384, few repeats (< 1 min)
    python benchmarks/augment.py --full     # more repeats, batch 32
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from _common import (
    machine_info,
    make_parser,
    parse,
    pick,
    print_table,
    start,
    time_repeats,
    write_report,
)
from torchvision import tv_tensors
from torchvision.transforms import v2

from suimseg.classes import IGNORE_INDEX
from suimseg.data.device_augment import DeviceAugment, DeviceNormalize
from suimseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transforms

# train_transforms' defaults (the probabilities weight the "expected" column).
P_FLIP, P_AFFINE, P_COLOR = 0.5, 0.5, 0.5
SOURCES = ((640, 480), (1920, 1080))


def _smooth_images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Photograph-like uint8 images: random coarse noise upsampled (not white noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(1, h // 16), max(1, w // 16), generator=g)
    up = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")
    return up.mul(255).round().to(torch.uint8)


def _masks(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 8, (n, 1, max(1, h // 32), max(1, w // 32)), generator=g)
    up = torch.nn.functional.interpolate(coarse.float(), size=(h, w), mode="nearest")
    return up.squeeze(1).to(torch.uint8)


def loader_steps(size: int) -> list[tuple[str, str, Any, float]]:
    """``(step, input, transform, default probability)`` for every timed loader step."""
    affine = v2.RandomAffine(
        degrees=(-45.0, 45.0),
        translate=(0.0625, 0.0625),
        scale=(0.9, 1.1),
        interpolation=v2.InterpolationMode.BILINEAR,
        fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX},
    )
    steps: list[tuple[str, str, Any, float]] = [
        (
            "resize (antialias)",
            f"{w}x{h}",
            v2.Resize([size, size], antialias=True),
            1.0,
        )
        for w, h in SOURCES
    ]
    steps += [
        ("hflip", f"{size}x{size}", v2.RandomHorizontalFlip(p=1.0), P_FLIP),
        ("vflip", f"{size}x{size}", v2.RandomVerticalFlip(p=1.0), P_FLIP),
        ("RandomAffine", f"{size}x{size}", affine, P_AFFINE),
        (
            "ColorJitter",
            f"{size}x{size}",
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05),
            P_COLOR / 2,
        ),
        (
            "GaussianBlur",
            f"{size}x{size}",
            v2.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0)),
            P_COLOR / 2,
        ),
        (
            "ToDtype + Normalize",
            f"{size}x{size}",
            v2.Compose(
                [
                    v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
                    v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
                ]
            ),
            1.0,
        ),
    ]
    return steps


def _time_per_image(
    fn: Callable[[int], Any], n_images: int, *, warmup: int, repeats: int
) -> dict[str, Any]:
    """Median ms per image of ``fn(i)`` over ``n_images`` inputs, ``repeats`` times."""

    def run() -> None:
        for i in range(n_images):
            fn(i)

    t = time_repeats(run, device=torch.device("cpu"), warmup=warmup, repeats=repeats)
    return {
        "ms_per_image": 1000 * t["median_s"] / n_images,
        "runs_ms_per_image": [1000 * r / n_images for r in t["runs_s"]],
    }


def measure_loader(size: int, n_images: int, warmup: int, repeats: int) -> list[dict[str, Any]]:
    """Per-step CPU cost of the loader-side pipeline (see the module docstring)."""
    results: list[dict[str, Any]] = []
    pairs: dict[str, list[tuple[tv_tensors.Image, tv_tensors.Mask]]] = {}
    for w, h in [*SOURCES, (size, size)]:
        images = _smooth_images(n_images, h, w, seed=w)
        masks = _masks(n_images, h, w, seed=h)
        pairs[f"{w}x{h}"] = [
            (tv_tensors.Image(images[i]), tv_tensors.Mask(masks[i])) for i in range(n_images)
        ]
    for step, source, transform, p in loader_steps(size):
        data = pairs[source]
        t = _time_per_image(
            lambda i, d=data, tr=transform: tr(*d[i]), n_images, warmup=warmup, repeats=repeats
        )
        results.append(
            {
                "step": step,
                "input": source,
                "probability": p,
                **t,
                "expected_ms_per_image": p * t["ms_per_image"],
            }
        )
    pipelines = [
        ("train_transforms (float out)", train_transforms(size)),
        ("resize only (uint8 out)", train_transforms(size, augment=False, output="uint8")),
    ]
    for name, pipeline in pipelines:
        for w, h in SOURCES:
            data = [
                (img.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor))
                for img, m in pairs[f"{w}x{h}"]
            ]
            t = _time_per_image(
                lambda i, d=data, pl=pipeline: pl(*d[i]), n_images, warmup=warmup, repeats=repeats
            )
            results.append(
                {
                    "step": f"pipeline: {name}",
                    "input": f"{w}x{h}",
                    "probability": 1.0,
                    **t,
                    "expected_ms_per_image": t["ms_per_image"],
                }
            )
    return results


def device_modules() -> list[tuple[str, torch.nn.Module]]:
    """The device-side configurations timed (``DeviceAugment`` defaults = train_transforms')."""
    off = {"hflip_p": 0.0, "vflip_p": 0.0, "affine_p": 0.0, "color_p": 0.0}
    return [
        ("DeviceNormalize", DeviceNormalize()),
        ("DeviceAugment (defaults)", DeviceAugment()),
        (
            "DeviceAugment (every p = 1)",
            DeviceAugment(hflip_p=1.0, vflip_p=1.0, affine_p=1.0, color_p=1.0),
        ),
        ("DeviceAugment (flips only)", DeviceAugment(**off | {"hflip_p": 0.5, "vflip_p": 0.5})),
        ("DeviceAugment (affine p = 1)", DeviceAugment(**off | {"affine_p": 1.0})),
        ("DeviceAugment (color p = 1)", DeviceAugment(**off | {"color_p": 1.0})),
    ]


def measure_device(
    device: torch.device, size: int, batch: int, warmup: int, repeats: int
) -> list[dict[str, Any]]:
    """Per-batch and per-image cost of the device-side modules."""
    images = _smooth_images(batch, size, size, seed=0).to(device)
    masks = _masks(batch, size, size, seed=1).to(device)
    results = []
    for name, module in device_modules():
        module = module.to(device)
        t = time_repeats(
            lambda m=module: m(images, masks), device=device, warmup=warmup, repeats=repeats
        )
        results.append(
            {
                "module": name,
                "batch": batch,
                "ms_per_batch": 1000 * t["median_s"],
                "ms_per_image": 1000 * t["median_s"] / batch,
                "images_per_s": batch / t["median_s"],
                "runs_s": t["runs_s"],
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    p = make_parser(__doc__, "augment", threads=1)  # 1 thread, as in a DataLoader worker
    p.add_argument("--size", type=int, default=384, help="target size S (S x S)")
    p.add_argument("--batch", type=int, default=None, help="device batch (8; --full 32)")
    p.add_argument("--n-images", type=int, default=None, help="loader images per step (4; 16)")
    p.add_argument("--skip-loader", action="store_true", help="only the device part")
    p.add_argument("--skip-device", action="store_true", help="only the loader part")
    args = parse(p, argv)
    device = start(args)
    batch = pick(args, "batch", 8, 32)
    warmup, repeats = pick(args, "warmup", 1, 1), pick(args, "repeats", 3, 7)
    n_images = pick(args, "n_images", 4, 16)
    load_start = os.getloadavg()

    loader: list[dict[str, Any]] = []
    if not args.skip_loader:
        print(f"loader side (CPU, {torch.get_num_threads()} thread(s)), target {args.size}")
        loader = measure_loader(args.size, n_images, warmup, repeats)
        keys = ("step", "input", "ms_per_image", "probability", "expected_ms_per_image")
        heads = ["step", "input", "ms/img applied", "p", "ms/img expected"]
        print_table(heads, [[r[k] for k in keys] for r in loader])
    dev: list[dict[str, Any]] = []
    if not args.skip_device:
        print(f"\ndevice side ({device}), batch {batch} at {args.size}x{args.size}")
        dev = measure_device(device, args.size, batch, warmup, repeats)
        keys = ("module", "batch", "ms_per_batch", "ms_per_image", "images_per_s")
        heads = ["module", "batch", "ms/batch", "ms/img", "img/s"]
        print_table(heads, [[r[k] for k in keys] for r in dev])

    settings = {
        "target_size": args.size,
        "sources": [f"{w}x{h}" for w, h in SOURCES],
        "loader_images_per_step": n_images,
        "loader_input": "tv_tensors (Image uint8 (3, H, W), Mask uint8 (H, W)) pairs; "
        "random steps forced on (p = 1); expected = probability x cost",
        "device_batch": batch,
        "device": str(device),
        "warmup": warmup,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "statistic": "median over repetitions; CUDA timings synchronised",
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }
    results = {"loader": loader, "device": dev}
    write_report(args.out, "suimseg augmentation", machine_info(device), settings, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
