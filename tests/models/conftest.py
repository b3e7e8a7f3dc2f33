"""Fixtures of the model tests: a stand-in for torchvision's ImageNet weights API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision

FakeImagenet = Callable[[object], dict[str, Any]]


@pytest.fixture
def fake_imagenet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeImagenet:
    """Replace ``torchvision.models.get_model_weights`` by a no-network stand-in.

    Call the fixture with a state dict (saved to a local file that ``get_state_dict`` then
    loads with the keyword arguments suimseg passes) or with an exception to raise. It
    returns a dict recording the requested model name and those keyword arguments.
    """

    def install(source: object) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        path = tmp_path / "imagenet.pth"
        if isinstance(source, dict):
            torch.save(source, path)

        class Weights:
            url = "https://download.pytorch.org/models/resnet-fake.pth"

            def get_state_dict(self, **kwargs: Any) -> dict[str, torch.Tensor]:
                seen["kwargs"] = kwargs
                if isinstance(source, BaseException):
                    raise source
                sd: dict[str, torch.Tensor] = torch.load(
                    path, weights_only=kwargs.get("weights_only", False)
                )
                return sd

        class Enum:
            DEFAULT = Weights()

        def get_model_weights(name: str) -> type[Enum]:
            seen["name"] = name
            return Enum

        monkeypatch.setattr(torchvision.models, "get_model_weights", get_model_weights)
        return seen

    return install
