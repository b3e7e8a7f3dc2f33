"""Reading image and mask files: one set of rules for the dataset, ``predict`` and ``evaluate``.

Files are recognised by content (not extension), turned upright by their EXIF orientation,
converted to RGB by :func:`to_rgb`, and refused with a :class:`~suimseg.errors.DatasetError`
naming the file when they are broken or announce more than ``max_pixels`` pixels. The full
rules (colour modes, masks, decoding at a model's input size) are in ``docs/dataset.md``,
"Reading files".
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps

from suimseg.classes import rgb_to_index_u8
from suimseg.errors import ConfigError, DatasetError, InputNotFoundError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "check_max_pixels",
    "exif_orientation",
    "open_image",
    "read_image",
    "read_image_array",
    "read_mask_labels",
    "read_size",
    "resize_uint8",
    "to_rgb",
]

#: Default upper bound on ``width * height`` of any file read (10000 x 10000).
DEFAULT_MAX_PIXELS = 100_000_000

PathLike = str | os.PathLike[str]

_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = {"RGBA": "RGB", "RGBa": "RGB", "LA": "L", "La": "L", "PA": "RGBA"}


def check_max_pixels(max_pixels: int | None) -> int | None:
    """Validate a ``max_pixels`` argument: a positive int or ``None`` (else ``ConfigError``)."""
    if max_pixels is None:
        return None
    if (
        isinstance(max_pixels, bool)
        or not isinstance(max_pixels, (int, np.integer))
        or max_pixels < 1
    ):
        raise ConfigError(f"max_pixels: expected a positive int or None, got {max_pixels!r}")
    return int(max_pixels)


def _unreadable(path: PathLike, kind: str, err: BaseException) -> DatasetError:
    if isinstance(err, Image.DecompressionBombError):
        return DatasetError(
            f"{kind} file {path}: {err}. Pillow refuses images this large; raise "
            "PIL.Image.MAX_IMAGE_PIXELS if the file is trusted."
        )
    detail = str(err) or type(err).__name__
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        detail = "the file is empty (0 bytes)"
    return DatasetError(
        f"cannot read {kind} file {path}: {detail}. The file is not a readable image "
        "(empty, truncated, corrupt or not an image at all); replace or remove it."
    )


def _check_pixels(im: Image.Image, path: PathLike, kind: str, max_pixels: int | None) -> None:
    w, h = im.size
    if w < 1 or h < 1:
        raise DatasetError(f"{kind} file {path}: the header announces an empty {w}x{h} image")
    if max_pixels is not None and w * h > max_pixels:
        raise DatasetError(
            f"{kind} file {path}: {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels} "
            "(a guard against decompression bombs). Pass a larger max_pixels (or None) if "
            "the file is trusted, or downscale it."
        )


def open_image(
    path: PathLike, *, kind: str = "image", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open a file lazily (header only, size checked); use it as a context manager.

    ``kind`` (``"image"`` or ``"mask"``) names the file in messages; ``max_pixels=None``
    lifts suimseg's limit on ``width * height``.

    Raises:
        InputNotFoundError: If ``path`` does not exist (a ``FileNotFoundError``).
        DatasetError: If the file is not an image or is too large.
    """
    file = Path(path)
    if not file.is_file():
        raise InputNotFoundError(2, f"{kind} file {file} does not exist; check the path", str(file))
    try:
        with warnings.catch_warnings():
            # suimseg applies its own (configurable) limit just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(file)
    except _READ_ERRORS as e:
        raise _unreadable(file, kind, e) from e
    try:
        _check_pixels(im, file, kind, max_pixels)
    except DatasetError:
        im.close()
        raise
    return im


def exif_orientation(im: Image.Image) -> int:
    """The EXIF ``Orientation`` value of an open image (1, upright, when absent or invalid)."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block is treated as "no tag"
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def read_size(
    path: PathLike, *, kind: str = "image", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """The upright ``(width, height)`` of a file from its header (no pixels decoded).

    Raises:
        InputNotFoundError: If ``path`` does not exist (a ``FileNotFoundError``).
        DatasetError: If the file is not an image or is too large.
    """
    with open_image(path, kind=kind, max_pixels=max_pixels) as im:
        w, h = im.size
        return (int(h), int(w)) if exif_orientation(im) >= 5 else (int(w), int(h))


def to_rgb(im: Image.Image, *, path: PathLike | None = None) -> Image.Image:
    """Convert a decoded image of any mode to RGB (``path`` names it in messages).

    Alpha is dropped (not blended), palettes are looked up, grey is copied to R, G and B,
    16-bit grey is scaled ``v // 257``; other modes use Pillow's ``convert("RGB")``.

    Raises:
        DatasetError: For float (``F``) images, which have no agreed value range.

    Example:
        >>> import numpy as np
        >>> im16 = Image.fromarray(np.full((1, 1), 65535, np.uint16))
        >>> to_rgb(im16).getpixel((0, 0))
        (255, 255, 255)
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _ALPHA_MODES:
        im = im.convert(_ALPHA_MODES[mode])
        return to_rgb(im, path=path)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.int64)
        grey = (np.clip(arr, 0, 65535) // 257).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1), mode="RGB")
    if mode == "F":
        where = f"image file {path}" if path is not None else "image"
        raise DatasetError(
            f"{where}: 32-bit float images (PIL mode 'F') have no agreed value range; "
            "save it as an 8-bit (or 16-bit) image"
        )
    return im.convert("RGB")


def read_image(
    path: PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif_transpose: bool = True,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode an image file to an upright RGB PIL image.

    Args:
        path: The file.
        max_pixels: Upper bound on ``width * height`` (checked before decoding).
        exif_transpose: Apply the EXIF orientation (``False``: the stored pixel grid).
        draft_size: An upright ``(width, height)`` the caller will resize to: JPEGs may
            then be decoded at 1/2, 1/4 or 1/8 scale while staying at least this large.

    Returns:
        The RGB image.

    Raises:
        InputNotFoundError: If ``path`` does not exist (a ``FileNotFoundError``).
        DatasetError: If the file is unreadable, too large or a float image.
    """
    with open_image(path, kind="image", max_pixels=max_pixels) as im:
        try:
            orientation = exif_orientation(im) if exif_transpose else 1
            if draft_size is not None and im.format == "JPEG":
                w, h = draft_size
                im.draft("RGB", (h, w) if orientation >= 5 else (w, h))
            im.load()
            upright = ImageOps.exif_transpose(im) if orientation != 1 else im
            rgb = to_rgb(upright, path=path)
            if rgb is im:
                rgb = im.copy()  # outlive the closed file
        except _READ_ERRORS as e:
            raise _unreadable(path, "image", e) from e
    return rgb


def resize_uint8(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a uint8 image ``(3, H, W)`` to ``(height, width)`` (antialiased bilinear, uint8).

    Example:
        >>> resize_uint8(torch.zeros(3, 8, 10, dtype=torch.uint8), (4, 5)).shape
        torch.Size([3, 4, 5])
    """
    if image.dtype != torch.uint8 or image.ndim != 3:
        raise ConfigError(
            f"image: expected a uint8 tensor (3, H, W), got {image.dtype} {tuple(image.shape)}"
        )
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out: torch.Tensor = TF.resize(image, [int(size[0]), int(size[1])], antialias=True)
    return out


def read_image_array(
    path: PathLike,
    *,
    size: tuple[int, int] | None = None,
    fast_decode: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> npt.NDArray[np.uint8]:
    """Decode an image file to an upright uint8 RGB array, at ``size`` if given.

    The rule the dataset and the predictor share: reduced-scale JPEG decoding
    (``fast_decode``), then :func:`resize_uint8`.

    Args:
        path: The file.
        size: ``(height, width)`` to resize to, or ``None`` for the native (upright) size.
        fast_decode: Let JPEGs decode at 1/2, 1/4 or 1/8 scale while staying >= ``size``.
        max_pixels: Upper bound on ``width * height`` (checked before decoding).

    Returns:
        A writable uint8 array ``(H, W, 3)``.

    Raises:
        InputNotFoundError: If ``path`` does not exist (a ``FileNotFoundError``).
        DatasetError: If the file is unreadable, too large or a float image.
    """
    draft = None if size is None or not fast_decode else (int(size[1]), int(size[0]))
    image = read_image(path, max_pixels=max_pixels, draft_size=draft)
    arr = np.array(image, dtype=np.uint8)  # writable copy, torch may view it
    if size is None or arr.shape[:2] == tuple(size):
        return arr
    # The channels-last view: torchvision's uint8 antialiased kernel is several times
    # faster on it than Pillow's resize (see benchmarks/data.py).
    out = resize_uint8(torch.from_numpy(arr).permute(2, 0, 1), size).permute(1, 2, 0)
    return np.ascontiguousarray(out.numpy())


def read_mask_labels(
    path: PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> npt.NDArray[np.uint8]:
    """Decode a mask file to SUIM class ids (upright, native size).

    Args:
        path: An RGB, RGBA or palette image in the SUIM colours (BMP, PNG, ...).
        max_pixels: Upper bound on ``width * height`` (checked before decoding).

    Returns:
        A uint8 label map ``(H, W)`` with ids in ``[0, 8)``.

    Raises:
        InputNotFoundError: If ``path`` does not exist (a ``FileNotFoundError``).
        DatasetError: If the file is unreadable, too large, or single-channel (no colour
            rule applies to a grayscale mask).
    """
    with open_image(path, kind="mask", max_pixels=max_pixels) as im:
        try:
            orientation = exif_orientation(im)
            im.load()
            upright = ImageOps.exif_transpose(im) if orientation != 1 else im
            if upright.mode in ("LA", "La", "PA"):
                upright = upright.convert(_ALPHA_MODES[upright.mode])
            return rgb_to_index_u8(upright)
        except ConfigError as e:
            raise DatasetError(
                f"mask file {path}: PIL mode {im.mode!r} is not an RGB, RGBA or palette "
                "image, so the SUIM colour rule (id = 4R + 2G + B of the binarised "
                "channels) does not apply. Save the mask in the SUIM RGB colours."
            ) from e
        except _READ_ERRORS as e:
            raise _unreadable(path, "mask", e) from e
