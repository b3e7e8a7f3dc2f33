"""Shared fixtures of the engine tests: a tiny model and small synthetic datasets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset


class TinySegNet(nn.Module):
    """Conv-BN-ReLU-Dropout-Conv: learns the synthetic task below in a few epochs."""

    def __init__(self, num_classes: int = 3, width: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Dropout2d(dropout),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def make_dataset(n: int = 8, size: int = 32, num_classes: int = 3, seed: int = 0) -> TensorDataset:
    """Images of coloured blocks; each pixel's label is its dominant channel (0..2).

    A few label pixels are set to 255 (ignored).
    """
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(n, 3, size // 8, size // 8, generator=g)
    images = nn.functional.interpolate(blocks, size=(size, size), mode="nearest")
    images = images + 0.05 * torch.randn(images.shape, generator=g)
    labels = images.argmax(dim=1) % num_classes
    labels[:, 0, 0] = 255
    return TensorDataset(images, labels)


@pytest.fixture
def tiny_model() -> Callable[..., nn.Module]:
    return TinySegNet


@pytest.fixture
def dataset() -> Callable[..., TensorDataset]:
    return make_dataset


@pytest.fixture
def tiny_unet() -> Callable[..., nn.Module]:
    from suimseg.models import UNetResAttnV3

    def build(num_classes: int = 3) -> nn.Module:
        return UNetResAttnV3(
            encoder="resnet18",
            decoder_channels=(16, 16, 8, 8),
            bridge_channels=16,
            num_classes=num_classes,
        )

    return build


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
