"""fp16: an inf/NaN gradient is skipped by the gradient scaler and never reaches the weights."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

CE = nn.CrossEntropyLoss(ignore_index=255)


def _run(make_trainer: Any, make_loader: Any, bad: float, grad_clip: float | None) -> None:
    trainer = make_trainer(None, grad_clip=grad_clip)
    if trainer.device.type == "cpu":
        # The Trainer allows amp="fp16" on CUDA only; on CPU install the same scaler it
        # would use, so the training step's scaler logic is what is tested.
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1000)
    model = trainer.model
    snapshots: list[list[Tensor]] = []
    calls = {"n": 0}

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        calls["n"] += 1
        snapshots.append([p.detach().clone() for p in model.parameters()])
        return CE(logits, target)

    trainer.loss_fn = loss_fn
    first = next(model.parameters())
    first.register_hook(lambda g: g * bad if calls["n"] == 2 else g)  # step 2 only

    trainer.train_one_epoch(make_loader(n=6, batch_size=2), epoch=1)  # 3 steps
    after = [p.detach() for p in model.parameters()]

    def same(a: list[Tensor], b: list[Tensor]) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))

    assert not same(snapshots[0], snapshots[1])  # step 1 updated the weights
    assert same(snapshots[1], snapshots[2])  # step 2 (inf/NaN gradient) was skipped
    assert not same(snapshots[2], after)  # step 3 updated them again
    assert all(bool(torch.isfinite(p).all()) for p in after)
    for state in trainer.optimizer.state.values():
        assert all(bool(torch.isfinite(v).all()) for v in state.values() if torch.is_tensor(v))
    assert trainer.scaler.get_scale() == 512.0  # backed off once, for the bad step


@pytest.mark.parametrize("bad", [math.inf, math.nan])
@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_injected_bad_gradient_is_skipped_by_the_scaler(
    make_trainer: Any, make_loader: Any, bad: float, grad_clip: float | None
) -> None:
    torch.manual_seed(0)
    # SGD with momentum: a NaN reaching the optimizer would poison its state too.
    _run(make_trainer, make_loader, bad, grad_clip)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast needs CUDA")
def test_fp16_trainer_on_cuda_skips_an_inf_gradient(make_loader: Any) -> None:
    from suimseg.engine import Trainer

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = Trainer(model, CE, opt, device="cuda", amp="fp16")
    before = trainer.scaler.get_scale()
    calls = {"n": 0}

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        calls["n"] += 1
        return CE(logits, target)

    trainer.loss_fn = loss_fn
    weights: list[Tensor] = []
    first = next(model.parameters())
    first.register_hook(lambda g: g * math.inf)  # every step overflows
    weights.append(first.detach().clone())
    trainer.train_one_epoch(make_loader(n=4, batch_size=2), epoch=1)
    assert torch.equal(first.detach(), weights[0])
    assert trainer.scaler.get_scale() < before
