"""Tests for the SUIM class table and palette encode/decode (suimseg.classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from suimseg.classes import (
    IGNORE_COLOR,
    IGNORE_INDEX,
    NUM_CLASSES,
    SUIM_CLASSES,
    index_to_rgb,
    rgb_to_index,
    rgb_to_index_u8,
)
from suimseg.errors import ConfigError

REAL_SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "suim-samples"

# Exact per-class pixel counts of the 8 real TEST masks, from the samples' README.
REAL_COUNTS: dict[str, tuple[tuple[int, int], dict[str, int]]] = {
    "d_r_47_": ((480, 448), {"BW": 113586, "HD": 14823, "RO": 6164, "RI": 80467}),
    "d_r_598_": ((640, 480), {"BW": 130670, "HD": 71507, "RI": 96160, "FV": 8863}),
    "f_r_1965_": ((640, 480), {"BW": 232398, "RI": 15121, "FV": 59681}),
    "f_r_329_": ((640, 480), {"BW": 189981, "HD": 14076, "RI": 85405, "FV": 17738}),
    "n_l_100_": ((640, 480), {"BW": 186262, "RI": 80609, "FV": 40329}),
    "n_l_12_": ((640, 480), {"BW": 164864, "HD": 47154, "WR": 9661, "RI": 85521}),
    "n_l_52_": ((640, 480), {"BW": 191610, "HD": 27314, "RO": 88276}),
    "w_r_147_": ((640, 480), {"BW": 107364, "HD": 5676, "WR": 149863, "RI": 44297}),
}
CODE_TO_INDEX = {c.code: c.index for c in SUIM_CLASSES}


def test_class_table_is_official_bit_order() -> None:
    assert len(SUIM_CLASSES) == NUM_CLASSES == 8
    for c in SUIM_CLASSES:
        r, g, b = (v // 255 for v in c.rgb)
        assert c.index == 4 * r + 2 * g + b
    assert [c.code for c in SUIM_CLASSES] == ["BW", "HD", "PF", "WR", "RO", "RI", "FV", "SR"]


def test_palette_round_trip() -> None:
    labels = np.arange(NUM_CLASSES * 6).reshape(6, 8) % NUM_CLASSES
    rgb = index_to_rgb(labels)
    assert rgb.dtype == np.uint8
    assert rgb.shape == (6, 8, 3)
    np.testing.assert_array_equal(rgb_to_index(rgb), labels)
    for c in SUIM_CLASSES:
        assert tuple(index_to_rgb(np.array([[c.index]]))[0, 0]) == c.rgb


def test_ignore_colour_is_distinct_and_documented() -> None:
    out = index_to_rgb(np.array([[IGNORE_INDEX, -1, 8]]))
    assert all(tuple(px) == IGNORE_COLOR for px in out[0])
    assert IGNORE_COLOR not in {c.rgb for c in SUIM_CLASSES}
    custom = index_to_rgb(np.array([[IGNORE_INDEX]]), ignore_color=(1, 2, 3))
    assert tuple(custom[0, 0]) == (1, 2, 3)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 7), min_size=1, max_size=64),
    seed=st.integers(0, 2**32 - 1),
)
def test_noisy_colours_decode_to_the_right_class(labels: list[int], seed: int) -> None:
    lab = np.array(labels).reshape(1, -1)
    clean = index_to_rgb(lab).astype(np.int64)
    rng = np.random.default_rng(seed)
    # Noise that keeps every channel on its side of the 128 threshold.
    noise = rng.integers(0, 128, clean.shape)
    noisy = np.where(clean == 255, 255 - noise, noise).astype(np.uint8)
    np.testing.assert_array_equal(rgb_to_index(noisy), lab)


def test_threshold_is_at_128() -> None:
    px = np.array([[[127, 128, 0], [128, 127, 255], [255, 255, 127]]], dtype=np.uint8)
    assert rgb_to_index(px).tolist() == [[2, 5, 6]]


def test_torch_and_pil_inputs_agree() -> None:
    # 2x5, so a (3, H, W) tensor is not mistaken for (H, W, 4).
    expected = np.arange(10).reshape(2, 5) % 8
    rgb = index_to_rgb(expected)
    hwc = torch.from_numpy(rgb)
    np.testing.assert_array_equal(rgb_to_index(hwc), expected)
    np.testing.assert_array_equal(rgb_to_index(hwc.permute(2, 0, 1)), expected)
    np.testing.assert_array_equal(rgb_to_index(hwc.permute(2, 0, 1).float() / 255), expected)
    np.testing.assert_array_equal(rgb_to_index(Image.fromarray(rgb)), expected)
    np.testing.assert_array_equal(rgb_to_index(Image.fromarray(rgb).convert("RGBA")), expected)
    np.testing.assert_array_equal(rgb_to_index(rgb.astype(np.float32) / 255), expected)
    assert rgb_to_index(rgb).dtype == np.int64
    assert rgb_to_index_u8(rgb).dtype == np.uint8


def test_palette_mode_pil_is_decoded_through_its_palette() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    p_img = Image.fromarray(rgb).quantize(32)
    np.testing.assert_array_equal(rgb_to_index(p_img), rgb_to_index(p_img.convert("RGB")))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((4, 4), np.uint8), "grayscale"),
        (np.zeros((4, 4, 2), np.uint8), r"shape \(4, 4, 2\)"),
        (Image.new("L", (4, 4)), "PIL mode 'L'"),
        (np.zeros((2, 2, 3), bool), "boolean"),
    ],
)
def test_rgb_to_index_rejects_non_rgb(bad: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        rgb_to_index(bad)


@pytest.mark.parametrize(
    ("bad", "match"),
    [(np.zeros((2, 2, 3), np.int64), r"shape \(2, 2, 3\)"), (np.zeros((2, 2)), "dtype float")],
)
def test_index_to_rgb_rejects_bad_labels(bad: np.ndarray, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        index_to_rgb(bad)


def test_noisy_full_hd_mask_decodes_to_its_labels() -> None:
    # The speed of this decode is measured in benchmarks/data.py (mask decoding table).
    rng = np.random.default_rng(0)
    labels = rng.integers(0, NUM_CLASSES, (1080, 1920))
    palette = np.array([c.rgb for c in SUIM_CLASSES], dtype=np.int64)
    noise = rng.integers(0, 128, (1080, 1920, 3))
    rgb = np.where(palette[labels] == 255, 255 - noise, noise).astype(np.uint8)
    got = rgb_to_index(rgb)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, labels)
    np.testing.assert_array_equal(rgb_to_index(torch.from_numpy(rgb).permute(2, 0, 1)), labels)


@pytest.mark.parametrize("stem", sorted(REAL_COUNTS))
def test_real_masks_have_the_documented_pixel_counts(stem: str) -> None:
    mask_path = REAL_SAMPLES / "TEST" / "masks" / f"{stem}.bmp"
    if not mask_path.is_file():
        pytest.skip(f"real SUIM samples not found at {REAL_SAMPLES.resolve()}")
    (w, h), counts = REAL_COUNTS[stem]
    with Image.open(mask_path) as m:
        assert m.size == (w, h)
        labels = rgb_to_index(m)
    got = np.bincount(labels.ravel(), minlength=NUM_CLASSES)
    expected = np.zeros(NUM_CLASSES, dtype=np.int64)
    for code, n in counts.items():
        expected[CODE_TO_INDEX[code]] = n
    np.testing.assert_array_equal(got, expected)
    assert got.sum() == w * h


@pytest.mark.parametrize("ignore_color", [IGNORE_COLOR, (1, 2, 3)])
def test_index_to_rgb_uint8_and_bool_maps_match_the_int64_path(
    ignore_color: tuple[int, int, int],
) -> None:
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every uint8 value, 8..255 invalid
    want = index_to_rgb(ids.astype(np.int64), ignore_color=ignore_color)
    got = index_to_rgb(ids, ignore_color=ignore_color)
    assert got.dtype == np.uint8
    assert np.array_equal(got, want)
    assert np.array_equal(index_to_rgb(torch.from_numpy(ids), ignore_color=ignore_color), want)
    flags = ids % 2 == 1
    want_bool = index_to_rgb(flags.astype(np.int64), ignore_color=ignore_color)
    assert np.array_equal(index_to_rgb(flags, ignore_color=ignore_color), want_bool)
