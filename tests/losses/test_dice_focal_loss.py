"""Tests of DiceFocalLoss, the design's 50 % Dice + 50 % focal loss."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest
import torch

from suimseg.losses import (
    DiceFocalLoss,
    DiceLoss,
    FocalLoss,
    LossComponents,
    class_weights,
    dice_focal_loss,
)


def _batch(seed: int = 0, c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, c, 6, 6, generator=g)
    target = torch.randint(0, c, (2, 6, 6), generator=g)
    target[0, 0] = 255
    return logits, target


def test_defaults_are_half_dice_half_focal() -> None:
    logits, target = _batch()
    alpha = [0.5, 1.0, 2.0, 1.5]
    crit = DiceFocalLoss(alpha=alpha)
    assert (crit.lambda_dice, crit.lambda_focal, crit.gamma, crit.ignore_index) == (
        0.5,
        0.5,
        2.0,
        255,
    )
    dice = DiceLoss()(logits, target)
    focal = FocalLoss(gamma=2.0, alpha=alpha)(logits, target)
    torch.testing.assert_close(crit(logits, target), 0.5 * dice + 0.5 * focal)


def test_components_named_tuple_matches_forward() -> None:
    logits, target = _batch(1)
    crit = DiceFocalLoss(lambda_dice=0.3, lambda_focal=2.0, gamma=1.0, batch_dice=False)
    parts = crit.components(logits, target)
    assert isinstance(parts, LossComponents)
    assert parts._fields == ("total", "dice", "focal")
    torch.testing.assert_close(parts.total, crit(logits, target))
    torch.testing.assert_close(parts.total, 0.3 * parts.dice + 2.0 * parts.focal)
    torch.testing.assert_close(parts.dice, DiceLoss(batch_dice=False)(logits, target))
    torch.testing.assert_close(parts.focal, FocalLoss(gamma=1.0)(logits, target))
    assert all(p.ndim == 0 and p.dtype == torch.float32 for p in parts)


def test_functional_matches_module() -> None:
    logits, target = _batch(2)
    got = dice_focal_loss(
        logits,
        target,
        lambda_focal=0.25,
        gamma=0.5,
        smooth=1.0,
        alpha=[0.5, 1.0, 2.0, 0.25],
        dice_weight=[1, 2, 3, 4],
    )
    crit = DiceFocalLoss(
        lambda_focal=0.25,
        gamma=0.5,
        smooth=1.0,
        alpha=[0.5, 1.0, 2.0, 0.25],
        dice_weight=[1, 2, 3, 4],
    )
    want = crit.components(logits, target)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_zero_lambda_switches_a_term_off() -> None:
    logits, target = _batch(3)
    torch.testing.assert_close(
        DiceFocalLoss(lambda_focal=0.0, lambda_dice=1.0)(logits, target), DiceLoss()(logits, target)
    )
    torch.testing.assert_close(
        DiceFocalLoss(lambda_dice=0.0, lambda_focal=1.0)(logits, target),
        FocalLoss()(logits, target),
    )


def test_ignored_pixels_and_backward() -> None:
    logits, target = _batch(4)
    crit = DiceFocalLoss(alpha=class_weights([100, 20, 5, 1]))
    a = logits.clone().requires_grad_(True)
    b = logits.clone()
    b[0, :, 0] = 500.0 * torch.randn(4, 6)  # the ignored row
    b.requires_grad_(True)
    la, lb = crit(a, target), crit(b, target)
    la.backward()
    lb.backward()
    assert la.item() == lb.item()
    assert a.grad is not None
    assert b.grad is not None
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    assert torch.all(a.grad[0, :, 0] == 0)
    assert a.grad.abs().sum() > 0


def test_all_ignored_is_zero_with_gradient() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = DiceFocalLoss()(logits, torch.full((1, 4, 4), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad == 0)


def test_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[[0, 1], [2, 255]], [[1, 1], [0, 2]]])
    crit = DiceFocalLoss(alpha=[0.5, 2.0, 1.0], smooth=0.1, batch_dice=False)
    assert torch.autograd.gradcheck(lambda x: crit(x, target), (logits,))


def test_autocast_bf16_and_large_logits() -> None:
    conv = torch.nn.Conv2d(3, 4, 1)
    target = torch.randint(0, 4, (2, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(torch.randn(2, 3, 8, 8))
        parts = DiceFocalLoss(alpha=[1.0, 2.0, 3.0, 4.0]).components(logits, target)
    assert all(p.dtype == torch.float32 and torch.isfinite(p) for p in parts)
    huge = (1e4 * torch.randn(2, 4, 8, 8)).requires_grad_(True)
    loss = DiceFocalLoss()(huge, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert huge.grad is not None
    assert torch.isfinite(huge.grad).all()


def test_buffers_follow_to_and_repr() -> None:
    crit = DiceFocalLoss(alpha=[1.0, 2.0], dice_weight=[3.0, 4.0]).to(torch.float64)
    assert crit.alpha is not None
    assert crit.alpha.dtype == torch.float64
    assert crit.dice_weight is not None
    assert crit.dice_weight.dtype == torch.float64
    assert crit.state_dict() == {}
    assert "lambda_dice=0.5" in repr(crit)


def test_bad_inputs_raise() -> None:
    logits, target = _batch()
    with pytest.raises(ValueError, match=r"lambda_dice: expected a finite number >= 0"):
        DiceFocalLoss(lambda_dice=-0.5)
    with pytest.raises(ValueError, match=r"lambda_focal: expected a finite number >= 0"):
        DiceFocalLoss(lambda_focal=float("nan"))
    with pytest.raises(ValueError, match="gamma"):
        DiceFocalLoss(gamma=-2.0)
    with pytest.raises(ValueError, match=r"alpha: expected one value per class \(4.*got 3"):
        DiceFocalLoss(alpha=[1.0, 1.0, 1.0])(logits, target)
    with pytest.raises(ValueError, match=r"dice_weight: expected one value per class \(4.*got 2"):
        DiceFocalLoss(dice_weight=[1.0, 1.0])(logits, target)
    with pytest.raises(ValueError, match="got value 9"):
        DiceFocalLoss(validate=True)(logits, torch.full_like(target, 9))
    with pytest.raises(ValueError, match="got value 9"):
        dice_focal_loss(logits, torch.full_like(target, 9), validate=True)
    with pytest.raises(ValueError, match=r"alpha: .*single number 0\.5.* ambiguous"):
        DiceFocalLoss(alpha=0.5)
    with pytest.raises(ValueError, match=r"target: expected shape"):
        DiceFocalLoss().components(logits, target[:, :3])


@pytest.mark.parametrize(
    "module_name",
    [
        "suimseg.losses._functional",
        "suimseg.losses.focal",
        "suimseg.losses.dice",
        "suimseg.losses.dice_focal",
        "suimseg.losses.weights",
    ],
)
def test_docstring_examples_run(module_name: str) -> None:
    module = importlib.import_module(module_name)
    extraglobs = {"torch": torch, "F": torch.nn.functional}
    result = doctest.testmod(module, extraglobs=extraglobs, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_docs_example_runs() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "losses.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(doc), "exec"), namespace)
    parts = namespace["parts"]
    assert isinstance(parts, LossComponents)
    assert torch.isfinite(parts.total)
