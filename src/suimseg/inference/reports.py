"""Evaluation-result files, side-by-side comparison tables and training-curve plots.

A result file is ``{"format": "suimseg.evaluation", "format_version": 1, "name", "protocol",
"metrics", "meta"}`` (see ``docs/inference.md``); :func:`load_result` also accepts a bare
``SegmentationMetrics.to_dict()``. Results of different protocols are never put in one table.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from suimseg._atomic import atomic_write_bytes, atomic_write_text
from suimseg.engine.history import read_history
from suimseg.errors import ConfigError, MissingDependencyError
from suimseg.inference.evaluation import PAPER_LABEL, SUIMPaperMetrics
from suimseg.metrics import SegmentationMetrics

__all__ = [
    "RESULT_FORMAT",
    "EvaluationResult",
    "Protocol",
    "compare_results",
    "format_comparison",
    "format_gain_report",
    "load_result",
    "plot_history",
    "save_result",
]

RESULT_FORMAT = "suimseg.evaluation"
_RESULT_VERSION = 1
Protocol = Literal["dataset-8class", "suim-paper"]
_DATASET_LABEL = (
    "suimseg protocol: 8-class IoU from one confusion matrix over the whole dataset, at "
    "the labels' native resolution"
)


@dataclass(frozen=True)
class EvaluationResult:
    """One evaluation, as stored in a result JSON file.

    Attributes:
        name: Column title in comparisons (e.g. ``"V3 + TTA"``).
        protocol: ``"dataset-8class"`` or ``"suim-paper"``.
        metrics: The metrics dict of that protocol.
        meta: Free-form provenance (checkpoint, TTA settings, split, ...).
    """

    name: str
    protocol: Protocol
    metrics: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_metrics(
        cls,
        metrics: SegmentationMetrics | SUIMPaperMetrics,
        *,
        name: str,
        meta: Mapping[str, Any] | None = None,
    ) -> EvaluationResult:
        """Wrap computed metrics (either protocol) with a name and provenance.

        Example:
            >>> import torch
            >>> m = SegmentationMetrics.from_confusion(torch.eye(8, dtype=torch.int64))
            >>> EvaluationResult.from_metrics(m, name="V3").protocol
            'dataset-8class'
        """
        protocol: Protocol = (
            "suim-paper" if isinstance(metrics, SUIMPaperMetrics) else "dataset-8class"
        )
        return cls(name=name, protocol=protocol, metrics=metrics.to_dict(), meta=dict(meta or {}))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the file format."""
        return {
            "format": RESULT_FORMAT,
            "format_version": _RESULT_VERSION,
            "name": self.name,
            "protocol": self.protocol,
            "metrics": self.metrics,
            "meta": self.meta,
        }


def save_result(path: str | os.PathLike[str], result: EvaluationResult) -> Path:
    """Write ``result`` as JSON, atomically (parent folders are created); return the path."""
    return atomic_write_text(path, json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")


def _check_dataset_metrics(d: Mapping[str, Any], file: Path) -> None:
    if not isinstance(d.get("iou"), dict) or "miou" not in d:
        raise ConfigError(
            f"result file {file}: expected metrics with 'miou' and a per-class 'iou' mapping "
            "(SegmentationMetrics.to_dict()), got keys "
            f"{sorted(d)[:12]}"
        )


def load_result(path: str | os.PathLike[str]) -> EvaluationResult:
    """Read an evaluation-result JSON file (or a bare ``SegmentationMetrics.to_dict()``).

    Raises:
        FileNotFoundError: If the file does not exist.
        ConfigError: If it is not valid JSON or not an evaluation result.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"result file {file} does not exist; pass a JSON file written by suimseg evaluate "
            "(by default eval_<split>.json beside the checkpoint)"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"result file {file}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"result file {file}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") == RESULT_FORMAT:
        version = data.get("format_version")
        if not isinstance(version, int) or version > _RESULT_VERSION:
            raise ConfigError(
                f"result file {file}: format_version {version!r} is not supported (this "
                f"suimseg reads <= {_RESULT_VERSION}); upgrade suimseg"
            )
        protocol = data.get("protocol")
        metrics = data.get("metrics")
        if protocol not in ("dataset-8class", "suim-paper") or not isinstance(metrics, dict):
            raise ConfigError(
                f"result file {file}: expected 'protocol' ('dataset-8class' or 'suim-paper') "
                f"and a 'metrics' object, got protocol={protocol!r}"
            )
        if protocol == "dataset-8class":
            _check_dataset_metrics(metrics, file)
        meta = data.get("meta")
        return EvaluationResult(
            str(data.get("name") or file.stem),
            protocol,
            metrics,
            meta if isinstance(meta, dict) else {},
        )
    if data.get("protocol") == "suim-paper":
        return EvaluationResult(
            name=str(data.get("name") or file.stem), protocol="suim-paper", metrics=data
        )
    _check_dataset_metrics(data, file)
    name = str(data.get("name") or data.get("label") or file.stem)
    return EvaluationResult(name=name, protocol="dataset-8class", metrics=data)


def _pct(x: Any, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100.0 * float(x):.{digits}f}"


def _gain(x: Any, base: Any, digits: int) -> str:
    if x is None or base is None:
        return ""
    d = 100.0 * (float(x) - float(base))
    if math.isnan(d):
        return ""
    return f" ({d:+.{digits}f})"


def _rows(result: EvaluationResult) -> list[tuple[str, Any]]:
    m = result.metrics
    if result.protocol == "suim-paper":
        rows: list[tuple[str, Any]] = [
            ("mean IoU (paper protocol)", m.get("mean_iou")),
            ("mean F, contour (paper protocol)", m.get("mean_boundary_f")),
        ]
        for code in m.get("class_codes", []):
            rows.append((f"{code} IoU", m.get("iou", {}).get(code)))
            rows.append((f"{code} F (contour)", m.get("boundary_f", {}).get(code)))
        return rows
    rows = [("mIoU", m.get("miou"))]
    rows.extend((name, value) for name, value in m["iou"].items())
    return rows


def format_comparison(
    results: Sequence[EvaluationResult | tuple[str, SegmentationMetrics | SUIMPaperMetrics]],
    *,
    baseline: int | None = 0,
    digits: int = 2,
) -> str:
    """A markdown table of several results side by side (rows = metrics, columns = runs).

    With a ``baseline`` column, every other cell also shows its gain in percentage points,
    e.g. ``52.10 (+1.30)``.

    Args:
        results: :class:`EvaluationResult` objects or ``(name, metrics)`` pairs.
        baseline: Index of the column the gains are measured against, or ``None``.
        digits: Decimal places (values in %).

    Returns:
        A one-line protocol note, a blank line and the table.

    Raises:
        ConfigError: If ``results`` is empty, mixes protocols or classes, or ``baseline``
            is out of range.

    Example:
        >>> import torch
        >>> a = SegmentationMetrics.from_confusion(torch.tensor([[3, 1], [1, 3]]))
        >>> b = SegmentationMetrics.from_confusion(torch.tensor([[4, 0], [1, 3]]))
        >>> table = format_comparison([("plain", a), ("TTA", b)])
        >>> print(*table.splitlines()[2:], sep=chr(10))
        | Metric | plain | TTA |
        |---|---|---|
        | mIoU | 60.00 | 77.50 (+17.50) |
        | class_0 | 60.00 | 80.00 (+20.00) |
        | class_1 | 60.00 | 75.00 (+15.00) |
    """
    items = [
        r if isinstance(r, EvaluationResult) else EvaluationResult.from_metrics(r[1], name=r[0])
        for r in results
    ]
    if not items:
        raise ConfigError("results: expected at least one evaluation result, got none")
    protocols = {r.protocol for r in items}
    if len(protocols) > 1:
        raise ConfigError(
            "results: cannot put results of different protocols in one table ("
            + ", ".join(f"{r.name}: {r.protocol}" for r in items)
            + "); compare 8-class results and SUIM-paper results separately"
        )
    if baseline is not None and not 0 <= baseline < len(items):
        raise ConfigError(f"baseline: expected a column index in [0, {len(items)}), got {baseline}")
    table = [_rows(r) for r in items]
    labels = [label for label, _ in table[0]]
    for r, rows in zip(items, table, strict=True):
        if [label for label, _ in rows] != labels:
            raise ConfigError(
                f"results: {r.name!r} has other classes than {items[0].name!r}; only results "
                "with the same classes can be compared"
            )
    note = _DATASET_LABEL if items[0].protocol == "dataset-8class" else PAPER_LABEL
    note = note.rstrip(".") + ". IoU in %"
    if baseline is not None and len(items) > 1:
        note += f"; gains in percentage points vs {items[baseline].name}"
    names = [r.name.replace("|", "\\|") for r in items]
    lines = [
        note + ".",
        "",
        "| Metric | " + " | ".join(names) + " |",
        "|---" * (len(items) + 1) + "|",
    ]
    for i, label in enumerate(labels):
        cells = []
        for j, rows in enumerate(table):
            value = rows[i][1]
            cell = _pct(value, digits)
            if baseline is not None and j != baseline:
                cell += _gain(value, table[baseline][i][1], digits)
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_gain_report(
    plain: SegmentationMetrics | SUIMPaperMetrics,
    improved: SegmentationMetrics | SUIMPaperMetrics,
    *,
    plain_name: str = "plain",
    improved_name: str = "TTA",
    digits: int = 2,
) -> str:
    """A headline (``mIoU: plain 50.00% -> TTA 52.00% (+2.00 points)``) and the two-column
    :func:`format_comparison` of a plain model vs TTA/ensemble on the same data.

    Example:
        >>> import torch
        >>> a = SegmentationMetrics.from_confusion(torch.tensor([[3, 1], [1, 3]]))
        >>> format_gain_report(a, a).splitlines()[0]
        'mIoU: plain 60.00% -> TTA 60.00% (+0.00 points)'
    """

    def headline(m: SegmentationMetrics | SUIMPaperMetrics) -> float:
        return m.mean_iou if isinstance(m, SUIMPaperMetrics) else m.miou

    a, b = headline(plain), headline(improved)
    key = "mean IoU (paper protocol)" if isinstance(plain, SUIMPaperMetrics) else "mIoU"
    gain = "n/a" if math.isnan(a) or math.isnan(b) else f"{100 * (b - a):+.{digits}f}"
    first = (
        f"{key}: {plain_name} {_pct(a, digits)}% -> {improved_name} {_pct(b, digits)}% "
        f"({gain} points)"
    )
    table = format_comparison(
        [(plain_name, plain), (improved_name, improved)], baseline=0, digits=digits
    )
    return first + "\n\n" + table


def compare_results(paths: Sequence[str | os.PathLike[str]], *, digits: int = 2) -> str:
    """Markdown table of several evaluation-result files side by side (first = baseline).

    Example:
        >>> print(compare_results(["v3.json", "v3_tta.json"]))  # doctest: +SKIP
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return format_comparison([load_result(p) for p in paths], baseline=0, digits=digits)


# ---------------------------------------------------------------------- training curves
def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [_number(r.get(key)) for r in rows]


def _number(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _lr_series(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Learning rate per parameter group: ``lrs`` (jsonl), ``lr/<name>`` columns (csv).

    A ``<name>_no_decay`` group whose rates equal ``<name>``'s throughout is left out (as
    in the per-epoch summary line): it would only hide the other line.
    """
    groups: dict[str, list[float]] = {}
    for i, r in enumerate(rows):
        lrs = r.get("lrs")
        if isinstance(lrs, list):  # files written before groups were named
            lrs = {str(g): v for g, v in enumerate(lrs)}
        elif not isinstance(lrs, dict):
            lrs = {k[3:]: v for k, v in r.items() if k.startswith("lr/")}
        for name, v in lrs.items():
            groups.setdefault(name, [math.nan] * len(rows))[i] = _number(v)
    return {
        name: series
        for name, series in groups.items()
        if not (
            name.endswith("_no_decay")
            and _same_series(series, groups.get(name.removesuffix("_no_decay")))
        )
    }


def _same_series(a: list[float], b: list[float] | None) -> bool:
    return b is not None and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True)
    )


def plot_history(
    history_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    dpi: int = 120,
) -> Path:
    """Plot training curves (losses, validation mIoU, learning rates) to an image file.

    Needs matplotlib (the ``plot`` extra). Written atomically, in the suffix's format
    (``.png``, ``.svg``, ``.pdf``).

    Args:
        history_path: The history file or run folder.
        out_path: Output image path.
        dpi: Resolution of raster formats.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: If matplotlib is not installed.
        ConfigError: If the history is empty.

    Example:
        >>> plot_history("runs/exp1/history.csv", "curves.png")  # doctest: +SKIP
    """
    try:
        # Imported by name so type-checking works without the optional package.
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        Figure: Any = importlib.import_module("matplotlib.figure").Figure
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "plot", "plotting training curves") from exc
    rows = read_history(history_path)
    if not rows:
        raise ConfigError(f"history {history_path}: no epochs recorded yet; nothing to plot")
    epochs = _series(rows, "epoch")
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_loss, ax_miou, ax_lr = fig.subplots(1, 3)
    ax_loss.plot(epochs, _series(rows, "train_loss"), marker=".", label="train")
    val_loss = _series(rows, "val_loss")
    if any(not math.isnan(v) for v in val_loss):
        ax_loss.plot(epochs, val_loss, marker=".", label="validation")
    ax_loss.set(title="Loss", xlabel="epoch")
    ax_loss.legend()
    miou = [100 * v for v in _series(rows, "val_miou")]
    ax_miou.plot(epochs, miou, marker=".", color="tab:green")
    best = [i for i, r in enumerate(rows) if r.get("is_best") is True]
    if best:
        x, y = [epochs[i] for i in best], [miou[i] for i in best]
        ax_miou.scatter(x, y, color="tab:red", zorder=3, label="new best")
        ax_miou.legend()
    ax_miou.set(title="Validation mIoU (%)", xlabel="epoch")
    for name, series in _lr_series(rows).items():
        ax_lr.plot(epochs, series, marker=".", label=name)
    ax_lr.set(title="Learning rate", xlabel="epoch", yscale="log")
    if ax_lr.get_legend_handles_labels()[0]:
        ax_lr.legend()
    ticker: Any = importlib.import_module("matplotlib.ticker")
    for ax in (ax_loss, ax_miou, ax_lr):
        ax.grid(alpha=0.3)
        # whole epochs (a 1-epoch run had ticks 0.96 ... 1.04)
        ax.xaxis.set_major_locator(
            ticker.FixedLocator(epochs) if len(epochs) <= 12 else ticker.MaxNLocator(integer=True)
        )
    buf = io.BytesIO()  # atomic_write_bytes creates the parent folders
    fig.savefig(buf, format=Path(out_path).suffix.lstrip(".").lower() or "png", dpi=dpi)
    return atomic_write_bytes(out_path, buf.getvalue())
