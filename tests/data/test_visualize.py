"""Tests for colorize / overlay / legend (suimseg.data.visualize)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from suimseg.classes import IGNORE_COLOR, IGNORE_INDEX, SUIM_CLASSES
from suimseg.data import colorize, legend, overlay
from suimseg.data.visualize import LEGEND_COLUMN_PX
from suimseg.errors import ConfigError


def test_colorize_uses_the_palette_and_ignore_colour() -> None:
    labels = np.array([[c.index for c in SUIM_CLASSES] + [IGNORE_INDEX]])
    out = colorize(torch.from_numpy(labels))
    assert isinstance(out, Image.Image)
    assert out.size == (9, 1)
    assert [out.getpixel((i, 0)) for i in range(8)] == [c.rgb for c in SUIM_CLASSES]
    assert out.getpixel((8, 0)) == IGNORE_COLOR


def test_overlay_blends_and_leaves_ignore_pixels() -> None:
    image = np.full((4, 6, 3), 100, np.uint8)
    labels = np.full((4, 6), 7)
    labels[0, 0] = IGNORE_INDEX
    half = overlay(image, labels, alpha=0.5)
    assert half.getpixel((1, 1)) == (178, 178, 178)
    assert half.getpixel((0, 0)) == (100, 100, 100)
    assert overlay(image, labels, alpha=0.0).getpixel((1, 1)) == (100, 100, 100)
    assert overlay(image, labels, alpha=1.0).getpixel((1, 1)) == (255, 255, 255)


def test_overlay_accepts_tensors_and_resizes_the_mask() -> None:
    image = torch.zeros(3, 8, 8)
    labels = torch.ones(4, 4, dtype=torch.int64)
    out = overlay(image, labels, alpha=1.0)
    assert out.size == (8, 8)
    assert out.getpixel((7, 7)) == SUIM_CLASSES[1].rgb


def test_overlay_legend_strip_adds_rows() -> None:
    image = Image.new("RGB", (120, 40))
    labels = np.zeros((40, 120), np.int64)
    labels[:, 60:] = 6
    out = overlay(image, labels, show_legend=True)
    # A narrow image is widened to one legend column so class names stay readable.
    assert out.width == LEGEND_COLUMN_PX
    assert out.height > 40
    assert out.crop((0, 0, 120, 40)).tobytes() == overlay(image, labels).tobytes()
    wide = overlay(Image.new("RGB", (400, 40)), np.zeros((40, 400), np.int64), show_legend=True)
    assert wide.width == 400
    assert legend([0, 1, 2], columns=1).height == 3 * legend([0]).height


@pytest.mark.parametrize(
    ("image", "mask", "kwargs", "match"),
    [
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)), {}, "integer label map"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), int), {}, "image"),
        (torch.zeros(1, 4, 4), np.zeros((4, 4), int), {}, r"\(3, H, W\)"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), int), {"alpha": 2.0}, "alpha"),
    ],
)
def test_bad_inputs(image: object, mask: object, kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        overlay(image, mask, **kwargs)


def test_legend_validates() -> None:
    with pytest.raises(ConfigError, match="classes"):
        legend([9])
    with pytest.raises(ConfigError, match="width"):
        legend(width=4)


def test_side_by_side_panels_are_large_and_show_truth_and_prediction() -> None:
    from suimseg.classes import SUIM_CLASSES
    from suimseg.data.visualize import side_by_side

    h, w = 60, 80
    image = np.zeros((h, w, 3), np.uint8)
    truth = np.zeros((h, w), np.int64)
    truth[:, w // 2 :] = 1  # right half: human divers
    pred = np.full((h, w), 6, np.int64)  # fish everywhere
    pic = side_by_side(image, truth, pred, min_size=256)
    panel_w = round(w * 256 / h)
    assert pic.width == 3 * panel_w + 2 * 6
    # Each panel is at least 256 px on its shorter side.
    assert pic.height > 256 + 24
    arr = np.asarray(pic)
    y = 24 + 128  # middle of the panels, below the titles
    x_truth = panel_w + 6
    assert tuple(arr[y, x_truth + 10]) == SUIM_CLASSES[0].rgb
    assert tuple(arr[y, x_truth + panel_w - 10]) == SUIM_CLASSES[1].rgb
    assert tuple(arr[y, 2 * (panel_w + 6) + 10]) == SUIM_CLASSES[6].rgb
    # The legend below lists exactly the classes shown (colour boxes), not the others.
    strip = arr[24 + 256 + 6 :].reshape(-1, 3)
    colours = {tuple(c) for c in strip}
    for c in (0, 1, 6):
        assert SUIM_CLASSES[c].rgb in colours
    for c in (2, 3, 4, 5):  # (7 is white, the strip's background)
        assert SUIM_CLASSES[c].rgb not in colours


def test_side_by_side_rejects_a_tiny_panel() -> None:
    from suimseg.data.visualize import side_by_side
    from suimseg.errors import ConfigError

    with pytest.raises(ConfigError, match="min_size"):
        side_by_side(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), int), np.zeros((4, 4), int),
                     min_size=8)  # fmt: skip


def test_legend_text_is_large_enough_to_read() -> None:
    # Pillow's default font runs words together below ~14 px ("WRwrecksand ruins").
    from suimseg.data.visualize import legend

    strip = np.asarray(legend([4]))
    dark_rows = np.flatnonzero((strip < 100).all(axis=-1).any(axis=1))
    assert dark_rows.max() - dark_rows.min() >= 14


@pytest.mark.parametrize("legend_strip", [False, True])
def test_overlay_in_row_bands_equals_one_pass(
    monkeypatch: pytest.MonkeyPatch, legend_strip: bool
) -> None:
    import suimseg.data.visualize as visualize

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (53, 41, 3), dtype=np.uint8)
    labels = rng.integers(-2, 12, (53, 41))  # valid ids, negatives, ids >= 8
    labels[:5] = IGNORE_INDEX
    outs = []
    for rows in (7, 10**9):  # several bands with a short last one; one band
        monkeypatch.setattr(visualize, "_BLEND_ROWS", rows)
        outs.append(np.asarray(overlay(image, labels, alpha=0.3, show_legend=legend_strip)))
    assert np.array_equal(outs[0], outs[1])
    # a uint8 map with the same valid ids blends the same pixels
    as_uint8 = np.where((labels >= 0) & (labels < 8), labels, IGNORE_INDEX).astype(np.uint8)
    got = np.asarray(overlay(image, as_uint8, alpha=0.3, show_legend=legend_strip))
    assert np.array_equal(got, outs[1])
