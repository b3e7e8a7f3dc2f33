"""Shared helpers of the benchmark scripts: machine info, timing, memory, JSON, tables.

Conventions (the same as ``benchmarks/data.py``): every script prints a plain-text table
and writes one JSON report ``{"benchmark", "machine", "settings", "results"}`` atomically
under ``benchmarks/results/``. Timings are medians of several repetitions taken after
warm-up; on CUDA every repetition ends with ``torch.cuda.synchronize`` so the clock
measures finished GPU work, not queued kernels.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
import torchvision
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from suimseg._atomic import atomic_write_text
from suimseg.engine import resolve_device  # re-exported: the scripts share the library's rule

__all__ = [
    "OOM_ERRORS",
    "Budget",
    "as_input",
    "free_memory",
    "largest_batch",
    "machine_info",
    "peak_memory_mb",
    "print_table",
    "reset_peak_memory",
    "resolve_device",
    "set_threads",
    "synchronize",
    "time_repeats",
    "tiny_factories",
    "train_step_flops",
    "write_json",
]

#: Exceptions that mean "out of memory" (CUDA OOM, and CPU allocation failures).
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, MemoryError)


class Budget:
    """A soft wall-clock budget: the scripts check it between settings, never mid-setting.

    ``seconds=None`` (or ``<= 0``) means no budget. A setting that has started runs to
    its end, so a script can overrun by one setting; the caller (``gpu_suite.sh``) adds a
    hard ``timeout`` on top, and the scripts write their JSON after every setting.

    Example:
        >>> b = Budget(None)
        >>> b.allows(1e9), b.exceeded()
        (True, False)
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


def tiny_factories() -> dict[str, Callable[[], nn.Module]]:
    """Small stand-ins for ``v3`` and ``deeplabv3`` (``--tiny-models``): plumbing checks only.

    Both are :class:`~suimseg.models.UNetResAttnV3` with a ResNet-18 encoder and a narrow
    decoder (``deeplabv3``'s twice as wide), so a CPU runs a step in milliseconds. Their
    figures say nothing about the real models; reports mark them (``tiny_models``).
    """
    from suimseg.models import UNetResAttnV3

    def tiny(width: int) -> nn.Module:
        return UNetResAttnV3(
            encoder="resnet18",
            decoder_channels=(width, width, 8, 8),
            bridge_channels=width,
            encoder_weights=None,
        )

    return {"v3": lambda: tiny(8), "deeplabv3": lambda: tiny(16)}


def set_threads(threads: int) -> None:
    """``threads > 0`` sets torch's intra-op threads; ``0`` keeps torch's default."""
    if threads > 0:
        torch.set_num_threads(threads)


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
    for _ in range(warmup):
        fn()
    synchronize(device)
    runs: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        runs.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(runs), "min_s": min(runs), "runs_s": runs}


def largest_batch(
    fits: Callable[[int], bool], *, start: int, limit: int = 1024, tolerance: float = 0.0
) -> int | None:
    """Largest batch size for which ``fits(batch)`` is true: double until it fails, bisect.

    ``fits`` must catch out-of-memory itself and return ``False`` (see :data:`OOM_ERRORS`)
    and free what it allocated. Returns ``None`` if not even ``start`` fits; ``limit`` caps
    the search (a model that fits ``limit`` is reported as ``limit``). ``tolerance > 0``
    stops bisecting once the gap between the largest batch that fits and the smallest
    that does not is at most ``tolerance`` x the former (fewer tries on a slow device; the
    answer is then a lower bound within that fraction).
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


def train_step_flops(model_fn: Callable[[], nn.Module], size: tuple[int, int]) -> dict[str, float]:
    """Forward and forward+backward FLOPs per image (``torch.utils.flop_counter``).

    Counted on the ``meta`` device (no memory, no compute) with a batch of 2 in train mode,
    then divided by 2; falls back to the CPU with a batch of 1 in eval mode for models that
    cannot be built on ``meta``. A multiply-add counts as 2 FLOPs.

    Returns:
        ``{"forward_gflops": ..., "train_gflops": ...}`` per image.
    """
    h, w = size
    try:
        with torch.device("meta"):
            model = model_fn()
            x = torch.randn(2, 3, h, w)
        n = 2
        model.train()
    except Exception:  # pragma: no cover - a model that meta cannot build
        model = model_fn()
        x = torch.randn(1, 3, h, w)
        n = 1
        model.eval()
    fwd = FlopCounterMode(display=False)
    with fwd:
        out = model(x)
        if isinstance(out, dict):
            out = out["out"]
    train = FlopCounterMode(display=False)
    if n == 2:
        with train:
            out = model(x)
            if isinstance(out, dict):
                out = out["out"]
            out.float().sum().backward()
        train_flops = train.get_total_flops() / n
    else:  # pragma: no cover
        train_flops = 3 * fwd.get_total_flops()
    return {"forward_gflops": fwd.get_total_flops() / n / 1e9, "train_gflops": train_flops / 1e9}


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
    }
    try:
        info["load_average_1_5_15"] = list(os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        info["load_average_1_5_15"] = None
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
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover - not Linux
        pass
    return f"CPU: {name} ({os.cpu_count()} logical cores)"


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` as indented JSON, atomically (the library's atomic writer)."""
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under headers, columns right-aligned (floats with 3 significant decimals)."""

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)), flush=True)


def as_input(
    batch: int, size: tuple[int, int], device: torch.device, channels_last: bool
) -> Tensor:
    """A random normalised-image batch ``(batch, 3, H, W)`` on ``device``."""
    x = torch.randn(batch, 3, *size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
