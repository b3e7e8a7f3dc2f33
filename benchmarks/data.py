"""Benchmark the SUIM data pipeline (images/s) against a naive "full-size decode" pipeline.

Pipelines, all producing the same tensors (float32 ``(3, S, S)`` image, int64 ``(S, S)``
mask, ImageNet-normalised, with ``eval_transforms(S)``):

- ``naive``: open the JPEG and the BMP at full size, decode the whole mask, then let
  torchvision resize the full-size tensors (what a plain loader does).
- ``suimseg, no fast decode``: :class:`SUIMDataset` with ``fast_decode=False``: full-size
  JPEG and mask decode, then the uint8 resize and a contiguous tensor layout.
- ``suimseg``: the default: JPEGs decoded at reduced scale (Pillow ``draft``) and BMP
  masks read directly, sampling only the pixels the nearest resize needs.
- ``suimseg + cache``: ``cache=True``; the first epoch fills the cache (reported as
  ``cache, epoch 1``) and later epochs read decoded, resized uint8 arrays from memory.

Each setting runs one warm-up epoch and then ``--repeats`` timed epochs through a
``DataLoader`` (batch 8); the median images/s is reported. Images are synthetic
(``make_synthetic_suim``) unless ``--real ROOT`` adds a folder in the SUIM layout.

Usage::

    python benchmarks/data.py            # small and quick (640x480 source, 0 workers)
    python benchmarks/data.py --full     # 640x480 and 1920x1080 sources, 0/2/N workers
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import machine_info, write_json
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from suimseg.classes import rgb_to_index
from suimseg.data import SUIMDataset, eval_transforms, make_synthetic_suim
from suimseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD


class NaiveSUIM(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The baseline: decode image and mask at full size, then the torchvision v2 idiom.

    ``v2.ToImage`` -> ``v2.Resize`` (antialiased; masks nearest) -> ``v2.ToDtype`` ->
    ``v2.Normalize``, as the torchvision documentation suggests for segmentation.
    """

    def __init__(self, root: Path, split_folder: str, size: int) -> None:
        images = sorted((root / split_folder / "images").iterdir())
        self.pairs = [
            (str(p), str(root / split_folder / "masks" / f"{p.stem}.bmp")) for p in images
        ]
        self.transform = v2.Compose(
            [
                v2.ToImage(),
                v2.Resize([size, size], antialias=True),
                v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
                v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
            ]
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[i]
        with Image.open(image_path) as im:
            image = im.convert("RGB")
        with Image.open(mask_path) as m:
            labels = rgb_to_index(m)
        if labels.shape != (image.height, image.width):
            labels = np.asarray(
                Image.fromarray(labels.astype(np.uint8)).resize(
                    image.size, Image.Resampling.NEAREST
                )
            ).astype(np.int64)
        out_image, out_mask = self.transform(image, tv_tensors.Mask(torch.from_numpy(labels)))
        return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor)


def _epoch(loader: DataLoader[Any]) -> float:
    t0 = time.perf_counter()
    n = 0
    for images, _ in loader:
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def _measure_interleaved(
    makers: list[tuple[str, Callable[[], Dataset[Any]]]], workers: int, repeats: int
) -> dict[str, dict[str, Any]]:
    """Time every pipeline once per round, in turn, so slow drifts in machine load hit
    them alike; the per-round ratio to the first pipeline is robust to that drift."""
    loaders = {
        name: DataLoader(
            make(), batch_size=8, shuffle=False, num_workers=workers, persistent_workers=workers > 0
        )
        for name, make in makers
    }
    # Warm-up epoch (for the cached pipeline: the epoch that fills the cache).
    first = {name: _epoch(loader) for name, loader in loaders.items()}
    runs: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(repeats):
        for name, loader in loaders.items():
            runs[name].append(_epoch(loader))
    base_name = makers[0][0]
    out = {}
    for name in loaders:
        ratios = [r / b for r, b in zip(runs[name], runs[base_name], strict=True)]
        out[name] = {
            "median": statistics.median(runs[name]),
            "runs": runs[name],
            "first_epoch": first[name],
            "first_epoch_ratio": first[name] / statistics.median(runs[base_name]),
            "median_ratio": statistics.median(ratios),
        }
    del loaders
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="real sizes and worker counts")
    parser.add_argument("--size", type=int, default=384, help="target size S (S x S)")
    parser.add_argument("--n-images", type=int, default=None, help="images per source size")
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs per setting")
    parser.add_argument("--real", type=Path, default=None, help="extra SUIM-layout root (TEST)")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/data.json"), help="JSON output"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads in the main process (DataLoader workers always use 1); "
        "0 keeps torch's default",
    )
    args = parser.parse_args(argv)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)

    if args.full:
        sources = [(640, 480), (1920, 1080)]
        n_images = args.n_images or 32
        repeats = args.repeats or 3
        workers = sorted({0, 2, os.cpu_count() or 1})
    else:
        sources = [(640, 480)]
        n_images = args.n_images or 16
        repeats = args.repeats or 2
        workers = [0]
    size = args.size
    load_start = os.getloadavg()
    transform = eval_transforms(size)
    results: list[dict[str, Any]] = []

    with tempfile.TemporaryDirectory() as tmp:
        roots: list[tuple[str, Path]] = []
        for w, h in sources:
            root = make_synthetic_suim(
                Path(tmp) / f"{w}x{h}", n_train_val=0, n_test=n_images, size=(w, h), seed=0
            )
            roots.append((f"synthetic {w}x{h}", root))
        if args.real is not None:
            roots.append((f"real ({args.real.name})", args.real))

        print(f"{'source':<24} {'pipeline':<25} {'workers':>7} {'img/s':>9} {'speed-up':>9}")
        for label, root in roots:
            for nw in workers:
                pipelines: list[tuple[str, Callable[[], Dataset[Any]], bool]] = [
                    ("naive", lambda r=root: NaiveSUIM(r, "TEST", size), False),
                    (
                        "suimseg, no fast decode",
                        lambda r=root: SUIMDataset(
                            r, "test", image_size=size, transform=transform, fast_decode=False
                        ),
                        False,
                    ),
                    (
                        "suimseg",
                        lambda r=root: SUIMDataset(r, "test", image_size=size, transform=transform),
                        False,
                    ),
                    (
                        "suimseg + cache",
                        lambda r=root: SUIMDataset(
                            r, "test", image_size=size, transform=transform, cache=True
                        ),
                        True,
                    ),
                ]
                measured = _measure_interleaved([(n, mk) for n, mk, _ in pipelines], nw, repeats)
                for name, _, cached in pipelines:
                    m = measured[name]
                    rows = [(name, m["median"], m["median_ratio"])]
                    if cached:
                        rows = [
                            ("suimseg + cache, ep. 1", m["first_epoch"], m["first_epoch_ratio"]),
                            ("suimseg + cache, ep. 2+", m["median"], m["median_ratio"]),
                        ]
                    for row_name, ips, ratio in rows:
                        print(
                            f"{label:<24} {row_name:<25} {nw:>7} {ips:>9.1f} {ratio:>8.2f}x",
                            flush=True,
                        )
                        results.append(
                            {
                                "source": label,
                                "pipeline": row_name,
                                "workers": nw,
                                "images_per_s": ips,
                                "speedup_vs_naive": ratio,
                                "runs": m["runs"],
                            }
                        )

    report = {
        "benchmark": "suimseg data pipeline",
        "machine": machine_info(torch.device("cpu")),
        "settings": {
            "target_size": size,
            "sources": [f"{w}x{h}" for w, h in sources],
            "n_images": n_images,
            "repeats": repeats,
            "warmup_epochs": 1,
            "batch_size": 8,
            "torch_threads_main_process": torch.get_num_threads(),
            "workers": workers,
            "transform": "eval_transforms(size)",
            "statistic": "median images/s over timed epochs after one warm-up epoch; "
            "speed-up = median over rounds of (images/s / naive images/s in the same round); "
            "pipelines are interleaved round by round",
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
        "results": results,
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
