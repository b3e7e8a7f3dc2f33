"""Shared helpers of the reliability tests: a tiny model, tiny data, a quick trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from suimseg.engine import Trainer, default_callbacks

CE = nn.CrossEntropyLoss(ignore_index=255)


class TinyNet(nn.Module):
    """Conv-BN-ReLU-Conv over 3 classes: a few hundred parameters."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 3, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def tiny_loader(n: int = 4, size: int = 8, batch_size: int = 2, seed: int = 0) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    labels = images.argmax(dim=1)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


def tiny_trainer(out: Path | None, *, overwrite: bool = False, **kwargs: Any) -> Trainer:
    """A CPU Trainer of TinyNet with ``default_callbacks(out)`` then ``callbacks``."""
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    callbacks = default_callbacks(out, overwrite=overwrite, verbose=False, progress=False)
    callbacks += list(kwargs.pop("callbacks", ()))
    return Trainer(model, CE, opt, device="cpu", callbacks=callbacks, **kwargs)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def make_trainer() -> Any:
    """``make_trainer(out_dir_or_None, **trainer_kwargs)`` -> a CPU Trainer of TinyNet."""
    return tiny_trainer


@pytest.fixture
def make_loader() -> Any:
    """``make_loader(n=4, size=8, batch_size=2, seed=0)`` -> a DataLoader of tiny tensors."""
    return tiny_loader
