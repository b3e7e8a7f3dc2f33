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
    r"""Per-class weights from per-class pixel counts, with mean 1 over the present classes.

    With ``n_c`` the pixel count of class ``c``, ``T = sum_c n_c``, ``C`` the number of classes
    and ``f_c = n_c / T`` the frequency, each method computes a raw weight ``r_c``:

    - ``"inverse_sqrt"`` (the design's): ``r_c = sqrt(T / (C n_c))``. Milder than
      ``"inverse"``.
    - ``"inverse"``: ``r_c = T / (C n_c)`` (scikit-learn's "balanced").
    - ``"median_frequency"`` (Eigen & Fergus, 2015): ``r_c = median(f) / f_c``, the median
      taken over classes that have pixels. Eigen & Fergus count ``f_c`` over the images where
      ``c`` appears; with only global counts, the global frequency is used, and after the
      normalisation below the result equals ``"inverse"`` (both are proportional to
      ``1 / n_c``).
    - ``"enet"`` (Paszke et al., 2016): ``r_c = 1 / ln(1.02 + f_c)``.

    The weights are then **normalised after the transform**: ``w_c = r_c / mean_{n_k > 0}
    r_k``, so the mean weight over the classes that have pixels is exactly 1 for every
    method (a weighted loss keeps roughly the scale of the unweighted one, and changing the
    method changes only the balance between classes). Balanced counts give all ones.

    Classes with zero pixels (absent from the training set) get a finite weight: the largest
    raw weight among the classes that have pixels (for ``"enet"``, the formula's own bound
    ``1 / ln 1.02``), i.e. they are treated as at least as rare as the rarest seen class.
    They do not enter the normalising mean.

    Args:
        pixel_counts: Non-negative per-class pixel counts (sequence, NumPy array or tensor),
            with at least one pixel in total.
        method: One of ``"inverse_sqrt"``, ``"inverse"``, ``"median_frequency"``, ``"enet"``.

    Returns:
        A float32 CPU tensor of shape ``(C,)`` with finite, positive weights whose mean over
        the classes with ``n_c > 0`` is 1.

    Raises:
        ConfigError: For an unknown ``method``, or counts that are not a non-empty 1-D
            sequence of finite numbers ``>= 0`` with a positive sum.

    Shape:
        - pixel_counts: ``(C,)``
        - output: ``(C,)`` float32

    Example:
        >>> class_weights([300, 100], method="inverse")  # [2/3, 2] / mean
        tensor([0.5000, 1.5000])
        >>> class_weights([300, 100])  # inverse_sqrt: [1, sqrt 3] / mean = [sqrt 3 - 1, 3 - sqrt 3]
        tensor([0.7321, 1.2679])
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
        raw = 1.0 / torch.log(ENET_C + freq)  # an absent class gets the bound 1 / ln 1.02
    else:
        if method == "median_frequency":
            # torch.median returns the lower middle value for even counts; use the true median.
            median = float(np.median(freq[seen].numpy()))
            raw = median / torch.where(seen, freq, 1.0)
        else:  # "inverse" and "inverse_sqrt"
            raw = total / (num_classes * torch.where(seen, counts, 1.0))
            if method == "inverse_sqrt":
                raw = torch.sqrt(raw)
        raw = torch.where(seen, raw, raw[seen].max())
    return (raw / raw[seen].mean()).to(torch.float32)
