"""Benchmark full training epochs of the V3 recipe end to end: where does the time go?

Builds the recipe with :func:`suimseg.app.recipe.build_training` from a
:class:`suimseg.app.config.TrainConfig` (so the CUDA defaults apply: bf16 autocast,
channels_last, fused AdamW, ``cudnn.benchmark``, pinned memory, persistent workers with
prefetch) on a synthetic dataset in the SUIM layout (``make_synthetic_suim``), then runs
``Trainer.fit`` for ``--epochs`` epochs. The loaders are wrapped to time how long the
training loop waits for each batch, which splits every epoch into:

- ``train data wait``: time blocked in the training loader's ``next()``;
- ``train compute``: the rest of the training pass (transfer, forward, loss, backward,
  optimizer; on CUDA work the loop cannot run ahead of is waited for at the end);
- ``val data wait`` and ``val compute``: the same for validation;
- ``checkpoint``: saving ``last.pt``/``best.pt`` and the history line.

The first epoch includes one-off costs (worker start-up, ``cudnn.benchmark`` tuning,
compilation), so the 50-epoch estimate is ``epoch 1 + 49 x median(later epochs)`` when
more than one epoch runs, else ``50 x epoch 1``.

Usage::

    python benchmarks/epoch.py          # small: 40 images of 160x120 at 64x64, ResNet-18 V3
    python benchmarks/epoch.py --full   # SUIM-sized: 1525 images of 640x480 (1220 train,
                                        # 305 val) at 384x384, the design's V3, batch 6,
                                        # min(16, CPUs) workers, 2 epochs
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sized
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, cast

import torch
from _common import (
    Budget,
    machine_info,
    make_parser,
    parse,
    pick,
    print_table,
    report_dict,
    size_list,
    start,
    write_json,
)
from torch.utils.data import DataLoader

from suimseg.app.config import TrainConfig
from suimseg.app.recipe import build_training
from suimseg.data import make_synthetic_suim
from suimseg.engine import Callback, Checkpoint, EpochRecord, Trainer


class TimedLoader:
    """Wrap a loader and add up the seconds spent waiting in ``next()``.

    Keeps ``len()``, ``dataset``, ``batch_size`` and ``sampler`` of the wrapped loader, so
    the Trainer sees the same object it would otherwise get.
    """

    def __init__(self, loader: DataLoader[Any]) -> None:
        self.loader = loader
        self.dataset = loader.dataset
        self.batch_size = loader.batch_size
        self.sampler = loader.sampler
        self.wait_s = 0.0
        self.batches = 0
        self.started_at = 0.0  # perf_counter() of the latest iter()

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        self.started_at = time.perf_counter()
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                self.wait_s += time.perf_counter() - t0
                return
            self.wait_s += time.perf_counter() - t0
            self.batches += 1
            yield batch


class EpochClock(Callback):
    """Record wall-clock time per epoch and the loaders' wait time, epoch by epoch."""

    def __init__(
        self,
        train: TimedLoader,
        val: TimedLoader,
        *,
        budget: Budget | None = None,
        epochs: int | None = None,
        on_row: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.train = train
        self.val = val
        self.budget = budget
        self.epochs = epochs
        self.on_row = on_row
        self.stopped_by_budget = False
        self.rows: list[dict[str, Any]] = []
        self._t0 = 0.0
        self._w = (0.0, 0.0)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self._t0 = time.perf_counter()
        self._w = (self.train.wait_s, self.val.wait_s)

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        wall = time.perf_counter() - self._t0
        train_wait = self.train.wait_s - self._w[0]
        val_wait = self.val.wait_s - self._w[1]
        # Training runs from the epoch start until validation calls iter() on its loader;
        # EpochRecord.epoch_time_s covers both passes, the rest of `wall` is checkpointing.
        train_s = self.val.started_at - self._t0
        val_s = max(0.0, record.epoch_time_s - train_s)
        self.rows.append(
            {
                "epoch": record.epoch,
                "wall_s": wall,
                "train_s": train_s,
                "val_s": val_s,
                "train_data_wait_s": train_wait,
                "train_compute_s": max(0.0, train_s - train_wait),
                "val_data_wait_s": val_wait,
                "val_compute_s": max(0.0, val_s - val_wait),
                "checkpoint_s": max(0.0, wall - record.epoch_time_s),
                "data_wait_fraction": (train_wait + val_wait) / max(wall, 1e-9),
                "train_images_per_s": record.images_per_s,
                "train_loss": record.train_loss,
                "val_miou": record.val_miou,
            }
        )
        if self.on_row is not None:
            self.on_row(self.rows)
        # Stop when the next epoch (as long as the latest) would overrun the budget.
        more = self.epochs is None or record.epoch < self.epochs
        if more and self.budget is not None and not self.budget.allows(wall):
            self.stopped_by_budget = True
            trainer.should_stop = True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = make_parser(__doc__, "epoch", timing=False, budget=True)
    p.add_argument("--n-images", type=int, default=None, help="train_val images (40; --full 1525)")
    p.add_argument("--source-size", type=size_list, default=None, help="WxH of the synthetic JPEGs")
    p.add_argument("--image-size", type=int, default=None, help="training size S (SxS)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers")
    p.add_argument("--epochs", type=int, default=None, help="epochs to run (1; --full 2)")
    p.add_argument(
        "--model-size",
        choices=["tiny", "design"],
        default=None,
        help="tiny: ResNet-18 V3 with a narrow decoder (quick default); design: the V3 recipe",
    )
    p.add_argument("--model", choices=["v3", "deeplabv3"], default="v3")
    # The TrainConfig fields the GPU suite varies:
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default="auto")
    p.add_argument("--compile", action="store_true", help="TrainConfig(compile=True)")
    p.add_argument(
        "--cache",
        nargs="?",
        const=True,
        default=False,
        choices=[True, "shared"],
        help="TrainConfig(cache=True); --cache shared: cache='shared'",
    )
    p.add_argument("--augment-on", choices=["loader", "device"], default="loader")
    p.add_argument("--val-batch-size", type=int, default=None)
    p.add_argument("--async-checkpoint", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--data-root", type=Path, default=None, help="reuse (or create) the synthetic set here"
    )
    p.add_argument(
        "--gen-workers",
        type=int,
        default=None,
        help="processes writing the synthetic set (1; --full min(16, CPUs))",
    )
    return parse(p, argv)


_STEM = re.compile(r"^(?P<prefix>.+)_(?P<index>\d+)_$")


def _synth_chunk(job: tuple[str, int, tuple[int, int], int]) -> str:
    """Write one chunk of the synthetic set (a worker process of :func:`make_synthetic`)."""
    root, n, size, seed = job
    make_synthetic_suim(root, n_train_val=n, n_test=0, size=size, seed=seed)
    return root


def make_synthetic(root: Path, n: int, size: tuple[int, int], *, workers: int) -> Path:
    """A synthetic SUIM-layout set of ``n`` ``train_val`` pairs, written by ``workers`` processes.

    With one worker this is ``make_synthetic_suim(root, n_train_val=n, n_test=0, size=size,
    seed=0)``. With more, chunk ``k`` is written with ``seed=k`` into its own folder and its
    files are moved into ``root`` with their SUIM prefix kept (the recipe stratifies the
    split by prefix) and the scene number made unique (``d_r_12_`` of chunk 3 becomes
    ``d_r_<offset + 12>_``). Rendering and JPEG encoding take about 0.1 s per 640x480
    pair on one core, so 1525 pairs take minutes in one process.

    Args:
        root: Output folder (``train_val/`` and an empty ``TEST/`` are created in it).
        n: Number of ``train_val`` pairs.
        size: ``(width, height)`` of every image.
        workers: Processes to use (``<= 1``: the current process).

    Returns:
        ``root``.
    """
    if workers <= 1 or n < 2 * workers:
        return make_synthetic_suim(root, n_train_val=n, n_test=0, size=size, seed=0)
    parts = root.parent / f"{root.name}.parts"
    counts = [n // workers + (1 if k < n % workers else 0) for k in range(workers)]
    jobs = [(str(parts / str(k)), c, size, k) for k, c in enumerate(counts)]
    # fork: the children only render with numpy and Pillow (no torch, no CUDA), and main()
    # calls this before it touches the GPU; spawn would re-import torch in every child.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        done = list(pool.map(_synth_chunk, jobs))
    for sub in ("images", "masks"):
        (root / "train_val" / sub).mkdir(parents=True, exist_ok=True)
        (root / "TEST" / sub).mkdir(parents=True, exist_ok=True)
    offset = 0
    for chunk, count in zip(done, counts, strict=True):
        for sub in ("images", "masks"):
            for f in sorted((Path(chunk) / "train_val" / sub).iterdir()):
                m = _STEM.match(f.stem)
                if m is None:  # pragma: no cover - make_synthetic_suim's stems always match
                    raise RuntimeError(f"unexpected synthetic file name {f.name}")
                stem = f"{m['prefix']}_{offset + int(m['index'])}_"
                os.replace(f, root / "train_val" / sub / f"{stem}{f.suffix}")
        offset += count
    shutil.rmtree(parts)
    return root


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    device = start(args)
    many = min(16, os.cpu_count() or 1)
    n_images = pick(args, "n_images", 40, 1525)
    (source,) = pick(args, "source_size", [(160, 120)], [(640, 480)])
    image_size = pick(args, "image_size", 64, 384)
    batch = pick(args, "batch_size", 4, 6)
    workers, gen_workers = pick(args, "workers", 0, many), pick(args, "gen_workers", 1, many)
    epochs = pick(args, "epochs", 1, 2)
    model_size = pick(args, "model_size", "tiny", "design")
    arch: dict[str, Any] = (
        {"encoder": "resnet18", "decoder_channels": (64, 32, 16, 8), "bridge_channels": 64}
        if model_size == "tiny"
        else {}
    )

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root or Path(tmp) / "suim"
        t0 = time.perf_counter()
        if not (root / "train_val").is_dir():
            make_synthetic(root, n_images, source, workers=gen_workers)
        synth_s = time.perf_counter() - t0
        info = machine_info(device)  # after the forks above: this initialises CUDA
        print(
            f"synthetic set: {n_images} images of {source[0]}x{source[1]} in {synth_s:.1f} s "
            f"({gen_workers} processes)",
            flush=True,
        )
        config = TrainConfig(
            data_root=str(root),
            out_dir=str(Path(tmp) / "run"),
            model=args.model,
            encoder_weights="none",
            image_size=image_size,
            batch_size=batch,
            epochs=epochs,
            workers=workers,
            device="cuda" if device.type == "cuda" else "cpu",
            amp=args.amp,
            compile=args.compile,
            cache=args.cache,
            augment_on=args.augment_on,
            val_batch_size=args.val_batch_size,
            async_checkpoint=args.async_checkpoint,
            **arch,
        )
        t0 = time.perf_counter()
        setup = build_training(config, progress=False, verbose=False)
        setup_s = time.perf_counter() - t0
        n_train = len(cast(Sized, setup.train_loader.dataset))
        n_val = len(cast(Sized, setup.val_loader.dataset))
        train = TimedLoader(setup.train_loader)
        val = TimedLoader(setup.val_loader)
        trainer = setup.trainer
        settings = {
            "train_images": n_train,
            "val_images": n_val,
            "source_size_wh": list(source),
            "image_size": image_size,
            "batch_size": batch,
            "workers": workers,
            "epochs": epochs,
            "model": args.model,
            "model_size": model_size,
            "amp": trainer.amp,
            "channels_last": trainer.channels_last,
            "compile": args.compile,
            "cache": args.cache,
            "augment_on": args.augment_on,
            "val_batch_size": setup.val_loader.batch_size,
            "async_checkpoint": any(
                isinstance(cb, Checkpoint) and cb.async_write for cb in trainer.callbacks
            ),
            "pin_memory": bool(setup.train_loader.pin_memory),
            "persistent_workers": bool(setup.train_loader.persistent_workers),
            "prefetch_factor": setup.train_loader.prefetch_factor,
            "fused_adamw": bool(trainer.optimizer.defaults.get("fused")),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "synthetic_data_s": synth_s,
            "synthetic_data_processes": gen_workers,
            "setup_s": setup_s,
            "budget_s": budget.seconds,
        }

        def save(rows: list[dict[str, Any]], complete: bool = False) -> None:
            write_json(args.out, _report(info, settings, rows, complete, stopped=False))

        clock = EpochClock(train, val, budget=budget, epochs=epochs, on_row=save)
        trainer.callbacks.append(clock)
        print(
            f"{n_train} train / {n_val} val images of "
            f"{source[0]}x{source[1]} at {image_size}x{image_size}, batch {batch}, "
            f"{workers} workers, {device}, amp={trainer.amp}, "
            f"channels_last={trainer.channels_last}, compile={args.compile}",
            flush=True,
        )
        trainer.fit(train, val, epochs)  # type: ignore[arg-type]

    rows = clock.rows
    keys = ("epoch", "wall_s", "train_data_wait_s", "train_compute_s", "val_data_wait_s")
    keys += ("val_compute_s", "checkpoint_s", "train_images_per_s")
    heads = ["epoch", "wall s", "train wait", "train compute", "val wait", "val compute"]
    print_table([*heads, "ckpt s", "train img/s"], [[r[k] for k in keys] for r in rows])
    if clock.stopped_by_budget:
        print(f"stopped after {len(rows)} of {epochs} epochs: time budget")
    report = _report(info, settings, rows, True, stopped=clock.stopped_by_budget)
    write_json(args.out, report)
    estimate = report["results"]["estimate_50_epochs_s"]
    print(f"50-epoch estimate: {estimate / 60:.1f} min ({estimate:.0f} s)\nwrote {args.out}")
    return 0


def _report(
    info: dict[str, Any],
    settings: dict[str, Any],
    rows: list[dict[str, Any]],
    complete: bool,
    *,
    stopped: bool,
) -> dict[str, Any]:
    """The JSON report for the epochs run so far (written after every epoch)."""
    later = [r["wall_s"] for r in rows[1:]]
    steady = statistics.median(later) if later else rows[0]["wall_s"]
    results = {
        "epochs": rows,
        "steady_epoch_s": steady,
        "estimate_50_epochs_s": rows[0]["wall_s"] + 49 * steady if later else 50 * steady,
        "estimate_rule": "epoch 1 + 49 x median(later epochs)" if later else "50 x epoch 1",
    }
    return report_dict(
        "suimseg training epoch",
        info,
        settings,
        results,
        complete=complete,
        stopped_by_budget=stopped,
    )


if __name__ == "__main__":
    sys.exit(main())
