"""Conventions shared by every loss, and exact correspondences with MONAI / smp.

MONAI and segmentation_models_pytorch are not installed: their formulas (quoted from their
sources in docs/losses.md) are written out here as small references, and the stated
correspondence is checked against suimseg, plus hand-computed values.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import suimseg.errors as errors
from suimseg.errors import ConfigError, SUIMSegError
from suimseg.losses import (
    DiceFocalLoss,
    DiceLoss,
    FocalLoss,
    class_weights,
    dice_focal_loss,
    dice_loss,
    focal_loss,
)

WEIGHTS = class_weights([900, 60, 40])

#: Every loss, as ``(logits, target, ignore_index) -> scalar``, with and without weights.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, int | None], torch.Tensor]] = {
    "focal": lambda x, y, i: FocalLoss(ignore_index=i)(x, y),
    "focal_alpha": lambda x, y, i: FocalLoss(alpha=WEIGHTS, ignore_index=i)(x, y),
    "focal_sum": lambda x, y, i: focal_loss(x, y, alpha=WEIGHTS, ignore_index=i, reduction="sum"),
    "dice": lambda x, y, i: DiceLoss(ignore_index=i)(x, y),
    "dice_weight": lambda x, y, i: DiceLoss(weight=WEIGHTS, ignore_index=i)(x, y),
    "dice_per_image": lambda x, y, i: dice_loss(x, y, batch_dice=False, ignore_index=i),
    "dice_focal": lambda x, y, i: DiceFocalLoss(ignore_index=i)(x, y),
    "dice_focal_weights": lambda x, y, i: DiceFocalLoss(
        alpha=WEIGHTS, dice_weight=WEIGHTS, ignore_index=i
    )(x, y),
    "dice_focal_fn": lambda x, y, i: dice_focal_loss(x, y, alpha=WEIGHTS, ignore_index=i).total,
}


# ----------------------------------------------------------------------------- all ignored


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("ignore_index", [255, 0, -100])
def test_all_ignored_batch_gives_finite_zero_with_zero_gradient(
    name: str, ignore_index: int
) -> None:
    logits = (10 * torch.randn(2, 3, 4, 4)).requires_grad_(True)
    target = torch.full((2, 4, 4), ignore_index)
    loss = LOSSES[name](logits, target, ignore_index)
    assert loss.shape == ()
    assert torch.isfinite(loss)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad == 0)


# ----------------------------------------------------------------------------- ignore_index


@pytest.mark.parametrize("name", list(LOSSES))
def test_ignore_index_none_counts_every_pixel(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, generator=g)
    target = torch.randint(0, 3, (2, 5, 5), generator=g)
    # No 255 in the target: None and 255 agree ...
    assert LOSSES[name](logits, target, None).item() == LOSSES[name](logits, target, 255).item()
    # ... and an in-range ignore_index changes the result, so the comparison can fail.
    assert LOSSES[name](logits, target, None).item() != LOSSES[name](logits, target, 0).item()


def test_ignore_index_none_equals_cross_entropy_without_ignore() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 3, 3, generator=g)
    target = torch.randint(0, 4, (2, 3, 3), generator=g)
    torch.testing.assert_close(
        focal_loss(logits, target, gamma=0.0, ignore_index=None), F.cross_entropy(logits, target)
    )


def test_ignore_index_none_with_validation_rejects_255() -> None:
    target = torch.tensor([[0, 255]])
    with pytest.raises(ConfigError, match=r"got value 255"):
        focal_loss(torch.zeros(1, 2, 2), target, ignore_index=None, validate=True)
    with pytest.raises(ConfigError, match=r"ignore_index=None"):
        DiceLoss(ignore_index=None, validate=True)(torch.zeros(1, 2, 2), target)


@pytest.mark.parametrize(
    "build",
    [
        lambda: FocalLoss(ignore_index=1.5),  # type: ignore[arg-type]
        lambda: DiceLoss(ignore_index="255"),  # type: ignore[arg-type]
        lambda: DiceFocalLoss(ignore_index=True),  # type: ignore[arg-type]
    ],
)
def test_bad_ignore_index_is_a_suimseg_error(build: Callable[[], object]) -> None:
    with pytest.raises(SUIMSegError, match=r"ignore_index: expected an int .* or None"):
        build()


# ----------------------------------------------------------------------------- smp / MONAI Dice


def _tiny() -> tuple[torch.Tensor, torch.Tensor]:
    """2 classes, 2 pixels: p = (1/2, 1/2) with y=0, and p = (1/4, 3/4) with y=1."""
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]], dtype=torch.float64)
    return logits, torch.tensor([[[0, 1]]])


@pytest.mark.parametrize("s", [0.0, 1e-5, 0.5, 1.0, 3.0])
def test_dice_smooth_is_the_smp_and_monai_smooth(s: float) -> None:
    # Class 0: I = 1/2, P = 3/4, G = 1. Class 1: I = 3/4, P = 5/4, G = 1. smp's
    # soft_dice_score is (2 I + smooth) / (P + G + smooth); MONAI's DiceLoss is
    # 1 - (2 I + smooth_nr) / (P + G + smooth_dr). So suimseg smooth=s is smp smooth=s and
    # MONAI smooth_nr=smooth_dr=s (every class present, so no absent-class rule applies).
    logits, target = _tiny()
    loss0 = 1 - (2 * 0.5 + s) / (0.75 + 1 + s)
    loss1 = 1 - (2 * 0.75 + s) / (1.25 + 1 + s)
    got = dice_loss(logits, target, smooth=s).item()
    assert got == pytest.approx((loss0 + loss1) / 2, rel=1e-12)
    # The doubled smoothing (2 I + 2s) / (P + G + 2s) is a different loss for s > 0.
    if s > 0:
        doubled = 1 - ((2 * 0.5 + 2 * s) / (1.75 + 2 * s) + (1.5 + 2 * s) / (2.25 + 2 * s)) / 2
        assert got != pytest.approx(doubled, rel=1e-6)


def _smp_multiclass_dice(logits: torch.Tensor, target: torch.Tensor, smooth: float) -> torch.Tensor:
    """smp DiceLoss(mode="multiclass", from_logits=True, smooth=...), written out."""
    n, c = logits.shape[:2]
    probs = logits.softmax(1).reshape(n, c, -1)
    onehot = F.one_hot(target.reshape(n, -1), c).permute(0, 2, 1).to(probs.dtype)
    inter = (probs * onehot).sum((0, 2))
    card = (probs + onehot).sum((0, 2))
    loss = 1 - (2 * inter + smooth) / (card + smooth).clamp_min(1e-7)
    loss = loss * (onehot.sum((0, 2)) > 0)  # absent classes count as 0 ...
    return loss.mean()  # ... in a mean over all C classes


def test_dice_equals_smp_times_c_over_present_classes() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 6, 6, generator=g, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 6, 6), generator=g)  # classes 3 and 4 absent
    ours = dice_loss(logits, target, smooth=1.0)
    smp = _smp_multiclass_dice(logits, target, smooth=1.0)
    torch.testing.assert_close(ours, smp * 5 / 3)  # smp = (K / C) * suimseg, K = 3 present


def _monai_dice(
    logits: torch.Tensor, target: torch.Tensor, smooth: float, batch: bool
) -> torch.Tensor:
    """MONAI DiceLoss(softmax=True, to_onehot_y=True, smooth_nr=smooth_dr=smooth), written out."""
    n, c = logits.shape[:2]
    probs = logits.softmax(1).reshape(n, c, -1)
    onehot = F.one_hot(target.reshape(n, -1), c).permute(0, 2, 1).to(probs.dtype)
    dims = (0, 2) if batch else (2,)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return (1 - (2 * inter + smooth) / (denom + smooth)).mean()  # over all images and classes


@pytest.mark.parametrize("batch", [True, False])
def test_dice_equals_monai_when_every_class_is_present(batch: bool) -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    target = torch.arange(16).reshape(4, 4).remainder(3).expand(2, 4, 4)  # all 3 in each
    ours = dice_loss(logits, target, smooth=0.5, batch_dice=batch)
    torch.testing.assert_close(ours, _monai_dice(logits, target, 0.5, batch))


# ----------------------------------------------------------------------------- MONAI focal


def _monai_softmax_focal(
    logits: torch.Tensor, target: torch.Tensor, gamma: float, alpha: float | None
) -> torch.Tensor:
    """MONAI FocalLoss(use_softmax=True, to_onehot_y=True, reduction="mean"), written out."""
    c = logits.shape[1]
    log_p = logits.log_softmax(1)
    onehot = F.one_hot(target, c).movedim(-1, 1).to(log_p.dtype)
    loss = -((1 - log_p.exp()) ** gamma) * log_p * onehot
    if alpha is not None:  # (1 - alpha) for class 0 (background), alpha for the others
        fac = torch.tensor([1 - alpha] + [alpha] * (c - 1), dtype=loss.dtype)
        loss = fac.view(-1, *([1] * (loss.ndim - 2))) * loss
    return loss.mean()  # over N * C * H * W elements


@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_mean_is_c_times_monai(gamma: float, alpha: float | None) -> None:
    g = torch.Generator().manual_seed(3)
    c = 4
    logits = torch.randn(2, c, 5, 5, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (2, 5, 5), generator=g)  # no ignored pixel (MONAI has none)
    per_class = None if alpha is None else [1 - alpha] + [alpha] * (c - 1)
    ours = focal_loss(logits, target, gamma=gamma, alpha=per_class)
    torch.testing.assert_close(ours, c * _monai_softmax_focal(logits, target, gamma, alpha))


def test_focal_hand_computed_against_monai_value() -> None:
    # _tiny, gamma=2: MONAI's mean over N*C*H*W = 4 elements has 2 non-zero terms.
    logits, target = _tiny()
    px0 = 0.5**2 * math.log(2.0)
    px1 = 0.25**2 * math.log(4.0 / 3.0)
    assert focal_loss(logits, target).item() == pytest.approx((px0 + px1) / 2, rel=1e-12)
    assert _monai_softmax_focal(logits, target, 2.0, None).item() == pytest.approx(
        (px0 + px1) / 4, rel=1e-12
    )


# ----------------------------------------------------------------------------- errors


def test_every_raise_in_losses_and_metrics_is_a_suimseg_error() -> None:
    src = Path(errors.__file__).parent
    files = [*sorted((src / "losses").glob("*.py")), src / "metrics.py"]
    raised: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                assert isinstance(exc, ast.Name), f"{path.name}:{node.lineno}"
                raised.add(exc.id)
    assert raised  # the scan found the raises
    for name in raised:
        assert issubclass(getattr(errors, name), errors.SUIMSegError), name
