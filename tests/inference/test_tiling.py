"""Sliding-window (tiled) inference."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from suimseg.errors import ConfigError
from suimseg.inference import (
    TTA,
    Predictor,
    Tiling,
    sliding_window_probs,
    tile_starts,
    window_weights,
)

from .conftest import PointwiseNet


@pytest.mark.parametrize(
    ("length", "window", "overlap", "expected"),
    [
        (100, 40, 0.25, [0, 30, 60]),
        (100, 40, 0.5, [0, 20, 40, 60]),
        (40, 40, 0.5, [0]),
        (10, 40, 0.5, [0]),
        (41, 40, 0.0, [0, 1]),
        (100, 50, 0.0, [0, 50]),
    ],
)
def test_tile_starts(length: int, window: int, overlap: float, expected: list[int]) -> None:
    assert tile_starts(length, window, overlap) == expected


@pytest.mark.parametrize("length", [37, 64, 130, 257])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_tiles_cover_with_requested_overlap(length: int, overlap: float) -> None:
    window = 32
    starts = tile_starts(length, window, overlap)
    covered = torch.zeros(length, dtype=torch.bool)
    for s in starts:
        covered[s : s + window] = True
    assert bool(covered.all())
    assert starts[-1] + min(window, length) == length
    for a, b in itertools.pairwise(starts):
        assert window - (b - a) >= overlap * window - 1e-9


def test_window_weights() -> None:
    g = window_weights((9, 7))
    assert float(g.max()) == 1.0
    assert float(g[4, 3]) == 1.0
    assert float(g.min()) > 0
    assert torch.equal(window_weights((3, 3), "uniform"), torch.ones(3, 3))
    with pytest.raises(ConfigError, match="weighting: expected"):
        window_weights((3, 3), "box")  # type: ignore[arg-type]


def test_tiled_equals_plain_when_image_fits_one_tile(unet: nn.Module) -> None:
    x = torch.rand(1, 3, 32, 32)
    plain = Predictor(unet, image_size=32).predict(x, return_probs=True)[0]
    tiled = Predictor(unet, image_size=32, tiling=True).predict(x, return_probs=True)[0]
    assert plain.probs is not None
    assert tiled.probs is not None
    torch.testing.assert_close(tiled.probs, plain.probs)
    assert torch.equal(tiled.labels, plain.labels)
    # An image smaller than the window is processed whole at native resolution.
    small = torch.rand(1, 3, 24, 20)
    native = Predictor(unet, image_size=None).predict_proba(small)[0]
    tiled_small = Predictor(unet, image_size=32, tiling=True).predict_proba(small)[0]
    torch.testing.assert_close(tiled_small, native)


@pytest.mark.parametrize("weighting", ["gaussian", "uniform"])
def test_tiling_a_pointwise_model_equals_native(weighting: str) -> None:
    """For a per-pixel model every window agrees, so blending must reproduce it exactly."""
    net = PointwiseNet()
    x = torch.rand(1, 3, 70, 101)
    native = Predictor(net, image_size=None).predict_proba(x)[0]
    tiled = Predictor(
        net,
        image_size=32,
        tiling=Tiling(overlap=0.3, weighting=weighting),  # type: ignore[arg-type]
        batch_size=3,
    ).predict_proba(x)[0]
    torch.testing.assert_close(tiled, native)
    assert all(s[-2:] == (32, 32) for s in net.input_shapes[1:])


def test_tiling_with_tta_and_big_image(unet: nn.Module) -> None:
    x = torch.rand(1, 3, 90, 75)
    pred = Predictor(unet, image_size=32, tiling=True, tta=TTA(hflip=True)).predict(
        x, return_probs=True
    )[0]
    assert tuple(pred.labels.shape) == (90, 75)
    assert pred.probs is not None
    torch.testing.assert_close(pred.probs.sum(0), torch.ones(90, 75))


def test_sliding_window_bad_inputs() -> None:
    def f(t: torch.Tensor) -> torch.Tensor:
        return torch.ones(t.shape[0], 2, *t.shape[-2:])

    with pytest.raises(ConfigError, match=r"one image of shape \(1, 3, H, W\)"):
        sliding_window_probs(f, torch.zeros(2, 3, 8, 8), (4, 4))
    with pytest.raises(ConfigError, match="batch_size"):
        sliding_window_probs(f, torch.zeros(1, 3, 8, 8), (4, 4), batch_size=0)
    with pytest.raises(ConfigError, match="overlap"):
        tile_starts(10, 4, 1.5)
    with pytest.raises(ConfigError, match="length, window >= 1"):
        tile_starts(0, 4, 0.5)
