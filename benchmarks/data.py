"""Benchmark the SUIM data pipeline (images/s) against a naive "full-size decode" pipeline.

Pipelines, all producing the same tensors (float32 ``(3, S, S)`` image, int64 ``(S, S)``
mask, ImageNet-normalised, with ``eval_transforms(S)``) unless marked ``uint8``:

- ``naive``: open the JPEG and the BMP at full size, decode the whole mask, then let
  torchvision resize the full-size tensors (what a plain loader does).
- ``suimseg, no fast decode``: :class:`SUIMDataset` with ``fast_decode=False``: full-size
  JPEG and mask decode, then the uint8 resize and a contiguous tensor layout.
- ``suimseg``: the default: JPEGs decoded at reduced scale (Pillow ``draft``) and BMP
  masks read directly, sampling only the pixels the nearest resize needs.
- ``suimseg, uint8 output``: ``suimseg`` with ``eval_transforms(S, output="uint8")``:
  the loader yields a uint8 ``(3, S, S)`` image and a uint8 ``(S, S)`` mask, so a quarter
  and an eighth of the bytes pass between worker processes (and to the GPU); the image is
  normalised later on the device, which is not timed here.
- ``suimseg + cache``: ``cache=True``; the first epoch fills the cache (reported as
  ``cache, ep. 1``) and later epochs read decoded, resized uint8 arrays from memory. Each
  worker process holds its own cache (persistent workers keep it across epochs).
- ``suimseg + shared cache``: ``cache="shared"``: one preallocated cache in shared
  memory that every worker fills and reads; also with ``uint8`` output.

Each setting runs one warm-up epoch and then ``--repeats`` timed epochs through a
``DataLoader`` (batch 8); the median images/s is reported. Images are synthetic
(``make_synthetic_suim``) unless ``--real ROOT`` adds a folder in the SUIM layout.

Usage::

    python benchmarks/data.py            # small and quick (640x480 source, 0 workers)
    python benchmarks/data.py --full     # 640x480 and 1920x1080 sources, 0/2/N workers
    python benchmarks/data.py --full --sources 1920x1080 --workers 0,2   # a subset
"""

from __future__ import annotations

import argparse
import functools
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
from suimseg.data.dataset import CacheMode
from suimseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, OutputKind


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


def _int_list(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated worker counts such as 0,2, got {text!r}"
        ) from None
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError(f"expected worker counts >= 0, got {text!r}")
    return values


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        try:
            w, h = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected source sizes WxH[,WxH], e.g. 1920x1080, got {text!r}"
            ) from None
        if w < 1 or h < 1:
            raise argparse.ArgumentTypeError(f"expected positive sizes, got {part!r}")
        out.append((w, h))
    return out


def _epoch(loader: DataLoader[Any]) -> float:
    t0 = time.perf_counter()
    n = 0
    for images, _ in loader:
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def _measure_interleaved(
    makers: list[tuple[str, Callable[[], Dataset[Any]]]],
    workers: int,
    repeats: int,
    shuffle: bool = False,
) -> dict[str, dict[str, Any]]:
    """Time every pipeline once per round, in turn, so slow drifts in machine load hit
    them alike; the per-round ratio to the first pipeline is robust to that drift."""
    loaders = {
        name: DataLoader(
            make(),
            batch_size=8,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(0) if shuffle else None,
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
        "--sources",
        type=_sizes,
        default=None,
        help="synthetic source sizes WxH[,WxH] (default: 640x480, and 1920x1080 with --full)",
    )
    parser.add_argument(
        "--shuffle",
        action="store_true",
        help="shuffle every epoch (as in training): with workers, cache=True then hits only "
        "the samples a worker has seen before, cache='shared' every sample",
    )
    parser.add_argument(
        "--workers",
        type=_int_list,
        default=None,
        help="DataLoader worker counts, e.g. 0,2 (default: 0, and 0,2,N with --full)",
    )
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
    sources = args.sources or sources
    workers = args.workers or workers
    size = args.size
    load_start = os.getloadavg()
    transforms: dict[OutputKind, Any] = {
        "float": eval_transforms(size),
        "uint8": eval_transforms(size, output="uint8"),
    }
    results: list[dict[str, Any]] = []

    def _report() -> dict[str, Any]:
        # Written after every setting, so a run killed by a time limit keeps its rows.
        return {
            "benchmark": "suimseg data pipeline",
            "machine": machine_info(torch.device("cpu")),
            "settings": {
                "target_size": size,
                "sources": [f"{w}x{h}" for w, h in sources],
                "n_images": n_images,
                "repeats": repeats,
                "warmup_epochs": 1,
                "batch_size": 8,
                "shuffle": args.shuffle,
                "torch_threads_main_process": torch.get_num_threads(),
                "workers": workers,
                "transform": "eval_transforms(size); output='uint8' rows: "
                "eval_transforms(size, output='uint8') (normalisation then happens on the "
                "device, not timed here)",
                "bytes_per_sample_between_processes": {
                    "float": size * size * (3 * 4 + 8),
                    "uint8": size * size * (3 + 1),
                },
                "statistic": "median images/s over timed epochs after one warm-up epoch; "
                "speed-up = median over rounds of (images/s / naive images/s in the same round); "
                "pipelines are interleaved round by round",
                "load_average_start": load_start,
                "load_average_end": os.getloadavg(),
            },
            "results": results,
        }

    with tempfile.TemporaryDirectory() as tmp:
        roots: list[tuple[str, Path]] = []
        for w, h in sources:
            root = make_synthetic_suim(
                Path(tmp) / f"{w}x{h}", n_train_val=0, n_test=n_images, size=(w, h), seed=0
            )
            roots.append((f"synthetic {w}x{h}", root))
        if args.real is not None:
            roots.append((f"real ({args.real.name})", args.real))

        print(f"{'source':<24} {'pipeline':<38} {'workers':>7} {'img/s':>9} {'speed-up':>9}")
        for label, root in roots:
            for nw in workers:
                # (name, cache, output, fast_decode); the naive baseline comes first.
                variants: list[tuple[str, CacheMode, OutputKind, bool]] = [
                    ("suimseg, no fast decode", False, "float", False),
                    ("suimseg", False, "float", True),
                    ("suimseg, uint8 output", False, "uint8", True),
                    ("suimseg + cache", True, "float", True),
                    ("suimseg + shared cache", "shared", "float", True),
                    ("suimseg + shared cache, uint8", "shared", "uint8", True),
                ]
                makers: list[tuple[str, Callable[[], Dataset[Any]]]] = [
                    ("naive", functools.partial(NaiveSUIM, root, "TEST", size))
                ]
                makers += [
                    (
                        name,
                        functools.partial(
                            SUIMDataset,
                            root,
                            "test",
                            image_size=size,
                            transform=transforms[output],
                            fast_decode=fast,
                            cache=cache,
                        ),
                    )
                    for name, cache, output, fast in variants
                ]
                settings_of: dict[str, tuple[CacheMode, OutputKind]] = {
                    name: (cache, output) for name, cache, output, _ in variants
                }
                settings_of["naive"] = (False, "float")
                measured = _measure_interleaved(makers, nw, repeats, args.shuffle)
                for name, _ in makers:
                    m = measured[name]
                    cache, output = settings_of[name]
                    rows = [(name, m["median"], m["median_ratio"], m["runs"])]
                    if cache is not False:
                        rows = [
                            (
                                f"{name}, ep. 1",
                                m["first_epoch"],
                                m["first_epoch_ratio"],
                                [m["first_epoch"]],
                            ),
                            (f"{name}, ep. 2+", m["median"], m["median_ratio"], m["runs"]),
                        ]
                    for row_name, ips, ratio, runs in rows:
                        print(
                            f"{label:<24} {row_name:<38} {nw:>7} {ips:>9.1f} {ratio:>8.2f}x",
                            flush=True,
                        )
                        results.append(
                            {
                                "source": label,
                                "pipeline": row_name,
                                "workers": nw,
                                "cache": cache,
                                "output": output,
                                "images_per_s": ips,
                                "speedup_vs_naive": ratio,
                                "runs": runs,
                            }
                        )
                write_json(args.out, _report())

    write_json(args.out, _report())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
