"""Confusion-matrix segmentation metrics: IoU, F1 (Dice), pixel and class accuracy.

All numbers come from one ``(C, C)`` confusion matrix accumulated over a whole dataset
(rows = true class, columns = predicted class), so the mIoU is *dataset-level*: a class's
IoU is ``TP / (TP + FP + FN)`` summed over every pixel of every image, not an average of
per-image or per-batch IoUs. This is the primary metric of suimseg. It is not comparable
with the SUIM paper's 5-class, per-image, binary protocol (see ``docs/metrics.md``).

**Absent classes.** A class neither labelled nor predicted has NaN IoU/F1 (``0 / 0``) and
is left out of every mean; one predicted but never labelled has IoU 0 and counts. Pixels
labelled ``ignore_index`` are skipped; an ``ignore_index`` that is a class id also takes
that class out of every mean (as torchmetrics' ``MulticlassJaccardIndex`` does).

**No host sync per batch.** :meth:`ConfusionMatrix.update` runs on the inputs' device;
labels outside ``[0, C)`` are tallied there and skipped, and :meth:`ConfusionMatrix.compute`
raises if any were seen (``validate=True`` raises at the batch instead, one sync each).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from torch import Tensor, nn

from suimseg.classes import CLASS_NAMES, IGNORE_INDEX
from suimseg.errors import ConfigError

__all__ = ["ConfusionMatrix", "SegmentationMetrics"]


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _nanmean(t: Tensor) -> float:
    """Mean of the non-NaN entries of ``t``; NaN when every entry is NaN."""
    keep = ~torch.isnan(t)
    if not bool(keep.any()):
        return math.nan
    return float(t[keep].mean())


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` in float64, NaN where ``den == 0``."""
    return torch.where(den > 0, num.double() / den.double(), math.nan)


@dataclass(frozen=True, eq=False)
class SegmentationMetrics:
    """Metrics computed from a confusion matrix (see :meth:`ConfusionMatrix.compute`).

    Per-class tensors are float64 ``(C,)`` in ``[0, 1]``; NaN values (absent classes) are
    left out of the means, and every float is NaN when no pixel was counted.

    Attributes:
        iou: Per-class intersection over union ``TP / (TP + FP + FN)``.
        f1: Per-class F1 score (equal to the Dice coefficient) ``2TP / (2TP + FP + FN)``.
        precision: Per-class ``TP / (TP + FP)``; NaN where the class is never predicted.
        recall: Per-class ``TP / (TP + FN)``; NaN where the class is absent from the labels.
        support: Per-class number of labelled pixels (int64).
        miou: Mean of the non-NaN ``iou`` values (the headline number).
        mean_f1: Mean of the non-NaN ``f1`` values.
        pixel_accuracy: Correct pixels / counted pixels.
        mean_class_accuracy: Mean of ``recall`` over classes present in the labels.
        fw_iou: Frequency-weighted IoU: ``sum(support_c / total * iou_c)``.
        class_names: One name per class.
        confusion: The ``(C, C)`` int64 matrix on the CPU (rows = true, columns = predicted).
    """

    iou: Tensor
    f1: Tensor
    precision: Tensor
    recall: Tensor
    support: Tensor
    miou: float
    mean_f1: float
    pixel_accuracy: float
    mean_class_accuracy: float
    fw_iou: float
    class_names: tuple[str, ...]
    confusion: Tensor

    @classmethod
    def from_confusion(
        cls,
        confusion: Tensor,
        class_names: Sequence[str] | None = None,
        *,
        ignore_index: int | None = None,
    ) -> SegmentationMetrics:
        """Compute every metric from a ``(C, C)`` confusion matrix.

        Args:
            confusion: Square matrix of non-negative counts, rows = true class,
                columns = predicted class.
            class_names: ``C`` names; defaults as in :class:`ConfusionMatrix`.
            ignore_index: A class id in ``[0, C)`` is excluded (NaN per-class values, out
                of every mean; pixels wrongly predicted as it still count as errors in
                ``pixel_accuracy``); ``None`` or e.g. 255 excludes no class.

        Example:
            >>> m = SegmentationMetrics.from_confusion(torch.tensor([[3, 1], [0, 4]]))
            >>> round(m.miou, 4)
            0.775
        """
        if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
            raise ConfigError(
                f"confusion: expected a square (C, C) matrix, got shape {tuple(confusion.shape)}"
            )
        if confusion.is_floating_point() or confusion.is_complex():
            raise ConfigError(f"confusion: expected an integer matrix, got dtype {confusion.dtype}")
        cm = confusion.detach().to("cpu", torch.int64)
        if bool((cm < 0).any()):
            raise ConfigError("confusion: expected non-negative counts, got a negative entry")
        names = _check_class_names(class_names, cm.shape[0])
        tp = cm.diagonal()
        support = cm.sum(dim=1)  # labelled pixels per class (TP + FN)
        predicted = cm.sum(dim=0)  # predicted pixels per class (TP + FP)
        union = support + predicted - tp
        total = int(support.sum())
        iou = _safe_div(tp, union)
        f1 = _safe_div(2 * tp, support + predicted)
        precision = _safe_div(tp, predicted)
        recall = _safe_div(tp, support)
        if ignore_index is not None and 0 <= ignore_index < cm.shape[0]:
            for per_class in (iou, f1, precision, recall):
                per_class[ignore_index] = math.nan
        if total > 0:
            freq = support.to(torch.float64) / total
            present = support > 0  # an ignored class has no support
            fw_iou = float((freq[present] * iou[present]).sum())
            pixel_accuracy = float(tp.sum()) / total
        else:
            fw_iou = math.nan
            pixel_accuracy = math.nan
        return cls(
            iou=iou,
            f1=f1,
            precision=precision,
            recall=recall,
            support=support,
            miou=_nanmean(iou),
            mean_f1=_nanmean(f1),
            pixel_accuracy=pixel_accuracy,
            mean_class_accuracy=_nanmean(recall),
            fw_iou=fw_iou,
            class_names=names,
            confusion=cm,
        )

    @classmethod
    def majority_baseline(
        cls,
        train_counts: Sequence[int] | Tensor | npt.NDArray[np.integer[Any]],
        test_counts: Sequence[int] | Tensor | npt.NDArray[np.integer[Any]],
        class_names: Sequence[str] | None = None,
    ) -> tuple[int, SegmentationMetrics]:
        """The metrics of predicting the training split's most frequent class everywhere.

        The floor a trained model must clear: every test pixel goes to one column of the
        confusion matrix, the class with the most labelled training pixels.

        Args:
            train_counts: Labelled pixels per class on the training split, ``(C,)`` (e.g.
                :meth:`suimseg.data.SUIMDataset.class_pixel_counts`).
            test_counts: Labelled pixels per class on the evaluated split, ``(C,)``.
            class_names: ``C`` names; defaults as in :class:`ConfusionMatrix`.

        Returns:
            ``(class index, metrics)``.

        Raises:
            ConfigError: If the counts are not two non-negative integer vectors of one
                length with at least one training pixel.

        Example:
            >>> k, m = SegmentationMetrics.majority_baseline([10, 90, 0], [5, 3, 2])
            >>> k, round(m.miou, 4)
            (1, 0.1)
        """
        counts = []
        for name, value in (("train_counts", train_counts), ("test_counts", test_counts)):
            t = torch.as_tensor(value)
            if t.ndim != 1 or t.is_floating_point() or t.is_complex() or bool((t < 0).any()):
                raise ConfigError(
                    f"{name}: expected a 1-D vector of non-negative integer pixel counts, got "
                    f"shape {tuple(t.shape)} dtype {t.dtype}"
                )
            counts.append(t.to(torch.int64))
        train, test = counts
        if train.numel() != test.numel() or int(train.sum()) == 0:
            raise ConfigError(
                "train_counts/test_counts: expected one count per class for both splits and at "
                f"least one training pixel, got {train.numel()} and {test.numel()} classes, "
                f"{int(train.sum())} training pixels"
            )
        majority = int(train.argmax())
        confusion = torch.zeros(train.numel(), train.numel(), dtype=torch.int64)
        confusion[:, majority] = test
        return majority, cls.from_confusion(confusion, class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (NaN becomes ``None``; per-class values by class name).

        Example:
            >>> import json
            >>> cm = ConfusionMatrix(2, class_names=["water", "fish"])
            >>> cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
            >>> d = cm.compute().to_dict()
            >>> d["iou"]
            {'water': 0.5, 'fish': 0.0}
            >>> _ = json.dumps(d)
        """

        def per_class(t: Tensor) -> dict[str, float | None]:
            return {
                n: _nan_to_none(float(v)) for n, v in zip(self.class_names, t.tolist(), strict=True)
            }

        return {
            "miou": _nan_to_none(self.miou),
            "mean_f1": _nan_to_none(self.mean_f1),
            "pixel_accuracy": _nan_to_none(self.pixel_accuracy),
            "mean_class_accuracy": _nan_to_none(self.mean_class_accuracy),
            "fw_iou": _nan_to_none(self.fw_iou),
            "iou": per_class(self.iou),
            "f1": per_class(self.f1),
            "precision": per_class(self.precision),
            "recall": per_class(self.recall),
            "support": {
                n: int(v) for n, v in zip(self.class_names, self.support.tolist(), strict=True)
            },
            "class_names": list(self.class_names),
            "confusion": self.confusion.tolist(),
        }

    def format_table(self, *, digits: int = 2) -> str:
        """Return a plain-text table of per-class IoU and F1 (in %, NaN as ``n/a``) and means.

        Example:
            >>> cm = ConfusionMatrix(2, class_names=["water", "fish"])
            >>> cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
            >>> print(cm.compute().format_table())
            class                     IoU %     F1 %
            water                     50.00    66.67
            fish                       0.00     0.00
            ----------------------------------------
            mIoU                      25.00
            mean F1                   33.33
            pixel accuracy            50.00
            mean class accuracy       50.00
            frequency-weighted IoU    50.00
        """

        def pct(x: float) -> str:
            return "n/a" if math.isnan(x) else f"{100.0 * x:.{digits}f}"

        summary = [
            ("mIoU", self.miou),
            ("mean F1", self.mean_f1),
            ("pixel accuracy", self.pixel_accuracy),
            ("mean class accuracy", self.mean_class_accuracy),
            ("frequency-weighted IoU", self.fw_iou),
        ]
        w = max(len("class"), *(len(n) for n in self.class_names), *(len(s) for s, _ in summary))
        num_w = max(len("IoU %"), digits + 5)
        lines = [f"{'class':<{w}}  {'IoU %':>{num_w}}  {'F1 %':>{num_w}}"]
        for name, i, f in zip(self.class_names, self.iou.tolist(), self.f1.tolist(), strict=True):
            lines.append(f"{name:<{w}}  {pct(i):>{num_w}}  {pct(f):>{num_w}}")
        lines.append("-" * (w + 2 * num_w + 4))
        lines.extend(f"{label:<{w}}  {pct(v):>{num_w}}" for label, v in summary)
        return "\n".join(lines)


def _check_class_names(class_names: Sequence[str] | None, num_classes: int) -> tuple[str, ...]:
    if class_names is None:
        if num_classes == len(CLASS_NAMES):
            return CLASS_NAMES
        return tuple(f"class_{i}" for i in range(num_classes))
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
        raise ConfigError(
            f"class_names: expected a sequence of {num_classes} strings, got {class_names!r}"
        )
    names = tuple(class_names)
    if len(names) != num_classes:
        raise ConfigError(
            f"class_names: expected {num_classes} names (one per class), got {len(names)}"
        )
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"class_names: names must be unique, got duplicates {dupes}")
    return names


def _mark_loaded(module: nn.Module, incompatible_keys: Any) -> None:
    """``load_state_dict`` post-hook: loaded counts must survive the next update."""
    module._fresh = False  # type: ignore[assignment]


class ConfusionMatrix(nn.Module):
    """Accumulate a ``(C, C)`` confusion matrix over batches and compute metrics from it.

    Rows are true classes, columns predicted. :meth:`update` (also ``__call__``) is one
    ``scatter_add`` on the inputs' device with no host sync; the matrix moves to that device
    on the first update after construction or :meth:`reset`. The counts are buffers (they
    follow ``.to()`` and round-trip through ``state_dict``); matrices of one setup merge with
    :meth:`merge_state` or ``+=``. A pixel whose target or prediction lies outside ``[0, C)``
    (target not ``ignore_index``) is tallied in ``out_of_range`` and :meth:`compute` raises;
    ``validate=True`` raises in :meth:`update` instead, naming the value (one host sync).

    Args:
        num_classes: Number of classes ``C`` (>= 1).
        ignore_index: Label whose pixels are skipped (255 by default), or ``None``; a class
            id also excludes that class from the metrics.
        class_names: ``C`` unique names (default: the SUIM names for ``C == 8``, else
            ``"class_0"``, ``"class_1"``, ...).
        device: Device of the matrix until the first update (CPU by default).
        validate: Check label values at every update (one device-to-host sync each).

    Attributes:
        matrix: The ``(C, C)`` int64 counts (a buffer).
        out_of_range: A 0-d int64 buffer: pixels skipped for an out-of-range label.

    Shape:
        - ``preds_or_logits``: logits ``(N, C, *)`` float, or a label map ``(N, *)`` int.
        - ``target``: ``(N, *)`` int, values in ``[0, C)`` or ``ignore_index``.

    Example:
        >>> cm = ConfusionMatrix(3)
        >>> logits = torch.randn(2, 3, 8, 8)
        >>> cm.update(logits, logits.argmax(1))
        >>> cm.compute().pixel_accuracy
        1.0
        >>> other = ConfusionMatrix(3)
        >>> other.update(torch.tensor([[0, 1]]), torch.tensor([[0, 2]]))
        >>> cm += other  # merge, e.g. the matrix of another shard
        >>> int(cm.matrix.sum())
        130
    """

    matrix: Tensor
    out_of_range: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int | None = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
        device: torch.device | str | None = None,
        validate: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes: expected a positive int, got {num_classes!r}")
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
        ):
            raise ConfigError(
                f"ignore_index: expected an int or None (no ignored label), got {ignore_index!r}"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = _check_class_names(class_names, num_classes)
        self.validate = bool(validate)
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self.register_buffer("matrix", self._zeros((num_classes, num_classes), self._device))
        self.register_buffer("out_of_range", self._zeros((), self._device))
        self._fresh = True
        self.register_load_state_dict_post_hook(_mark_loaded)  # type: ignore[no-untyped-call]

    @staticmethod
    def _zeros(shape: tuple[int, ...], device: torch.device) -> Tensor:
        return torch.zeros(shape, dtype=torch.int64, device=device)

    def _apply(self, fn: Any, recurse: bool = True) -> ConfusionMatrix:
        # `.to()`, `.cuda()`, ...: remember the new device so that `reset` keeps it.
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        self._device = self.matrix.device
        return self

    def reset(self) -> None:
        """Zero the counts (the matrix returns to the device given at construction or by
        the last ``.to()``)."""
        self.matrix = self._zeros((self.num_classes, self.num_classes), self._device)
        self.out_of_range = self._zeros((), self._device)
        self._fresh = True

    def _labels_from(self, preds_or_logits: Tensor, target: Tensor) -> Tensor:
        p = preds_or_logits
        if p.is_floating_point():
            expected = (target.shape[0], self.num_classes, *target.shape[1:])
            if tuple(p.shape) != expected:
                raise ConfigError(
                    "ConfusionMatrix.update: float predictions are taken as logits (N, C, *); "
                    f"got shape {tuple(p.shape)} for a target of shape {tuple(target.shape)}, "
                    f"so with num_classes={self.num_classes} they must be {expected}. Pass "
                    "logits at the target's size, or an integer label map of its shape."
                )
            return p.detach().argmax(dim=1)
        if p.is_complex():
            raise ConfigError(
                f"ConfusionMatrix.update: expected float logits or an integer label map, got "
                f"dtype {p.dtype}"
            )
        if p.shape != target.shape:
            raise ConfigError(
                f"ConfusionMatrix.update: an integer label map must have the target's shape; "
                f"got predictions of shape {tuple(p.shape)} and target of shape "
                f"{tuple(target.shape)}"
            )
        return p.detach()

    def update(self, preds_or_logits: Tensor, target: Tensor) -> None:
        """Add one batch to the matrix (no device-to-host sync unless ``validate=True``).

        Args:
            preds_or_logits: Float logits ``(N, C, *)`` (reduced with ``argmax`` over dim 1)
                or an integer label map ``(N, *)``, with the target's spatial size.
            target: Integer labels ``(N, *)`` in ``[0, C)`` or ``ignore_index``.

        Raises:
            ConfigError: For a float target, mismatched shapes, or (``validate=True``) labels
                outside ``[0, C)`` other than ``ignore_index`` (nothing is counted then).
        """
        if not isinstance(target, Tensor) or not isinstance(preds_or_logits, Tensor):
            raise ConfigError(
                "ConfusionMatrix.update: expected tensors, got "
                f"{type(preds_or_logits).__name__} and {type(target).__name__}"
            )
        if target.is_floating_point() or target.is_complex():
            raise ConfigError(
                f"ConfusionMatrix.update: target must be an integer label map, got dtype "
                f"{target.dtype}; convert with target.long() if it holds class ids."
            )
        if target.ndim < 1:
            raise ConfigError("ConfusionMatrix.update: target must be (N, *), got a scalar")
        if preds_or_logits.device != target.device:
            raise ConfigError(
                f"ConfusionMatrix.update: predictions on {preds_or_logits.device} but target on "
                f"{target.device}; move them to one device."
            )
        preds = self._labels_from(preds_or_logits, target).reshape(-1).long()
        t = target.detach().reshape(-1).long()
        c = self.num_classes
        counted = (
            t != self.ignore_index
            if self.ignore_index is not None
            else torch.ones_like(t, dtype=torch.bool)
        )
        t_ok = (t >= 0) & (t < c)
        p_ok = (preds >= 0) & (preds < c)
        if self.validate:
            self._raise_on_bad_labels(t, preds, counted & ~t_ok, counted & ~p_ok)
        good = counted & t_ok & p_ok
        # One pass: uncounted pixels go to an overflow bin that is dropped. scatter_add
        # into a fixed-size tensor, unlike bincount, never asks the device for the maximum.
        idx = torch.where(good, t * c + preds, c * c)
        counts = torch.zeros(c * c + 1, dtype=torch.int64, device=t.device)
        counts.scatter_add_(0, idx, torch.ones_like(idx))
        skipped = (counted & ~good).sum()
        if self._fresh:
            self.matrix = self._zeros((c, c), t.device)
            self.out_of_range = self._zeros((), t.device)
            self._fresh = False
        self.matrix += counts[: c * c].reshape(c, c).to(self.matrix.device)
        self.out_of_range += skipped.to(self.out_of_range.device)

    forward = update

    def _raise_on_bad_labels(self, t: Tensor, preds: Tensor, bad_t: Tensor, bad_p: Tensor) -> None:
        c = self.num_classes
        if bool((bad_t | bad_p).any()):  # the one host sync of validate=True
            if bool(bad_t.any()):
                value = int(t[bad_t][0])
                raise ConfigError(
                    f"ConfusionMatrix.update: target holds label {value}, outside [0, {c}) and "
                    f"not ignore_index={self.ignore_index}. Fix the labels, num_classes or "
                    "ignore_index."
                )
            value = int(preds[bad_p][0])
            raise ConfigError(
                f"ConfusionMatrix.update: predictions hold label {value}, outside [0, {c}). "
                "Fix the predictions or num_classes."
            )

    def merge_state(self, other: ConfusionMatrix) -> None:
        """Add the counts of ``other`` (same ``num_classes`` and ``ignore_index``; ``+=`` too).

        Raises:
            ConfigError: If ``other`` is not a :class:`ConfusionMatrix` of the same setup.
        """
        if not isinstance(other, ConfusionMatrix):
            raise ConfigError(f"other: expected a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ConfigError(
                "other: expected a ConfusionMatrix with num_classes="
                f"{self.num_classes} and ignore_index={self.ignore_index}, got num_classes="
                f"{other.num_classes} and ignore_index={other.ignore_index}; only matrices "
                "of the same setup can be merged"
            )
        if other._fresh:
            return
        if self._fresh:
            self.matrix = other.matrix.detach().clone()
            self.out_of_range = other.out_of_range.detach().clone()
            self._fresh = False
            return
        self.matrix += other.matrix.to(self.matrix.device)
        self.out_of_range += other.out_of_range.to(self.out_of_range.device)

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.merge_state(other)
        return self

    def all_reduce(self) -> None:
        """Sum the counts over processes with ``torch.distributed`` (no-op when not initialised).

        Every rank must call it (one collective). With the NCCL backend the matrix must be
        on the GPU (it is after the first update with GPU tensors).
        """
        if dist.is_available() and dist.is_initialized():
            flat = torch.cat([self.matrix.reshape(-1), self.out_of_range.reshape(1)])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            self.matrix.copy_(flat[:-1].reshape(self.matrix.shape))
            self.out_of_range.copy_(flat[-1])

    def compute(self) -> SegmentationMetrics:
        """Compute the metrics of everything accumulated so far.

        Raises:
            ConfigError: If some update met (and skipped) labels outside ``[0, C)``.

        Example:
            >>> cm = ConfusionMatrix(2)
            >>> cm.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]]))
            >>> m = cm.compute()
            >>> [round(v, 3) for v in m.iou.tolist()], round(m.miou, 3)
            ([0.5, 0.5], 0.5)
        """
        skipped = int(self.out_of_range)
        if skipped:
            raise ConfigError(
                f"ConfusionMatrix.compute: {skipped} pixel(s) had a target or predicted label "
                f"outside [0, {self.num_classes}) that is not ignore_index="
                f"{self.ignore_index}; they were not counted. Fix the labels, num_classes or "
                "ignore_index; ConfusionMatrix(..., validate=True) raises at the offending "
                "batch and names the value."
            )
        return SegmentationMetrics.from_confusion(
            self.matrix, self.class_names, ignore_index=self.ignore_index
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())}"
        )
