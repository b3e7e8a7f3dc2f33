"""The benchmark scripts' shared harness: flags, timing, machine probe, tables, JSON.

Every script is ``parser = make_parser(...)``; ``args, device = begin(parser, argv)``
(:func:`parse`, then :func:`start`); measure; :func:`write_report`. It prints plain-text tables and
writes one JSON report ``{"benchmark", "machine", "settings", "results", ...}``
atomically (by default under ``benchmarks/results/``, ignored by git). Timings are
medians of several repetitions taken after warm-up; on CUDA every repetition ends with
``torch.cuda.synchronize`` so the clock measures finished GPU work, not queued kernels.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
import torchvision
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from suimseg._atomic import atomic_write_text
from suimseg.classes import NUM_CLASSES
from suimseg.engine import resolve_device  # the library's rule for "auto"

#: Exceptions that mean "out of memory" (CUDA OOM, and CPU allocation failures).
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, MemoryError)


# --------------------------------------------------------------------------- flags


def make_parser(
    doc: str | None,
    name: str,
    *,
    device: bool = True,
    threads: int = 0,
    timing: bool = True,
    budget: bool = False,
    models: bool = False,
) -> argparse.ArgumentParser:
    """A parser with the flags every script shares; the script adds its own.

    Shared flags: ``--full`` (the issue's settings; default a quick run on any CPU),
    ``--device`` (if ``device``), ``--threads`` (default ``threads``), ``--warmup`` and
    ``--repeats`` (if ``timing``; ``None`` means the script's quick or full default),
    ``--budget-s`` (if ``budget``), ``--models`` and ``--tiny-models`` (if ``models``; see
    :func:`model_factories`) and ``--out`` (``benchmarks/results/<name>.json``).
    """
    p = argparse.ArgumentParser(
        description=(doc or "").splitlines()[0],
        epilog="Settings of the quick and --full runs: see the module docstring.",
    )
    p.add_argument("--full", action="store_true", help="the issue's settings (slow; GPU)")
    if device:
        p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument(
        "--threads",
        type=int,
        default=threads,
        help=f"torch intra-op threads; 0 keeps torch's default (default {threads})",
    )
    if timing:
        p.add_argument("--warmup", type=int, default=None, help="untimed repetitions per setting")
        p.add_argument("--repeats", type=int, default=None, help="timed repetitions per setting")
    if budget:
        p.add_argument(
            "--budget-s",
            type=float,
            default=None,
            help="soft time budget: what has not started when it runs out is skipped "
            "(and listed in the JSON); default: none",
        )
    if models:
        p.add_argument("--models", default=None, help="comma-separated, e.g. v3,deeplabv3")
        p.add_argument(
            "--tiny-models",
            action="store_true",
            help="small stand-in models: plumbing checks only, the figures mean nothing",
        )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(f"benchmarks/results/{name}.json"),
        help="JSON output (default %(default)s)",
    )
    return p


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` and reject negative counts (``--repeats``, sizes, ...: >= 1)."""
    args = parser.parse_args(argv)
    for key, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        least = 0 if key in ("warmup", "threads", "workers", "gen_workers") else 1
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and v < least:
                flag = "--" + key.replace("_", "-")
                parser.error(f"{flag}: expected ints >= {least}, got {value}")
    return args


def start(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and resolve ``--device`` (the CPU for scripts without one)."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return resolve_device(getattr(args, "device", "cpu"))


def begin(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, torch.device]:
    """Every script's first step: :func:`parse` ``argv``, then :func:`start` with it."""
    args = parse(parser, argv)
    return args, start(args)


def pick(args: argparse.Namespace, name: str, quick: Any, full: Any) -> Any:
    """``args.<name>`` if given, else the quick or the ``--full`` default."""
    value = getattr(args, name)
    return value if value is not None else (full if args.full else quick)


def timing(
    args: argparse.Namespace, quick: tuple[int, int], full: tuple[int, int]
) -> tuple[int, int]:
    """``(warmup, repeats)``: ``--warmup`` and ``--repeats`` if given, else the quick or
    the ``--full`` pair (:func:`pick` of each)."""
    return pick(args, "warmup", quick[0], full[0]), pick(args, "repeats", quick[1], full[1])


def int_list(text: str) -> list[int]:
    """``"0,2"`` -> ``[0, 2]`` (an ``argparse`` type)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def size_list(text: str) -> list[tuple[int, int]]:
    """``"384,480x640"`` -> ``[(384, 384), (480, 640)]``, in the order written."""
    out = []
    for part in text.split(","):
        try:
            dims = [int(v) for v in part.lower().split("x")]
        except ValueError:
            dims = []
        dims = dims * 2 if len(dims) == 1 else dims
        if len(dims) != 2 or min(dims) < 1:
            msg = f"expected S or AxB[,...] (e.g. 384,480x640), got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        out.append((dims[0], dims[1]))
    return out


# --------------------------------------------------------------------------- timing


class Budget:
    """A soft wall-clock budget, checked between settings, never mid-setting.

    ``seconds=None`` (or ``<= 0``) means no budget. A setting that has started runs to its
    end, so a script can overrun by one setting; ``gpu_suite.sh`` adds a hard ``timeout``,
    and the scripts write their JSON after every setting.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds if seconds is not None and seconds > 0 else None
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the budget started."""
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        """Seconds left (``inf`` without a budget; negative once overrun)."""
        return float("inf") if self.seconds is None else self.seconds - self.elapsed()

    def allows(self, seconds: float) -> bool:
        """Whether at least ``seconds`` are left."""
        return self.remaining() >= seconds

    def exceeded(self) -> bool:
        """Whether the budget is spent."""
        return self.remaining() <= 0


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Reset the CUDA peak-memory counter (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak CUDA memory allocated by tensors since the last reset, in MiB; ``None`` on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def free_memory(device: torch.device) -> None:
    """Collect garbage and return cached CUDA blocks (after an OOM or between models)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_repeats(
    fn: Callable[[], Any], *, device: torch.device, warmup: int, repeats: int
) -> dict[str, Any]:
    """Time ``fn`` after ``warmup`` untimed calls; one synchronised timing per repetition.

    Returns:
        ``{"median_s", "min_s", "runs_s"}`` with seconds per call.
    """
    return time_interleaved({"": fn}, device=device, warmup=warmup, repeats=repeats)[""]


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]], *, device: torch.device, warmup: int, repeats: int
) -> dict[str, dict[str, Any]]:
    """Time several functions in interleaved rounds (one call of each per round).

    Interleaving spreads changes in machine load (other processes on a shared CPU) evenly
    over the functions compared. Every call is synchronised; the CUDA peak memory is
    reset before each timed call.

    Returns:
        Per name: ``median_s``, ``min_s``, ``runs_s`` (timed calls), ``warmup_s``
        (untimed calls) and ``peak_memory_mib`` (the largest over its timed calls; ``None``
        on the CPU).
    """
    out: dict[str, dict[str, Any]] = {
        n: {"runs_s": [], "warmup_s": [], "peak_memory_mib": None} for n in fns
    }

    def call(name: str, key: str) -> None:
        reset_peak_memory(device)
        t0 = time.perf_counter()
        fns[name]()
        synchronize(device)
        out[name][key].append(time.perf_counter() - t0)
        peak, old = peak_memory_mb(device), out[name]["peak_memory_mib"]
        out[name]["peak_memory_mib"] = peak if old is None or peak is None else max(old, peak)

    for _ in range(warmup):
        for name in fns:
            call(name, "warmup_s")
    for name in fns:
        out[name]["peak_memory_mib"] = None
    for _ in range(repeats):
        for name in fns:
            call(name, "runs_s")
    for r in out.values():
        r["median_s"] = statistics.median(r["runs_s"])
        r["min_s"] = min(r["runs_s"])
    return out


def largest_batch(
    fits: Callable[[int], bool], *, start: int, limit: int = 1024, tolerance: float = 0.0
) -> int | None:
    """Largest batch size for which ``fits(batch)`` is true: double until it fails, bisect.

    ``fits`` must catch out-of-memory itself and return ``False``. Returns ``None`` if not
    even ``start`` fits; ``limit`` caps the search. ``tolerance > 0`` stops bisecting once
    the gap is at most ``tolerance`` x the largest fitting batch (a lower bound, fewer
    tries on a slow device).
    """
    if not fits(start):
        return None
    good, bad = start, None
    while bad is None:
        if good >= limit:
            return good
        nxt = min(good * 2, limit)
        if fits(nxt):
            good = nxt
        else:
            bad = nxt
    while bad - good > max(1, int(tolerance * good)):
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


# --------------------------------------------------------------------------- models


def smp_available() -> bool:
    """Whether segmentation_models.pytorch can be imported (``pip install 'suimseg[bench]'``)."""
    try:
        import segmentation_models_pytorch  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


def model_factories(tiny: bool = False) -> dict[str, Callable[[], nn.Module]]:
    """Name -> constructor (random weights, 8 classes) of every model this machine can build.

    ``v3`` (the design's V3), ``deeplabv3`` (DeepLabV3-ResNet50) and, when importable,
    ``smp_unet`` (smp ``Unet("resnet50", decoder_attention_type="scse")``). ``tiny=True``
    (``--tiny-models``) gives small stand-ins for plumbing checks only: V3 on ResNet-18
    with a narrow decoder for ``v3`` and one twice as wide for ``deeplabv3``; reports mark
    them (``tiny_models``).
    """
    from suimseg.models import UNetResAttnV3, deeplabv3_resnet50

    def tiny_v3(width: int) -> nn.Module:
        return UNetResAttnV3(
            encoder="resnet18",
            decoder_channels=(width, width, 8, 8),
            bridge_channels=width,
            encoder_weights=None,
        )

    factories: dict[str, Callable[[], nn.Module]] = (
        {"v3": lambda: tiny_v3(8), "deeplabv3": lambda: tiny_v3(16)}
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


def chosen_model(args: argparse.Namespace, default: str = "v3") -> str:
    """The first name of ``--models`` (``default`` without the flag), checked against
    :func:`model_factories` (with ``--tiny-models``); an unknown one exits with a message."""
    factories = model_factories(tiny=args.tiny_models)
    name = (args.models or default).split(",")[0]
    if name not in factories:
        raise SystemExit(f"--models: unknown {name!r}; expected one of {list(factories)}")
    return name


def train_step_flops(model_fn: Callable[[], nn.Module], size: tuple[int, int]) -> dict[str, float]:
    """Forward and forward+backward FLOPs per image (``torch.utils.flop_counter``).

    Counted on the ``meta`` device (no memory, no compute) with a batch of 2 in train
    mode, divided by 2 (a model that cannot be built there: one CPU image in eval mode,
    training counted as 3x the forward). A multiply-add counts as 2 FLOPs.

    Returns:
        ``{"forward_gflops": ..., "train_gflops": ...}`` per image.
    """
    try:
        with torch.device("meta"):
            model, x = model_fn().train(), torch.randn(2, 3, *size)
    except Exception:  # a model meta cannot build: forward on the CPU, training = 3x that
        model, x = model_fn().eval(), torch.randn(1, 3, *size)
    meta = x.device.type == "meta"
    flops = []
    for backward in (False, True) if meta else (False,):
        counter = FlopCounterMode(display=False)
        with counter:
            out = model(x)
            out = out["out"] if isinstance(out, dict) else out
            if backward:
                out.float().sum().backward()
        flops.append(counter.get_total_flops() / x.shape[0] / 1e9)
    train = flops[1] if meta else 3 * flops[0]
    return {"forward_gflops": flops[0], "train_gflops": train}


def as_input(
    batch: int, size: tuple[int, int], device: torch.device, channels_last: bool
) -> Tensor:
    """A random normalised-image batch ``(batch, 3, H, W)`` on ``device``."""
    x = torch.randn(batch, 3, *size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def describe(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``, at most 300 characters."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# --------------------------------------------------------------------------- output


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where the numbers came from: host, library versions, device name, CPU load."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "cuda": torch.cuda.is_available(),
        "device": str(device),
        "device_name": _device_name(device),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["cuda_version"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
        info["gpu_memory_gib"] = props.total_memory / 2**30
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            models = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        name = models[0] if models else name
    except OSError:  # not Linux
        pass
    return f"CPU: {name} ({os.cpu_count()} logical cores)"


def report_dict(
    benchmark: str,
    machine: dict[str, Any],
    settings: dict[str, Any],
    results: Any,
    **extra: Any,
) -> dict[str, Any]:
    """The report every script writes: ``{"benchmark", "machine", "settings", "results"}``
    (the keys ``report.py`` reads), then script-specific ones (``skipped``, ``complete``)."""
    return {
        "benchmark": benchmark,
        "machine": machine,
        "settings": settings,
        "results": results,
        **extra,
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` as indented JSON, atomically (the library's atomic writer)."""
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def write_report(path: Path, *args: Any, **extra: Any) -> None:
    r""":func:`write_json` of :func:`report_dict`\ ``(*args, **extra)``."""
    write_json(path, report_dict(*args, **extra))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under headers, columns right-aligned (floats with 3 significant digits)."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)), flush=True)


class Progress:
    """A table printed row by row as settings finish.

    Columns are at least ``width`` characters wide, the first ones ``widths``.
    """

    def __init__(self, headers: Sequence[str], width: int = 9, widths: Sequence[int] = ()) -> None:
        least = [*widths, *[width] * (len(headers) - len(widths))]
        self.widths = [max(len(h), w) for h, w in zip(headers, least, strict=True)]
        self._print(headers)

    def row(self, *values: Any) -> None:
        """Print one row now."""
        self._print([_fmt(v) for v in values])

    def _print(self, cells: Sequence[str]) -> None:
        print("  ".join(c.rjust(w) for c, w in zip(cells, self.widths, strict=True)), flush=True)
