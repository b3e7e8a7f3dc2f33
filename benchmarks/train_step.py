"""Benchmark one training step (images/s, peak memory, FLOPs) of V3 and the baselines.

Models, all with 8 classes, random initialisation and the same inputs, loss and optimizer:

- ``v3``: :class:`suimseg.models.UNetResAttnV3` (ResNet-50 encoder, the design's widths).
- ``deeplabv3``: torchvision's DeepLabV3-ResNet50 (the design's benchmark), via
  :func:`suimseg.models.deeplabv3_resnet50`.
- ``smp_unet``: segmentation_models.pytorch ``Unet("resnet50",
  decoder_attention_type="scse")`` when ``segmentation-models-pytorch`` is installed
  (``pip install suimseg[bench]``); skipped otherwise.

A step is ``zero_grad`` -> forward under the variant's autocast -> ``DiceFocalLoss`` ->
backward -> fused (on CUDA) AdamW step over :func:`suimseg.optim.param_groups`. Variants:
``fp32``; ``bf16`` (autocast); ``bf16_cl`` (bf16 + channels_last model and input);
``bf16_cl_compile`` (the same under ``torch.compile``). Every setting runs ``--warmup``
untimed steps and then ``--repeats`` timed repetitions of ``--steps`` steps each
(synchronised on CUDA); images/s comes from the median repetition. Peak memory is
``torch.cuda.max_memory_allocated`` over the timed steps (CUDA only). FLOPs per image are
counted with ``torch.utils.flop_counter`` (forward, and forward + backward); achieved
TFLOP/s = counted training FLOPs per image x images/s.

Usage::

    python benchmarks/train_step.py                 # small: 64x64, batch 2, fp32 (+ bf16 on CUDA)
    python benchmarks/train_step.py --compile       # ... plus the torch.compile variant
    python benchmarks/train_step.py --full          # 384x384, batch 6, all variants,
                                                    # and (CUDA) the largest batch that fits
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _common import (
    OOM_ERRORS,
    as_input,
    free_memory,
    largest_batch,
    machine_info,
    peak_memory_mb,
    print_table,
    reset_peak_memory,
    resolve_device,
    set_threads,
    synchronize,
    time_repeats,
    train_step_flops,
    write_json,
)
from torch import Tensor, nn

from suimseg.classes import NUM_CLASSES
from suimseg.losses import DiceFocalLoss
from suimseg.models import UNetResAttnV3, deeplabv3_resnet50
from suimseg.optim import param_groups


@dataclass(frozen=True)
class Variant:
    """Precision, memory format and compilation of one benchmark setting."""

    name: str
    amp: torch.dtype | None
    channels_last: bool
    compile: bool


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("fp32", None, False, False),
        Variant("bf16", torch.bfloat16, False, False),
        Variant("bf16_cl", torch.bfloat16, True, False),
        Variant("bf16_cl_compile", torch.bfloat16, True, True),
    )
}


def smp_available() -> bool:
    """Whether segmentation_models.pytorch can be imported."""
    try:
        import segmentation_models_pytorch  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


def model_factories() -> dict[str, Callable[[], nn.Module]]:
    """Name -> constructor of every model this machine can build (random weights)."""
    factories: dict[str, Callable[[], nn.Module]] = {
        "v3": lambda: UNetResAttnV3(num_classes=NUM_CLASSES, encoder_weights=None),
        "deeplabv3": lambda: deeplabv3_resnet50(num_classes=NUM_CLASSES, encoder_weights=None),
    }
    if smp_available():
        import segmentation_models_pytorch as smp

        factories["smp_unet"] = lambda: smp.Unet(
            "resnet50",
            encoder_weights=None,
            decoder_attention_type="scse",
            classes=NUM_CLASSES,
        )
    return factories


class _Step:
    """A model, loss and optimizer ready to run training steps on fixed random data."""

    def __init__(
        self,
        make_model: Callable[[], nn.Module],
        variant: Variant,
        batch: int,
        size: tuple[int, int],
        device: torch.device,
    ) -> None:
        model = make_model().to(device)
        if variant.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        self.model = model
        self.forward: nn.Module = (
            torch.compile(model) if variant.compile else model  # type: ignore[assignment]
        )
        self.loss_fn = DiceFocalLoss()
        groups = param_groups(model, 0.1, lr=1e-4, weight_decay=1e-4)
        self.optimizer = torch.optim.AdamW(groups, lr=1e-4, fused=device.type == "cuda")
        self.device = device
        self.amp = variant.amp
        g = torch.Generator(device="cpu").manual_seed(0)
        self.x = as_input(batch, size, device, variant.channels_last)
        self.y = torch.randint(0, NUM_CLASSES, (batch, *size), generator=g).to(device)

    def __call__(self) -> None:
        ctx: contextlib.AbstractContextManager[Any] = (
            torch.autocast(device_type=self.device.type, dtype=self.amp)
            if self.amp is not None
            else contextlib.nullcontext()
        )
        self.optimizer.zero_grad(set_to_none=True)
        with ctx:
            out = self.forward(self.x)
            logits: Tensor = out["out"] if isinstance(out, dict) else out
            loss = self.loss_fn(logits, self.y)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()


def measure(
    make_model: Callable[[], nn.Module],
    variant: Variant,
    batch: int,
    size: tuple[int, int],
    device: torch.device,
    *,
    warmup: int,
    repeats: int,
    steps: int,
) -> dict[str, Any]:
    """Images/s and peak memory of one (model, variant, batch) setting."""
    step = _Step(make_model, variant, batch, size, device)

    def run(s: _Step = step) -> None:
        for _ in range(steps):
            s()

    for _ in range(warmup):
        step()
    synchronize(device)
    reset_peak_memory(device)
    t = time_repeats(run, device=device, warmup=0, repeats=repeats)
    peak = peak_memory_mb(device)
    del step
    free_memory(device)
    per_step = t["median_s"] / steps
    return {
        "step_s_median": per_step,
        "step_s_min": t["min_s"] / steps,
        "images_per_s": batch / per_step,
        "peak_memory_mib": peak,
        "runs_s": t["runs_s"],
    }


def fits(
    make_model: Callable[[], nn.Module],
    variant: Variant,
    batch: int,
    size: tuple[int, int],
    device: torch.device,
) -> bool:
    """Whether two training steps at ``batch`` run without running out of memory."""
    step: _Step | None = None
    try:
        step = _Step(make_model, variant, batch, size, device)
        step()
        step()
        synchronize(device)
    except OOM_ERRORS:
        return False
    finally:
        del step
        free_memory(device)
    return True


def _fits_at(
    make_model: Callable[[], nn.Module],
    variant: Variant,
    size: tuple[int, int],
    device: torch.device,
    batch: int,
) -> bool:
    return fits(make_model, variant, batch, size, device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the issue's settings (see above)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    parser.add_argument("--size", type=int, default=None, help="square input size")
    parser.add_argument("--batch", type=int, default=None, help="batch size")
    parser.add_argument(
        "--models", default=None, help="comma-separated: v3,deeplabv3,smp_unet (default: all)"
    )
    parser.add_argument(
        "--variants", default=None, help=f"comma-separated subset of {','.join(VARIANTS)}"
    )
    parser.add_argument("--compile", action="store_true", help="add the torch.compile variant")
    parser.add_argument(
        "--max-batch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also find and measure the largest batch that fits (default: with --full on CUDA)",
    )
    parser.add_argument("--max-batch-limit", type=int, default=512, help="cap of that search")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per setting")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions")
    parser.add_argument("--steps", type=int, default=None, help="steps per repetition")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/train_step.json"), help="JSON output"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    args = parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    full = args.full
    size = args.size or (384 if full else 64)
    batch = args.batch or (6 if full else 2)
    warmup = args.warmup if args.warmup is not None else (5 if full else 1)
    repeats = args.repeats or (5 if full else 3)
    steps = args.steps or (5 if full else 1)
    if args.variants:
        variant_names = args.variants.split(",")
    elif full:
        variant_names = list(VARIANTS)
    else:  # bf16 autocast on a CPU without native bf16 is ~10x slower than fp32: CUDA only
        variant_names = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    if args.compile and "bf16_cl_compile" not in variant_names:
        variant_names.append("bf16_cl_compile")
    unknown = [v for v in variant_names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; expected a subset of {list(VARIANTS)}")
    factories = model_factories()
    names = args.models.split(",") if args.models else list(factories)
    missing = [n for n in names if n not in factories]
    if missing:
        hint = " (pip install 'suimseg[bench]')" if "smp_unet" in missing else ""
        raise SystemExit(f"--models: not available {missing}{hint}; have {list(factories)}")
    max_batch = args.max_batch if args.max_batch is not None else (full and device.type == "cuda")
    hw = (size, size)

    flops = {name: train_step_flops(factories[name], hw) for name in names}
    results: list[dict[str, Any]] = []
    print(
        f"{'model':<10} {'variant':<16} {'batch':>6} {'img/s':>9} {'peak MiB':>9} "
        f"{'fwd GFLOP':>9} {'TFLOP/s':>8}"
    )
    for name in names:
        for vname in variant_names:
            variant = VARIANTS[vname]
            batches = [batch]
            if max_batch:
                found = largest_batch(
                    functools.partial(_fits_at, factories[name], variant, hw, device),
                    start=batch,
                    limit=args.max_batch_limit,
                )
                if found is not None and found != batch:
                    batches.append(found)
            for b in batches:
                try:
                    m = measure(
                        factories[name],
                        variant,
                        b,
                        hw,
                        device,
                        warmup=warmup,
                        repeats=repeats,
                        steps=steps,
                    )
                except OOM_ERRORS:
                    free_memory(device)
                    m = {"images_per_s": None, "peak_memory_mib": None, "error": "out of memory"}
                f = flops[name]
                ips = m["images_per_s"]
                tflops = None if ips is None else f["train_gflops"] * ips / 1e3
                row = {
                    "model": name,
                    "variant": vname,
                    "batch": b,
                    "largest_batch": b != batch,
                    "forward_gflops_per_image": f["forward_gflops"],
                    "train_gflops_per_image": f["train_gflops"],
                    "achieved_tflops": tflops,
                    **m,
                }
                results.append(row)
                print(
                    f"{name:<10} {vname:<16} {b:>5}{'*' if b != batch else ' '} "
                    f"{_f(ips):>9} {_f(m.get('peak_memory_mib')):>9} "
                    f"{f['forward_gflops']:>9.1f} {_f(tflops):>8}",
                    flush=True,
                )
    _add_ratios(results)
    print()
    print(f"device: {machine_info(device)['device_name']}; size {size}x{size}; * = largest batch")
    print_table(
        ["model", "variant", "batch", "img/s", "peak MiB", "x DeepLabV3 img/s"],
        [
            [
                r["model"],
                r["variant"],
                r["batch"],
                r["images_per_s"],
                r["peak_memory_mib"],
                r.get("speedup_vs_deeplabv3"),
            ]
            for r in results
        ],
    )
    report = {
        "benchmark": "suimseg training step",
        "machine": machine_info(device),
        "settings": {
            "image_size": [size, size],
            "batch_size": batch,
            "models": names,
            "variants": variant_names,
            "largest_batch_search": bool(max_batch),
            "largest_batch_limit": args.max_batch_limit,
            "warmup_steps": warmup,
            "repeats": repeats,
            "steps_per_repeat": steps,
            "loss": "DiceFocalLoss()",
            "optimizer": "AdamW(param_groups(model, 0.1), fused on CUDA), clip_grad_norm 1.0",
            "statistic": "median seconds per repetition / steps; images/s = batch / that",
            "flops": "torch.utils.flop_counter, per image, multiply-add = 2 FLOPs",
        },
        "results": results,
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}" if v < 10 else f"{v:.1f}"


def _add_ratios(results: list[dict[str, Any]]) -> None:
    """Add ``speedup_vs_deeplabv3`` (images/s ratio) and ``memory_vs_fp32`` to each row."""
    base = {
        (r["variant"], r["batch"]): r["images_per_s"]
        for r in results
        if r["model"] == "deeplabv3" and not r["largest_batch"]
    }
    fp32 = {
        (r["model"], r["batch"]): r["peak_memory_mib"]
        for r in results
        if r["variant"] == "fp32" and not r["largest_batch"]
    }
    for r in results:
        b = base.get((r["variant"], r["batch"]))
        ips = r["images_per_s"]
        r["speedup_vs_deeplabv3"] = (
            ips / b if ips is not None and b and not r["largest_batch"] else None
        )
        m32 = fp32.get((r["model"], r["batch"]))
        mem = r["peak_memory_mib"]
        r["memory_vs_fp32"] = mem / m32 if mem is not None and m32 else None


if __name__ == "__main__":
    sys.exit(main())
