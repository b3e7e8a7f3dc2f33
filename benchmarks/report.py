"""Markdown tables and target verdicts for ``docs/benchmarks.md``, from the JSON reports.

Reads the reports of ``train_step.py``, ``epoch.py``, ``inference.py``, ``data.py``,
``augment.py`` and ``gpu_suite.sh``'s ``suite.json`` (files, or folders of them) and
prints the machines, issue 9's targets each marked **met** / **not met** with the
measured figure (*indicative only*, with the reason, where the run's settings are not the
target's: a CPU run of a GPU target, another size or batch, tiny models, an H200), and one
table per report. Standard library only.

Usage::

    python benchmarks/report.py                  # benchmarks/results/*.json
    python benchmarks/report.py DIR [DIR|FILE ...] > report.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
MACHINE_LABELS = [
    ("gpu_memory_gib", "{} GiB"),
    ("torch", "torch {}"),
    ("torchvision", "torchvision {}"),
    ("cuda_version", "CUDA {}"),
    ("cudnn", "cuDNN {}"),
    ("python", "Python {}"),
    ("cpu_count", "{} CPUs"),
    ("torch_threads", "torch threads {}"),
    ("load_average_1_5_15", "load average {}"),
]
KINDS = {
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
        """The script that wrote it (``train_step``, ...), ``suite`` or ``other``."""
        return KINDS.get(str(self.data.get("benchmark")), "other")

    @property
    def machine(self) -> dict[str, Any]:
        return self.data.get("machine") or {}

    @property
    def settings(self) -> dict[str, Any]:
        return self.data.get("settings") or {}

    @property
    def rows(self) -> list[dict[str, Any]]:
        rows = self.data.get("results")
        return [x for x in rows if isinstance(x, dict)] if isinstance(rows, list) else []

    @property
    def on_cuda(self) -> bool:
        return str(self.machine.get("device", "")).startswith("cuda")


@dataclass(frozen=True)
class Target:
    """One target checked against one report.

    ``met`` is ``None`` when the figure was not measured; ``applicable`` is false when the
    report's settings differ from the target's (the verdict is then indicative only, and
    ``why`` says how).
    """

    name: str
    threshold: str
    measured: str
    met: bool | None
    applicable: bool
    why: str
    source: str
    gpu: bool

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured" + (f" ({self.why})" if self.why else "")
        if self.applicable:
            return "**met**" if self.met else "**not met**"
        return f"{'met' if self.met else 'not met'} (indicative only: {self.why})"


def load_reports(paths: Sequence[Path]) -> list[Report]:
    """Read every ``*.json`` report in ``paths`` (files, or folders searched non-recursively).

    Raises:
        FileNotFoundError: A path does not exist.
        ValueError: A file is not a JSON object with a ``"benchmark"`` key.
    """
    files: list[Path] = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"paths: {p} does not exist; pass JSON reports or folders")
        files += sorted(p.glob("*.json")) if p.is_dir() else [p]
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


def fmt(v: Any) -> str:
    """A compact cell: ``None`` -> ``-``; 3 significant digits below 10, fewer above."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"
    if isinstance(v, list) and len(v) == 2:
        return f"{v[0]}x{v[1]}"
    return str(v).replace("|", "\\|")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A markdown table; ``align`` has one ``l``/``r`` per column (default: first left)."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def machine_line(r: Report) -> str:
    """One line naming the machine of a report."""
    m = dict(r.machine)
    m["gpu_memory_gib"] = m.get("gpu_memory_gib") and f"{m['gpu_memory_gib']:.0f}"
    m["load_average_1_5_15"] = m.get("load_average_1_5_15") and f"{m['load_average_1_5_15'][0]:.1f}"
    parts = [str(m.get("device_name") or m.get("processor") or "unknown device")]
    for key, label in MACHINE_LABELS:
        if m.get(key):
            parts.append(label.format(m[key]))
    return ", ".join(parts)


# --------------------------------------------------------------------------- targets


def _context(r: Report, gpu: bool = True, **want: tuple[Any, Any]) -> tuple[bool, str]:
    """Whether ``r`` ran with the target's settings (``label=(actual, expected)``)."""
    why = ["not a GPU run"] if gpu and not r.on_cuda else []
    if r.settings.get("tiny_models"):
        why.append("tiny stand-in models")
    why += [f"{k} {fmt(a)}, target {fmt(e)}" for k, (a, e) in want.items() if a != e]
    return not why, "; ".join(why)


Check = tuple[str, str, str, "bool | None", bool, str]  # Target's fields up to ``why``


def _train_step_targets(r: Report) -> list[Check]:
    out: list[Check] = []
    rows = [x for x in r.rows if not x.get("largest_batch")]
    size, batch = r.settings.get("image_size"), r.settings.get("batch_size")
    by = {(x.get("model"), x.get("variant")): x for x in rows}
    for v in dict.fromkeys(str(x.get("variant")) for x in rows):
        v3, dl = by.get(("v3", v)), by.get(("deeplabv3", v))
        if v3 is None or dl is None:
            continue
        ok, why = _context(r, size=(size, [384, 384]))
        name = (
            f"V3 training images/s >= {SPEEDUP_TARGET}x DeepLabV3-ResNet50's ({v}, batch {batch})"
        )
        goal = f">= {SPEEDUP_TARGET}x"
        a, b = v3.get("images_per_s"), dl.get("images_per_s")
        if a is None or b is None:
            out.append(
                (name, goal, "-", None, ok, v3.get("error") or dl.get("error") or "no timing")
            )
        else:
            measured = f"{a / b:.2f}x ({a:.1f} vs {b:.1f} img/s at {fmt(size)})"
            out.append((name, goal, measured, a / b >= SPEEDUP_TARGET, ok, why))
    for model in dict.fromkeys(str(x.get("model")) for x in rows):
        cl, f32 = by.get((model, "bf16_cl")), by.get((model, "fp32"))
        if cl is None or f32 is None:
            continue
        name = f"{MODEL_NAMES.get(model, model)} bf16 + channels_last peak memory"
        name += f" <= {MEMORY_TARGET}x fp32's (batch {batch})"
        goal = f"<= {MEMORY_TARGET}x"
        ok, why = _context(r, batch=(batch, 6), size=(size, [384, 384]))
        m_cl, m_32 = cl.get("peak_memory_mib"), f32.get("peak_memory_mib")
        if m_cl is None or m_32 is None:
            why = "no CUDA peak memory on the CPU" if not r.on_cuda else "no memory figure"
            out.append((name, goal, "-", None, ok, why))
        else:
            measured = f"{m_cl / m_32:.2f}x ({m_cl:.0f} vs {m_32:.0f} MiB)"
            out.append((name, goal, measured, m_cl / m_32 <= MEMORY_TARGET, ok, why))
    return out


def _epoch_targets(r: Report) -> list[Check]:
    res, s = r.data.get("results"), r.settings
    if not isinstance(res, dict) or res.get("estimate_50_epochs_s") is None:
        return []
    est = float(res["estimate_50_epochs_s"])
    ok, why = _context(
        r,
        images=((s.get("train_images") or 0) + (s.get("val_images") or 0), 1525),
        source=(s.get("source_size_wh"), [640, 480]),
        size=(s.get("image_size"), 384),
        model=(s.get("model_size"), "design"),
    )
    device = str(r.machine.get("device_name", ""))
    if r.on_cuda and "H100" not in device:
        ok, why = False, "; ".join(filter(None, [why, f"ran on {device}, target names an H100"]))
    n = len(res.get("epochs") or [])
    measured = f"{est / 60:.1f} min ({res.get('estimate_rule')}, from {n} epoch(s))"
    name = "50-epoch recipe on SUIM-sized data <= 10 min (epoch.py estimate)"
    return [(name, "<= 10 min", measured, est <= EPOCHS_TARGET_S, ok, why)]


def _inference_targets(r: Report) -> list[Check]:
    if r.on_cuda or r.settings.get("tiny_models"):  # a CPU target, for the real models
        return []
    name = f"V3 batch-1 CPU latency at 384x384 <= {LATENCY_TARGET}x DeepLabV3-ResNet50's"
    threads = r.machine.get("torch_threads", "?")
    return [
        (
            name,
            f"<= {LATENCY_TARGET}x",
            f"{x['ratio']:.3f}x ({x['v3_ms']:.0f} vs {x['deeplabv3_ms']:.0f} ms; paired "
            f"{fmt(x.get('paired_ratio_median'))}x; {threads} threads)",
            x["ratio"] <= LATENCY_TARGET,
            True,
            "",
        )
        for x in r.data.get("v3_vs_deeplabv3") or []
        if (x.get("size"), x.get("batch"), x.get("mode")) == ([384, 384], 1, "plain")
    ]


def _data_targets(r: Report) -> list[Check]:
    goals = {
        "suimseg": (DATA_TARGET, "no cache"),
        "suimseg + cache, ep. 2+": (CACHE_TARGET, "in-memory cache, epochs 2+"),
    }
    size = r.settings.get("target_size")
    why = "" if size == 384 else f"target size {size}, target 384"
    out: list[Check] = []
    for x in r.rows:
        ratio, pipeline = x.get("speedup_vs_naive"), x.get("pipeline")
        if x.get("source") == "synthetic 1920x1080" and pipeline in goals and ratio is not None:
            goal, label = goals[pipeline]
            name = f"data pipeline at 384 on 1920x1080 JPEGs >= {goal:g}x naive ({label}, "
            name += f"{x.get('workers')} workers)"
            measured = f"{ratio:.2f}x ({x.get('images_per_s', 0):.1f} img/s)"
            out.append((name, f">= {goal:g}x", measured, ratio >= goal, size == 384, why))
    return out


def evaluate_targets(reports: Sequence[Report]) -> list[Target]:
    """Every target the reports hold figures for: the GPU ones (training speed-up,
    memory, 50-epoch time), then the CPU ones (inference latency, data pipeline)."""
    checks: list[tuple[str, Callable[[Report], list[Check]], bool]] = [
        ("train_step", _train_step_targets, True),
        ("epoch", _epoch_targets, True),
        ("inference", _inference_targets, False),
        ("data", _data_targets, False),
    ]
    return [
        Target(*t, source=r.path.name, gpu=gpu)
        for kind, check, gpu in checks
        for r in reports
        if r.kind == kind
        for t in check(r)
    ]


# --------------------------------------------------------------------------- tables

#: Per report kind: the caption, and the columns as "header=key" (``key`` defaults to
#: the header; ``x:key`` prints a ratio as ``1.23x``; a ``<`` after a column aligns it
#: left).
COLUMNS = {
    "train_step": "model<; variant<; batch; images/s=images_per_s; "
    "x DeepLabV3=x:speedup_vs_deeplabv3; peak MiB=peak_memory_mib; x fp32 memory=x:memory_vs_fp32; "
    "fwd GFLOPs/img=forward_gflops_per_image; TFLOP/s=achieved_tflops; note<",
    "epoch": "epoch; wall s=wall_s; train wait s=train_data_wait_s; "
    "train compute s=train_compute_s; val wait s=val_data_wait_s; val compute s=val_compute_s; "
    "checkpoint s=checkpoint_s; train img/s=train_images_per_s; val mIoU=val_miou",
    "inference": "size<; batch; mode<; V3 ms=v3_ms; DeepLabV3 ms=deeplabv3_ms; "
    "V3 / DeepLabV3=ratio; paired ratio=paired_ratio_median; V3 img/s=v3_images_per_s; "
    "DeepLabV3 img/s=deeplabv3_images_per_s; V3 peak MiB=v3_peak_memory_mib",
    "data": "source<; pipeline<; workers; images/s=images_per_s; "
    "speed-up vs naive=x:speedup_vs_naive",
    "loader": "step<; input<; ms/image applied=ms_per_image; p=probability; "
    "ms/image expected=expected_ms_per_image",
    "device": "module<; batch; ms/batch=ms_per_batch; ms/image=ms_per_image; images/s=images_per_s",
    "suite": "stage<; status<; exit code=rc; wall s=wall_s; limit s=limit_s; JSON=json<",
}


def _columns(kind: str, rows: Sequence[dict[str, Any]]) -> str:
    """The markdown table of ``rows`` with the columns ``COLUMNS[kind]``."""
    heads, keys, align = [], [], ""
    for spec in COLUMNS[kind].split("; "):
        head, _, key = spec.partition("=")
        align += "l" if "<" in spec else "r"
        heads.append(head.rstrip("<"))
        keys.append((key or head).rstrip("<"))

    def cell(x: dict[str, Any], key: str) -> Any:
        if key.startswith("x:"):
            v = x.get(key[2:])
            return "-" if v is None else f"{v:.2f}x"
        return x.get(key)

    return table(heads, [[cell(x, k) for k in keys] for x in rows], align)


CAPTIONS = {
    "train_step": "Training step, {image_size}, batch {batch_size}; {warmup_steps} warm-up steps, "
    "median of {repeats} x {steps_per_repeat} steps.",
    "epoch": "Training epochs: {train_images} train / {val_images} val images of "
    "{source_size_wh} at {image_size}x{image_size}, {model_size} {model}, batch {batch_size}, "
    "{workers} workers, amp={amp}, channels_last={channels_last}, compile={compile}{extra}; "
    "synthetic set written in {synthetic_data_s} s.",
    "inference": "Inference, precision {precision}, channels_last {channels_last}; "
    "median of {repeats} calls after {warmup} warm-up.",
    "data": "Data pipeline at {target_size}, {n_images} images per source, "
    "median of {repeats} epochs.",
    "suite": "GPU suite stages.",
}


class _Settings(dict[str, Any]):
    """``str.format_map`` source: settings as printed (missing ones as ``None``)."""

    def __missing__(self, key: str) -> str:
        return "None"


def _caption(r: Report) -> str:
    s = _Settings({k: fmt(v) if isinstance(v, (list, float)) else v for k, v in r.settings.items()})
    extra = ("augment_on", "cache", "val_batch_size", "async_checkpoint")  # newer epoch.py runs
    s["extra"] = "".join(f", {k}={r.settings[k]}" for k in extra if k in r.settings)
    return CAPTIONS[r.kind].format_map(s)


def _tables(r: Report) -> str:
    """The caption and table(s) of one report."""
    res = r.data.get("results")
    if r.kind == "train_step":
        rows = []
        for x in r.rows:
            note = [str(x.get("error") or "")]
            if x.get("largest_batch"):
                cut = " (search cut by the budget)" if x.get("search_cut_by_budget") else ""
                note.insert(0, f"largest batch{cut}")
            model = MODEL_NAMES.get(x.get("model", ""), x.get("model"))
            rows.append({**x, "model": model, "note": "; ".join(filter(None, note))})
        return _caption(r) + "\n\n" + _columns(r.kind, rows)
    if r.kind == "epoch" and isinstance(res, dict):
        text = _caption(r) + "\n\n" + _columns(r.kind, res.get("epochs") or [])
        est = res.get("estimate_50_epochs_s")
        if est is not None:
            rule = res.get("estimate_rule")
            text += f"\n\n50-epoch estimate: {est / 60:.1f} min ({est:.0f} s; {rule})."
        return text + (
            " Stopped early by the time budget." if r.data.get("stopped_by_budget") else ""
        )
    if r.kind == "inference":
        by = {
            (x.get("model"), fmt(x.get("size")), x.get("batch"), x.get("mode")): x for x in r.rows
        }
        rows = []
        for x in r.data.get("v3_vs_deeplabv3") or []:
            row = dict(x)
            for m in ("v3", "deeplabv3"):
                run = by.get((m, fmt(x.get("size")), x.get("batch"), x.get("mode")), {})
                row |= {f"{m}_{k}": run.get(k) for k in ("images_per_s", "peak_memory_mib")}
            rows.append(row)
        return _caption(r) + "\n\n" + _columns(r.kind, rows)
    if r.kind == "augment" and isinstance(res, dict):
        return (
            "Augmentation, loader side (one sample):\n\n"
            + _columns("loader", res.get("loader") or [])
            + f"\n\nAugmentation, device side ({r.settings.get('device')}):\n\n"
            + _columns("device", res.get("device") or [])
        )
    if r.kind in ("data", "suite"):
        return _caption(r) + "\n\n" + _columns(r.kind, r.rows)
    return "(not a known benchmark report)"


def render(reports: Sequence[Report]) -> str:
    """The markdown: machines, target verdicts, then one table per report."""
    out = ["## Machines", ""]
    for r in reports:
        if r.kind == "suite":
            probe = ", ".join(f"{k} {fmt(v)}" for k, v in (r.data.get("environment") or {}).items())
            out.append(f"- `{r.path.name}` (the suite's environment probe): {probe}")
        else:
            out.append(f"- `{r.path.name}`: {machine_line(r)}")
    targets = evaluate_targets(reports)
    for title, gpu in (("GPU targets", True), ("CPU targets", False)):
        rows = [
            [t.name, t.threshold, t.measured, t.verdict, f"`{t.source}`"]
            for t in targets
            if t.gpu == gpu
        ]
        body = (
            table(["target", "threshold", "measured", "verdict", "source"], rows, "lllll")
            if rows
            else "(no report holds a figure for these targets)"
        )
        out += ["", f"## {title}", "", body]
    for r in reports:
        out += ["", f"### `{r.path.name}` ({r.data.get('benchmark')})", ""]
        if r.settings.get("tiny_models"):
            out += ["Tiny stand-in models (a plumbing check).", ""]
        if r.data.get("complete") is False:
            out += ["*Partial: the run stopped before it finished (time limit or error).*", ""]
        out.append(_tables(r))
        skipped = [s for s in r.data.get("skipped") or [] if isinstance(s, dict)]
        if skipped:
            items = [
                ", ".join(f"{k} {fmt(v)}" for k, v in s.items() if k != "reason")
                + f" ({s.get('reason')})"
                for s in skipped
            ]
            out += ["", "Skipped: " + "; ".join(items) + "."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the markdown; returns the process exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[Path(__file__).resolve().parent / "results"],
        help="JSON reports or folders of them (default: benchmarks/results)",
    )
    args = parser.parse_args(argv)
    try:
        reports = load_reports(args.paths)
    except (FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"report.py: error: {exc}\n")
    if not reports:
        parser.exit(2, f"report.py: error: no *.json reports in {[str(p) for p in args.paths]}\n")
    sys.stdout.write(render(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
