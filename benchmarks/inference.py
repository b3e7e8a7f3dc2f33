"""Benchmark inference latency and throughput of V3 vs DeepLabV3-ResNet50, plain and TTA.

Every setting runs :meth:`suimseg.inference.Predictor.probs_normalized` (model forward +
float32 softmax, averaged over the TTA views) on a random, already normalised batch, in
eval mode under ``torch.inference_mode()``; image decoding and resizing are not included
(``benchmarks/data.py`` measures those). The models alternate call by call, so a
change in machine load hits both alike. ``plain`` is one forward pass; ``tta`` is the
flip TTA ``TTA(hflip=True)``: the mean of ``softmax(model(x))`` and
``flip(softmax(model(flip(x))))``, two forward passes.

Settings: sizes 384x384 (training size) and 480x640 (SUIM's native size), batch 1
(latency) and a larger batch (throughput). On CUDA the default precision is bf16
autocast with channels_last; on the CPU float32. Each setting runs ``--warmup`` untimed
calls and ``--repeats`` timed, synchronised calls; the median is reported, and for every
setting the V3 / DeepLabV3 latency ratio.

Usage::

    python benchmarks/inference.py            # small: 128x128, batch 1 and 2, 3 repeats
    python benchmarks/inference.py --full     # 384x384 and 480x640, batch 1 and 8
    python benchmarks/inference.py --sizes 384 --batches 1 --modes plain --repeats 15
                                              # the CPU target: batch-1 latency at 384
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import (
    OOM_ERRORS,
    Budget,
    as_input,
    free_memory,
    machine_info,
    peak_memory_mb,
    print_table,
    reset_peak_memory,
    resolve_device,
    set_threads,
    synchronize,
    tiny_factories,
    write_json,
)
from torch import Tensor, nn

from suimseg.classes import NUM_CLASSES
from suimseg.inference import TTA, Predictor
from suimseg.inference.predictor import AmpMode
from suimseg.models import UNetResAttnV3, deeplabv3_resnet50

MODELS: dict[str, Callable[[], nn.Module]] = {
    "v3": lambda: UNetResAttnV3(num_classes=NUM_CLASSES, encoder_weights=None),
    "deeplabv3": lambda: deeplabv3_resnet50(num_classes=NUM_CLASSES, encoder_weights=None),
}
MODES: dict[str, TTA] = {"plain": TTA(), "tta": TTA(hflip=True)}


def _size(text: str) -> tuple[int, int]:
    """``"384"`` -> (384, 384); ``"480x640"`` -> (480, 640) as (height, width)."""
    parts = text.lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected S or HxW (e.g. 384 or 480x640), got {text!r}"
        ) from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected S or HxW with positive sizes, got {text!r}")
    return dims[0], dims[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the issue's settings (see above)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    parser.add_argument(
        "--sizes",
        type=lambda s: [_size(p) for p in s.split(",")],
        default=None,
        help="comma-separated S or HxW sizes (default small: 128; full: 384,480x640)",
    )
    parser.add_argument(
        "--batches",
        type=lambda s: [int(p) for p in s.split(",")],
        default=None,
        help="comma-separated batch sizes (default small: 1,2; full: 1,8)",
    )
    parser.add_argument("--models", default="v3,deeplabv3", help="comma-separated models")
    parser.add_argument("--modes", default="plain,tta", help="comma-separated: plain,tta")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 + channels_last on CUDA, fp32 on the CPU",
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last models and inputs (default: on for CUDA, off on the CPU)",
    )
    parser.add_argument(
        "--tiny-models",
        action="store_true",
        help="small stand-in models (plumbing checks only; figures say nothing of the real models)",
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per setting")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per setting")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="soft time budget in seconds: settings not started when it runs out are "
        "skipped and listed in the JSON; default: no budget",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/inference.json"), help="JSON output"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    set_threads(args.threads)
    device = resolve_device(args.device)
    full = args.full
    sizes: list[tuple[int, int]] = args.sizes or (
        [(384, 384), (480, 640)] if full else [(128, 128)]
    )
    batches: list[int] = args.batches or ([1, 8] if full else [1, 2])
    warmup = args.warmup if args.warmup is not None else (3 if full else 1)
    repeats = args.repeats or (10 if full else 3)
    names = args.models.split(",")
    modes = args.modes.split(",")
    for n in names:
        if n not in MODELS:
            raise SystemExit(f"--models: unknown {n!r}; expected a subset of {list(MODELS)}")
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"--modes: unknown {mode!r}; expected a subset of {list(MODES)}")
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    channels_last = args.channels_last if args.channels_last is not None else device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    makers = {**MODELS, **tiny_factories()} if args.tiny_models else MODELS
    models: dict[str, nn.Module] = {}
    for name in names:
        model = makers[name]().to(device).eval()
        models[name] = model.to(memory_format=torch.channels_last) if channels_last else model
    weights_mib = {
        n: sum(p.numel() * p.element_size() for p in m.parameters()) / 2**20
        for n, m in models.items()
    }
    amp: AmpMode | None = "bf16" if precision == "bf16" else None
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    info = machine_info(device)
    settings = {
        "sizes": [list(s) for s in sizes],
        "batches": batches,
        "models": names,
        "modes": {m: str(MODES[m]) for m in modes},
        "precision": precision,
        "channels_last": channels_last,
        "warmup": warmup,
        "repeats": repeats,
        "budget_s": budget.seconds,
        "tiny_models": bool(args.tiny_models),
        "measured": "Predictor.probs_normalized (forward + softmax, TTA-averaged) in "
        "eval mode under inference_mode, on a pre-normalised random batch",
        "statistic": "median latency over timed calls after warm-up; models alternate "
        "call by call so load changes hit both alike",
        "weights_mib": weights_mib,
        "peak_memory_note": "CUDA max_memory_allocated during a model's calls; both "
        "models' weights stay resident, so it includes the other model's weights_mib",
    }

    def report(complete: bool) -> dict[str, Any]:
        return {
            "benchmark": "suimseg inference",
            "machine": info,
            "settings": settings,
            "results": results,
            "v3_vs_deeplabv3": _ratios(results),
            "skipped": skipped,
            "complete": complete,
        }

    print(
        f"{'model':<10} {'size':>8} {'batch':>5} {'mode':>6} {'ms/batch':>10} "
        f"{'ms/img':>9} {'img/s':>8} {'peak MiB':>9}"
    )
    for mode in modes:
        predictors = {
            n: Predictor(m, device=device, image_size=None, tta=MODES[mode], amp=amp)
            for n, m in models.items()
        }
        for h, w in sizes:
            for b in batches:
                if budget.exceeded():
                    skipped.append(
                        {"size": [h, w], "batch": b, "mode": mode, "reason": "time budget"}
                    )
                    continue
                x = as_input(b, (h, w), device, channels_last)
                try:
                    timings = _interleaved(predictors, x, device, warmup, repeats)
                except OOM_ERRORS:
                    free_memory(device)
                    print(f"{'all':<10} {f'{h}x{w}':>8} {b:>5} {mode:>6} out of memory")
                    skipped.append(
                        {"size": [h, w], "batch": b, "mode": mode, "reason": "out of memory"}
                    )
                    continue
                for name, (runs, peak) in timings.items():
                    med = statistics.median(runs)
                    row = {
                        "model": name,
                        "size": [h, w],
                        "batch": b,
                        "mode": mode,
                        "forward_passes": MODES[mode].num_views,
                        "latency_ms_median": 1e3 * med,
                        "latency_ms_min": 1e3 * min(runs),
                        "ms_per_image": 1e3 * med / b,
                        "images_per_s": b / med,
                        "peak_memory_mib": peak,
                        "runs_s": runs,
                    }
                    results.append(row)
                    print(
                        f"{name:<10} {f'{h}x{w}':>8} {b:>5} {mode:>6} "
                        f"{row['latency_ms_median']:>10.1f} {row['ms_per_image']:>9.1f} "
                        f"{row['images_per_s']:>8.2f} "
                        f"{'-' if peak is None else f'{peak:.0f}':>9}",
                        flush=True,
                    )
                del x
                free_memory(device)
                write_json(args.out, report(complete=False))

    ratios = _ratios(results)
    if ratios:
        print()
        print(
            "V3 latency as a fraction of DeepLabV3-ResNet50's (ratio of medians, and median "
            "of the per-call ratios of back-to-back calls; lower is better)"
        )
        print_table(
            ["size", "batch", "mode", "v3 ms", "deeplabv3 ms", "ratio", "paired ratio"],
            [
                [
                    f"{r['size'][0]}x{r['size'][1]}",
                    r["batch"],
                    r["mode"],
                    r["v3_ms"],
                    r["deeplabv3_ms"],
                    r["ratio"],
                    r["paired_ratio_median"],
                ]
                for r in ratios
            ],
        )
    for item in skipped:
        print(f"skipped: {item}")
    write_json(args.out, report(complete=True))
    print(f"wrote {args.out}")
    return 0


def _interleaved(
    predictors: dict[str, Predictor],
    x: Tensor,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> dict[str, tuple[list[float], float | None]]:
    """Time every predictor on ``x``, alternating models call by call.

    Alternating spreads any change in machine load (other processes on a shared CPU)
    evenly over the models being compared. Returns, per model, the seconds of each timed
    call and the peak CUDA memory over its calls (``None`` on the CPU).
    """
    runs: dict[str, list[float]] = {n: [] for n in predictors}
    peaks: dict[str, float | None] = dict.fromkeys(predictors)
    for p in predictors.values():
        with p.eval_context():
            for _ in range(warmup):
                p.probs_normalized(x)
    synchronize(device)
    for _ in range(repeats):
        for name, p in predictors.items():
            reset_peak_memory(device)
            with p.eval_context():
                t0 = time.perf_counter()
                p.probs_normalized(x)
                synchronize(device)
                runs[name].append(time.perf_counter() - t0)
            peak = peak_memory_mb(device)
            old = peaks[name]
            peaks[name] = peak if old is None or peak is None else max(old, peak)
    return {n: (runs[n], peaks[n]) for n in predictors}


def _ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """V3 / DeepLabV3 median latency for every setting both models ran."""
    by_key = {(r["model"], tuple(r["size"]), r["batch"], r["mode"]): r for r in results}
    out = []
    for (model, size, batch, mode), r in by_key.items():
        base = by_key.get(("deeplabv3", size, batch, mode))
        if model == "v3" and base is not None:
            out.append(
                {
                    "size": list(size),
                    "batch": batch,
                    "mode": mode,
                    "v3_ms": r["latency_ms_median"],
                    "deeplabv3_ms": base["latency_ms_median"],
                    "ratio": r["latency_ms_median"] / base["latency_ms_median"],
                    # The models alternate call by call: call i of V3 and call i of
                    # DeepLabV3 ran back to back, under the same machine load.
                    "paired_ratio_median": statistics.median(
                        a / b for a, b in zip(r["runs_s"], base["runs_s"], strict=True)
                    ),
                }
            )
    return out


if __name__ == "__main__":
    sys.exit(main())
