"""Tests of the soft multi-class Dice loss (functional and module)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from suimseg.losses import DiceLoss, dice_loss


def _tiny() -> tuple[torch.Tensor, torch.Tensor]:
    """2 classes, 2 pixels: p = (1/2, 1/2) with y=0, and p = (1/4, 3/4) with y=1."""
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    return logits, target


def _one_hot_logits(target: torch.Tensor, c: int, scale: float = 30.0) -> torch.Tensor:
    return scale * F.one_hot(target, c).movedim(-1, 1).float()


def _reference(
    probs: torch.Tensor, onehot: torch.Tensor, smooth: float, weight: torch.Tensor | None
) -> torch.Tensor:
    """Straightforward per-class Dice over present classes of one group (C, P)."""
    inter = (probs * onehot).sum(1)
    card = probs.sum(1) + onehot.sum(1)
    loss_c = 1 - (2 * inter + smooth) / (card + smooth)
    present = onehot.sum(1) > 0
    w = torch.ones_like(loss_c) if weight is None else weight
    return (loss_c * w)[present].sum() / w[present].sum()


# ----------------------------------------------------------------------------- values


def test_hand_computed_two_classes() -> None:
    logits, target = _tiny()
    # class 0: I = 1/2, P = 3/4, G = 1; class 1: I = 3/4, P = 5/4, G = 1.
    d0, d1 = 1.0 / 1.75, 1.5 / 2.25
    got = dice_loss(logits, target, smooth=0.0)
    assert got.item() == pytest.approx(((1 - d0) + (1 - d1)) / 2, rel=1e-6)
    s = 1.0
    got = dice_loss(logits, target, smooth=s)
    want = ((1 - (1 + s) / (1.75 + s)) + (1 - (1.5 + s) / (2.25 + s))) / 2
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_hand_computed_weighted_mean() -> None:
    logits, target = _tiny()
    l0, l1 = 1 - 1.0 / 1.75, 1 - 1.5 / 2.25
    got = dice_loss(logits, target, smooth=0.0, weight=[3.0, 1.0])
    assert got.item() == pytest.approx((3 * l0 + l1) / 4, rel=1e-6)
    got = dice_loss(logits, target, smooth=0.0, weight=[1.0, 0.0])
    assert got.item() == pytest.approx(l0, rel=1e-6)


def test_absent_class_is_left_out_of_the_mean() -> None:
    # 3 classes; class 2 never appears in the target but gets probability mass.
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]], [[0.0, 0.0]]]])
    target = torch.tensor([[[0, 1]]])
    p = torch.softmax(logits, 1)[0, :, 0]  # (3, 2)
    l0 = 1 - 2 * p[0, 0] / (p[0].sum() + 1)
    l1 = 1 - 2 * p[1, 1] / (p[1].sum() + 1)
    got = dice_loss(logits, target, smooth=0.0)
    torch.testing.assert_close(got, (l0 + l1) / 2)  # / 2 present classes, not / 3
    # The absent class's mass is still penalised: moving it to the true class lowers the loss.
    better = logits.clone()
    better[0, 2] = -20.0
    assert dice_loss(better, target, smooth=0.0) < got


def test_batch_vs_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, 5, generator=g)
    target = torch.randint(0, 4, (3, 5, 5), generator=g)
    target[0] = torch.where(target[0] == 3, 0, target[0])  # image 0 lacks class 3
    target[1, :2] = 255
    per_image = torch.stack([dice_loss(logits[i : i + 1], target[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(dice_loss(logits, target, batch_dice=False), per_image.mean())
    valid = target != 255
    probs = torch.softmax(logits, 1).movedim(1, 0).reshape(4, -1) * valid.reshape(1, -1)
    onehot = F.one_hot(target.clamp_max(3), 4).movedim(-1, 0).reshape(4, -1) * valid.reshape(1, -1)
    want = _reference(probs, onehot.float(), 1e-5, None)
    torch.testing.assert_close(dice_loss(logits, target, batch_dice=True), want)


def test_per_image_skips_images_without_valid_pixels() -> None:
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    target[1] = 255
    both = dice_loss(logits, target, batch_dice=False)
    torch.testing.assert_close(both, dice_loss(logits[:1], target[:1], batch_dice=False))


@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 6, 6), (4, 5), (2, 4, 3, 3, 3)])
def test_perfect_prediction_is_zero(batch_dice: bool, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    logits = _one_hot_logits(target, shape[1])
    target[..., 0] = 255  # ignored pixels with arbitrary logits change nothing
    loss = DiceLoss(batch_dice=batch_dice)(logits, target)
    assert 0 <= loss.item() < 1e-6


@pytest.mark.parametrize("batch_dice", [True, False])
def test_totally_wrong_prediction_is_one(batch_dice: bool) -> None:
    target = torch.randint(0, 3, (2, 6, 6))
    logits = _one_hot_logits((target + 1) % 3, 3)
    assert dice_loss(logits, target, batch_dice=batch_dice).item() == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------------------------- ignore_index


@pytest.mark.parametrize("batch_dice", [True, False])
def test_ignored_pixels_have_no_effect_on_value_or_gradient(batch_dice: bool) -> None:
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 3, (2, 5, 5), generator=g)
    ignored = torch.rand(target.shape, generator=g) < 0.4
    target[ignored] = 255
    base = torch.randn(2, 3, 5, 5, generator=g)
    changed = base.clone()
    changed.permute(0, 2, 3, 1)[ignored] = 1e3 * torch.randn(int(ignored.sum()), 3, generator=g)
    a = base.clone().requires_grad_(True)
    b = changed.clone().requires_grad_(True)
    la = dice_loss(a, target, batch_dice=batch_dice, weight=[1.0, 2.0, 0.5])
    lb = dice_loss(b, target, batch_dice=batch_dice, weight=[1.0, 2.0, 0.5])
    la.backward()
    lb.backward()
    assert la.item() == lb.item()
    assert a.grad is not None
    assert b.grad is not None
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    assert torch.all(a.grad.permute(0, 2, 3, 1)[ignored] == 0)


@pytest.mark.parametrize("batch_dice", [True, False])
def test_all_ignored_gives_zero_and_backpropagates(batch_dice: bool) -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = dice_loss(logits, torch.full((2, 4, 4), 255), batch_dice=batch_dice, smooth=0.0)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad == 0)


def test_non_finite_logits_at_ignored_pixels_are_harmless() -> None:
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    target[0, 0] = 255
    want = dice_loss(logits, target)
    bad = logits.clone()
    bad[0, 0, 0, :2] = float("nan")
    bad[0, 1, 0, 2:] = float("inf")
    bad[0, 2, 0, 1:] = float("-inf")
    bad.requires_grad_(True)
    loss = dice_loss(bad, target)
    loss.backward()
    assert loss.item() == want.item()
    assert bad.grad is not None
    assert torch.isfinite(bad.grad).all()
    assert torch.all(bad.grad[0, :, 0] == 0)


# ----------------------------------------------------------------------------- stability


@pytest.mark.parametrize("batch_dice", [True, False])
def test_gradcheck_float64(batch_dice: bool) -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[[0, 1, 1], [0, 255, 1]], [[2, 2, 0], [1, 2, 255]]])
    weight = torch.tensor([1.0, 0.5, 2.0])

    def fn(x: torch.Tensor) -> torch.Tensor:
        return dice_loss(x, target, smooth=0.1, weight=weight, batch_dice=batch_dice)

    assert fn(logits).dtype == torch.float64
    assert torch.autograd.gradcheck(fn, (logits,))


def test_huge_logits_and_zero_smooth_are_finite() -> None:
    logits = (1e4 * torch.randn(2, 4, 6, 6)).requires_grad_(True)
    target = torch.randint(0, 3, (2, 6, 6))  # class 3 absent: no 0/0 with smooth=0
    for batch_dice in (True, False):
        loss = dice_loss(logits, target, smooth=0.0, batch_dice=batch_dice)
        loss.backward()
        assert torch.isfinite(loss)
        assert logits.grad is not None
        assert torch.isfinite(logits.grad).all()


def test_autocast_bf16_on_cpu_gives_float32_finite_loss() -> None:
    conv = torch.nn.Conv2d(3, 4, 1)
    x = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(x)
        assert logits.dtype == torch.bfloat16
        loss = DiceLoss(weight=[1.0, 1.0, 2.0, 2.0])(logits, target)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    assert conv.weight.grad is not None
    assert torch.isfinite(conv.weight.grad).all()


# ----------------------------------------------------------------------------- module


def test_module_weight_buffer_and_repr() -> None:
    crit = DiceLoss(weight=[1.0, 2.0], smooth=0.5, batch_dice=False)
    assert "weight" in dict(crit.named_buffers())
    assert "weight" not in crit.state_dict()
    crit = crit.to(torch.float64)
    assert crit.weight is not None
    assert crit.weight.dtype == torch.float64
    logits, target = _tiny()
    want = dice_loss(logits, target, weight=[1.0, 2.0], smooth=0.5, batch_dice=False)
    torch.testing.assert_close(crit(logits, target), want)
    assert "batch_dice=False" in repr(crit)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise() -> None:
    logits = torch.zeros(2, 3, 4, 4)
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 3, 4, 4\).*\(2, 4, 5\)"):
        dice_loss(logits, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="target: expected an integer tensor"):
        dice_loss(logits, target.float())
    bad = target.clone()
    bad[1, 2, 3] = 3
    with pytest.raises(ValueError, match="got value 3"):
        DiceLoss(validate=True)(logits, bad)
    with pytest.raises(ValueError, match="got value 3"):
        dice_loss(logits, bad, validate=True)
    with pytest.raises(ValueError, match=r"weight: expected one value per class \(3.*got 4"):
        DiceLoss(weight=[1.0, 1.0, 1.0, 1.0])(logits, target)
    with pytest.raises(ValueError, match="weight: expected finite numbers >= 0"):
        DiceLoss(weight=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match=r"smooth: expected a finite number >= 0, got -1"):
        DiceLoss(smooth=-1.0)
    with pytest.raises(ValueError, match="ignore_index: expected an int"):
        dice_loss(logits, target, ignore_index=255.0)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(2, 6),
    spatial=st.lists(st.integers(1, 5), min_size=0, max_size=2),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.1, 1.0, 30.0]),
    smooth=st.sampled_from([0.0, 1e-5, 1.0]),
    batch_dice=st.booleans(),
)
def test_property_in_unit_interval_and_ignored_logits_irrelevant(
    n: int,
    c: int,
    spatial: list[int],
    seed: int,
    scale: float,
    smooth: float,
    batch_dice: bool,
) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, c, *spatial, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (n, *spatial), generator=g)
    ignored = torch.rand(target.shape, generator=g) < 0.3
    target[ignored] = 255
    loss = dice_loss(logits, target, smooth=smooth, batch_dice=batch_dice)
    assert 0.0 <= loss.item() <= 1.0
    changed = logits.movedim(1, -1).clone()
    changed[ignored] = changed[ignored].flip(-1) * 3
    changed = changed.movedim(-1, 1)
    again = dice_loss(changed, target, smooth=smooth, batch_dice=batch_dice)
    assert again.item() == loss.item()
