"""Loading and converting the images the predictor accepts.

Files are read with the library's one rule set (:mod:`suimseg.data.readers`): RGB as in
the dataset, a pixel limit against decompression bombs, and EXIF orientation applied
everywhere (dataset, predictor, evaluation), so images, masks and predictions stay aligned.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from suimseg.data.readers import DEFAULT_MAX_PIXELS, read_image
from suimseg.errors import ConfigError

__all__ = ["ImageInput", "as_image_list", "load_image", "to_float_image", "to_image_tensor"]

#: One image in any form the predictor accepts: a file path, a PIL image, an array
#: ``(H, W, 3)`` / ``(H, W)`` (uint8, or float in ``[0, 1]``), or a tensor ``(3, H, W)`` /
#: ``(N, 3, H, W)`` (uint8, or float in ``[0, 1]``; *not* ImageNet-normalised).
ImageInput: TypeAlias = str | os.PathLike[str] | Image.Image | np.ndarray[Any, Any] | Tensor


def load_image(
    path: str | os.PathLike[str],
    *,
    exif_transpose: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Read an image file as an upright RGB PIL image (see the module docstring).

    Args:
        path: Any file Pillow can read.
        exif_transpose: Apply the EXIF orientation (the documented policy).
        max_pixels: Refuse images above this many pixels (checked before decoding).

    Raises:
        InputNotFoundError: If ``path`` does not exist (a ``FileNotFoundError``).
        DatasetError: If the file cannot be decoded as an image or is too large.

    Example:
        >>> img = load_image("photo.jpg")  # doctest: +SKIP
    """
    return read_image(path, exif_transpose=exif_transpose, max_pixels=max_pixels)


def _check_unit_range(t: Tensor, what: str) -> None:
    lo, hi = torch.aminmax(t.detach())
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
        raise ConfigError(f"{what}: expected finite values, got NaN or inf")
    if float(lo) < 0.0 or float(hi) > 1.0:
        raise ConfigError(
            f"{what}: expected float values in [0, 1] (or uint8 in [0, 255]), got the range "
            f"[{float(lo):.3g}, {float(hi):.3g}]; an ImageNet-normalised tensor must be "
            "denormalised first (suimseg.data.denormalize)"
        )


def to_image_tensor(
    image: Image.Image | np.ndarray[Any, Any] | Tensor, *, name: str = "image"
) -> Tensor:
    """Convert one in-memory image to a ``(3, H, W)`` tensor on its device (CPU for PIL/numpy).

    uint8 stays uint8 (the predictor resizes in uint8, like the dataset); floats become
    float32, checked to lie in ``[0, 1]``. An array gives a view of its memory.

    Args:
        image: A PIL image (any mode), an array ``(H, W, 3)`` or ``(H, W)``, or a tensor
            ``(3, H, W)``; uint8 or float in ``[0, 1]``; at least 1x1 pixel.
        name: How error messages name the input (e.g. ``"inputs[2]"``).

    Raises:
        ConfigError: For other shapes, an empty image (a height or width of 0), other
            dtypes or out-of-range floats.

    Example:
        >>> to_image_tensor(np.zeros((5, 7, 3), np.uint8)).dtype
        torch.uint8
    """
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ConfigError(
                f"{name}: expected a numpy array of shape (H, W, 3) or (H, W), got {arr.shape}"
            )
        if not (arr.flags.writeable and arr.flags.c_contiguous):
            arr = np.array(arr, order="C", copy=True)
        t = torch.from_numpy(arr).permute(2, 0, 1)
    elif isinstance(image, Image.Image):
        rgb = image.convert("RGB") if image.mode != "RGB" else image
        t = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)
    elif isinstance(image, Tensor):
        t = image
        if t.ndim != 3 or t.shape[0] != 3:
            raise ConfigError(
                f"{name}: expected a tensor of shape (3, H, W) or (N, 3, H, W), got "
                f"{tuple(t.shape)}"
            )
    else:
        raise ConfigError(
            f"{name}: expected a file path, PIL image, numpy array or torch tensor, got "
            f"{type(image).__name__}"
        )
    if 0 in t.shape:
        raise ConfigError(
            f"{name}: expected an image of at least 1x1 pixel, got an empty one of shape "
            f"{tuple(t.shape)} (channels, height, width)"
        )
    if t.dtype == torch.uint8:
        return t
    if t.is_floating_point():
        _check_unit_range(t, name)
        return t.float()
    raise ConfigError(
        f"{name}: expected uint8 values or floats in [0, 1], got dtype {t.dtype}; convert "
        "with .astype(np.uint8) (0-255) or divide by 255"
    )


def to_float_image(
    image: Image.Image | np.ndarray[Any, Any] | Tensor, *, name: str = "image"
) -> Tensor:
    """Convert one in-memory image (as for :func:`to_image_tensor`) to float32 in ``[0, 1]``.

    Raises:
        ConfigError: For other shapes, dtypes or out-of-range floats.

    Example:
        >>> to_float_image(np.zeros((5, 7, 3), np.uint8)).shape
        torch.Size([3, 5, 7])
    """
    t = to_image_tensor(image, name=name)
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t


def as_image_list(inputs: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """Flatten one image or a sequence to a list of images (a 4-D tensor gives N images)."""
    items: list[ImageInput]
    if isinstance(inputs, (str, os.PathLike, Image.Image, np.ndarray, Tensor)):
        items = [inputs]
    elif isinstance(inputs, Sequence):
        items = list(inputs)
    else:
        raise ConfigError(
            "inputs: expected an image (path, PIL image, numpy array, tensor) or a sequence "
            f"of them, got {type(inputs).__name__}"
        )
    out: list[ImageInput] = []
    for item in items:
        if isinstance(item, Tensor) and item.ndim == 4:
            out.extend(item.unbind(0))
        else:
            out.append(item)
    if not out:
        raise ConfigError("inputs: expected at least one image, got an empty sequence")
    return out
