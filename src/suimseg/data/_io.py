"""Atomic file writing for the data layer (tmp file + fsync + ``os.replace``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["atomic_save_image", "atomic_write_text"]


def atomic_save_image(image: Image.Image, path: Path, *, format: str, **params: Any) -> None:
    """Save ``image`` to ``path`` atomically: readers see the old file or the whole new one.

    Args:
        image: The image to save.
        path: Destination path.
        format: Pillow format name (``"JPEG"``, ``"BMP"``, ``"PNG"``).
        **params: Extra Pillow save parameters (e.g. ``quality=90``).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            image.save(f, format=format, **params)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
