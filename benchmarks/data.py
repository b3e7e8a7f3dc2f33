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

A first table times the mask decoding alone on a 1920x1080 24-bit BMP (median of
``--repeats`` interleaved rounds, ms per mask): ``rgb_to_index`` on the decoded array, and the
direct BMP reader against a Pillow decode, at native size and at ``--size``.

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
from collections.abc import Callable, Sized
from pathlib import Path
from typing import Any, cast

import _common as bench
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from suimseg.classes import rgb_to_index
from suimseg.data import SUIMDataset, eval_transforms, make_synthetic_suim
from suimseg.data._bmp import read_bmp_labels, resize_labels_nearest
from suimseg.data.dataset import CacheMode
from suimseg.data.readers import read_mask_labels
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


def _measure(
    makers: list[tuple[str, Callable[[], Dataset[Any]]]], workers: int, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Epochs of every pipeline, interleaved round by round (the first is the baseline).

    Interleaving makes slow drifts in machine load hit every pipeline alike; the per-round
    ratio to the baseline is robust to that drift.
    """
    loaders = {
        name: DataLoader(
            make(),
            batch_size=8,
            shuffle=args.shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(0) if args.shuffle else None,
        )
        for name, make in makers
    }

    def epoch(loader: DataLoader[Any]) -> None:
        for _ in loader:
            pass

    # The warm-up epoch is the one that fills the cache of the cached pipelines.
    t = bench.time_interleaved(
        {n: functools.partial(epoch, ld) for n, ld in loaders.items()},
        device=torch.device("cpu"),
        warmup=args.warmup,
        repeats=args.repeats,
    )
    n = {name: len(cast(Sized, ld.dataset)) for name, ld in loaders.items()}
    ips = {name: [n[name] / r for r in t[name]["runs_s"]] for name in loaders}
    base = ips[makers[0][0]]
    out = {}
    for name in loaders:
        first = n[name] / (t[name]["warmup_s"] or t[name]["runs_s"])[0]  # the cache-filling epoch
        out[name] = {
            "median": statistics.median(ips[name]),
            "runs": ips[name],
            "first_epoch": first,
            "first_epoch_ratio": first / statistics.median(base),
            "median_ratio": statistics.median(a / b for a, b in zip(ips[name], base, strict=True)),
        }
    del loaders
    return out


def _mask_decode(tmp: Path, size: int, repeats: int) -> dict[str, float]:
    """ms per 1920x1080 BMP mask: the colour rule, the direct reader and Pillow."""
    rgb = np.random.default_rng(0).integers(0, 2, (1080, 1920, 3), dtype=np.uint8) * 255
    path = tmp / "mask.bmp"
    Image.fromarray(rgb).save(path)
    fns: dict[str, Callable[[], Any]] = {
        "rgb_to_index (decoded array)": lambda: rgb_to_index(rgb),
        "direct BMP reader, native": lambda: read_bmp_labels(path),
        "Pillow, native": lambda: read_mask_labels(path),
        f"direct BMP reader, {size}x{size}": lambda: read_bmp_labels(path, (size, size)),
        f"Pillow, {size}x{size}": lambda: resize_labels_nearest(
            read_mask_labels(path), (size, size)
        ),
    }
    timed = bench.time_interleaved(fns, device=torch.device("cpu"), warmup=1, repeats=repeats)
    out = {name: t["median_s"] * 1e3 for name, t in timed.items()}
    bench.print_table(["mask decoding (1920x1080 BMP)", "ms"], list(out.items()))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    p = bench.make_parser(__doc__, "data", device=False, threads=1)
    p.add_argument("--size", type=int, default=384, help="target size S (S x S)")
    p.add_argument("--n-images", type=int, default=None, help="images per source (16; --full 32)")
    p.add_argument("--real", type=Path, default=None, help="extra SUIM-layout root (its TEST)")
    p.add_argument(
        "--sources",
        type=bench.size_list,
        help="synthetic WxH[,WxH] (640x480; --full also 1920x1080)",
    )
    p.add_argument("--workers", type=bench.int_list, help="DataLoader workers (0; --full 0,2,CPUs)")
    p.add_argument(
        "--shuffle",
        action="store_true",
        help="shuffle every epoch (as in training): with workers, cache=True then hits only "
        "the samples a worker has seen before, cache='shared' every sample",
    )
    args, _ = bench.begin(p, argv)  # --threads: the main process (DataLoader workers always use 1)
    sources = bench.pick(args, "sources", [(640, 480)], [(640, 480), (1920, 1080)])
    n_images = bench.pick(args, "n_images", 16, 32)
    args.warmup, args.repeats = bench.timing(args, (1, 2), (1, 3))
    workers = sorted(set(bench.pick(args, "workers", [0], [0, 2, os.cpu_count() or 1])))
    size = args.size
    load_start = os.getloadavg()
    transforms: dict[OutputKind, Any] = {
        "float": eval_transforms(size),
        "uint8": eval_transforms(size, output="uint8"),
    }
    results: list[dict[str, Any]] = []
    settings = {
        "target_size": size,
        "sources": [f"{w}x{h}" for w, h in sources],
        "n_images": n_images,
        "repeats": args.repeats,
        "warmup_epochs": args.warmup,
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
    }

    mask_ms: dict[str, float] = {}

    def save() -> None:  # after every setting, so a run killed by a time limit keeps its rows
        settings["load_average_end"] = os.getloadavg()
        info = bench.machine_info(torch.device("cpu"))
        bench.write_report(
            args.out, "suimseg data pipeline", info, settings, results, mask_decode_ms=mask_ms
        )

    # (name, cache, output, fast_decode); the naive baseline comes first.
    variants: list[tuple[str, CacheMode, OutputKind, bool]] = [
        ("naive", False, "float", False),
        ("suimseg, no fast decode", False, "float", False),
        ("suimseg", False, "float", True),
        ("suimseg, uint8 output", False, "uint8", True),
        ("suimseg + cache", True, "float", True),
        ("suimseg + shared cache", "shared", "float", True),
        ("suimseg + shared cache, uint8", "shared", "uint8", True),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        mask_ms.update(_mask_decode(Path(tmp), size, max(args.repeats, 3)))
    table = bench.Progress(["source", "pipeline", "workers", "img/s", "speed-up"], widths=(24, 38))
    with tempfile.TemporaryDirectory() as tmp:
        roots = [
            (
                f"synthetic {w}x{h}",
                make_synthetic_suim(
                    Path(tmp) / f"{w}x{h}", n_train_val=0, n_test=n_images, size=(w, h), seed=0
                ),
            )
            for w, h in sources
        ]
        if args.real is not None:
            roots.append((f"real ({args.real.name})", args.real))
        for label, root in roots:
            for nw in workers:
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
                    for name, cache, output, fast in variants[1:]
                ]
                measured = _measure(makers, nw, args)
                for name, cache, output, _ in variants:
                    m = measured[name]
                    rows = [(name, m["median"], m["median_ratio"], m["runs"])]
                    if cache is not False:
                        first = m["first_epoch"], m["first_epoch_ratio"], [m["first_epoch"]]
                        rows = [(f"{name}, ep. 1", *first), (f"{name}, ep. 2+", *rows[0][1:])]
                    for row_name, ips, ratio, runs in rows:
                        table.row(label, row_name, nw, ips, f"{ratio:.2f}x")
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
                save()
    save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
