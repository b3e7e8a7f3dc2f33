"""Reading image and mask files: one set of rules for the dataset, ``predict`` and ``evaluate``.

Every image or mask file suimseg reads goes through this module, so the same file gives
the same pixels everywhere, and a strange or broken file gives a clear
:class:`~suimseg.errors.DatasetError` naming it (never a bare Pillow traceback).

**Formats.** Any file Pillow recognises by its *content* (JPEG, PNG, BMP, TIFF, WebP, ...);
the extension is not trusted, so a PNG saved under a ``.jpg`` name reads correctly. Empty,
truncated or non-image files raise :class:`~suimseg.errors.DatasetError`.

**Colour modes** (:func:`to_rgb`), the same for every caller:

=====================  ==============================================================
mode                   converted to RGB by
=====================  ==============================================================
``RGB``                kept
``L``, ``1``           the grey value copied to R, G and B
``P``                  looking the index up in the palette
``RGBA``, ``LA``,      dropping alpha (the stored colour is kept, not blended with a
``PA``, ``RGBa``       background)
``CMYK``, ``YCbCr``,   Pillow's conversion (``Image.convert("RGB")``)
``LAB``, ``HSV``
``I;16*``, ``I``       16-bit grey scaled to 8 bits (``v // 257``, so 65535 -> 255),
                       then copied to R, G and B (``I`` is read as 16-bit, clipped)
``F``                  refused: 32-bit float images have no agreed value range
=====================  ==============================================================

16-bit-per-channel RGB(A) PNGs are reduced to 8 bits by Pillow when opened.

**Masks** (:func:`read_mask_labels`) are decoded by the SUIM colour rule of
:func:`suimseg.classes.rgb_to_index` (each channel binarised at 128, ``id = 4R + 2G + B``):
RGB and RGBA masks directly (alpha ignored), palette masks through their palette, so
JPEG-noisy colours decode to the nearest palette corner. A single-channel (grayscale or
16-bit) mask has no colour rule and raises :class:`~suimseg.errors.DatasetError`.

**EXIF orientation.** Images *and* masks are turned upright according to their EXIF
``Orientation`` tag (:func:`PIL.ImageOps.exif_transpose`), i.e. pixels are used as an
image viewer shows them. Masks drawn over the displayed image therefore line up, and a
prediction is written in the same (upright) frame as the image it was made from. Files
without the tag (all SUIM files, all BMPs) are unaffected.

**Decoding at a model's input size** (:func:`read_image_array`), the one rule shared by
:class:`~suimseg.data.SUIMDataset` (with ``image_size``) and
:class:`~suimseg.inference.Predictor` (with ``image_size`` and no tiling): a JPEG is
decoded at the smallest of 1/1, 1/2, 1/4, 1/8 scale that stays at least as large as the
target (Pillow's DCT-domain ``draft``), then every image is resized to the target in
**uint8** with torchvision's antialiased bilinear kernel (:func:`resize_uint8`); the
caller then converts to float and normalises. Same file and size, same tensor.

**Decompression bombs.** A file whose header announces more than ``max_pixels`` pixels
(default :data:`DEFAULT_MAX_PIXELS`, 100 million) raises
:class:`~suimseg.errors.DatasetError` *before* any pixel is decoded. Pass
``max_pixels=None`` to lift suimseg's limit (Pillow's own ``Image.MAX_IMAGE_PIXELS``
still refuses more than twice its value).
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
    """Validate a ``max_pixels`` argument (a positive int or ``None``).

    Raises:
        ConfigError: For anything else.

    Example:
        >>> check_max_pixels(1000)
        1000
    """
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)):
        raise ConfigError(f"max_pixels: expected a positive int or None, got {max_pixels!r}")
    if max_pixels < 1:
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
    """Open a file lazily (header only) after the size check; use it as a context manager.

    Args:
        path: The file.
        kind: ``"image"`` or ``"mask"`` (for messages).
        max_pixels: Upper bound on ``width * height``; ``None`` for no suimseg limit.

    Returns:
        The open, not yet decoded PIL image.

    Raises:
        InputNotFoundError: If ``path`` does not exist (a ``FileNotFoundError``).
        DatasetError: If the file is not an image or is too large.

    Example:
        >>> with open_image("photo.jpg") as im:  # doctest: +SKIP
        ...     im.size
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
    """The EXIF ``Orientation`` value of an open image (1, upright, when absent or invalid).

    Example:
        >>> exif_orientation(Image.new("RGB", (2, 2)))
        1
    """
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block is treated as "no tag"
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def read_size(
    path: PathLike, *, kind: str = "image", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """The upright ``(width, height)`` of a file from its header (no pixels decoded).

    EXIF orientations 5 to 8 (quarter turns) swap the stored width and height.

    Raises:
        InputNotFoundError: If ``path`` does not exist (a ``FileNotFoundError``).
        DatasetError: If the file is not an image or is too large.

    Example:
        >>> read_size("photo.jpg")  # doctest: +SKIP
        (1906, 1080)
    """
    with open_image(path, kind=kind, max_pixels=max_pixels) as im:
        w, h = im.size
        return (int(h), int(w)) if exif_orientation(im) >= 5 else (int(w), int(h))


def to_rgb(im: Image.Image, *, path: PathLike | None = None) -> Image.Image:
    """Convert a decoded image of any mode to RGB by the rules in the module docstring.

    Args:
        im: A PIL image.
        path: The file it came from (for messages).

    Returns:
        An RGB image of the same size.

    Raises:
        DatasetError: For float (``F``) images.

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
        exif_transpose: Apply the EXIF orientation (the documented policy; ``False`` only
            for callers that need the stored pixel grid).
        draft_size: An upright ``(width, height)`` the caller will resize to: JPEGs may
            then be decoded at 1/2, 1/4 or 1/8 scale while staying at least this large.

    Returns:
        The RGB image.

    Raises:
        InputNotFoundError: If ``path`` does not exist (a ``FileNotFoundError``).
        DatasetError: If the file is unreadable, too large or a float image.

    Example:
        >>> img = read_image("photo.jpg")  # doctest: +SKIP
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
    """Resize a uint8 image ``(3, H, W)`` to ``size = (height, width)``, staying in uint8.

    torchvision's antialiased bilinear kernel (``antialias=True``, rounded to uint8): the
    resize step of both the dataset and the predictor. A same-size input is returned as is.

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

    The shared decode-and-resize rule of the module docstring: reduced-scale JPEG decoding
    (``fast_decode``) followed by :func:`resize_uint8`.

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

    Example:
        >>> read_image_array("photo.jpg", size=(384, 384)).shape  # doctest: +SKIP
        (384, 384, 3)
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

    Example:
        >>> labels = read_mask_labels("mask.bmp")  # doctest: +SKIP
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
