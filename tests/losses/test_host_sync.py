"""The losses never wait for the device by default; out-of-range targets are masked.

Host syncs are counted on the CPU with a ``TorchDispatchMode`` that records every op which,
on an accelerator, copies a device value to the host: ``_local_scalar_dense`` (behind
``.item()``, ``int(t)``, ``bool(t)``), ``nonzero`` / ``masked_select`` and boolean-mask
indexing (their output size depends on the data). Before this was fixed, each loss call
made one (``bool(bad.any())``); now the default makes none, and ``validate=True`` makes
the check (and so the count) come back, which shows the counter can fail.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from suimseg.losses import DiceFocalLoss, DiceLoss, FocalLoss, class_weights

WEIGHTS = class_weights([900, 60, 40, 300])
LOSSES: dict[str, Callable[..., torch.nn.Module]] = {
    "focal": lambda **kw: FocalLoss(alpha=WEIGHTS, **kw),
    "dice": lambda **kw: DiceLoss(weight=WEIGHTS, **kw),
    "dice_per_image": lambda **kw: DiceLoss(batch_dice=False, **kw),
    "dice_focal": lambda **kw: DiceFocalLoss(alpha=WEIGHTS, dice_weight=WEIGHTS, **kw),
}


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    target[0, :2] = 255
    return logits, target


SyncCount = Callable[[Callable[[], object]], list[str]]


def _syncs(
    count: SyncCount, loss_fn: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor
) -> list[str]:
    x = logits.clone().requires_grad_(True)
    return count(lambda: loss_fn(x, target).backward())


@pytest.mark.parametrize("name", list(LOSSES))
def test_forward_backward_makes_no_host_sync_by_default(
    name: str, count_host_syncs: SyncCount
) -> None:
    logits, target = _batch()
    assert (
        _syncs(count_host_syncs, LOSSES[name](), logits, target) == []
    )  # was 1 per call before the fix


@pytest.mark.parametrize("name", list(LOSSES))
def test_validate_true_syncs_so_the_counter_can_fail(
    name: str, count_host_syncs: SyncCount
) -> None:
    logits, target = _batch()
    assert len(_syncs(count_host_syncs, LOSSES[name](validate=True), logits, target)) >= 1


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("bad", [4, 9, -1, 254])
def test_out_of_range_targets_are_masked_like_ignored_pixels(name: str, bad: int) -> None:
    logits, target = _batch(1)
    corrupt = target.clone()
    corrupt[1, 3, :5] = bad
    ignored = target.clone()
    ignored[1, 3, :5] = 255
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    la = LOSSES[name]()(a, corrupt)
    lb = LOSSES[name]()(b, ignored)
    la.backward()
    lb.backward()
    assert la.item() == lb.item()
    assert a.grad is not None
    assert b.grad is not None
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    assert torch.all(a.grad[1, :, 3, :5] == 0)
    with pytest.raises(ValueError, match=f"got value {bad}"):
        LOSSES[name](validate=True)(logits, corrupt)
