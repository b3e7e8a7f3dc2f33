"""Quick looks at samples and predictions as PIL images (no plotting library needed)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageDraw, ImageFont

from suimseg.classes import IGNORE_COLOR, NUM_CLASSES, SUIM_CLASSES, index_to_rgb
from suimseg.errors import ConfigError

__all__ = ["colorize", "legend", "overlay", "side_by_side"]


def _labels(mask: Any) -> npt.NDArray[np.integer[Any]]:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(
            f"mask: expected an integer label map of shape (H, W), got shape {arr.shape} "
            f"and dtype {arr.dtype}; decode RGB masks with rgb_to_index first"
        )
    return arr


def _image_rgb(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim != 3 or t.shape[0] != 3:
            raise ConfigError(f"image: expected a tensor of shape (3, H, W), got {tuple(t.shape)}")
        if t.is_floating_point():
            # [0, 1] floats; a normalised tensor should go through denormalize() first.
            t = (t.clamp(0, 1) * 255).round()
        image = t.to(torch.uint8).permute(1, 2, 0).numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ConfigError(
            "image: expected a PIL image, a uint8 array (H, W, 3) or a tensor (3, H, W), "
            f"got shape {arr.shape} and dtype {arr.dtype}"
        )
    return Image.fromarray(arr)


def colorize(mask: Any, *, ignore_color: tuple[int, int, int] = IGNORE_COLOR) -> Image.Image:
    """Draw an integer label map ``(H, W)`` in the SUIM palette (ignore: ``ignore_color``).

    Example:
        >>> import numpy as np
        >>> colorize(np.array([[0, 6]])).getpixel((1, 0))
        (255, 255, 0)
    """
    return Image.fromarray(index_to_rgb(_labels(mask), ignore_color=ignore_color))


#: Minimum width in pixels of one legend column (fits "PF aquatic plants and sea-grass").
LEGEND_COLUMN_PX = 300


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` px; text under ~14 px runs words together."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def legend(
    classes: Iterable[int] | None = None,
    *,
    width: int = 480,
    row_height: int = 22,
    columns: int = 2,
) -> Image.Image:
    """An RGB strip ``width`` pixels wide listing class colours and names.

    Args:
        classes: Class ids to list (default: all eight).
        width: Width of the strip in pixels.
        row_height: Height of one row; text is ``max(10, row_height - 6)`` pixels high.
        columns: Entries per row.

    Example:
        >>> legend([0, 1], width=200).size
        (200, 22)
    """
    ids = sorted(set(range(NUM_CLASSES) if classes is None else classes))
    if any(not 0 <= c < NUM_CLASSES for c in ids):
        raise ConfigError(f"classes: expected ids in [0, {NUM_CLASSES}), got {ids}")
    if width < 16 or row_height < 8 or columns < 1:
        raise ConfigError(
            f"legend: expected width >= 16, row_height >= 8, columns >= 1, got "
            f"{width}, {row_height}, {columns}"
        )
    rows = max(1, -(-len(ids) // columns))
    strip = Image.new("RGB", (width, rows * row_height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = _font(max(10, row_height - 6))
    col_w = width // columns
    box = row_height - 6
    for k, c in enumerate(ids):
        x, y = (k % columns) * col_w + 3, (k // columns) * row_height + 3
        draw.rectangle([x, y, x + box, y + box], fill=SUIM_CLASSES[c].rgb, outline=(0, 0, 0))
        label = f"{SUIM_CLASSES[c].code}  {SUIM_CLASSES[c].name}"
        draw.text((x + box + 6, y - 1), label, fill=(0, 0, 0), font=font)
    return strip


#: Rows of the image :func:`overlay` blends at a time.
_BLEND_ROWS = 256


def overlay(
    image: Any,
    mask: Any,
    alpha: float = 0.5,
    *,
    show_legend: bool = False,
) -> Image.Image:
    """Blend a label map over an image (ignore and out-of-range labels stay unblended).

    Args:
        image: PIL image, uint8 array ``(H, W, 3)`` or tensor ``(3, H, W)`` (uint8 or
            ``[0, 1]`` float; :func:`~suimseg.data.transforms.denormalize` a normalised one).
        mask: Integer label map, resized nearest-neighbour to the image if needed.
        alpha: Opacity of the colours, in ``[0, 1]``.
        show_legend: Append a strip naming the classes present (at least
            :data:`LEGEND_COLUMN_PX` wide).

    Returns:
        An RGB PIL image.

    Example:
        >>> import numpy as np
        >>> out = overlay(np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 7), alpha=1.0)
        >>> out.getpixel((0, 0))
        (255, 255, 255)
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha: expected a value in [0, 1], got {alpha!r}")
    base = _image_rgb(image)
    labels = _labels(mask)
    if labels.shape != (base.height, base.width):
        resized = Image.fromarray(labels.astype(np.int32)).resize(
            base.size, Image.Resampling.NEAREST
        )
        labels = np.asarray(resized)
    img = np.asarray(base)
    blend = np.empty_like(img)
    # Blended in float32 in bands of rows: the same pixels as one pass, without four
    # float32 (H, W, 3) arrays at once (about 2 GiB for a 48-megapixel photo).
    for r in range(0, img.shape[0], _BLEND_ROWS):
        lab, band = labels[r : r + _BLEND_ROWS], img[r : r + _BLEND_ROWS].astype(np.float32)
        valid = ((lab >= 0) & (lab < NUM_CLASSES))[..., None]
        mixed = (1 - alpha) * band + alpha * index_to_rgb(lab).astype(np.float32)
        blend[r : r + _BLEND_ROWS] = np.clip(np.rint(np.where(valid, mixed, band)), 0, 255)
    out = Image.fromarray(blend)
    if not show_legend:
        return out
    present = np.unique(labels[(labels >= 0) & (labels < NUM_CLASSES)]).tolist()
    # One legend column per LEGEND_COLUMN_PX (at most 4), so class names do not overlap.
    width = max(out.width, LEGEND_COLUMN_PX)
    strip = legend(present, width=width, columns=max(1, min(4, width // LEGEND_COLUMN_PX)))
    combined = Image.new("RGB", (width, out.height + strip.height), (255, 255, 255))
    combined.paste(out, (0, 0))
    combined.paste(strip, (0, out.height))
    return combined


def _panel(
    picture: Image.Image, size: tuple[int, int], title: str, title_px: int, *, labels: bool
) -> Image.Image:
    # Label pictures are scaled nearest-neighbour so that no blended colour appears.
    resample = Image.Resampling.NEAREST if labels else Image.Resampling.BILINEAR
    body = picture.resize(size, resample)
    out = Image.new("RGB", (size[0], size[1] + title_px), (255, 255, 255))
    ImageDraw.Draw(out).text((4, 3), title, fill=(0, 0, 0), font=_font(title_px - 8))
    out.paste(body, (0, title_px))
    return out


def side_by_side(
    image: Any,
    target: Any,
    prediction: Any,
    *,
    min_size: int = 256,
    titles: tuple[str, str, str] = ("image", "ground truth", "prediction"),
) -> Image.Image:
    """Image | ground truth | prediction in one RGB picture, with a legend of the classes shown.

    Args:
        image: As for :func:`overlay`.
        target: Integer label map of the ground truth (any size).
        prediction: Integer label map of the prediction (any size).
        min_size: Shorter side of each panel (scaled keeping the aspect ratio), in pixels.
        titles: The three panel titles.

    Example:
        >>> import numpy as np
        >>> pic = side_by_side(np.zeros((60, 80, 3), np.uint8), np.zeros((60, 80), int),
        ...                    np.ones((30, 40), int))
        >>> pic.width >= 3 * 256 * 80 // 60, pic.height > 256
        (True, True)
    """
    if min_size < 32:
        raise ConfigError(f"min_size: expected at least 32 pixels, got {min_size!r}")
    base = _image_rgb(image)
    truth, pred = _labels(target), _labels(prediction)
    scale = max(1.0, min_size / min(base.width, base.height))
    size = (round(base.width * scale), round(base.height * scale))
    title_px = 24
    panels = [
        _panel(base, size, titles[0], title_px, labels=False),
        _panel(colorize(truth), size, titles[1], title_px, labels=True),
        _panel(colorize(pred), size, titles[2], title_px, labels=True),
    ]
    gap = 6
    width = 3 * size[0] + 2 * gap
    present = sorted(
        {int(c) for c in np.unique(np.concatenate([truth.ravel(), pred.ravel()]))}
        & set(range(NUM_CLASSES))
    )
    columns = max(1, min(4, width // LEGEND_COLUMN_PX))
    strip = legend(present or None, width=width, columns=columns)
    out = Image.new("RGB", (width, panels[0].height + strip.height + gap), (255, 255, 255))
    for k, panel in enumerate(panels):
        out.paste(panel, (k * (size[0] + gap), 0))
    out.paste(strip, (0, panels[0].height + gap))
    return out
