"""suimseg's dataset-level mIoU as a ``torchmetrics.Metric``.

:class:`SUIMJaccardIndex` keeps one ``(C, C)`` confusion matrix as its state (summed across
processes under DDP), and computes from it exactly what :class:`suimseg.metrics.ConfusionMatrix`
computes, so ``self.log("val_miou", metric)`` in a LightningModule logs the figure the
suimseg trainer and ``suimseg evaluate`` report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from suimseg.classes import IGNORE_INDEX
from suimseg.errors import ConfigError
from suimseg.metrics import ConfusionMatrix, SegmentationMetrics

__all__ = ["SUIMJaccardIndex"]

Average = Literal["macro", "none"]


class SUIMJaccardIndex(Metric):
    """Dataset-level mean IoU (or per-class IoU) over a confusion-matrix state.

    Each :meth:`update` adds a batch to a ``(C, C)`` int64 matrix (rows = true class,
    columns = predicted class) on the inputs' device, without a host sync; the state is
    registered with ``dist_reduce_fx="sum"``, so under DDP :meth:`compute` sums every
    process's matrix first and every process gets the figure of the whole dataset.

    The numbers are those of :class:`~suimseg.metrics.SegmentationMetrics`: a class absent
    from both the labels and the predictions has no IoU and is left out of the mean (as in
    ``torchmetrics.classification.MulticlassJaccardIndex(average="macro")``, which gives
    the same mIoU); with ``average="none"`` its entry is NaN (torchmetrics reports 0 there,
    its ``zero_division``). Pixels labelled ``ignore_index`` are skipped. Labels outside
    ``[0, C)`` are skipped and counted, and :meth:`compute` raises
    :class:`~suimseg.errors.ConfigError` if there were any.

    Args:
        num_classes: Number of classes ``C`` (8 for SUIM).
        ignore_index: Label value whose pixels are skipped (255, SUIM's convention), or
            ``None``.
        average: ``"macro"``: :meth:`compute` returns the mIoU, a 0-d float32 tensor;
            ``"none"``: the per-class IoU, a ``(C,)`` float32 tensor (NaN for absent
            classes).
        class_names: ``C`` class names (the SUIM names by default when ``C == 8``), used by
            :meth:`segmentation_metrics`.
        **kwargs: Passed to ``torchmetrics.Metric`` (``sync_on_compute``,
            ``process_group``, ...).

    Shape:
        - ``preds``: logits ``(N, C, H, W)`` float (argmax over dim 1) or labels
          ``(N, H, W)`` int.
        - ``target``: ``(N, H, W)`` int in ``[0, C)`` or ``ignore_index``.

    Example:
        >>> metric = SUIMJaccardIndex(num_classes=3)
        >>> metric.update(torch.tensor([[0, 1, 1, 2]]), torch.tensor([[0, 1, 2, 255]]))
        >>> round(float(metric.compute()), 4)
        0.5
        >>> metric.segmentation_metrics().iou.tolist()
        [1.0, 0.5, 0.0]
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: Tensor
    out_of_range: Tensor
    _scratch: ConfusionMatrix

    def __init__(
        self,
        num_classes: int = 8,
        *,
        ignore_index: int | None = IGNORE_INDEX,
        average: Average = "macro",
        class_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if average not in ("macro", "none"):
            raise ConfigError(f"average: expected 'macro' or 'none', got {average!r}")
        # The scratch matrix validates the arguments now and every batch in update().
        scratch = ConfusionMatrix(num_classes, ignore_index=ignore_index, class_names=class_names)
        object.__setattr__(self, "_scratch", scratch)  # not a submodule: no state_dict entry
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.average: Average = average
        self.class_names = scratch.class_names
        zeros = torch.zeros((num_classes, num_classes), dtype=torch.int64)
        self.add_state("confmat", default=zeros, dist_reduce_fx="sum")
        self.add_state("out_of_range", default=torch.zeros((), dtype=torch.int64),
                       dist_reduce_fx="sum")  # fmt: skip

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch (no device-to-host sync).

        Args:
            preds: Logits ``(N, C, *)`` or an integer label map ``(N, *)``.
            target: Integer labels ``(N, *)``.

        Raises:
            ConfigError: For mismatched shapes, a float target or tensors on two devices
                (the messages of :meth:`suimseg.metrics.ConfusionMatrix.update`).
        """
        scratch = self._scratch
        scratch.reset()
        scratch.update(preds, target)
        self.confmat += scratch.matrix.to(self.confmat.device)
        self.out_of_range += scratch.out_of_range.to(self.out_of_range.device)

    def _metrics(self) -> SegmentationMetrics:
        bad = int(self.out_of_range)
        if bad:
            raise ConfigError(
                f"SUIMJaccardIndex: {bad} pixel(s) had a label outside [0, {self.num_classes}) "
                f"that is not ignore_index={self.ignore_index}, and were not counted. Fix the "
                "labels, num_classes or ignore_index."
            )
        return SegmentationMetrics.from_confusion(
            self.confmat, self.class_names, ignore_index=self.ignore_index
        )

    def compute(self) -> Tensor:
        """The mIoU (``average="macro"``, 0-d) or per-class IoU (``"none"``, ``(C,)``).

        A float32 tensor on the state's device; NaN when nothing was counted.

        Raises:
            ConfigError: If out-of-range labels were seen.
        """
        m = self._metrics()
        value = m.iou if self.average == "none" else torch.tensor(m.miou)
        return value.to(device=self.confmat.device, dtype=torch.float32)

    def segmentation_metrics(self) -> SegmentationMetrics:
        """Every suimseg metric (per-class IoU and F1, pixel accuracy...) of the state.

        Synchronised across processes like :meth:`compute` (every process must call it).

        Raises:
            ConfigError: If out-of-range labels were seen.
        """
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            return self._metrics()
