"""Tests of class_weights (per-class weights from pixel counts)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from suimseg.losses import WEIGHT_METHODS, FocalLoss, class_weights

#: Skewed, SUIM-like pixel counts (water/sea-floor/reefs common, robots rare), and the 8
#: sample test masks' real counts (robots and plants absent).
SUIM_LIKE = [4_000_000, 300_000, 50_000, 2_000_000, 500_000, 250_000, 600_000, 2_300_000]
SUIM_SAMPLES = [1_316_735, 180_550, 0, 159_524, 94_440, 487_580, 126_611, 0]


def test_inverse_hand_computed() -> None:
    # T / (C n_c) = 400 / (2 n_c) = [2/3, 2]; mean 4/3 -> [0.5, 1.5].
    w = class_weights([300, 100], method="inverse")
    torch.testing.assert_close(w, torch.tensor([0.5, 1.5]))


def test_inverse_sqrt_hand_computed() -> None:
    # sqrt([2/3, 2]) is proportional to [1, sqrt 3]; divided by its mean (1 + sqrt 3) / 2:
    # [2 / (1 + sqrt 3), 2 sqrt 3 / (1 + sqrt 3)] = [sqrt 3 - 1, 3 - sqrt 3].
    w = class_weights([300, 100])
    torch.testing.assert_close(w, torch.tensor([math.sqrt(3) - 1, 3 - math.sqrt(3)]))


def test_median_frequency_hand_computed() -> None:
    # f = [0.5, 0.25, 0.125, 0.125]; median = 0.1875; median / f = [3/8, 3/4, 3/2, 3/2],
    # mean 33/32 -> [4/11, 8/11, 16/11, 16/11].
    w = class_weights([4, 2, 1, 1], method="median_frequency")
    torch.testing.assert_close(w, torch.tensor([4 / 11, 8 / 11, 16 / 11, 16 / 11]))
    # With global counts it is proportional to 1 / n_c, so after normalising it is "inverse".
    torch.testing.assert_close(w, class_weights([4, 2, 1, 1], method="inverse"))


def test_enet_hand_computed() -> None:
    a, b = 1 / math.log(1.02 + 0.75), 1 / math.log(1.02 + 0.25)
    w = class_weights([3, 1], method="enet")
    torch.testing.assert_close(w, torch.tensor([2 * a / (a + b), 2 * b / (a + b)]))


@pytest.mark.parametrize("method", WEIGHT_METHODS)
@pytest.mark.parametrize("counts", [SUIM_LIKE, SUIM_SAMPLES, [1000, 10, 100, 1]])
def test_mean_weight_over_present_classes_is_one(method: str, counts: list[int]) -> None:
    # Normalised after the transform: before, inverse_sqrt gave a mean of 0.80 on SUIM_LIKE
    # (normalised before the square root) and "inverse" 5.03.
    w = class_weights(counts, method=method)  # type: ignore[arg-type]
    present = torch.tensor(counts) > 0
    assert w[present].double().mean().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(w[~present] >= w[present].max())  # absent: at least the rarest's weight


@pytest.mark.parametrize("method", WEIGHT_METHODS)
def test_balanced_counts_give_ones(method: str) -> None:
    w = class_weights([7, 7, 7], method=method)  # type: ignore[arg-type]
    torch.testing.assert_close(w, torch.ones(3))


@pytest.mark.parametrize("method", WEIGHT_METHODS)
def test_rarer_classes_weigh_more(method: str) -> None:
    w = class_weights([1000, 10, 100, 1], method=method)  # type: ignore[arg-type]
    assert w.dtype == torch.float32
    assert w.shape == (4,)
    assert w[3] > w[1] > w[2] > w[0] > 0


@pytest.mark.parametrize("method", ["inverse", "inverse_sqrt", "median_frequency"])
def test_zero_count_gets_the_rarest_seen_weight(method: str) -> None:
    w = class_weights([300, 0, 100, 50], method=method)  # type: ignore[arg-type]
    assert torch.isfinite(w).all()
    assert w[1] == w[3] == w[[0, 2, 3]].max()


def test_zero_count_enet_is_the_formula_bound() -> None:
    # The only seen class (f = 1) normalises to 1; the absent one gets the bound 1 / ln 1.02.
    w = class_weights([300, 0], method="enet")
    assert w[0].item() == pytest.approx(1.0, rel=1e-6)
    assert w[1].item() == pytest.approx(math.log(2.02) / math.log(1.02), rel=1e-6)


def test_zero_count_inverse_sqrt_gets_the_max_and_stays_out_of_the_mean() -> None:
    # T=400, C=3: sqrt(T / (C n)) = [2/3, 2/sqrt 3] for the seen classes, proportional to
    # [1, sqrt 3] as in test_inverse_sqrt_hand_computed; the absent one gets the larger.
    w = class_weights([0, 300, 100], method="inverse_sqrt")
    big, small = 3 - math.sqrt(3), math.sqrt(3) - 1
    torch.testing.assert_close(w, torch.tensor([big, small, big]))


@pytest.mark.parametrize(
    "counts",
    [[3, 1], np.array([3, 1], dtype=np.int64), torch.tensor([3, 1]), (3.0, 1.0)],
)
def test_accepts_sequences_arrays_and_tensors(counts: object) -> None:
    w = class_weights(counts)  # type: ignore[arg-type]
    torch.testing.assert_close(w, class_weights([3, 1]))
    assert w.dtype == torch.float32


def test_usable_as_focal_alpha() -> None:
    alpha = class_weights([900, 60, 40])
    crit = FocalLoss(alpha=alpha)
    logits = torch.randn(1, 3, 4, 4)
    assert torch.isfinite(crit(logits, torch.randint(0, 3, (1, 4, 4))))


def test_unknown_method_lists_valid_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"method: expected one of 'inverse_sqrt', 'inverse', 'median_frequency', 'enet', "
        r"got 'sqrt'",
    ):
        class_weights([1, 2], method="sqrt")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        ([1, -2], "finite counts >= 0"),
        ([1.0, float("nan")], "finite counts >= 0"),
        ([1.0, float("inf")], "finite counts >= 0"),
        ([0, 0, 0], "all zeros"),
        ([], "non-empty 1-D"),
        ([[1, 2], [3, 4]], r"non-empty 1-D .*shape \(2, 2\)"),
        (["a", "b"], "pixel_counts: expected a 1-D sequence"),
    ],
)
def test_bad_counts(counts: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        class_weights(counts)  # type: ignore[arg-type]
