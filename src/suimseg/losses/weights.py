"""Per-class loss weights from a training set's pixel counts.

The weights feed :class:`~suimseg.losses.FocalLoss` (``alpha``) or the Dice ``weight``.
Counting the pixels is one line per batch of label maps::

    counts += torch.bincount(target[target != 255], minlength=num_classes)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeAlias, get_args

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from suimseg.errors import ConfigError

__all__ = ["WEIGHT_METHODS", "WeightMethod", "class_weights"]

#: How :func:`class_weights` turns pixel counts into weights.
WeightMethod: TypeAlias = Literal["inverse_sqrt", "inverse", "median_frequency", "enet"]
#: The valid values of :data:`WeightMethod`.
WEIGHT_METHODS: tuple[str, ...] = get_args(WeightMethod)

#: ENet's constant: ``w = 1 / ln(ENET_C + freq)``, so weights lie in ``(1/ln 2.02, 1/ln 1.02]``.
ENET_C: float = 1.02


def _as_counts(pixel_counts: Sequence[float] | Tensor | npt.NDArray[np.generic]) -> Tensor:
    if isinstance(pixel_counts, Tensor):
        counts = pixel_counts.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            counts = torch.as_tensor(np.asarray(pixel_counts, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"pixel_counts: expected a 1-D sequence of per-class pixel counts, got "
                f"{pixel_counts!r}"
            ) from exc
    if counts.ndim != 1 or counts.numel() == 0:
        raise ConfigError(
            f"pixel_counts: expected a non-empty 1-D sequence (one count per class), got shape "
            f"{tuple(counts.shape)}"
        )
    if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
        raise ConfigError(
            f"pixel_counts: expected finite counts >= 0, got {counts.tolist()}; count pixels "
            "with torch.bincount(target[target != ignore_index], minlength=C)"
        )
    if float(counts.sum()) <= 0:
        raise ConfigError(
            f"pixel_counts: expected at least one pixel in total, got all zeros {counts.tolist()}"
        )
    return counts


def class_weights(
    pixel_counts: Sequence[float] | Tensor | npt.NDArray[np.generic],
    method: WeightMethod = "inverse_sqrt",
) -> Tensor:
    r"""Per-class weights from per-class pixel counts.

    With ``n_c`` the pixel count of class ``c``, ``T = sum_c n_c``, ``C`` the number of classes
    and ``f_c = n_c / T`` the frequency:

    - ``"inverse_sqrt"`` (the design's): ``r_c = T / (C n_c)``, normalised to mean 1
      (``r_c / mean(r)``), then ``w_c = sqrt(r_c / mean(r))``. Milder than ``"inverse"``.
    - ``"inverse"``: ``w_c = T / (C n_c)`` (scikit-learn's "balanced"; 1 for every class when
      the classes are balanced).
    - ``"median_frequency"`` (Eigen & Fergus, 2015): ``w_c = median(f) / f_c``, the median
      taken over classes that have pixels. Eigen & Fergus count ``f_c`` over the images where
      ``c`` appears; with only global counts, the global frequency is used.
    - ``"enet"`` (Paszke et al., 2016): ``w_c = 1 / ln(1.02 + f_c)``, bounded in
      ``(1.42, 50.5]``.

    Classes with zero pixels (absent from the training set) get a finite weight: the largest
    weight among the classes that have pixels (for ``"enet"``, the formula's own bound
    ``1 / ln 1.02 ~ 50.5``), i.e. they are treated as at least as rare as the rarest seen class.
    For ``"inverse_sqrt"`` this substitution happens before the normalisation to mean 1.

    Args:
        pixel_counts: Non-negative per-class pixel counts (sequence, NumPy array or tensor),
            with at least one pixel in total.
        method: One of ``"inverse_sqrt"``, ``"inverse"``, ``"median_frequency"``, ``"enet"``.

    Returns:
        A float32 CPU tensor of shape ``(C,)`` with finite, positive weights.

    Raises:
        ConfigError: For an unknown ``method``, or counts that are not a non-empty 1-D
            sequence of finite numbers ``>= 0`` with a positive sum.

    Shape:
        - pixel_counts: ``(C,)``
        - output: ``(C,)`` float32

    Example:
        >>> class_weights([300, 100], method="inverse")
        tensor([0.6667, 2.0000])
        >>> class_weights([300, 100])  # inverse_sqrt: sqrt([0.5, 1.5])
        tensor([0.7071, 1.2247])
    """
    if method not in WEIGHT_METHODS:
        raise ConfigError(
            f"method: expected one of {', '.join(repr(m) for m in WEIGHT_METHODS)}, got {method!r}"
        )
    counts = _as_counts(pixel_counts)
    num_classes = counts.numel()
    total = counts.sum()
    seen = counts > 0
    freq = counts / total

    if method == "enet":
        weights = 1.0 / torch.log(ENET_C + freq)
        return weights.to(torch.float32)

    safe = torch.where(seen, counts, 1.0)
    if method == "median_frequency":
        # torch.median returns the lower middle value for even counts; use the true median.
        median = float(np.median(freq[seen].numpy()))
        raw = median / torch.where(seen, freq, 1.0)
    else:  # "inverse" and "inverse_sqrt"
        raw = total / (num_classes * safe)
    raw = torch.where(seen, raw, raw[seen].max())
    if method == "inverse_sqrt":
        raw = torch.sqrt(raw / raw.mean())
    return raw.to(torch.float32)
