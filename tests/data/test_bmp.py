"""Tests for the direct 24-bit BMP mask reader (suimseg.data._bmp)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from suimseg.classes import rgb_to_index_u8
from suimseg.data._bmp import nearest_indices, read_bmp_labels, resize_labels_nearest


def _noisy_mask(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_bmp(path: Path, rgb: np.ndarray, *, top_down: bool) -> None:
    """A hand-written BITMAPINFOHEADER 24-bit BMP (Pillow only writes bottom-up)."""
    h, w, _ = rgb.shape
    stride = (w * 3 + 3) & ~3
    rows = np.zeros((h, stride), np.uint8)
    rows[:, : w * 3] = rgb[..., ::-1].reshape(h, w * 3)
    if not top_down:
        rows = rows[::-1]
    pixels = rows.tobytes()
    header = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    dib = struct.pack(
        "<IiiHHIIiiII", 40, w, -h if top_down else h, 1, 24, 0, len(pixels), 0, 0, 0, 0
    )
    path.write_bytes(header + dib + pixels)


@pytest.mark.parametrize("shape", [(7, 5), (48, 61), (33, 2)])
@pytest.mark.parametrize("size", [None, (3, 4), (64, 40), (5, 7)])
def test_matches_pillow_decode_then_nearest_resize(
    tmp_path: Path, shape: tuple[int, int], size: tuple[int, int] | None
) -> None:
    rgb = _noisy_mask(*shape)
    path = tmp_path / "m.bmp"
    Image.fromarray(rgb).save(path)
    full = rgb_to_index_u8(rgb)
    expected = full if size is None else resize_labels_nearest(full, size)
    got = read_bmp_labels(path, size)
    assert got is not None
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("top_down", [True, False])
def test_top_down_and_bottom_up_rows(tmp_path: Path, top_down: bool) -> None:
    rgb = _noisy_mask(9, 6, seed=1)
    path = tmp_path / "m.bmp"
    _write_bmp(path, rgb, top_down=top_down)
    np.testing.assert_array_equal(read_bmp_labels(path), rgb_to_index_u8(rgb))
    expected = resize_labels_nearest(rgb_to_index_u8(rgb), (4, 4))
    np.testing.assert_array_equal(read_bmp_labels(path, (4, 4)), expected)


def test_unsupported_or_broken_files_fall_back(tmp_path: Path) -> None:
    rgb = _noisy_mask(8, 8)
    pal = tmp_path / "palette.bmp"
    Image.fromarray(rgb).quantize(8).save(pal)
    assert read_bmp_labels(pal) is None
    png = tmp_path / "m.png"
    Image.fromarray(rgb).save(png)
    assert read_bmp_labels(png) is None
    full = tmp_path / "full.bmp"
    Image.fromarray(rgb).save(full)
    truncated = tmp_path / "truncated.bmp"
    truncated.write_bytes(full.read_bytes()[:-10])
    assert read_bmp_labels(truncated) is None
    assert read_bmp_labels(tmp_path / "missing.bmp") is None


def test_nearest_indices_follow_torch_nearest_exact() -> None:
    for n_in in (48, 61, 375, 1080, 1920):
        row = torch.arange(n_in, dtype=torch.float64).view(1, 1, 1, -1)
        for n_out in (1, 40, 64, 384, 1919, 3000):
            ref = F.interpolate(row, size=(1, n_out), mode="nearest-exact")[0, 0, 0]
            np.testing.assert_array_equal(nearest_indices(n_in, n_out), ref.long().numpy())


def test_resize_labels_nearest_identity_and_shape() -> None:
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert resize_labels_nearest(labels, (4, 3)) is labels
    assert resize_labels_nearest(labels, (8, 6)).shape == (6, 8)
    np.testing.assert_array_equal(resize_labels_nearest(labels, (8, 6))[::2, ::2], labels)
