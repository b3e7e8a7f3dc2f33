"""Tests of the softmax focal loss (functional and module)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from suimseg.errors import ConfigError
from suimseg.losses import FocalLoss, focal_loss

LN2 = math.log(2.0)
LN43 = math.log(4.0 / 3.0)


def _tiny() -> tuple[torch.Tensor, torch.Tensor]:
    """2 classes, 2 pixels: p = (1/2, 1/2) with y=0, and p = (1/4, 3/4) with y=1."""
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])  # (1, 1, 2)
    return logits, target


# ----------------------------------------------------------------------------- values


def test_hand_computed_gamma2_all_reductions() -> None:
    logits, target = _tiny()
    px0 = 0.5**2 * LN2  # -(1 - 1/2)^2 ln(1/2)
    px1 = 0.25**2 * LN43  # -(1 - 3/4)^2 ln(3/4)
    none = focal_loss(logits, target, gamma=2.0, reduction="none")
    assert none.shape == (1, 1, 2)
    torch.testing.assert_close(none, torch.tensor([[[px0, px1]]]))
    torch.testing.assert_close(focal_loss(logits, target, reduction="sum"), torch.tensor(px0 + px1))
    torch.testing.assert_close(focal_loss(logits, target), torch.tensor((px0 + px1) / 2))


def test_hand_computed_per_class_alpha_divides_by_pixel_count() -> None:
    logits, target = _tiny()
    expected = (2.0 * 0.25 * LN2 + 0.5 * LN43 / 16) / 2  # / n_valid, not / sum(alpha[y])
    got = focal_loss(logits, target, gamma=2.0, alpha=[2.0, 0.5])
    torch.testing.assert_close(got, torch.tensor(expected))


def test_constant_per_class_alpha_scales_every_pixel() -> None:
    logits, target = _tiny()
    base = focal_loss(logits, target, gamma=1.5)
    torch.testing.assert_close(
        focal_loss(logits, target, gamma=1.5, alpha=[0.25, 0.25]), 0.25 * base
    )
    module = FocalLoss(gamma=1.5, alpha=np.float32([0.25, 0.25]))  # type: ignore[arg-type]
    torch.testing.assert_close(module(logits, target), 0.25 * base)
    assert "alpha=[0.25, 0.25]," in repr(module)


@pytest.mark.parametrize("alpha", [0.25, 1, torch.tensor(0.25), np.float32(0.25)])
def test_scalar_alpha_is_refused_as_ambiguous(alpha: object) -> None:
    # torchvision/smp/MONAI read a scalar as "foreground a, background 1 - a"; suimseg 0.1.0
    # scaled every pixel. Refuse it and say how to write either meaning.
    match = r"alpha: .*single number.*ambiguous.*\[1 - a\] \+ \[a\] \* \(C - 1\).*\[a\] \* C"
    with pytest.raises(ConfigError, match=match):
        FocalLoss(alpha=alpha)  # type: ignore[arg-type]
    logits, target = _tiny()
    with pytest.raises(ConfigError, match=match):
        focal_loss(logits, target, alpha=alpha)  # type: ignore[arg-type]


def test_monai_style_scalar_alpha_as_a_sequence() -> None:
    # MONAI softmax focal with alpha=a weighs class 0 by 1 - a and the others by a.
    logits, target = _tiny()  # pixel 0: class 0, pixel 1: class 1
    a = 0.25
    got = focal_loss(logits, target, gamma=2.0, alpha=[1 - a, a], reduction="none")
    torch.testing.assert_close(got, torch.tensor([[[0.75 * 0.25 * LN2, 0.25 * LN43 / 16]]]))


def test_hand_computed_with_ignored_pixel() -> None:
    logits, target = _tiny()
    target[0, 0, 1] = 255
    assert focal_loss(logits, target).item() == pytest.approx(0.25 * LN2, rel=1e-6)


@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 5, 7), (2, 5, 3, 4, 4), (3, 2, 9)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gamma0_equals_cross_entropy(shape: tuple[int, ...], reduction: str) -> None:
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(shape, generator=g)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.3] = 255
    got = focal_loss(logits, target, gamma=0.0, reduction=reduction)  # type: ignore[arg-type]
    want = F.cross_entropy(logits, target, ignore_index=255, reduction=reduction)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    mod = FocalLoss(gamma=0.0, reduction=reduction)  # type: ignore[arg-type]
    torch.testing.assert_close(mod(logits, target), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ignore_index", [255, -100, 0])
def test_gamma0_per_class_alpha_equals_weighted_ce_sum_over_n_valid(ignore_index: int) -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, 6, generator=g)
    target = torch.randint(0, 4, (2, 6, 6), generator=g)
    target[:, :2] = ignore_index
    alpha = torch.tensor([0.3, 2.0, 1.0, 5.0])
    n_valid = (target != ignore_index).sum()
    want = F.cross_entropy(logits, target, weight=alpha, ignore_index=ignore_index, reduction="sum")
    got = focal_loss(logits, target, gamma=0.0, alpha=alpha, ignore_index=ignore_index)
    torch.testing.assert_close(got, want / n_valid)
    # ... which differs from cross-entropy's weighted mean (divided by sum(alpha[y])).
    weighted_mean = F.cross_entropy(logits, target, weight=alpha, ignore_index=ignore_index)
    assert not torch.allclose(got, weighted_mean)


def test_focusing_reduces_loss_of_easy_pixels() -> None:
    logits = torch.tensor([[4.0, 0.0], [0.3, 0.0]])  # easy, hard (both class 0)
    target = torch.tensor([0, 0])
    ce = focal_loss(logits, target, gamma=0.0, reduction="none")
    fl = focal_loss(logits, target, gamma=2.0, reduction="none")
    assert torch.all(fl < ce)
    ratio = fl / ce
    assert ratio[0] < ratio[1]  # the easy pixel is down-weighted far more


# ----------------------------------------------------------------------------- ignore_index


@pytest.mark.parametrize("alpha", [None, [1.0, 3.0, 0.5]])
def test_ignored_pixels_have_no_effect_on_value_or_gradient(alpha: list[float] | None) -> None:
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 3, (2, 5, 5), generator=g)
    ignored = torch.rand(target.shape, generator=g) < 0.4
    target[ignored] = 255
    base = torch.randn(2, 3, 5, 5, generator=g)
    changed = base.clone()
    changed.permute(0, 2, 3, 1)[ignored] = 1e3 * torch.randn(int(ignored.sum()), 3, generator=g)
    a = base.clone().requires_grad_(True)
    b = changed.clone().requires_grad_(True)
    la, lb = focal_loss(a, target, alpha=alpha), focal_loss(b, target, alpha=alpha)
    la.backward()
    lb.backward()
    assert la.item() == lb.item()
    assert a.grad is not None
    assert b.grad is not None
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    assert torch.all(a.grad.permute(0, 2, 3, 1)[ignored] == 0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored_gives_zero_and_backpropagates(reduction: str) -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    loss = focal_loss(logits, target, reduction=reduction)  # type: ignore[arg-type]
    assert torch.all(loss == 0)
    loss.sum().backward()
    assert logits.grad is not None
    assert torch.all(logits.grad == 0)


def test_non_finite_logits_at_ignored_pixels_are_harmless() -> None:
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    target[0, 0] = 255
    want = focal_loss(logits, target)
    bad = logits.clone()
    bad[0, 0, 0, :2] = float("nan")
    bad[0, 1, 0, 2:] = float("inf")
    bad[0, 2, 0, 1:] = float("-inf")
    bad.requires_grad_(True)
    loss = focal_loss(bad, target)
    loss.backward()
    assert loss.item() == want.item()
    assert bad.grad is not None
    assert torch.isfinite(bad.grad).all()
    assert torch.all(bad.grad[0, :, 0] == 0)


# ----------------------------------------------------------------------------- stability


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_huge_logits_give_finite_loss_and_gradients(gamma: float) -> None:
    g = torch.Generator().manual_seed(3)
    logits = (1e4 * torch.randn(2, 4, 6, 6, generator=g)).requires_grad_(True)
    target = torch.randint(0, 4, (2, 6, 6), generator=g)
    # Make some pixels perfectly confident and right (p_y == 1 exactly in float32).
    target[0] = logits[0].argmax(0)
    loss = focal_loss(logits, target, gamma=gamma, alpha=[1.0, 2.0, 0.5, 1.0])
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_gradcheck_float64(gamma: float) -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[[0, 1], [2, 255]], [[1, 1], [0, 2]]])
    alpha = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return focal_loss(x, target, gamma=gamma, alpha=alpha)

    assert fn(logits).dtype == torch.float64
    assert torch.autograd.gradcheck(fn, (logits,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_low_precision_on_cpu_gives_float32_finite_loss(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(5)
    conv = torch.nn.Conv2d(3, 4, 1)
    x = torch.randn(2, 3, 8, 8, generator=g)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unsupported dtype only warns and disables autocast
        with torch.autocast("cpu", dtype=dtype):
            logits = conv(x)
            if logits.dtype != dtype:
                pytest.skip(
                    f"CPU autocast to {dtype} is not supported by torch {torch.__version__}"
                )
            loss = FocalLoss(alpha=[1.0, 2.0, 3.0, 4.0])(logits, target)
    assert logits.dtype == dtype  # the requested precision really is exercised
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    assert conv.weight.grad is not None
    assert torch.isfinite(conv.weight.grad).all()
    # Same values as computing on the low-precision logits upcast by hand.
    low = logits.detach()
    torch.testing.assert_close(focal_loss(low, target), focal_loss(low.float(), target))


# ----------------------------------------------------------------------------- module


def test_module_alpha_is_a_buffer_that_follows_to() -> None:
    crit = FocalLoss(alpha=[1.0, 2.0])
    assert "alpha" in dict(crit.named_buffers())
    assert "alpha" not in crit.state_dict()
    crit = crit.to(torch.float64)
    assert crit.alpha is not None
    assert crit.alpha.dtype == torch.float64
    logits, target = _tiny()
    assert crit(logits, target).dtype == torch.float32
    assert "gamma=2.0" in repr(crit)
    assert "alpha=[1.0, 2.0]" in repr(crit)


def test_module_matches_functional() -> None:
    logits, target = _tiny()
    crit = FocalLoss(gamma=1.0, alpha=[0.5, 1.5], ignore_index=7, reduction="sum")
    want = focal_loss(logits, target, gamma=1.0, alpha=[0.5, 1.5], ignore_index=7, reduction="sum")
    torch.testing.assert_close(crit(logits, target), want)


# ----------------------------------------------------------------------------- bad input


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 3, 4, 4\).*\(2, 5, 4\)"):
        focal_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 4, dtype=torch.long))


def test_target_with_channel_dim_gets_a_hint() -> None:
    with pytest.raises(ValueError, match=r"squeeze\(1\)"):
        focal_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_non_integer_target_dtype(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match=r"target: expected an integer tensor.*long\(\)"):
        focal_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=dtype))


@pytest.mark.parametrize("bad", [3, 7, -1, 254])
def test_target_value_out_of_range_names_the_value(bad: int) -> None:
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    target[0, 1, 1] = bad
    with pytest.raises(ValueError, match=rf"\[0, 3\).*got value {bad}\b"):
        FocalLoss(validate=True)(torch.zeros(1, 3, 2, 2), target)
    with pytest.raises(ConfigError, match=rf"\[0, 3\).*got value {bad}\b"):
        focal_loss(torch.zeros(1, 3, 2, 2), target, validate=True)


def test_ignore_index_value_is_accepted_and_other_255_is_not() -> None:
    target = torch.tensor([[255, 0]])
    assert torch.isfinite(focal_loss(torch.zeros(1, 2, 2), target, validate=True))
    with pytest.raises(ValueError, match="got value 255"):
        focal_loss(torch.zeros(1, 2, 2), target, ignore_index=-100, validate=True)


def test_alpha_length_mismatch() -> None:
    with pytest.raises(ValueError, match=r"alpha: expected one value per class \(3.*got 2"):
        FocalLoss(alpha=[1.0, 2.0])(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


@pytest.mark.parametrize("alpha", [[1.0, -2.0], [1.0, float("nan")], [[1.0, 2.0]], -0.5, [], "ab"])
def test_bad_alpha(alpha: object) -> None:
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(alpha=alpha)  # type: ignore[arg-type]


@pytest.mark.parametrize("gamma", [-1.0, float("nan"), float("inf")])
def test_bad_gamma(gamma: float) -> None:
    with pytest.raises(ValueError, match=r"gamma: expected a finite number >= 0"):
        FocalLoss(gamma=gamma)
    with pytest.raises(ValueError, match=r"gamma: expected a finite number >= 0"):
        focal_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), gamma=gamma)


def test_unknown_reduction_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"reduction: expected one of 'mean', 'sum', 'none'"):
        FocalLoss(reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'avg'"):
        focal_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), reduction="avg")  # type: ignore[arg-type]


def test_other_bad_inputs() -> None:
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="logits: expected a floating-point"):
        focal_loss(torch.zeros(1, 2, 2, 2, dtype=torch.long), target)
    with pytest.raises(ValueError, match="at least 2 classes"):
        focal_loss(torch.zeros(1, 1, 2, 2), target)
    with pytest.raises(ValueError, match="at least 2 dims"):
        focal_loss(torch.zeros(3), torch.zeros((), dtype=torch.long))
    with pytest.raises(ValueError, match="ignore_index: expected an int"):
        FocalLoss(ignore_index=255.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected torch\.Tensors"):
        focal_loss([[0.0, 1.0]], torch.zeros(1, dtype=torch.long))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- properties


@st.composite
def _batches(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = draw(st.integers(1, 3))
    c = draw(st.integers(2, 6))
    spatial = draw(st.lists(st.integers(1, 5), min_size=0, max_size=2))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 100.0]))
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, c, *spatial, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (n, *spatial), generator=g)
    ignored = torch.rand(target.shape, generator=g) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    target[ignored] = 255
    return logits, target, ignored


@settings(max_examples=40, deadline=None)
@given(batch=_batches(), gamma=st.sampled_from([0.0, 0.5, 2.0]))
def test_property_non_negative_and_ignored_logits_irrelevant(
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], gamma: float
) -> None:
    logits, target, ignored = batch
    per_pixel = focal_loss(logits, target, gamma=gamma, reduction="none")
    assert torch.all(per_pixel >= 0)
    assert torch.all(per_pixel[ignored] == 0)
    changed = logits.movedim(1, -1).clone()
    changed[ignored] = -changed[ignored] + 7.0
    changed = changed.movedim(-1, 1)
    assert (
        focal_loss(changed, target, gamma=gamma).item()
        == focal_loss(logits, target, gamma=gamma).item()
    )
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    assert torch.all(per_pixel <= ce + 1e-12)  # focal never exceeds cross-entropy


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_any_integer_target_dtype_is_accepted(dtype: torch.dtype) -> None:
    logits, target = _tiny()
    target[0, 0, 1] = 255
    want = focal_loss(logits, target)
    torch.testing.assert_close(focal_loss(logits, target.to(dtype)), want)


def test_small_integer_dtypes_do_not_wrap_around() -> None:
    # Comparing uint8/int8 tensors with out-of-range ints wraps (int8 -1 == 255); we must not.
    logits = torch.zeros(1, 3, 2)
    with pytest.raises(ValueError, match="got value -1"):
        focal_loss(
            logits, torch.tensor([[0, -1]], dtype=torch.int8), ignore_index=255, validate=True
        )
    with pytest.raises(ValueError, match="got value 255"):
        focal_loss(
            logits, torch.tensor([[0, 255]], dtype=torch.uint8), ignore_index=-1, validate=True
        )
    ok = focal_loss(logits, torch.tensor([[0, 255]], dtype=torch.uint8), gamma=0.0)
    assert ok.item() == pytest.approx(math.log(3.0))
    # Without validation the out-of-range int8 -1 is masked (not read as class 255 or 2).
    masked = focal_loss(logits, torch.tensor([[0, -1]], dtype=torch.int8), gamma=0.0)
    assert masked.item() == pytest.approx(math.log(3.0))
