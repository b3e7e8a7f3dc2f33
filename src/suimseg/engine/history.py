"""Per-epoch training records and the ``history.csv`` / ``history.jsonl`` files.

Each record is appended as one whole line to both files with a single write and fsync; a
failed write is cut back, and the torn last line a SIGKILL may leave is tolerated by
:func:`read_history`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from suimseg._atomic import atomic_write_text, write_error
from suimseg.errors import CheckpointError, HistoryError

__all__ = ["EpochRecord", "HistoryWriter", "read_history"]

logger = logging.getLogger("suimseg")

PathLike = str | os.PathLike[str]


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _named_lrs(lrs: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
    """Learning rates by group name; a sequence (older files) is named by index."""
    if isinstance(lrs, Mapping):
        return {str(k): float(v) for k, v in lrs.items()}
    return {str(i): float(v) for i, v in enumerate(lrs)}


@dataclass(frozen=True)
class EpochRecord:
    """What happened in one epoch (the unit of the history files and callbacks).

    Attributes:
        epoch: 1-based epoch number.
        train_loss: Mean training loss over the epoch's (non-skipped) images.
        val_loss: Mean validation loss, or ``None`` without a validation loader.
        val_miou: Validation mIoU in ``[0, 1]``, or ``None``.
        val_pixel_accuracy: Validation pixel accuracy, or ``None``.
        val_mean_f1: Validation mean F1 (Dice), or ``None``.
        val_iou: Per-class validation IoU by class name (``None`` for classes absent from
            both labels and predictions); empty without validation.
        lrs: Learning rate of each parameter group by its ``"name"`` (its index as a
            string for unnamed groups; a sequence, from older files, is index-named).
        epoch_time_s: Wall-clock seconds for training plus validation.
        images_per_s: Training throughput (all processes together under DDP).
        skipped_steps: Steps skipped because of a non-finite loss (``NonFiniteLoss("skip")``).
        skipped_samples: Corrupt samples skipped by ``SUIMDataset(on_corrupt="skip")``.
        is_best: Whether ``val_miou`` improved on every earlier epoch.
    """

    epoch: int
    train_loss: float
    val_loss: float | None = None
    val_miou: float | None = None
    val_pixel_accuracy: float | None = None
    val_mean_f1: float | None = None
    val_iou: dict[str, float | None] = field(default_factory=dict)
    lrs: dict[str, float] = field(default_factory=dict)
    epoch_time_s: float = 0.0
    images_per_s: float = 0.0
    skipped_steps: int = 0
    skipped_samples: int = 0
    is_best: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "lrs", _named_lrs(self.lrs))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochRecord:
        """Rebuild a record from :meth:`to_dict` output (e.g. a ``history.jsonl`` line).

        Unknown keys are ignored, missing ones take their defaults; a ``None`` loss is NaN.

        Example:
            >>> EpochRecord.from_dict({"epoch": 2, "train_loss": 0.5, "lrs": [0.1]}).lrs
            {'0': 0.1}
        """
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if kwargs.get("train_loss") is None:
            kwargs["train_loss"] = math.nan
        kwargs["lrs"] = _named_lrs(kwargs.get("lrs") or {})
        kwargs["val_iou"] = dict(kwargs.get("val_iou") or {})
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready nested dict (non-finite numbers become ``None``)."""
        out = asdict(self)
        for key in ("train_loss", "val_loss", "val_miou", "val_pixel_accuracy", "val_mean_f1"):
            out[key] = _finite_or_none(out[key])
        out["val_iou"] = {k: _finite_or_none(v) for k, v in self.val_iou.items()}
        out["lrs"] = dict(self.lrs)
        return out

    def to_row(self) -> dict[str, Any]:
        """Return a flat dict for CSV: ``val_iou/<class>`` and ``lr/<group name>`` columns."""
        nested = self.to_dict()
        row = {k: v for k, v in nested.items() if k not in ("val_iou", "lrs")}
        row.update({f"val_iou/{name}": value for name, value in nested["val_iou"].items()})
        row.update({f"lr/{name}": lr for name, lr in nested["lrs"].items()})
        return row


#: What a failed history write leaves (appends are cut back, rewrites are atomic).
_HISTORY_KEPT = "its earlier lines are unchanged"


def _history_error(path: Path, exc: OSError, size: int | None = None) -> OSError:
    return write_error(path, exc, what="history file", kept=_HISTORY_KEPT, size=size)


def _append_line(path: Path, line: str) -> None:
    """Append whole lines with one write and fsync; on failure cut the file back and raise."""
    data = line.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise _history_error(path, exc) from exc
    try:
        start = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            while written < len(data):  # short write: finish it (still whole lines)
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise _history_error(path, exc, len(data)) from exc
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text, what="history file", kept=_HISTORY_KEPT)


def _csv_lines(rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buf.getvalue()


class HistoryWriter:
    """Append :class:`EpochRecord` lines to ``history.jsonl`` and ``history.csv`` in a folder.

    The CSV header comes from the first record; a later record with other columns is
    written in the header's columns, with a warning (the JSONL keeps everything).

    Args:
        directory: Folder for the two files (created if needed).

    Example:
        >>> import tempfile
        >>> w = HistoryWriter(tempfile.mkdtemp())
        >>> w.append(EpochRecord(epoch=1, train_loss=0.5))
        >>> [r["train_loss"] for r in read_history(w.jsonl_path)]
        [0.5]
    """

    def __init__(self, directory: PathLike) -> None:
        self.directory = Path(directory)
        self.csv_path = self.directory / "history.csv"
        self.jsonl_path = self.directory / "history.jsonl"

    def _csv_header(self) -> list[str] | None:
        if not self.csv_path.is_file() or self.csv_path.stat().st_size == 0:
            return None
        with open(self.csv_path, encoding="utf-8", newline="") as fh:
            return next(csv.reader(fh), None)

    def append(self, record: EpochRecord) -> None:
        """Append ``record`` to both files (one flushed line each).

        Raises:
            OSError: If a file cannot be written (disk full, permissions); the message
                names the file, which keeps its earlier lines and no partial one.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        _append_line(self.jsonl_path, json.dumps(record.to_dict(), allow_nan=False) + "\n")
        row = record.to_row()
        header = self._csv_header()
        if header is None:
            _append_line(self.csv_path, _csv_lines([list(row), list(row.values())]))
            return
        if list(row) != header:
            logger.warning(
                "%s: columns differ from the existing header; writing the header's columns",
                self.csv_path,
            )
        _append_line(self.csv_path, _csv_lines([[row.get(k) for k in header]]))

    def clear(self) -> None:
        """Remove both files (a new run starts an empty history)."""
        for path in (self.jsonl_path, self.csv_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def sync_to_epoch(
        self,
        epoch: int,
        last_record: Mapping[str, Any] | None = None,
        *,
        records: Sequence[Mapping[str, Any]] | None = None,
    ) -> bool:
        """Make both files hold exactly the epochs of the checkpoint a run resumes from.

        A kill or Ctrl-C anywhere in an epoch's save (between ``last.pt`` and the history
        lines, between the two files, inside an append) leaves the files out of step with
        ``last.pt``. ``records`` (the checkpoint's ``extra["history"]``, every completed
        epoch's :meth:`EpochRecord.to_dict`) is the source of truth: each file whose
        content differs from what :meth:`append` would have written for them is rewritten
        atomically. Without ``records`` (checkpoints of older versions) the JSONL lines up
        to ``epoch`` are kept, a torn last line dropped and a missing line of ``epoch``
        restored from ``last_record``; the CSV is then regenerated from them.

        Args:
            epoch: Completed epochs of the checkpoint being resumed.
            last_record: That checkpoint's ``extra["last_record"]`` (older checkpoints).
            records: That checkpoint's ``extra["history"]``.

        Returns:
            Whether a file was rewritten.

        Raises:
            OSError: If a file cannot be rewritten (read-only folder, full disk); the
                message names it. The next resume repairs it the same way.
        """
        if records is not None:
            kept = [dict(r) for r in records if int(r.get("epoch", 0)) <= epoch]
        else:
            kept = []
            if self.jsonl_path.is_file():
                kept = [r for r in read_history(self.jsonl_path) if int(r.get("epoch", 0)) <= epoch]
            have = {int(r.get("epoch", 0)) for r in kept}
            if (
                epoch > 0
                and epoch not in have
                and last_record
                and last_record.get("epoch") == epoch
            ):
                kept.append(dict(last_record))
        rows = [EpochRecord.from_dict(r).to_row() for r in kept]
        header = list(rows[0]) if rows else []
        table: list[list[Any]] = [header, *([row.get(k) for k in header] for row in rows)]
        expected = {
            self.jsonl_path: "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept),
            self.csv_path: _csv_lines(table if rows else []),
        }
        rewritten: list[str] = []
        for path, text in expected.items():
            if _read_bytes(path) == text.encode("utf-8") or (not text and not path.exists()):
                continue
            self.directory.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(path, text)
            rewritten.append(path.name)
        if rewritten:
            logger.warning(
                "%s: %s rewritten from the checkpoint of epoch %d (%d epoch record%s); an "
                "interrupted save had left %s out of step",
                self.directory,
                " and ".join(rewritten),
                epoch,
                len(kept),
                "" if len(kept) == 1 else "s",
                "it" if len(rewritten) == 1 else "them",
            )
        return bool(rewritten)


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _parse_csv_value(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


_INT_FIELDS = ("skipped_steps", "skipped_samples")
_NUMBER_FIELDS = (
    "train_loss",
    "val_loss",
    "val_miou",
    "val_pixel_accuracy",
    "val_mean_f1",
    "epoch_time_s",
    "images_per_s",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _expected(key: str, value: Any, empty: str) -> str | None:
    """What a known history field must hold, when ``value`` does not; else ``None``.

    Fields a reader does not know (a user's additions) are not checked.
    """
    if key == "epoch":
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if value is None:  # e.g. a column of the CSV header that a later record lacks
        return None
    if key in _INT_FIELDS:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"an integer or {empty}"
    if key in _NUMBER_FIELDS or key.startswith(("val_iou/", "lr/")):
        return None if _is_number(value) else f"a number or {empty}"
    if key == "is_best":
        return None if isinstance(value, bool) else f"True, False or {empty}"
    if key == "val_iou":
        ok = isinstance(value, dict) and all(v is None or _is_number(v) for v in value.values())
        return None if ok else "an object of class name -> number or null"
    if key == "lrs":
        values = value.values() if isinstance(value, dict) else value
        ok = isinstance(value, (dict, list)) and all(_is_number(v) for v in values)
        return None if ok else "an object of group name -> number"
    return None


def _check_row(file: Path, lineno: int, row: Mapping[str, Any], what: str) -> None:
    """Refuse a record whose known fields hold values of the wrong type (file, line, name)."""
    for key, value in row.items():
        expected = _expected(key, value, "an empty cell" if what == "column" else "null")
        if expected is not None:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise HistoryError(
                f"{file}:{lineno}: {what} {key!r}: expected {expected}, got {shown}; fix or "
                "delete that line"
            )


def read_history(path: PathLike) -> list[dict[str, Any]]:
    """Read ``history.jsonl`` (nested records) or ``history.csv`` (flat rows).

    A torn last line (no final newline) is dropped with a warning; any other malformed
    line is an error, as is a known field holding a value of the wrong type (e.g. a
    non-numeric ``train_loss``); fields the reader does not know are returned unchecked.

    Args:
        path: A ``.jsonl`` or ``.csv`` file written by :class:`HistoryWriter`, or the
            folder holding them (then ``history.jsonl`` is read).

    Returns:
        One dict per epoch, in file order (CSV values converted back to numbers, bools and
        ``None``).

    Raises:
        FileNotFoundError: If the file does not exist.
        HistoryError: If a line other than a torn last one cannot be parsed, or a known
            field holds a value of the wrong type (a ``ValueError``; the message names the
            file, the line and the column or field).

    Example:
        >>> rows = read_history("runs/exp1/history.jsonl")  # doctest: +SKIP
        >>> max(r["val_miou"] for r in rows)  # doctest: +SKIP
    """
    file = Path(path)
    if file.is_dir():
        file = file / "history.jsonl"
    if not file.is_file():
        raise FileNotFoundError(
            f"history file {file} does not exist; pass the history.jsonl or history.csv a "
            "training run wrote, or its run folder"
        )
    text = file.read_text(encoding="utf-8")
    lines = text.split("\n")
    torn = lines.pop() if lines else ""
    if torn:
        logger.warning("%s: ignoring an incomplete last line (interrupted write)", file)
    rows: list[dict[str, Any]] = []
    if file.suffix == ".csv":
        header, *body = list(csv.reader([line for line in lines if line.strip()])) or [[]]
        for lineno, values in enumerate(body, start=2):
            if len(values) != len(header):
                raise HistoryError(
                    f"{file}:{lineno}: expected {len(header)} comma-separated values, "
                    f"got {len(values)}; fix or delete that line"
                )
            row = {k: _parse_csv_value(v) for k, v in zip(header, values, strict=True)}
            _check_row(file, lineno, row, "column")
            rows.append(row)
        return rows
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise HistoryError(
                f"{file}:{lineno}: expected one JSON object, got {line[:60]!r}; fix or delete "
                "that line"
            )
        _check_row(file, lineno, value, "field")
        rows.append(value)
    return rows


def stored_records(rows: Any, source: object) -> list[EpochRecord] | None:
    """The epoch records of a checkpoint's ``extra["history"]`` (``None`` if it has none).

    Raises:
        CheckpointError: If a row is not an epoch record (naming ``source``).
    """
    if not isinstance(rows, list):  # older checkpoints have none
        return None
    try:
        return [EpochRecord.from_dict(row) for row in rows]
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{source}: field 'extra.history' holds a row that is not an epoch record "
            f"({exc}); the file is damaged or not from suimseg"
        ) from None
