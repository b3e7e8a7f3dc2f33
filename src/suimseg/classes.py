"""The SUIM class table and the palette encode/decode rules (``id = 4R + 2G + B``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from suimseg.errors import ConfigError

__all__ = [
    "CLASS_CODES",
    "CLASS_NAMES",
    "IGNORE_COLOR",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "SUIM_CLASSES",
    "SUIMClass",
    "format_class_table",
    "index_to_rgb",
    "rgb_to_index",
    "rgb_to_index_u8",
]


@dataclass(frozen=True)
class SUIMClass:
    """One row of the SUIM class table.

    Attributes:
        index: Class id used in label maps (``4*R + 2*G + B`` of the binarised colour).
        code: The two-letter code used by the SUIM authors (``"BW"``, ``"HD"``, ...).
        name: A human-readable name.
        rgb: The palette colour as an ``(R, G, B)`` tuple of 0/255 values.
    """

    index: int
    code: str
    name: str
    rgb: tuple[int, int, int]


#: The 8 SUIM classes in the official bit order (index = 4R + 2G + B).
SUIM_CLASSES: tuple[SUIMClass, ...] = (
    SUIMClass(0, "BW", "background / waterbody", (0, 0, 0)),
    SUIMClass(1, "HD", "human divers", (0, 0, 255)),
    SUIMClass(2, "PF", "aquatic plants and sea-grass", (0, 255, 0)),
    SUIMClass(3, "WR", "wrecks and ruins", (0, 255, 255)),
    SUIMClass(4, "RO", "robots and instruments", (255, 0, 0)),
    SUIMClass(5, "RI", "reefs and invertebrates", (255, 0, 255)),
    SUIMClass(6, "FV", "fish and vertebrates", (255, 255, 0)),
    SUIMClass(7, "SR", "sea-floor and rocks", (255, 255, 255)),
)

NUM_CLASSES: int = len(SUIM_CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in SUIM_CLASSES)
CLASS_CODES: tuple[str, ...] = tuple(c.code for c in SUIM_CLASSES)

#: Label value meaning "don't care": excluded from losses and metrics.
IGNORE_INDEX: int = 255
#: Colour used by :func:`index_to_rgb` for ``IGNORE_INDEX`` (and any value outside the table).
IGNORE_COLOR: tuple[int, int, int] = (128, 128, 128)

_PALETTE = np.array([c.rgb for c in SUIM_CLASSES], dtype=np.uint8)


def _pil_to_index_u8(img: Image.Image) -> npt.NDArray[np.uint8]:
    """Decode a PIL mask (palette images through their palette, without an RGB copy)."""
    if img.mode == "P":
        palette = img.getpalette() or []
        entries = np.zeros((256, 3), dtype=np.uint8)
        pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
        entries[: len(pal)] = pal
        lut = _bits_to_index_u8(entries[np.newaxis])[0]
        out: npt.NDArray[np.uint8] = lut[np.asarray(img)]
        return out
    if img.mode not in ("RGB", "RGBA", "RGBX"):
        raise ConfigError(
            f"rgb_to_index: expected an RGB mask image, got PIL mode {img.mode!r}; "
            "a single-channel mask has no SUIM colour rule (convert it to a label map "
            "yourself, or save it in the SUIM RGB palette)."
        )
    return _bits_to_index_u8(np.asarray(img))


def _as_hwc_uint8(mask: Any) -> npt.NDArray[np.uint8]:
    if isinstance(mask, torch.Tensor):
        t = mask.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (3, 4) and t.shape[-1] not in (3, 4):
            t = t[:3].permute(1, 2, 0)
        if t.is_floating_point():
            # Float tensors are taken as [0, 1] images (torchvision's convention).
            t = (t.clamp(0, 1) * 255).round()
        mask = t.to(torch.uint8).numpy()
    arr = np.asarray(mask)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ConfigError(
            "rgb_to_index: expected an RGB mask of shape (H, W, 3) (or (3, H, W) for a tensor), "
            f"got shape {tuple(arr.shape)}; a grayscale mask has no SUIM colour rule."
        )
    if arr.dtype != np.uint8:
        if arr.dtype == np.bool_:
            raise ConfigError(
                "rgb_to_index: expected uint8 or float RGB values, got a boolean array"
            )
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(np.rint(arr * 255.0), 0, 255)
        else:
            arr = np.clip(arr, 0, 255)
        arr = arr.astype(np.uint8)
    return arr


def _bits_to_index_u8(arr: npt.NDArray[np.uint8], *, bgr: bool = False) -> npt.NDArray[np.uint8]:
    # ``x >> 7`` is 1 exactly when x >= 128; uint8 maths keeps this ~10x faster than int64.
    bits = arr[..., :3] >> 7
    r, b = (2, 0) if bgr else (0, 2)
    out = (bits[..., r] << 2) | (bits[..., 1] << 1) | bits[..., b]
    return out.astype(np.uint8, copy=False)


def rgb_to_index_u8(mask: Any) -> npt.NDArray[np.uint8]:
    """:func:`rgb_to_index` returning a compact uint8 label map ``(H, W)``.

    Example:
        >>> rgb_to_index_u8(np.array([[[0, 200, 90]]], dtype=np.uint8)).tolist()
        [[2]]
    """
    if isinstance(mask, Image.Image):
        return _pil_to_index_u8(mask)
    return _bits_to_index_u8(_as_hwc_uint8(mask))


def rgb_to_index(mask: Any) -> npt.NDArray[np.int64]:
    """Decode an RGB SUIM mask to a label map.

    Each channel is binarised at ``>= 128`` and the class id is ``4*R + 2*G + B``, so noisy
    or anti-aliased colours (common in the real masks) decode to the nearest palette
    corner; every colour maps to a class id in ``[0, 8)``.

    Args:
        mask: A PIL image (RGB/RGBA/P; a palette image is decoded through its palette),
            a numpy array ``(H, W, 3|4)`` of uint8 (or floats in ``[0, 1]``), or a torch
            tensor ``(H, W, 3)`` or ``(3, H, W)``.

    Returns:
        An int64 array ``(H, W)`` of class ids.

    Raises:
        ConfigError: If the mask is not a 3- or 4-channel image.

    Example:
        >>> import numpy as np
        >>> rgb_to_index(np.array([[[250, 3, 130]]], dtype=np.uint8)).tolist()
        [[5]]
    """
    return rgb_to_index_u8(mask).astype(np.int64)


def index_to_rgb(
    labels: Any, *, ignore_color: tuple[int, int, int] = IGNORE_COLOR
) -> npt.NDArray[np.uint8]:
    """Encode a label map in the SUIM RGB palette.

    Args:
        labels: An integer array or tensor ``(H, W)`` of class ids.
        ignore_color: Colour drawn for :data:`IGNORE_INDEX` and any value outside
            ``[0, 8)``. Defaults to mid-grey ``(128, 128, 128)``, which is not a palette colour.

    Returns:
        A uint8 array ``(H, W, 3)``.

    Example:
        >>> index_to_rgb(np.array([[1, 255]])).tolist()
        [[[0, 0, 255], [128, 128, 128]]]
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ConfigError(
            f"index_to_rgb: expected a label map of shape (H, W), got shape {arr.shape}"
        )
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ConfigError(f"index_to_rgb: expected an integer label map, got dtype {arr.dtype}")
    if arr.dtype in (np.uint8, np.bool_):
        # One lookup in a 256-entry table: no int64 copy of the map (a 48-megapixel label
        # map is 384 MB as int64, 48 MB as uint8).
        lut = np.empty((256, 3), dtype=np.uint8)
        lut[:] = ignore_color
        lut[:NUM_CLASSES] = _PALETTE
        return lut[arr.view(np.uint8)]
    arr = arr.astype(np.int64)
    lut = np.empty((NUM_CLASSES + 1, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = _PALETTE
    lut[NUM_CLASSES] = ignore_color
    idx = np.where((arr >= 0) & (arr < NUM_CLASSES), arr, NUM_CLASSES)
    out: npt.NDArray[np.uint8] = lut[idx]
    return out


def format_class_table() -> str:
    """Return the SUIM class table as aligned plain text (used by ``suimseg info``)."""
    lines = [f"{'id':>2}  {'code':<4}  {'RGB':<15}  name"]
    for c in SUIM_CLASSES:
        rgb = "({:>3}, {:>3}, {:>3})".format(*c.rgb)
        lines.append(f"{c.index:>2}  {c.code:<4}  {rgb:<15}  {c.name}")
    return "\n".join(lines)
