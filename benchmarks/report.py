"""Turn the benchmark JSON reports into markdown tables for ``docs/benchmarks.md``.

Reads the reports written by ``train_step.py``, ``epoch.py``, ``inference.py``,
``data.py`` (and ``gpu_suite.sh``'s ``suite.json``; any other report with a list of flat
rows gets a generic table) from files or folders, and prints:

- the machine of every report (device name, torch, torchvision, CUDA, cuDNN, CPUs);
- the issue's targets, each marked **met** / **not met** with the measured figure, or
  *not measured*. A verdict computed from a run whose settings are not the target's
  (a CPU run of a GPU target, another image size or batch) is marked *indicative only*,
  with the reason;
- one table per report, ready to paste.

Only the standard library is used, so it runs anywhere in a fraction of a second.

Usage::

    python benchmarks/report.py                         # benchmarks/results/*.json
    python benchmarks/report.py /path/to/out            # a folder (e.g. the GPU suite's)
    python benchmarks/report.py a.json b.json --out report.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Report", "Target", "evaluate_targets", "load_reports", "main", "render"]

#: Issue 9's targets.
SPEEDUP_TARGET = 1.5  # V3 training images/s >= 1.5x DeepLabV3-ResNet50's (GPU, 384x384)
MEMORY_TARGET = 0.5  # bf16 + channels_last peak memory at batch 6 <= 0.5x fp32's (GPU)
EPOCHS_TARGET_S = 600.0  # the 50-epoch recipe on SUIM-sized data <= 10 min (one H100)
LATENCY_TARGET = 0.6  # V3 batch-1 CPU latency at 384x384 <= 0.6x DeepLabV3's
DATA_TARGET = 2.5  # data pipeline on 1920x1080 JPEGs >= 2.5x the naive one, no cache
CACHE_TARGET = 10.0  # ... >= 10x with the in-memory cache after the first epoch

MODEL_NAMES = {
    "v3": "V3",
    "deeplabv3": "DeepLabV3-ResNet50",
    "smp_unet": "smp Unet(resnet50, scse)",
}

KNOWN = {
    "suimseg training step": "train_step",
    "suimseg training epoch": "epoch",
    "suimseg inference": "inference",
    "suimseg data pipeline": "data",
    "suimseg augmentation": "augment",
    "suimseg gpu suite": "suite",
}


@dataclass(frozen=True)
class Report:
    """One JSON report and the file it came from."""

    path: Path
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        """The script that wrote it (``train_step``, ``augment``, ...), ``suite`` or ``other``."""
        return KNOWN.get(str(self.data.get("benchmark", "")), "other")

    @property
    def machine(self) -> dict[str, Any]:
        m = self.data.get("machine")
        return m if isinstance(m, dict) else {}

    @property
    def on_cuda(self) -> bool:
        return str(self.machine.get("device", "")).startswith("cuda")

    @property
    def settings(self) -> dict[str, Any]:
        s = self.data.get("settings")
        return s if isinstance(s, dict) else {}


@dataclass(frozen=True)
class Target:
    """One target checked against one report.

    ``met`` is ``None`` when the figure was not measured; ``applicable`` is false when the
    report's settings differ from the target's (then the verdict is indicative only,
    and ``why`` says how).
    """

    name: str
    threshold: str
    measured: str
    met: bool | None
    applicable: bool
    why: str
    source: str

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured" + (f" ({self.why})" if self.why else "")
        word = "**met**" if self.met else "**not met**"
        if self.applicable:
            return word
        return f"{word.replace('**', '')} (indicative only: {self.why})"


def load_reports(paths: Sequence[Path]) -> list[Report]:
    """Read every ``*.json`` report in ``paths`` (files, or folders searched non-recursively).

    Raises:
        FileNotFoundError: A path does not exist.
        ValueError: A file is not a JSON object with a ``"benchmark"`` key.
    """
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(p.glob("*.json")))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(
                f"paths: {p} does not exist; pass benchmark JSON files or folders holding them"
            )
    reports = []
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{f}: not valid JSON ({exc}); was the run cut off?") from None
        if not isinstance(data, dict) or "benchmark" not in data:
            raise ValueError(
                f"{f}: expected a benchmark report (a JSON object with a 'benchmark' key), "
                f"got {type(data).__name__}; pass only the scripts' JSON files"
            )
        reports.append(Report(f, data))
    return reports


# --------------------------------------------------------------------------- formatting


def fmt(v: Any, digits: int = 3) -> str:
    """A compact number: ``None`` -> ``-``; 3 significant digits below 100, else integer-ish."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:  # NaN
            return "nan"
        if abs(v) >= 1000:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.{digits}g}"
    return str(v).replace("|", "\\|")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A markdown table; ``align`` has one ``l``/``r`` per column (default: first left)."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(sep) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in r) + " |")
    return "\n".join(lines)


def _model(name: str) -> str:
    return MODEL_NAMES.get(name, name)


def _size(v: Any) -> str:
    if isinstance(v, list) and len(v) == 2:
        return f"{v[0]}x{v[1]}"
    return fmt(v)


def machine_line(r: Report) -> str:
    """One line naming the machine of a report."""
    m = r.machine
    parts = [str(m.get("device_name") or m.get("processor") or "unknown device")]
    if m.get("gpu_memory_gib"):
        parts.append(f"{m['gpu_memory_gib']:.0f} GiB")
    parts.append(f"torch {m.get('torch', '?')}")
    if m.get("torchvision"):
        parts.append(f"torchvision {m['torchvision']}")
    if m.get("cuda_version"):
        parts.append(f"CUDA {m['cuda_version']}")
    if m.get("cudnn"):
        parts.append(f"cuDNN {m['cudnn']}")
    if m.get("python"):
        parts.append(f"Python {m['python']}")
    if m.get("cpu_count"):
        parts.append(f"{m['cpu_count']} CPUs")
    if m.get("torch_threads"):
        parts.append(f"torch threads {m['torch_threads']}")
    load = m.get("load_average_1_5_15")
    if isinstance(load, list) and load:
        parts.append(f"load average {load[0]:.1f}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- targets


def _ok_rows(r: Report) -> list[dict[str, Any]]:
    rows = r.data.get("results")
    return [x for x in rows if isinstance(x, dict)] if isinstance(rows, list) else []


def _gpu_context(r: Report, **want: Any) -> tuple[bool, str]:
    """Whether ``r`` ran on CUDA with the settings in ``want`` (name -> (actual, expected))."""
    why = [] if r.on_cuda else ["not a GPU run"]
    if r.settings.get("tiny_models"):
        why.append("tiny stand-in models")
    for label, (actual, expected) in want.items():
        if actual != expected:
            why.append(f"{label} {_size(actual)}, target {_size(expected)}")
    return not why, "; ".join(why)


def _train_step_targets(r: Report) -> list[Target]:
    out: list[Target] = []
    rows = [x for x in _ok_rows(r) if not x.get("largest_batch")]
    size = r.settings.get("image_size")
    batch = r.settings.get("batch_size")
    src = r.path.name
    variants = list(dict.fromkeys(str(x.get("variant")) for x in rows))
    by = {(x.get("model"), x.get("variant")): x for x in rows}
    for v in variants:
        v3, dl = by.get(("v3", v)), by.get(("deeplabv3", v))
        if v3 is None or dl is None:
            continue
        a, b = v3.get("images_per_s"), dl.get("images_per_s")
        applicable, why = _gpu_context(r, size=(size, [384, 384]))
        name = (
            f"V3 training images/s >= {SPEEDUP_TARGET}x DeepLabV3-ResNet50's ({v}, batch {batch})"
        )
        if a is None or b is None:
            err = v3.get("error") or dl.get("error") or "no timing"
            out.append(Target(name, f">= {SPEEDUP_TARGET}x", "-", None, applicable, err, src))
            continue
        ratio = a / b
        out.append(
            Target(
                name,
                f">= {SPEEDUP_TARGET}x",
                f"{ratio:.2f}x ({a:.1f} vs {b:.1f} img/s at {_size(size)})",
                ratio >= SPEEDUP_TARGET,
                applicable,
                why,
                src,
            )
        )
    for model in dict.fromkeys(str(x.get("model")) for x in rows):
        cl, f32 = by.get((model, "bf16_cl")), by.get((model, "fp32"))
        if cl is None or f32 is None:
            continue
        name = (
            f"{_model(model)} bf16 + channels_last peak memory <= {MEMORY_TARGET}x fp32's "
            f"(batch {batch})"
        )
        applicable, why = _gpu_context(r, batch=(batch, 6), size=(size, [384, 384]))
        m_cl, m_32 = cl.get("peak_memory_mib"), f32.get("peak_memory_mib")
        if m_cl is None or m_32 is None:
            reason = "no CUDA peak memory on the CPU" if not r.on_cuda else "no memory figure"
            out.append(Target(name, f"<= {MEMORY_TARGET}x", "-", None, applicable, reason, src))
            continue
        ratio = m_cl / m_32
        out.append(
            Target(
                name,
                f"<= {MEMORY_TARGET}x",
                f"{ratio:.2f}x ({m_cl:.0f} vs {m_32:.0f} MiB)",
                ratio <= MEMORY_TARGET,
                applicable,
                why,
                src,
            )
        )
    return out


def _epoch_targets(r: Report) -> list[Target]:
    res = r.data.get("results")
    if not isinstance(res, dict) or res.get("estimate_50_epochs_s") is None:
        return []
    s = r.settings
    est = float(res["estimate_50_epochs_s"])
    n = (s.get("train_images") or 0) + (s.get("val_images") or 0)
    applicable, why = _gpu_context(
        r,
        images=(n, 1525),
        source=(s.get("source_size_wh"), [640, 480]),
        size=(s.get("image_size"), 384),
        model=(s.get("model_size"), "design"),
    )
    device = str(r.machine.get("device_name", ""))
    if r.on_cuda and "H100" not in device:
        why = "; ".join(filter(None, [why, f"ran on {device}, target names an H100"]))
    n_ep = len(res.get("epochs") or [])
    return [
        Target(
            "50-epoch recipe on SUIM-sized data <= 10 min (epoch.py estimate)",
            "<= 10 min",
            f"{est / 60:.1f} min ({res.get('estimate_rule')}, from {n_ep} epoch(s))",
            est <= EPOCHS_TARGET_S,
            applicable and "H100" in device,
            why,
            r.path.name,
        )
    ]


def _inference_targets(r: Report) -> list[Target]:
    if r.on_cuda or r.settings.get("tiny_models"):  # a CPU target, for the real models
        return []
    out = []
    for x in r.data.get("v3_vs_deeplabv3") or []:
        if x.get("size") == [384, 384] and x.get("batch") == 1 and x.get("mode") == "plain":
            ratio = float(x["ratio"])
            out.append(
                Target(
                    "V3 batch-1 CPU latency at 384x384 <= 0.6x DeepLabV3-ResNet50's",
                    f"<= {LATENCY_TARGET}x",
                    f"{ratio:.3f}x ({x['v3_ms']:.0f} vs {x['deeplabv3_ms']:.0f} ms; paired "
                    f"{fmt(x.get('paired_ratio_median'))}x; "
                    f"{r.machine.get('torch_threads', '?')} threads)",
                    ratio <= LATENCY_TARGET,
                    True,
                    "",
                    r.path.name,
                )
            )
    return out


def _data_targets(r: Report) -> list[Target]:
    out = []
    size = r.settings.get("target_size")
    for x in _ok_rows(r):
        if x.get("source") != "synthetic 1920x1080":
            continue
        pipe, ratio = x.get("pipeline"), x.get("speedup_vs_naive")
        if ratio is None:
            continue
        if pipe == "suimseg":
            goal, label = DATA_TARGET, "no cache"
        elif pipe == "suimseg + cache, ep. 2+":
            goal, label = CACHE_TARGET, "in-memory cache, epochs 2+"
        else:
            continue
        out.append(
            Target(
                f"data pipeline at 384 on 1920x1080 JPEGs >= {goal:g}x naive ({label}, "
                f"{x.get('workers')} workers)",
                f">= {goal:g}x",
                f"{ratio:.2f}x ({x.get('images_per_s', 0):.1f} img/s)",
                ratio >= goal,
                size == 384,
                "" if size == 384 else f"target size {size}, target 384",
                r.path.name,
            )
        )
    return out


def evaluate_targets(reports: Sequence[Report], which: str = "all") -> list[Target]:
    """Every target that the reports hold figures for.

    Args:
        reports: The loaded reports.
        which: ``"gpu"`` (training speed-up, memory, 50-epoch time), ``"cpu"`` (inference
            latency, data pipeline) or ``"all"`` (GPU targets first).

    Returns:
        One :class:`Target` per target and report (and per variant or model where the
        target applies to several), in a stable order.

    Example:
        >>> evaluate_targets([])
        []
    """
    if which not in ("gpu", "cpu", "all"):
        raise ValueError(f"which: expected 'gpu', 'cpu' or 'all', got {which!r}")
    order = {
        "gpu": [("train_step", _train_step_targets), ("epoch", _epoch_targets)],
        "cpu": [("inference", _inference_targets), ("data", _data_targets)],
    }
    groups = order["gpu"] + order["cpu"] if which == "all" else order[which]
    out: list[Target] = []
    for kind, fn in groups:
        for r in reports:
            if r.kind == kind:
                out += fn(r)
    return out


# --------------------------------------------------------------------------- tables


def _train_step_table(r: Report) -> str:
    rows = []
    for x in _ok_rows(r):
        note = x.get("error") or ""
        if x.get("largest_batch"):
            cut = " (search cut by the budget)" if x.get("search_cut_by_budget") else ""
            note = f"largest batch{cut}" + (f"; {note}" if note else "")
        rows.append(
            [
                _model(str(x.get("model"))),
                str(x.get("variant")),
                x.get("batch"),
                x.get("images_per_s"),
                _x(x.get("speedup_vs_deeplabv3")),
                x.get("peak_memory_mib"),
                _x(x.get("memory_vs_fp32")),
                x.get("forward_gflops_per_image"),
                x.get("achieved_tflops"),
                note,
            ]
        )
    s = r.settings
    head = (
        f"Training step, {_size(s.get('image_size'))}, batch {s.get('batch_size')}; "
        f"{s.get('warmup_steps')} warm-up steps, median of {s.get('repeats')} x "
        f"{s.get('steps_per_repeat')} steps."
        + (" Tiny stand-in models (a plumbing check)." if s.get("tiny_models") else "")
    )
    return (
        head
        + "\n\n"
        + table(
            [
                "model",
                "variant",
                "batch",
                "images/s",
                "x DeepLabV3",
                "peak MiB",
                "x fp32 memory",
                "fwd GFLOPs/img",
                "TFLOP/s",
                "note",
            ],
            rows,
            "llrrrrrrrl",
        )
    )


def _x(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _epoch_table(r: Report) -> str:
    s = r.settings
    res = r.data.get("results") or {}
    head = (
        f"Training epochs: {s.get('train_images')} train / {s.get('val_images')} val images "
        f"of {_size(s.get('source_size_wh'))} at {s.get('image_size')}x{s.get('image_size')}, "
        f"{s.get('model_size')} {s.get('model')}, batch {s.get('batch_size')}, "
        f"{s.get('workers')} workers, amp={s.get('amp')}, channels_last="
        f"{s.get('channels_last')}, compile={s.get('compile')}"
        + "".join(
            f", {key}={s[key]}"
            for key in ("augment_on", "cache", "val_batch_size", "async_checkpoint")
            if key in s  # recorded by newer epoch.py runs
        )
        + f"; synthetic set written in {fmt(s.get('synthetic_data_s'))} s."
    )
    rows = [
        [
            e.get("epoch"),
            e.get("wall_s"),
            e.get("train_data_wait_s"),
            e.get("train_compute_s"),
            e.get("val_data_wait_s"),
            e.get("val_compute_s"),
            e.get("checkpoint_s"),
            e.get("train_images_per_s"),
            e.get("val_miou"),
        ]
        for e in res.get("epochs") or []
    ]
    body = table(
        [
            "epoch",
            "wall s",
            "train wait s",
            "train compute s",
            "val wait s",
            "val compute s",
            "checkpoint s",
            "train img/s",
            "val mIoU",
        ],
        rows,
        "r" * 9,
    )
    est = res.get("estimate_50_epochs_s")
    tail = ""
    if est is not None:
        tail = (
            f"\n\n50-epoch estimate: {est / 60:.1f} min ({est:.0f} s; {res.get('estimate_rule')})."
        )
    if r.data.get("stopped_by_budget"):
        tail += " Stopped early by the time budget."
    return head + "\n\n" + body + tail


def _inference_table(r: Report) -> str:
    s = r.settings
    rows_by = {
        (x.get("model"), tuple(x.get("size") or ()), x.get("batch"), x.get("mode")): x
        for x in _ok_rows(r)
    }
    rows = []
    for x in r.data.get("v3_vs_deeplabv3") or []:
        key = (tuple(x.get("size") or ()), x.get("batch"), x.get("mode"))
        v3 = rows_by.get(("v3", *key), {})
        dl = rows_by.get(("deeplabv3", *key), {})
        rows.append(
            [
                _size(x.get("size")),
                x.get("batch"),
                str(x.get("mode")),
                x.get("v3_ms"),
                x.get("deeplabv3_ms"),
                x.get("ratio"),
                x.get("paired_ratio_median"),
                v3.get("images_per_s"),
                dl.get("images_per_s"),
                v3.get("peak_memory_mib"),
            ]
        )
    head = (
        f"Inference, precision {s.get('precision')}, channels_last {s.get('channels_last')}; "
        f"median of {s.get('repeats')} calls after {s.get('warmup')} warm-up."
        + (" Tiny stand-in models (a plumbing check)." if s.get("tiny_models") else "")
    )
    return (
        head
        + "\n\n"
        + table(
            [
                "size",
                "batch",
                "mode",
                "V3 ms",
                "DeepLabV3 ms",
                "V3 / DeepLabV3",
                "paired ratio",
                "V3 img/s",
                "DeepLabV3 img/s",
                "V3 peak MiB",
            ],
            rows,
            "lrlrrrrrrr",
        )
    )


def _data_table(r: Report) -> str:
    rows = [
        [
            str(x.get("source")),
            str(x.get("pipeline")),
            x.get("workers"),
            x.get("images_per_s"),
            _x(x.get("speedup_vs_naive")),
        ]
        for x in _ok_rows(r)
    ]
    s = r.settings
    head = (
        f"Data pipeline at {s.get('target_size')}, {s.get('n_images')} images per source, "
        f"median of {s.get('repeats')} epochs."
    )
    return (
        head
        + "\n\n"
        + table(["source", "pipeline", "workers", "images/s", "speed-up vs naive"], rows, "llrrr")
    )


def _suite_table(r: Report) -> str:
    rows = [
        [
            str(x.get("stage")),
            str(x.get("status")),
            x.get("rc"),
            x.get("wall_s"),
            x.get("limit_s"),
            str(x.get("json") or "-"),
        ]
        for x in _ok_rows(r)
    ]
    return "GPU suite stages.\n\n" + table(
        ["stage", "status", "exit code", "wall s", "limit s", "JSON"], rows, "llrrrl"
    )


def _augment_table(r: Report) -> str:
    """augment.py: one table per part (``loader`` per transform, ``device`` per module)."""
    res = r.data.get("results")
    if not isinstance(res, dict):
        return _generic_table(r)
    parts = []
    for part, rows in res.items():
        if isinstance(rows, list) and rows:
            parts.append(f"Augmentation, {part} side:\n\n" + _rows_table(rows))
    return "\n\n".join(parts) or "(no tabular results)"


def _generic_table(r: Report) -> str:
    return _rows_table(_ok_rows(r))


def _rows_table(rows: list[dict[str, Any]]) -> str:
    """Every scalar column of a list of flat rows (lists and dicts left out)."""
    rows = [x for x in rows if isinstance(x, dict)]
    keys = [
        k
        for k in dict.fromkeys(k for x in rows for k in x)
        if all(not isinstance(x.get(k), (list, dict)) for x in rows)
    ]
    if not rows or not keys:
        return "(no tabular results)"
    numeric = [
        all(isinstance(x.get(k), (int, float)) or x.get(k) is None for x in rows) for k in keys
    ]
    align = "".join("r" if n else "l" for n in numeric)
    return table(keys, [[x.get(k) for k in keys] for x in rows], align)


def render(reports: Sequence[Report]) -> str:
    """The markdown: machines, targets, then one table per report."""
    out = ["## Machines", ""]
    for r in reports:
        if r.kind != "suite":
            out.append(f"- `{r.path.name}`: {machine_line(r)}")
    suite = [r for r in reports if r.kind == "suite"]
    for r in suite:
        env = r.data.get("environment") or {}
        if isinstance(env, dict) and env:
            probe = ", ".join(f"{k} {fmt(v)}" for k, v in env.items())
            out.append(f"- `{r.path.name}` (the suite's environment probe): {probe}")
    for title, targets in (
        ("GPU targets", evaluate_targets(reports, "gpu")),
        ("CPU targets", evaluate_targets(reports, "cpu")),
    ):
        out += ["", f"## {title}", ""]
        if targets:
            rows = [[t.name, t.threshold, t.measured, t.verdict, f"`{t.source}`"] for t in targets]
            out.append(
                table(["target", "threshold", "measured", "verdict", "source"], rows, "lllll")
            )
        else:
            out.append("(no report holds a figure for these targets)")
    renderers = {
        "train_step": _train_step_table,
        "epoch": _epoch_table,
        "inference": _inference_table,
        "data": _data_table,
        "augment": _augment_table,
        "suite": _suite_table,
    }
    for r in reports:
        out += ["", f"### `{r.path.name}` ({r.data.get('benchmark')})", ""]
        if r.kind != "suite":  # the suite's environment is listed under Machines
            out.append(f"Machine: {machine_line(r)}.")
        if r.data.get("complete") is False:
            out.append("")
            out.append("*Partial: the run stopped before it finished (time limit or error).*")
        out.append("")
        out.append(renderers.get(r.kind, _generic_table)(r))
        skipped = r.data.get("skipped")
        if isinstance(skipped, list) and skipped:
            out.append("")
            out.append(
                "Skipped: "
                + "; ".join(
                    ", ".join(f"{k} {_size(v)}" for k, v in s.items() if k != "reason")
                    + f" ({s.get('reason')})"
                    for s in skipped
                    if isinstance(s, dict)
                )
                + "."
            )
    return "\n".join(out) + "\n"


def _write(path: Path, text: str) -> None:
    """Write ``text`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally write) the markdown; returns the process exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[Path(__file__).resolve().parent / "results"],
        help="JSON reports or folders of them (default: benchmarks/results)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args(argv)
    try:
        reports = load_reports(args.paths)
    except (FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"report.py: error: {exc}\n")
    if not reports:
        parser.exit(2, f"report.py: error: no *.json reports in {[str(p) for p in args.paths]}\n")
    text = render(reports)
    sys.stdout.write(text)
    if args.out is not None:
        _write(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
