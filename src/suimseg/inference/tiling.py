"""Sliding-window (tiled) inference at native resolution for images larger than a window.

Windows of the model's input size are evenly spaced with at least the requested overlap,
the last one ending at the border (no padding); a side smaller than the window is taken
whole. Window probabilities are blended with per-pixel weights (Gaussian: the centre,
where the network sees more context, counts more; or uniform) and normalised.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, cast, get_args

import torch
from torch import Tensor

from suimseg.errors import ConfigError

__all__ = ["TileWeighting", "sliding_window_probs", "tile_starts", "window_weights"]

TileWeighting = Literal["gaussian", "uniform"]


def tile_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows covering ``[0, length)`` with at least ``overlap``.

    Args:
        length: Image length along one axis (pixels, >= 1).
        window: Window length (>= 1); clipped to ``length``.
        overlap: Minimum overlap between neighbours as a fraction of the window, in
            ``[0, 1)``.

    Returns:
        Sorted, unique offsets; the first is 0 and the last is ``length - window``.

    Example:
        >>> tile_starts(100, 40, 0.25)
        [0, 30, 60]
        >>> tile_starts(30, 40, 0.25)
        [0]
    """
    if length < 1 or window < 1:
        raise ConfigError(f"tile_starts: expected length, window >= 1, got {length}, {window}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap: expected a fraction in [0, 1), got {overlap!r}")
    window = min(window, length)
    if window == length:
        return [0]
    stride = max(1, math.floor(window * (1.0 - overlap)))
    n = math.ceil((length - window) / stride) + 1
    span = length - window
    return sorted({round(i * span / (n - 1)) for i in range(n)})


def window_weights(
    size: tuple[int, int],
    weighting: TileWeighting = "gaussian",
    *,
    sigma_scale: float = 0.125,
    device: torch.device | str | None = None,
) -> Tensor:
    """Per-pixel blending weights of one window.

    Args:
        size: ``(height, width)`` of the window.
        weighting: ``"gaussian"`` (``sigma = sigma_scale * side``, peak 1, floored at
            1e-3 so border pixels still count) or ``"uniform"`` (all ones).
        sigma_scale: Gaussian sigma as a fraction of each side (nnU-Net's 1/8 by default).
        device: Device of the result.

    Returns:
        A float32 tensor ``(height, width)`` with values in ``(0, 1]``.

    Example:
        >>> w = window_weights((5, 5))
        >>> float(w[2, 2]), bool(w[0, 0] < w[2, 2])
        (1.0, True)
    """
    if weighting not in get_args(TileWeighting):
        raise ConfigError(
            f"weighting: expected one of {list(get_args(TileWeighting))}, got {weighting!r}"
        )
    h, w = size
    if weighting == "uniform":
        return torch.ones((h, w), dtype=torch.float32, device=device)

    def axis(n: int) -> Tensor:
        pos = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2.0
        sigma = max(sigma_scale * n, 1e-6)
        return torch.exp(-0.5 * (pos / sigma) ** 2)

    g = axis(h)[:, None] * axis(w)[None, :]
    return (g / g.max()).clamp_min(1e-3)


def sliding_window_probs(
    probs_fn: Callable[[Tensor], Tensor],
    image: Tensor,
    window: tuple[int, int],
    *,
    overlap: float = 0.25,
    weighting: TileWeighting = "gaussian",
    batch_size: int = 4,
) -> Tensor:
    """Blend per-window class probabilities over a whole image.

    Args:
        probs_fn: Maps a batch of windows ``(B, 3, h, w)`` to probabilities
            ``(B, C, h, w)`` (e.g. a softmax over a model's logits, with TTA inside).
        image: One normalised image ``(1, 3, H, W)``.
        window: ``(height, width)`` of a window; each side is clipped to the image.
        overlap: Minimum overlap between neighbouring windows, in ``[0, 1)``.
        weighting: ``"gaussian"`` or ``"uniform"`` (see :func:`window_weights`).
        batch_size: Windows per call of ``probs_fn``.

    Returns:
        Float32 probabilities ``(1, C, H, W)``.

    Example:
        >>> f = lambda x: torch.ones(x.shape[0], 2, *x.shape[-2:]) / 2
        >>> sliding_window_probs(f, torch.zeros(1, 3, 50, 70), (32, 32)).shape
        torch.Size([1, 2, 50, 70])
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ConfigError(
            f"image: expected one image of shape (1, 3, H, W), got {tuple(image.shape)}"
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size: expected a positive int, got {batch_size!r}")
    H, W = int(image.shape[-2]), int(image.shape[-1])
    wh, ww = min(window[0], H), min(window[1], W)
    boxes = [(y, x) for y in tile_starts(H, wh, overlap) for x in tile_starts(W, ww, overlap)]
    weights = window_weights((wh, ww), weighting, device=image.device)
    acc: Tensor | None = None
    norm = torch.zeros((H, W), dtype=torch.float32, device=image.device)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        crops = torch.cat([image[..., y : y + wh, x : x + ww] for y, x in chunk])
        probs = probs_fn(crops).float()
        if acc is None:
            acc = torch.zeros((1, probs.shape[1], H, W), dtype=torch.float32, device=image.device)
        for (y, x), p in zip(chunk, probs, strict=True):
            acc[0, :, y : y + wh, x : x + ww] += p * weights
            norm[y : y + wh, x : x + ww] += weights
    return cast(Tensor, acc) / norm  # boxes is never empty, so acc is set
