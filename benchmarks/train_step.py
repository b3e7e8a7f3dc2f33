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
from typing import Any

import torch
from _common import (
    OOM_ERRORS,
    Budget,
    Progress,
    as_input,
    free_memory,
    largest_batch,
    machine_info,
    make_parser,
    model_factories,
    parse,
    peak_memory_mb,
    pick,
    print_table,
    reset_peak_memory,
    start,
    synchronize,
    time_repeats,
    train_step_flops,
    write_report,
)
from _common import describe as _describe
from torch import Tensor, nn

from suimseg.classes import NUM_CLASSES
from suimseg.losses import DiceFocalLoss
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = make_parser(__doc__, "train_step", budget=True, models=True)
    p.add_argument("--size", type=int, default=None, help="square input size (64; --full 384)")
    p.add_argument("--batch", type=int, default=None, help="batch size (2; --full 6)")
    p.add_argument("--steps", type=int, default=None, help="steps per repetition (1; --full 5)")
    p.add_argument("--variants", default=None, help=f"comma-separated subset of {list(VARIANTS)}")
    p.add_argument("--compile", action="store_true", help="add the torch.compile variant")
    p.add_argument(
        "--max-batch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also find and time the largest batch that fits (default: with --full on CUDA)",
    )
    p.add_argument("--max-batch-limit", type=int, default=512, help="cap of that search")
    p.add_argument(
        "--max-batch-tolerance",
        type=float,
        default=0.1,
        help="stop bisecting within this fraction of the largest batch found (0: exact)",
    )
    p.add_argument(
        "--max-batch-variants",
        default=None,
        help="variants searched for the largest batch, in order (default: bf16_cl first)",
    )
    p.add_argument(
        "--compile-reserve-s",
        type=float,
        default=90.0,
        help="with --budget-s, compile a model only if this much time is left",
    )
    return parse(p, argv)


def _split(text: str | None) -> list[str]:
    return [t for t in (text or "").split(",") if t]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    device = start(args)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    size = (pick(args, "size", 64, 384),) * 2
    batch = pick(args, "batch", 2, 6)
    warmup, repeats = pick(args, "warmup", 1, 5), pick(args, "repeats", 3, 5)
    steps = pick(args, "steps", 1, 5)
    # bf16 autocast on a CPU without native bf16 is ~10x slower than fp32: CUDA only.
    quick = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    variant_names = _split(args.variants) or (list(VARIANTS) if args.full else quick)
    if args.compile and "bf16_cl_compile" not in variant_names:
        variant_names.append("bf16_cl_compile")
    unknown = [v for v in variant_names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; expected a subset of {list(VARIANTS)}")
    factories = model_factories(tiny=args.tiny_models)
    skipped: list[dict[str, Any]] = []
    if "smp_unet" not in factories:
        reason = "segmentation_models_pytorch is not importable (pip install 'suimseg[bench]')"
        skipped.append({"model": "smp_unet", "reason": reason})
    names = _split(args.models) or list(factories)
    missing = [n for n in names if n not in factories]
    if missing:
        raise SystemExit(f"--models: not available {missing}; have {list(factories)}")
    max_batch = pick(args, "max_batch", False, device.type == "cuda")
    plain = [v for v in variant_names if not VARIANTS[v].compile]
    mb_variants = _split(args.max_batch_variants) or sorted(plain, key=lambda v: v != "bf16_cl")
    bad = [v for v in mb_variants if v not in VARIANTS or VARIANTS[v].compile]
    if bad:
        raise SystemExit(
            f"--max-batch-variants: unknown or compiled {bad}; expected a subset of "
            f"{[v for v in VARIANTS if not VARIANTS[v].compile]}"
        )
    mb_variants = mb_variants if max_batch else []
    info = machine_info(device)
    flops: dict[str, dict[str, float | None]] = {}  # counted when a model first runs

    def count_flops(name: str) -> dict[str, float | None]:
        if name not in flops:
            try:
                flops[name] = dict(train_step_flops(factories[name], size))
            except Exception as exc:  # the timing still means something without the count
                flops[name] = {"forward_gflops": None, "train_gflops": None}
                skipped.append({"model": name, "reason": f"FLOP count failed: {_describe(exc)}"})
        return flops[name]

    results: list[dict[str, Any]] = []
    settings = {
        "image_size": list(size),
        "batch_size": batch,
        "models": names,
        "variants": variant_names,
        "largest_batch_search": bool(max_batch),
        "largest_batch_variants": mb_variants,
        "largest_batch_limit": args.max_batch_limit,
        "largest_batch_tolerance": args.max_batch_tolerance,
        "largest_batch_timing": "2 warm-up steps, 3 timed repetitions of 1 step",
        "warmup_steps": warmup,
        "repeats": repeats,
        "steps_per_repeat": steps,
        "budget_s": budget.seconds,
        "tiny_models": bool(args.tiny_models),
        "loss": "DiceFocalLoss()",
        "optimizer": "AdamW(param_groups(model, 0.1), fused on CUDA), clip_grad_norm 1.0",
        "statistic": "median seconds per repetition / steps; images/s = batch / that",
        "flops": "torch.utils.flop_counter, per image, multiply-add = 2 FLOPs",
    }

    def save(complete: bool) -> None:
        _add_ratios(results)
        write_report(
            args.out,
            "suimseg training step",
            info,
            settings,
            results,
            skipped=skipped,
            complete=complete,
            elapsed_s=budget.elapsed(),
        )

    table = Progress(["model", "variant", "batch", "img/s", "peak MiB", "fwd GFLOP", "TFLOP/s"])

    def run(name: str, vname: str, b: int, warm: int, reps: int, n: int, **extra: Any) -> None:
        m = _safe_measure(factories[name], VARIANTS[vname], b, size, device, warm, reps, n)
        f = count_flops(name)
        ips, train_gflops = m.get("images_per_s"), f["train_gflops"]
        tflops = None if ips is None or train_gflops is None else train_gflops * ips / 1e3
        results.append(
            {
                "model": name,
                "variant": vname,
                "batch": b,
                "largest_batch": b != batch,
                "forward_gflops_per_image": f["forward_gflops"],
                "train_gflops_per_image": train_gflops,
                "achieved_tflops": tflops,
                **m,
                **extra,
            }
        )
        peak = m.get("peak_memory_mib")
        table.row(name, vname, b, ips, peak, f["forward_gflops"], tflops)
        if "error" in m:
            print(f"  {m['error']}", flush=True)
        save(complete=False)

    # 1. The batch-size settings without compilation: the comparison the targets need
    #    (fp32 and bf16 + channels_last first: the memory target compares those two).
    first = {"fp32": 0, "bf16_cl": 1}
    for vname in sorted(plain, key=lambda v: first.get(v, 2)):
        for name in names:
            if budget.exceeded():
                skipped.append({"model": name, "variant": vname, "reason": "time budget"})
                continue
            run(name, vname, batch, warmup, repeats, steps)
    # 2. The compiled variant (compilation takes a minute or more per model on a GPU).
    for vname in [v for v in variant_names if VARIANTS[v].compile]:
        for name in names:
            if budget.seconds is not None and not budget.allows(args.compile_reserve_s):
                skipped.append({"model": name, "variant": vname, "reason": "time budget"})
                continue
            run(name, vname, batch, warmup, repeats, steps)
    # 3. The largest batch that fits, bf16 + channels_last first; cut by the budget.
    for vname in mb_variants:
        for name in names:
            if budget.exceeded():
                reason = "time budget (largest batch)"
                skipped.append({"model": name, "variant": vname, "reason": reason})
                continue
            cut = [False]

            def fits_in_budget(
                b: int, name: str = name, vname: str = vname, cut: list[bool] = cut
            ) -> bool:
                cut[0] = cut[0] or budget.exceeded()
                return not cut[0] and fits(factories[name], VARIANTS[vname], b, size, device)

            try:
                found = largest_batch(
                    fits_in_budget,
                    start=batch,
                    limit=args.max_batch_limit,
                    tolerance=args.max_batch_tolerance,
                )
            except Exception as exc:  # keep the run going: one setting failing is a result
                free_memory(device)
                reason = f"largest batch search failed: {_describe(exc)}"
                skipped.append({"model": name, "variant": vname, "reason": reason})
                continue
            if found is None or found == batch:
                when = " before the budget ran out" if cut[0] else ""
                reason = f"largest batch search found {found} (the base batch {batch} or less)"
                skipped.append({"model": name, "variant": vname, "reason": reason + when})
                continue
            # Large batches: fewer, longer steps keep this phase short.
            tol = args.max_batch_tolerance
            run(name, vname, found, 2, 3, 1, search_cut_by_budget=cut[0], search_tolerance=tol)
    save(complete=True)
    keys = ("model", "variant", "batch", "images_per_s", "peak_memory_mib")
    print(f"\ndevice: {info['device_name']}; size {size[0]}x{size[1]}; batch != {batch}: largest")
    print_table(
        ["model", "variant", "batch", "img/s", "peak MiB", "x DeepLabV3 img/s", "error"],
        [[r.get(k) for k in (*keys, "speedup_vs_deeplabv3", "error")] for r in results],
    )
    for s in skipped:
        print(f"skipped: {s}")
    print(f"wrote {args.out}")
    return 0


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
            make_model, variant, batch, size, device, warmup=warmup, repeats=repeats, steps=steps
        )
    except Exception as exc:  # OOM, or e.g. a compile failure: one setting failing is a result
        free_memory(device)
        error = "out of memory" if isinstance(exc, OOM_ERRORS) else _describe(exc)
        return {"images_per_s": None, "peak_memory_mib": None, "error": error}


def _add_ratios(results: list[dict[str, Any]]) -> None:
    """Add ``speedup_vs_deeplabv3`` (images/s ratio) and ``memory_vs_fp32`` to each row."""
    same = [r for r in results if not r["largest_batch"]]
    dl = [r for r in same if r["model"] == "deeplabv3"]
    f32 = [r for r in same if r["variant"] == "fp32"]
    base = {(r["variant"], r["batch"]): r.get("images_per_s") for r in dl}
    fp32 = {(r["model"], r["batch"]): r.get("peak_memory_mib") for r in f32}
    for r in results:
        b, m32 = base.get((r["variant"], r["batch"])), fp32.get((r["model"], r["batch"]))
        ips, mem, own = r.get("images_per_s"), r.get("peak_memory_mib"), not r["largest_batch"]
        r["speedup_vs_deeplabv3"] = ips / b if ips is not None and b and own else None
        r["memory_vs_fp32"] = mem / m32 if mem is not None and m32 and own else None


if __name__ == "__main__":
    sys.exit(main())
