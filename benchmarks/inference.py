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

Backends (``--backends``): one model (the first of ``--models``, V3 by default), plain
mode, every backend side by side in interleaved rounds: ``eager_fp32``,
``eager_channels_last``, ``eager_bf16`` (bf16 autocast; only on a CPU with native bf16,
else a row saying why it was not measured), ``onnxruntime_fp32`` (the model exported to
ONNX, or ``--onnx-model PATH``) and ``onnxruntime_int8`` (only with ``--int8-model PATH``,
an int8 export of the same weights). The report (``inference_backends.json``) records the
CPU model name and each backend's speed-up over eager float32; the target is the best
backend >= 1.5x eager fp32 batch-1 latency at 384::

    python benchmarks/inference.py --backends all --sizes 384 --batches 1 --repeats 8
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common as bench
import torch
from torch import nn

from suimseg.inference import TTA, OnnxRuntimeModel, Predictor, export_onnx, native_bf16_cpu
from suimseg.inference.predictor import AmpMode

MODES: dict[str, TTA] = {"plain": TTA(), "tta": TTA(hflip=True)}
BACKENDS = (
    "eager_fp32",
    "eager_channels_last",
    "eager_bf16",
    "onnxruntime_fp32",
    "onnxruntime_int8",
)
#: The CPU target: the best backend's batch-1 latency at 384 vs eager float32's.
BACKEND_TARGET_SPEEDUP = 1.5


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    p = bench.make_parser(__doc__, "inference", budget=True, models=True)
    p.add_argument(
        "--sizes", type=bench.size_list, help="S or HxW, comma-separated (128; --full 384,480x640)"
    )
    p.add_argument(
        "--batches", type=bench.int_list, help="batch sizes, comma-separated (1,2; --full 1,8)"
    )
    p.add_argument("--modes", default="plain,tta", help="comma-separated subset of plain,tta")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast on CUDA, fp32 on the CPU",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last models and inputs (default: on CUDA only)",
    )
    p.add_argument(
        "--backends",
        default=None,
        help="compare inference backends instead: 'all' or a comma-separated subset of "
        + ",".join(BACKENDS),
    )
    p.add_argument("--onnx-model", type=Path, help="ONNX export to time (default: export now)")
    p.add_argument("--int8-model", type=Path, help="int8 ONNX export to time as well")
    args, device = bench.begin(p, argv)
    budget = bench.Budget(args.budget_s)
    if args.backends is not None:
        return run_backends(args, device)
    sizes: list[tuple[int, int]] = bench.pick(args, "sizes", [(128, 128)], [(384, 384), (480, 640)])
    batches: list[int] = bench.pick(args, "batches", [1, 2], [1, 8])
    warmup, repeats = bench.timing(args, (1, 3), (3, 10))
    factories = bench.model_factories(tiny=args.tiny_models)
    names = (args.models or "v3,deeplabv3").split(",")
    modes = args.modes.split(",")
    for flag, chosen, known in (("models", names, factories), ("modes", modes, MODES)):
        if unknown := [n for n in chosen if n not in known]:
            raise SystemExit(f"--{flag}: unknown {unknown}; expected a subset of {list(known)}")
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    channels_last = bench.pick(args, "channels_last", device.type == "cuda", device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    models: dict[str, nn.Module] = {}
    for name in names:
        model = factories[name]().to(device).eval()
        models[name] = model.to(memory_format=torch.channels_last) if channels_last else model
    amp: AmpMode | None = "bf16" if precision == "bf16" else None
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    info = bench.machine_info(device)
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
        "weights_mib": {
            n: sum(p.numel() * p.element_size() for p in m.parameters()) / 2**20
            for n, m in models.items()
        },
        "peak_memory_note": "CUDA max_memory_allocated during a model's calls; both "
        "models' weights stay resident, so it includes the other model's weights_mib",
    }

    def save(complete: bool) -> None:
        bench.write_report(
            args.out,
            "suimseg inference",
            info,
            settings,
            results,
            v3_vs_deeplabv3=_ratios(results),
            skipped=skipped,
            complete=complete,
        )

    table = bench.Progress(
        ["model", "size", "batch", "mode", "ms/batch", "ms/img", "img/s", "peak MiB"]
    )
    for mode in modes:
        predictors = {
            n: Predictor(m, device=device, image_size=None, tta=MODES[mode], amp=amp)
            for n, m in models.items()
        }
        for h, w in sizes:
            for b in batches:
                where = {"size": [h, w], "batch": b, "mode": mode}
                if budget.exceeded():
                    skipped.append({**where, "reason": "time budget"})
                    continue
                x = bench.as_input(b, (h, w), device, channels_last)
                calls = {n: (lambda p=p, x=x: p.probs_normalized(x)) for n, p in predictors.items()}
                try:
                    with contextlib.ExitStack() as stack:
                        for pr in predictors.values():
                            stack.enter_context(pr.eval_context())
                        timings = bench.time_interleaved(
                            calls, device=device, warmup=warmup, repeats=repeats
                        )
                except bench.OOM_ERRORS:
                    bench.free_memory(device)
                    print(f"{h}x{w} batch {b} {mode}: out of memory")
                    skipped.append({**where, "reason": "out of memory"})
                    continue
                for name, t in timings.items():
                    med = t["median_s"]
                    row = {
                        "model": name,
                        **where,
                        "forward_passes": MODES[mode].num_views,
                        "latency_ms_median": 1e3 * med,
                        "latency_ms_min": 1e3 * t["min_s"],
                        "ms_per_image": 1e3 * med / b,
                        "images_per_s": b / med,
                        "peak_memory_mib": t["peak_memory_mib"],
                        "runs_s": t["runs_s"],
                    }
                    results.append(row)
                    table.row(
                        name,
                        f"{h}x{w}",
                        b,
                        mode,
                        *(row[k] for k in ("latency_ms_median", "ms_per_image", "images_per_s")),
                        row["peak_memory_mib"],
                    )
                del x, calls
                bench.free_memory(device)
                save(complete=False)

    if ratios := _ratios(results):
        print("\nV3 latency / DeepLabV3-ResNet50's (ratio of medians; median of paired calls)")
        bench.print_table(
            ["size", "batch", "mode", "v3 ms", "deeplabv3 ms", "ratio", "paired ratio"],
            [
                [f"{r['size'][0]}x{r['size'][1]}", r["batch"], r["mode"], r["v3_ms"], *rest]
                for r in ratios
                for rest in [[r["deeplabv3_ms"], r["ratio"], r["paired_ratio_median"]]]
            ],
        )
    for item in skipped:
        print(f"skipped: {item}")
    save(complete=True)
    print(f"wrote {args.out}")
    return 0


def run_backends(args: argparse.Namespace, device: torch.device) -> int:
    """Time every backend of one model side by side (interleaved rounds); see the docstring."""
    chosen = list(BACKENDS) if args.backends == "all" else args.backends.split(",")
    if unknown := [b for b in chosen if b not in BACKENDS]:
        raise SystemExit(f"--backends: unknown {unknown}; expected 'all' or a subset of {BACKENDS}")
    if device.type != "cpu":
        raise SystemExit("--backends: a CPU comparison; run it with --device cpu")
    name = bench.chosen_model(args)
    sizes: list[tuple[int, int]] = bench.pick(args, "sizes", [(128, 128)], [(384, 384)])
    batches: list[int] = bench.pick(args, "batches", [1], [1])
    warmup, repeats = bench.timing(args, (1, 3), (3, 10))
    out = args.out
    if out == Path("benchmarks/results/inference.json"):
        out = Path("benchmarks/results/inference_backends.json")
    info = bench.machine_info(device)
    cpu_name = info["device_name"]
    torch.manual_seed(0)
    model = bench.model_factories(tiny=args.tiny_models)[name]().eval()
    not_measured: list[dict[str, Any]] = []
    if "eager_bf16" in chosen and not native_bf16_cpu():
        chosen.remove("eager_bf16")
        not_measured.append(
            {"backend": "eager_bf16", "reason": f"not measured: no native bf16 on {cpu_name}"}
        )
    if "onnxruntime_int8" in chosen and args.int8_model is None:
        chosen.remove("onnxruntime_int8")
        not_measured.append(
            {"backend": "onnxruntime_int8", "reason": "not measured: no --int8-model given"}
        )
    tmp = tempfile.TemporaryDirectory(prefix="suimseg-bench-")
    models: dict[str, nn.Module] = {}
    amps: dict[str, AmpMode | None] = {}
    for backend in chosen:
        amps[backend] = "bf16" if backend == "eager_bf16" else None
        if backend == "eager_channels_last":
            import copy

            models[backend] = copy.deepcopy(model).to(memory_format=torch.channels_last)
        elif backend.startswith("eager"):
            models[backend] = model
        elif backend == "onnxruntime_fp32":
            path = args.onnx_model
            if path is None:
                print("exporting the model to ONNX (once) ...", flush=True)
                path = export_onnx(model, Path(tmp.name) / f"{name}.onnx")
            models[backend] = OnnxRuntimeModel(path)
        else:
            models[backend] = OnnxRuntimeModel(args.int8_model)
    settings = {
        "model": name,
        "tiny_models": bool(args.tiny_models),
        "backends": chosen,
        "sizes": [list(s) for s in sizes],
        "batches": batches,
        "warmup": warmup,
        "repeats": repeats,
        "onnx_model": None if args.onnx_model is None else str(args.onnx_model),
        "int8_model": None if args.int8_model is None else str(args.int8_model),
        "native_bf16": native_bf16_cpu(),
        "measured": "Predictor.probs_normalized (forward + softmax), plain, eval mode under "
        "inference_mode, on a pre-normalised random batch; onnxruntime with as many "
        "intra-op threads as torch",
        "statistic": "median latency over timed calls after warm-up; backends alternate "
        "call by call (interleaved rounds) so load changes hit all alike",
    }
    results: list[dict[str, Any]] = []
    table = bench.Progress(
        ["backend", "size", "batch", "ms/batch", "img/s", "vs fp32"], widths=[19]
    )
    for h, w in sizes:
        for b in batches:
            x = bench.as_input(b, (h, w), device, False)
            xcl = x.contiguous(memory_format=torch.channels_last)
            predictors = {
                k: Predictor(m, device=device, image_size=None, amp=amps[k])
                for k, m in models.items()
            }
            calls: dict[str, Callable[[], Any]] = {
                k: (lambda p=p, x=(xcl if k == "eager_channels_last" else x): p.probs_normalized(x))
                for k, p in predictors.items()
            }
            with contextlib.ExitStack() as stack:
                for pr in predictors.values():
                    stack.enter_context(pr.eval_context())
                timings = bench.time_interleaved(
                    calls, device=device, warmup=warmup, repeats=repeats
                )
            base = timings.get("eager_fp32", {}).get("median_s")
            for k, t in timings.items():
                med = t["median_s"]
                row = {
                    "backend": k,
                    "size": [h, w],
                    "batch": b,
                    "latency_ms_median": 1e3 * med,
                    "latency_ms_min": 1e3 * t["min_s"],
                    "images_per_s": b / med,
                    "speedup_vs_eager_fp32": None if base is None else base / med,
                    "runs_s": t["runs_s"],
                }
                results.append(row)
                table.row(k, f"{h}x{w}", b, row["latency_ms_median"], row["images_per_s"],
                          row["speedup_vs_eager_fp32"])  # fmt: skip
    tmp.cleanup()
    for item in not_measured:
        print(f"{item['backend']}: {item['reason']}")
    verdict = _backend_verdict(results)
    if verdict is not None:
        print(verdict["text"])
    bench.write_report(
        out,
        "suimseg inference backends",
        info,
        settings,
        results,
        not_measured=not_measured,
        cpu_model=cpu_name,
        target=verdict,
        complete=True,
    )
    print(f"wrote {out}")
    return 0


def _backend_verdict(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The CPU target on the batch-1 rows at 384x384 (``None`` if that was not measured)."""
    rows = [r for r in results if r["batch"] == 1 and r["size"] == [384, 384]]
    rows = [r for r in rows if r["speedup_vs_eager_fp32"] is not None]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["speedup_vs_eager_fp32"])
    met = best["speedup_vs_eager_fp32"] >= BACKEND_TARGET_SPEEDUP
    return {
        "best_backend": best["backend"],
        "speedup": best["speedup_vs_eager_fp32"],
        "target": BACKEND_TARGET_SPEEDUP,
        "met": met,
        "text": f"best backend {best['backend']}: {best['speedup_vs_eager_fp32']:.2f}x eager "
        f"fp32 batch-1 latency at 384 (target >= {BACKEND_TARGET_SPEEDUP}x): "
        + ("met" if met else "NOT met"),
    }


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
                    # Call i of V3 and call i of DeepLabV3 ran back to back.
                    "paired_ratio_median": statistics.median(
                        a / b for a, b in zip(r["runs_s"], base["runs_s"], strict=True)
                    ),
                }
            )
    return out


if __name__ == "__main__":
    sys.exit(main())
