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
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _common import (
    OOM_ERRORS,
    Budget,
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
    tiny_factories,
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


def model_factories(tiny: bool = False) -> dict[str, Callable[[], nn.Module]]:
    """Name -> constructor of every model this machine can build (random weights).

    ``tiny=True`` gives small stand-ins (:func:`_common.tiny_factories`, and smp's Unet
    on ResNet-18 with a narrow decoder) for plumbing checks such as the quick suite.
    """
    factories: dict[str, Callable[[], nn.Module]] = (
        tiny_factories()
        if tiny
        else {
            "v3": lambda: UNetResAttnV3(num_classes=NUM_CLASSES, encoder_weights=None),
            "deeplabv3": lambda: deeplabv3_resnet50(num_classes=NUM_CLASSES, encoder_weights=None),
        }
    )
    if smp_available():
        import segmentation_models_pytorch as smp

        narrow: dict[str, Any] = {"decoder_channels": (32, 32, 16, 16, 16)} if tiny else {}
        factories["smp_unet"] = lambda: smp.Unet(
            "resnet18" if tiny else "resnet50",
            encoder_weights=None,
            decoder_attention_type="scse",
            classes=NUM_CLASSES,
            **narrow,
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
    """Whether two training steps at ``batch`` run without running out of memory.

    On CUDA a batch too large for the card can also fail as a ``RuntimeError`` that is not
    ``torch.OutOfMemoryError`` (a cuDNN or cuBLAS allocation failure, or a kernel's 32-bit
    indexing limit); those count as "does not fit" too, and the message is printed.
    """
    step: _Step | None = None
    try:
        step = _Step(make_model, variant, batch, size, device)
        step()
        step()
        synchronize(device)
    except OOM_ERRORS:
        return False
    except RuntimeError as exc:
        if device.type != "cuda":
            raise
        print(f"  batch {batch}: {_describe(exc)} (counted as not fitting)", flush=True)
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
    parser.add_argument(
        "--max-batch-tolerance",
        type=float,
        default=0.1,
        help="stop bisecting within this fraction of the largest batch found (0: exact)",
    )
    parser.add_argument(
        "--max-batch-variants",
        default=None,
        help="variants searched for the largest batch, in order (default: bf16_cl first, "
        "then the other non-compiled ones)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="soft time budget in seconds: batch-size settings run first, then the "
        "compiled variant, then the largest-batch search, each only while time is left "
        "(skipped settings are listed in the JSON); default: no budget",
    )
    parser.add_argument(
        "--compile-reserve-s",
        type=float,
        default=90.0,
        help="with --budget-s, start compiling a model only if this much time is left",
    )
    parser.add_argument(
        "--tiny-models",
        action="store_true",
        help="small stand-in models (plumbing checks only; figures say nothing of the real models)",
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per setting")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions")
    parser.add_argument("--steps", type=int, default=None, help="steps per repetition")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/train_step.json"), help="JSON output"
    )
    return parser.parse_args(argv)


@dataclass
class _Plan:
    """What one run measures, and how."""

    names: list[str]
    variants: list[str]
    batch: int
    size: tuple[int, int]
    warmup: int
    repeats: int
    steps: int
    max_batch: bool
    max_batch_variants: list[str]


def _split(text: str | None) -> list[str]:
    return [t for t in (text or "").split(",") if t]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    set_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    full = args.full
    size = args.size or (384 if full else 64)
    batch = args.batch or (6 if full else 2)
    if args.variants:
        variant_names = _split(args.variants)
    elif full:
        variant_names = list(VARIANTS)
    else:  # bf16 autocast on a CPU without native bf16 is ~10x slower than fp32: CUDA only
        variant_names = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    if args.compile and "bf16_cl_compile" not in variant_names:
        variant_names.append("bf16_cl_compile")
    unknown = [v for v in variant_names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; expected a subset of {list(VARIANTS)}")
    factories = model_factories(tiny=args.tiny_models) if args.tiny_models else model_factories()
    skipped: list[dict[str, Any]] = []
    if "smp_unet" not in factories:
        skipped.append(
            {
                "model": "smp_unet",
                "reason": "segmentation_models_pytorch is not importable "
                "(pip install 'suimseg[bench]')",
            }
        )
    names = _split(args.models) or list(factories)
    missing = [n for n in names if n not in factories]
    if missing:
        hint = " (pip install 'suimseg[bench]')" if "smp_unet" in missing else ""
        raise SystemExit(f"--models: not available {missing}{hint}; have {list(factories)}")
    max_batch = args.max_batch if args.max_batch is not None else (full and device.type == "cuda")
    plain = [v for v in variant_names if not VARIANTS[v].compile]
    mb_variants = _split(args.max_batch_variants) or sorted(plain, key=lambda v: v != "bf16_cl")
    bad = [v for v in mb_variants if v not in VARIANTS or VARIANTS[v].compile]
    if bad:
        raise SystemExit(
            f"--max-batch-variants: unknown or compiled {bad}; expected a subset of "
            f"{[v for v in VARIANTS if not VARIANTS[v].compile]}"
        )
    plan = _Plan(
        names=names,
        variants=variant_names,
        batch=batch,
        size=(size, size),
        warmup=args.warmup if args.warmup is not None else (5 if full else 1),
        repeats=args.repeats or (5 if full else 3),
        steps=args.steps or (5 if full else 1),
        max_batch=bool(max_batch),
        max_batch_variants=mb_variants if max_batch else [],
    )
    info = machine_info(device)
    flops: dict[str, dict[str, float | None]] = {}
    for name in names:
        try:
            flops[name] = dict(train_step_flops(factories[name], plan.size))
        except Exception as exc:  # the timing still means something without the count
            flops[name] = {"forward_gflops": None, "train_gflops": None}
            skipped.append({"model": name, "reason": f"FLOP count failed: {_describe(exc)}"})
    results: list[dict[str, Any]] = []

    def save(complete: bool) -> None:
        _add_ratios(results)
        report = _report(args, plan, info, results, skipped, budget, complete)
        write_json(args.out, report)

    print(
        f"{'model':<10} {'variant':<16} {'batch':>6} {'img/s':>9} {'peak MiB':>9} "
        f"{'fwd GFLOP':>9} {'TFLOP/s':>8}",
        flush=True,
    )

    def record(name: str, vname: str, b: int, m: dict[str, Any], **extra: Any) -> None:
        f = flops[name]
        ips = m.get("images_per_s")
        train_gflops = f["train_gflops"]
        tflops = None if ips is None or train_gflops is None else train_gflops * ips / 1e3
        row = {
            "model": name,
            "variant": vname,
            "batch": b,
            "largest_batch": b != plan.batch,
            "forward_gflops_per_image": f["forward_gflops"],
            "train_gflops_per_image": f["train_gflops"],
            "achieved_tflops": tflops,
            **m,
            **extra,
        }
        results.append(row)
        note = f"  ({m['error']})" if "error" in m else ""
        print(
            f"{name:<10} {vname:<16} {b:>5}{'*' if b != plan.batch else ' '} "
            f"{_f(ips):>9} {_f(m.get('peak_memory_mib')):>9} "
            f"{_f(f['forward_gflops']):>9} {_f(tflops):>8}{note}",
            flush=True,
        )
        save(complete=False)

    def run_setting(name: str, vname: str, b: int, warmup: int, repeats: int, steps: int) -> None:
        m = _safe_measure(
            factories[name], VARIANTS[vname], b, plan.size, device, warmup, repeats, steps
        )
        record(name, vname, b, m)

    # 1. The batch-size settings without compilation: the comparison the targets need
    #    (fp32 and bf16 + channels_last first: the memory target compares those two).
    first = {"fp32": 0, "bf16_cl": 1}
    for vname in sorted(plain, key=lambda v: first.get(v, 2)):
        for name in names:
            if budget.exceeded():
                skipped.append({"model": name, "variant": vname, "reason": "time budget"})
                continue
            run_setting(name, vname, plan.batch, plan.warmup, plan.repeats, plan.steps)
    # 2. The compiled variant (compilation takes a minute or more per model on a GPU).
    for vname in [v for v in variant_names if VARIANTS[v].compile]:
        for name in names:
            if budget.seconds is not None and not budget.allows(args.compile_reserve_s):
                skipped.append({"model": name, "variant": vname, "reason": "time budget"})
                continue
            run_setting(name, vname, plan.batch, plan.warmup, plan.repeats, plan.steps)
    # 3. The largest batch that fits, bf16 + channels_last first; cut by the budget.
    for vname in plan.max_batch_variants:
        for name in names:
            if budget.exceeded():
                skipped.append(
                    {"model": name, "variant": vname, "reason": "time budget (largest batch)"}
                )
                continue
            cut = [False]

            def fits_in_budget(
                b: int, name: str = name, vname: str = vname, cut: list[bool] = cut
            ) -> bool:
                if budget.exceeded():
                    cut[0] = True
                    return False
                return _fits_at(factories[name], VARIANTS[vname], plan.size, device, b)

            try:
                found = largest_batch(
                    fits_in_budget,
                    start=plan.batch,
                    limit=args.max_batch_limit,
                    tolerance=args.max_batch_tolerance,
                )
            except Exception as exc:  # keep the run going: one setting failing is a result
                free_memory(device)
                skipped.append(
                    {
                        "model": name,
                        "variant": vname,
                        "reason": f"largest batch search failed: {_describe(exc)}",
                    }
                )
                continue
            if found is None or found == plan.batch:
                skipped.append(
                    {
                        "model": name,
                        "variant": vname,
                        "reason": f"largest batch search found {found} (the base batch "
                        f"{plan.batch} or less){' before the budget ran out' if cut[0] else ''}",
                    }
                )
                continue
            # Large batches: fewer, longer steps keep this phase short.
            m = _safe_measure(factories[name], VARIANTS[vname], found, plan.size, device, 2, 3, 1)
            record(
                name,
                vname,
                found,
                m,
                search_cut_by_budget=cut[0],
                search_tolerance=args.max_batch_tolerance,
            )
    save(complete=True)
    print()
    print(f"device: {info['device_name']}; size {size}x{size}; * = largest batch")
    print_table(
        ["model", "variant", "batch", "img/s", "peak MiB", "x DeepLabV3 img/s"],
        [
            [
                r["model"],
                r["variant"],
                r["batch"],
                r["images_per_s"],
                r.get("peak_memory_mib"),
                r.get("speedup_vs_deeplabv3"),
            ]
            for r in results
        ],
    )
    for s in skipped:
        print(f"skipped: {s}")
    print(f"wrote {args.out}")
    return 0


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _safe_measure(
    make_model: Callable[[], nn.Module],
    variant: Variant,
    batch: int,
    size: tuple[int, int],
    device: torch.device,
    warmup: int,
    repeats: int,
    steps: int,
) -> dict[str, Any]:
    """:func:`measure`, with out-of-memory and any other failure recorded, not raised."""
    try:
        return measure(
            make_model,
            variant,
            batch,
            size,
            device,
            warmup=warmup,
            repeats=repeats,
            steps=steps,
        )
    except OOM_ERRORS:
        free_memory(device)
        return {"images_per_s": None, "peak_memory_mib": None, "error": "out of memory"}
    except Exception as exc:  # e.g. a compile failure: one setting failing is a result
        free_memory(device)
        return {"images_per_s": None, "peak_memory_mib": None, "error": _describe(exc)}


def _report(
    args: argparse.Namespace,
    plan: _Plan,
    info: dict[str, Any],
    results: list[dict[str, Any]],
    skipped: list[dict[str, Any]],
    budget: Budget,
    complete: bool,
) -> dict[str, Any]:
    return {
        "benchmark": "suimseg training step",
        "machine": info,
        "settings": {
            "image_size": list(plan.size),
            "batch_size": plan.batch,
            "models": plan.names,
            "variants": plan.variants,
            "largest_batch_search": plan.max_batch,
            "largest_batch_variants": plan.max_batch_variants,
            "largest_batch_limit": args.max_batch_limit,
            "largest_batch_tolerance": args.max_batch_tolerance,
            "largest_batch_timing": "2 warm-up steps, 3 timed repetitions of 1 step",
            "warmup_steps": plan.warmup,
            "repeats": plan.repeats,
            "steps_per_repeat": plan.steps,
            "budget_s": budget.seconds,
            "tiny_models": bool(args.tiny_models),
            "loss": "DiceFocalLoss()",
            "optimizer": "AdamW(param_groups(model, 0.1), fused on CUDA), clip_grad_norm 1.0",
            "statistic": "median seconds per repetition / steps; images/s = batch / that",
            "flops": "torch.utils.flop_counter, per image, multiply-add = 2 FLOPs",
        },
        "results": results,
        "skipped": skipped,
        "complete": complete,
        "elapsed_s": budget.elapsed(),
    }


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}" if v < 10 else f"{v:.1f}"


def _add_ratios(results: list[dict[str, Any]]) -> None:
    """Add ``speedup_vs_deeplabv3`` (images/s ratio) and ``memory_vs_fp32`` to each row."""
    base = {
        (r["variant"], r["batch"]): r.get("images_per_s")
        for r in results
        if r["model"] == "deeplabv3" and not r["largest_batch"]
    }
    fp32 = {
        (r["model"], r["batch"]): r.get("peak_memory_mib")
        for r in results
        if r["variant"] == "fp32" and not r["largest_batch"]
    }
    for r in results:
        b = base.get((r["variant"], r["batch"]))
        ips = r.get("images_per_s")
        r["speedup_vs_deeplabv3"] = (
            ips / b if ips is not None and b and not r["largest_batch"] else None
        )
        m32 = fp32.get((r["model"], r["batch"]))
        mem = r.get("peak_memory_mib")
        r["memory_vs_fp32"] = (
            mem / m32 if mem is not None and m32 and not r["largest_batch"] else None
        )


if __name__ == "__main__":
    sys.exit(main())
