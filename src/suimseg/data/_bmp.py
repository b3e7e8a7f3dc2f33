"""A direct reader for SUIM's uncompressed 24-bit BMP masks.

Reads the pixel rows straight into numpy, gathering only the rows and columns a
nearest-neighbour resize needs. Against a Pillow decode (interleaved, busy 2-core CPU;
``benchmarks/data.py`` prints the 1920x1080 case): ~1920x1080 masks 17-21 vs 35-51 ms at
native size, 2-8 vs 38-42 ms at 384x384; the 8 real SUIM masks 2-3 vs 4-6 ms native,
2-5 vs 6-9 ms at 384x384: 2x to 10x faster, so it stays. Anything else (compressed,
palette or 32-bit BMPs, truncated files) returns ``None`` so the caller falls back to
Pillow, which also reports a broken file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from suimseg.classes import _bits_to_index_u8

__all__ = ["nearest_indices", "read_bmp_labels", "resize_labels_nearest"]


def nearest_indices(n_in: int, n_out: int) -> npt.NDArray[np.intp]:
    """Source indices of a nearest resize, ``floor((i + 0.5) * n_in / n_out)`` (nearest-exact).

    Example:
        >>> nearest_indices(4, 2).tolist()
        [1, 3]
    """
    idx = np.floor((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out))
    return np.clip(idx, 0, n_in - 1).astype(np.intp)


def resize_labels_nearest(
    labels: npt.NDArray[np.uint8], size: tuple[int, int]
) -> npt.NDArray[np.uint8]:
    """Resize a label map ``(H, W)`` to ``size = (width, height)`` with :func:`nearest_indices`.

    Example:
        >>> resize_labels_nearest(np.arange(4, dtype=np.uint8).reshape(2, 2), (4, 1)).tolist()
        [[2, 2, 3, 3]]
    """
    h, w = labels.shape
    if (w, h) == size:
        return labels
    out: npt.NDArray[np.uint8] = labels[
        np.ix_(nearest_indices(h, size[1]), nearest_indices(w, size[0]))
    ]
    return out


def read_bmp_labels(
    path: str | Path, size: tuple[int, int] | None = None
) -> npt.NDArray[np.uint8] | None:
    """SUIM labels ``(H, W)`` of a 24-bit BMP at ``size = (width, height)`` (``None``: native).

    Returns ``None`` if the file is not a plain, complete 24-bit BMP: use Pillow then.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(54)
        file_size = os.path.getsize(path)
    except OSError:
        return None
    if len(header) < 54 or header[:2] != b"BM":
        return None
    (offset,) = struct.unpack_from("<I", header, 10)
    dib, width, height, planes, bits, compression = struct.unpack_from("<IiiHHI", header, 14)
    if dib < 40 or planes != 1 or bits != 24 or compression != 0 or width <= 0 or height == 0:
        return None
    h = abs(height)
    stride = (width * 3 + 3) & ~3
    if file_size < offset + stride * h:
        return None  # truncated: let Pillow report it
    tw, th = (width, h) if size is None else size
    if (tw, th) == (width, h):
        data = np.fromfile(path, dtype=np.uint8, count=stride * h, offset=offset)
        bgr = data.reshape(h, stride)[:, : width * 3].reshape(h, width, 3)
        labels = _bits_to_index_u8(bgr, bgr=True)
        # .copy(), not ascontiguousarray: a reversed single row counts as contiguous and
        # would keep its negative stride.
        return labels[::-1].copy() if height > 0 else labels
    # Map the file and gather only the rows and columns nearest-neighbour sampling needs.
    rows = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(h, stride))
    ys = nearest_indices(h, th)
    if height > 0:  # bottom-up: image row y is stored in file row h - 1 - y
        ys = h - 1 - ys
    xs = nearest_indices(width, tw)
    byte_cols = (xs[:, None] * 3 + np.arange(3)).ravel()
    bgr = np.asarray(rows[ys][:, byte_cols]).reshape(th, tw, 3)
    del rows  # closes the mapping
    return _bits_to_index_u8(bgr, bgr=True)
