"""Atomic image writing for the data layer (see :mod:`suimseg._atomic`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from suimseg._atomic import atomic_write

__all__ = ["atomic_save_image"]


def atomic_save_image(image: Image.Image, path: Path, *, format: str, **params: Any) -> None:
    """Save ``image`` to ``path`` atomically: readers see the old file or the whole new one.

    Args:
        image: The image to save.
        path: Destination path.
        format: Pillow format name (``"JPEG"``, ``"BMP"``, ``"PNG"``).
        **params: Extra Pillow save parameters (e.g. ``quality=90``).
    """
    atomic_write(path, lambda fh: image.save(fh, format=format, **params))
