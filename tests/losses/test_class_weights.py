"""Tests of class_weights (per-class weights from pixel counts)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from suimseg.losses import WEIGHT_METHODS, FocalLoss, class_weights


def test_inverse_hand_computed() -> None:
    w = class_weights([300, 100], method="inverse")  # T / (C n_c) = 400 / (2 n_c)
    torch.testing.assert_close(w, torch.tensor([2 / 3, 2.0]))


def test_inverse_sqrt_hand_computed() -> None:
    # r = [2/3, 2]; mean 4/3; r / mean = [0.5, 1.5]; sqrt.
    w = class_weights([300, 100])
    torch.testing.assert_close(w, torch.tensor([math.sqrt(0.5), math.sqrt(1.5)]))
    w8 = class_weights([5000, 90, 1200, 700, 60, 2500, 800, 1500], method="inverse_sqrt")
    torch.testing.assert_close((w8**2).mean(), torch.tensor(1.0))  # normalised before sqrt


def test_median_frequency_hand_computed() -> None:
    # f = [0.5, 0.25, 0.125, 0.125]; median = 0.1875.
    w = class_weights([4, 2, 1, 1], method="median_frequency")
    torch.testing.assert_close(w, torch.tensor([0.375, 0.75, 1.5, 1.5]))


def test_enet_hand_computed() -> None:
    w = class_weights([3, 1], method="enet")
    want = [1 / math.log(1.02 + 0.75), 1 / math.log(1.02 + 0.25)]
    torch.testing.assert_close(w, torch.tensor(want))


@pytest.mark.parametrize("method", ["inverse", "inverse_sqrt", "median_frequency"])
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
    w = class_weights([300, 0], method="enet")
    assert w[1].item() == pytest.approx(1 / math.log(1.02), rel=1e-6)


def test_zero_count_inverse_sqrt_substitutes_before_normalising() -> None:
    # T=400, C=3: r = T / (C n) = [4/9, 4/3] for the seen classes; the absent one gets 4/3.
    w = class_weights([0, 300, 100], method="inverse_sqrt")
    r = torch.tensor([4 / 3, 4 / 9, 4 / 3])
    torch.testing.assert_close(w, torch.sqrt(r / r.mean()))


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
