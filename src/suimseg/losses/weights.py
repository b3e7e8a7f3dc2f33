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

    Raw weights ``r_c`` (``n_c`` pixels of class ``c``, ``T = sum n``, ``f_c = n_c / T``):
    ``"inverse_sqrt"`` (the design's) ``sqrt(T / (C n_c))``; ``"inverse"`` ``T / (C n_c)``;
    ``"median_frequency"`` ``median(f) / f_c`` (equals ``"inverse"`` after normalising, with
    global counts); ``"enet"`` ``1 / ln(1.02 + f_c)``. Then ``w_c = r_c / mean(r_k, n_k > 0)``.
    A class with no pixels gets the largest raw weight of the seen classes (``"enet"``: its
    bound ``1 / ln 1.02``) and is left out of the mean. See ``docs/losses.md``.

    Args:
        pixel_counts: Per-class pixel counts ``(C,)`` (sequence, NumPy array or tensor),
            finite, ``>= 0``, with a positive sum.
        method: One of ``"inverse_sqrt"``, ``"inverse"``, ``"median_frequency"``, ``"enet"``.

    Returns:
        A float32 CPU tensor ``(C,)`` of finite, positive weights.

    Raises:
        ConfigError: For an unknown ``method`` or invalid counts.

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
