"""Fixtures for the inference tests: tiny models and a tiny synthetic SUIM copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from suimseg.data import make_synthetic_suim
from suimseg.models import UNetResAttnV3


class PointwiseNet(nn.Module):
    """A 1x1 convolution: every output pixel depends only on its input pixel, so the
    model is exactly flip-equivariant (and scale-equivariant on constant images)."""

    def __init__(self, num_classes: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, num_classes, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 3)
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=g))
        self.calls = 0
        self.input_shapes: list[tuple[int, ...]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.input_shapes.append(tuple(x.shape))
        return self.conv(x)


def tiny_unet(seed: int = 0) -> UNetResAttnV3:
    torch.manual_seed(seed)
    return UNetResAttnV3(encoder="resnet18", decoder_channels=(16, 16, 8, 8), bridge_channels=16)


@pytest.fixture
def pointwise() -> PointwiseNet:
    return PointwiseNet()


@pytest.fixture(scope="session")
def unet() -> UNetResAttnV3:
    """A tiny UNet shared by tests that only read it (do not change its mode or weights)."""
    return tiny_unet().eval()


@pytest.fixture(scope="session")
def suim_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inference_suim")
    return make_synthetic_suim(root, n_train_val=8, n_test=4, size=(64, 48), seed=1)
