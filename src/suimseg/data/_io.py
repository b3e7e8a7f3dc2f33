"""Atomic image writing for the data layer (see :mod:`suimseg._atomic`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from suimseg._atomic import atomic_write

__all__ = ["atomic_save_image"]


def atomic_save_image(image: Image.Image, path: Path, *, format: str, **params: Any) -> None:
    """Save ``image`` atomically in Pillow ``format`` (``**params``: e.g. ``quality=90``)."""
    atomic_write(path, lambda fh: image.save(fh, format=format, **params))
