"""Evaluate a :class:`~suimseg.inference.Predictor` on labelled data, under two protocols.

:func:`evaluate_predictor` (suimseg's): one 8-class confusion matrix over the whole
dataset at each label's native resolution. :func:`evaluate_suim_paper` (the SUIM paper's):
5 binary classes scored per image at 320x240, *not comparable* with 8-class mIoU. See
``docs/evaluation.md``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from suimseg.classes import IGNORE_INDEX, NUM_CLASSES, SUIM_CLASSES, rgb_to_index
from suimseg.data.dataset import SUIMDataset
from suimseg.data.readers import read_mask_labels
from suimseg.errors import ConfigError
from suimseg.inference._images import ImageInput, load_image
from suimseg.inference.predictor import Predictor
from suimseg.metrics import ConfusionMatrix, SegmentationMetrics

__all__ = [
    "PAPER_CLASS_CODES",
    "PAPER_LABEL",
    "PAPER_SIZE",
    "EvalData",
    "LabelInput",
    "SUIMPaperMetrics",
    "binary_iou",
    "boundary_f_measure",
    "evaluate_predictor",
    "evaluate_suim_paper",
    "iter_labelled",
]

#: A label: an int label map ``(H, W)`` (numpy or torch), or an RGB SUIM mask as a PIL
#: image or a file path (decoded with :func:`~suimseg.classes.rgb_to_index`).
LabelInput: TypeAlias = str | os.PathLike[str] | Image.Image | np.ndarray[Any, Any] | Tensor
#: What the evaluators accept: a :class:`~suimseg.data.SUIMDataset` (its files are read at
#: native resolution, bypassing its transforms) or a sequence of ``(image, label)`` pairs.
EvalData: TypeAlias = SUIMDataset | Sequence[tuple[ImageInput, LabelInput]]

#: The classes the SUIM paper scores, by code.
PAPER_CLASS_CODES: tuple[str, ...] = ("HD", "WR", "RO", "RI", "FV")
#: ``(height, width)`` at which the paper scores (320x240).
PAPER_SIZE: tuple[int, int] = (240, 320)
#: The label every paper-protocol result carries.
PAPER_LABEL = (
    "SUIM-paper protocol: 5 classes (HD, WR, RO, RI, FV), each binary, per-image scores "
    "averaged over the images containing the class, at 320x240. NOT comparable with "
    "suimseg's 8-class dataset-level mIoU."
)


def _labels_array(label: LabelInput) -> np.ndarray[Any, np.dtype[np.int64]]:
    if isinstance(label, (str, os.PathLike)):
        labels: np.ndarray[Any, np.dtype[np.int64]] = read_mask_labels(label).astype(np.int64)
        return labels
    if isinstance(label, Image.Image):
        return rgb_to_index(label)
    arr = label.detach().cpu().numpy() if isinstance(label, Tensor) else np.asarray(label)
    if arr.ndim == 3:
        return rgb_to_index(arr)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(
            f"label: expected an int label map (H, W) or an RGB mask (H, W, 3), got shape "
            f"{arr.shape} and dtype {arr.dtype}"
        )
    return arr.astype(np.int64)


def iter_labelled(data: EvalData) -> Iterator[tuple[ImageInput, np.ndarray[Any, Any]]]:
    """Yield ``(image, int64 labels (H, W))``, each file read as stored (native size).

    Args:
        data: A :class:`~suimseg.data.SUIMDataset` or ``(image, label)`` pairs.
    """
    if isinstance(data, SUIMDataset):
        for ip, mp in zip(data.image_paths, data.mask_paths, strict=True):
            yield load_image(ip), _labels_array(mp)
        return
    if isinstance(data, (str, os.PathLike)) or not isinstance(data, Sequence):
        raise ConfigError(
            "data: expected a SUIMDataset or a sequence of (image, label) pairs, got "
            f"{type(data).__name__}"
        )
    for i, item in enumerate(data):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ConfigError(f"data[{i}]: expected an (image, label) pair, got {item!r:.80}")
        image, label = item
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        yield image, _labels_array(label)


def _batches(data: EvalData, size: int) -> Iterator[list[tuple[ImageInput, np.ndarray[Any, Any]]]]:
    pairs = iter_labelled(data)
    while batch := list(itertools.islice(pairs, size)):
        yield batch


def evaluate_predictor(
    predictor: Predictor,
    data: EvalData,
    *,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
    class_names: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SegmentationMetrics:
    """Dataset-level 8-class metrics of a predictor at each label's native resolution.

    Probabilities are resized bilinearly to the *mask's* size before the ``argmax``; one
    confusion matrix is accumulated over all pixels of all images.

    Args:
        predictor: The predictor (plain, TTA, ensemble or tiled).
        data: A :class:`~suimseg.data.SUIMDataset` or ``(image, label)`` pairs.
        num_classes: Classes in the confusion matrix.
        ignore_index: Label value that is not scored.
        class_names: Names for the report (SUIM names by default for 8 classes).
        progress: Called with the number of images done after each batch.

    Raises:
        ConfigError: If ``data`` is empty or malformed.

    Example:
        >>> ds = SUIMDataset(root, "test")  # doctest: +SKIP
        >>> plain = evaluate_predictor(Predictor(model), ds)  # doctest: +SKIP
        >>> tta = evaluate_predictor(Predictor(model, tta=True), ds)  # doctest: +SKIP
        >>> print(format_gain_report(plain, tta))  # doctest: +SKIP
    """
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, class_names=class_names)
    done = 0
    for batch in _batches(data, predictor.batch_size):
        images = [im for im, _ in batch]
        sizes = [(int(lab.shape[0]), int(lab.shape[1])) for _, lab in batch]
        for pred, (_, lab) in zip(
            predictor.predict(images, output_sizes=sizes), batch, strict=True
        ):
            cm.update(pred.labels.unsqueeze(0), torch.from_numpy(lab).unsqueeze(0))
        done += len(batch)
        if progress is not None:
            progress(done)
    if done == 0:
        raise ConfigError("data: expected at least one (image, label) pair, got none")
    return cm.compute()


# ---------------------------------------------------------------------- paper protocol
def _as_bool_image(x: Tensor) -> Tensor:
    return x.to(torch.bool).reshape(1, 1, *x.shape[-2:]).float()


def _boundary(mask: Tensor) -> Tensor:
    """Pixels of ``mask`` with an 8-neighbour outside it (the image edge is no boundary)."""
    m = _as_bool_image(mask)
    outside = F.max_pool2d(1.0 - m, kernel_size=3, stride=1, padding=1)
    return ((m > 0) & (outside > 0))[0, 0]


def _dilate(mask: Tensor, radius: int) -> Tensor:
    if radius <= 0:
        return mask.to(torch.bool)
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()[None, None]
    out = F.conv2d(_as_bool_image(mask), disk, padding=radius)
    return (out > 0)[0, 0]


def binary_iou(pred: Tensor, target: Tensor) -> float:
    """IoU of two binary masks ``(H, W)``; 1.0 when both are empty.

    Example:
        >>> binary_iou(torch.tensor([[1, 1, 0]]), torch.tensor([[1, 0, 0]]))
        0.5
    """
    p, t = pred.to(torch.bool), target.to(torch.bool)
    union = int((p | t).sum())
    return 1.0 if union == 0 else int((p & t).sum()) / union


def boundary_f_measure(pred: Tensor, target: Tensor, *, tolerance: int = 4) -> float:
    """Contour F-measure of two binary masks ``(H, W)`` (DAVIS-style), in ``[0, 1]``.

    Boundary pixels (an 8-neighbour outside the mask) match within ``tolerance`` pixels
    (Euclidean disk); F is the harmonic mean of precision and recall. Both boundaries empty
    gives 1.0, exactly one empty 0.0. The default 4 is DAVIS's 0.008 of the diagonal at
    320x240.

    Example:
        >>> m = torch.zeros(20, 20, dtype=torch.bool); m[5:15, 5:15] = True
        >>> boundary_f_measure(m, m)
        1.0
    """
    if pred.shape != target.shape or pred.ndim != 2:
        raise ConfigError(
            f"boundary_f_measure: expected two (H, W) masks of one shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ConfigError(f"tolerance: expected an int >= 0 (pixels), got {tolerance!r}")
    pb, tb = _boundary(pred), _boundary(target)
    n_p, n_t = int(pb.sum()), int(tb.sum())
    if n_p == 0 and n_t == 0:
        return 1.0
    if n_p == 0 or n_t == 0:
        return 0.0
    precision = int((pb & _dilate(tb, tolerance)).sum()) / n_p
    recall = int((tb & _dilate(pb, tolerance)).sum()) / n_t
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


@dataclass(frozen=True)
class SUIMPaperMetrics:
    """Scores under the SUIM paper's protocol (see :data:`PAPER_LABEL`).

    Per-class values average the images whose label contains the class (NaN if none; left
    out of the means).

    Attributes:
        class_codes: The scored classes (``HD, WR, RO, RI, FV``).
        iou: Region IoU per class code.
        region_f: Region F1 (Dice) per class code.
        boundary_f: Contour F-measure per class code (the paper's "F" column).
        images_with_class: How many images contain each class.
        num_images: Images evaluated.
        size: ``(height, width)`` of scoring.
        boundary_tolerance: Contour match distance in pixels.
        label: The protocol's description (:data:`PAPER_LABEL`).
    """

    class_codes: tuple[str, ...]
    iou: dict[str, float]
    region_f: dict[str, float]
    boundary_f: dict[str, float]
    images_with_class: dict[str, int]
    num_images: int
    size: tuple[int, int]
    boundary_tolerance: int
    label: str = PAPER_LABEL

    @property
    def mean_iou(self) -> float:
        """Mean of the per-class IoUs (classes seen in at least one image)."""
        return _nanmean(list(self.iou.values()))

    @property
    def mean_boundary_f(self) -> float:
        """Mean of the per-class contour F-measures."""
        return _nanmean(list(self.boundary_f.values()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (NaN becomes ``None``)."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        def clean(d: dict[str, float]) -> dict[str, float | None]:
            return {k: num(v) for k, v in d.items()}

        return {
            "protocol": "suim-paper",
            "label": self.label,
            "class_codes": list(self.class_codes),
            "mean_iou": num(self.mean_iou),
            "mean_boundary_f": num(self.mean_boundary_f),
            "iou": clean(self.iou),
            "region_f": clean(self.region_f),
            "boundary_f": clean(self.boundary_f),
            "images_with_class": dict(self.images_with_class),
            "num_images": self.num_images,
            "size": list(self.size),
            "boundary_tolerance": self.boundary_tolerance,
        }

    def format_table(self, *, digits: int = 2) -> str:
        """Plain-text table (in %) headed by the protocol label."""

        def pct(x: float) -> str:
            return "n/a" if math.isnan(x) else f"{100 * x:.{digits}f}"

        lines = [self.label, f"{'class':<6} {'IoU %':>8} {'F(contour) %':>13} {'images':>7}"]
        for c in self.class_codes:
            lines.append(
                f"{c:<6} {pct(self.iou[c]):>8} {pct(self.boundary_f[c]):>13} "
                f"{self.images_with_class[c]:>7}"
            )
        lines.append(
            f"{'mean':<6} {pct(self.mean_iou):>8} {pct(self.mean_boundary_f):>13} "
            f"{self.num_images:>7}"
        )
        return "\n".join(lines)


def evaluate_suim_paper(
    predictor: Predictor,
    data: EvalData,
    *,
    class_codes: Sequence[str] = PAPER_CLASS_CODES,
    size: tuple[int, int] = PAPER_SIZE,
    boundary_tolerance: int = 4,
) -> SUIMPaperMetrics:
    """Score a predictor with the SUIM paper's protocol.

    Labels are resized nearest-neighbour and predictions (``argmax`` over all 8 classes)
    made at ``size``; for each class and each image containing it, ``pred == class`` vs
    ``label == class`` is scored as binary masks (IoU, region F1, contour F), then averaged.

    Args:
        predictor: The predictor.
        data: A :class:`~suimseg.data.SUIMDataset` or ``(image, label)`` pairs.
        class_codes: The classes to score (codes from the SUIM table).
        size: ``(height, width)`` of scoring.
        boundary_tolerance: Contour match distance in pixels.

    Example:
        >>> print(evaluate_suim_paper(predictor, ds).format_table())  # doctest: +SKIP
    """
    by_code = {c.code: c.index for c in SUIM_CLASSES}
    unknown = [c for c in class_codes if c not in by_code]
    if unknown or not class_codes:
        raise ConfigError(
            f"class_codes: expected codes from {list(by_code)}, got {list(class_codes)}"
        )
    h, w = size
    scores: dict[str, dict[str, list[float]]] = {
        c: {"iou": [], "region_f": [], "boundary_f": []} for c in class_codes
    }
    n = 0
    for batch in _batches(data, predictor.batch_size):
        preds = predictor.predict([im for im, _ in batch], output_sizes=[size] * len(batch))
        for pred, (_, lab) in zip(preds, batch, strict=True):
            n += 1
            target = torch.from_numpy(
                np.asarray(
                    Image.fromarray(lab.astype(np.int32)).resize((w, h), Image.Resampling.NEAREST)
                ).astype(np.int64)
            )
            for code in class_codes:
                t = target == by_code[code]
                if not bool(t.any()):
                    continue
                p = pred.labels == by_code[code]
                tp = int((p & t).sum())
                denom = int(p.sum()) + int(t.sum())
                scores[code]["iou"].append(binary_iou(p, t))
                scores[code]["region_f"].append(2 * tp / denom)
                scores[code]["boundary_f"].append(
                    boundary_f_measure(p, t, tolerance=boundary_tolerance)
                )
    if n == 0:
        raise ConfigError("data: expected at least one (image, label) pair, got none")
    codes = tuple(class_codes)
    return SUIMPaperMetrics(
        class_codes=codes,
        iou={c: _nanmean(scores[c]["iou"]) for c in codes},
        region_f={c: _nanmean(scores[c]["region_f"]) for c in codes},
        boundary_f={c: _nanmean(scores[c]["boundary_f"]) for c in codes},
        images_with_class={c: len(scores[c]["iou"]) for c in codes},
        num_images=n,
        size=(h, w),
        boundary_tolerance=boundary_tolerance,
    )
