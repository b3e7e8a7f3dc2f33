"""Shared fixtures of the Lightning tests: synthetic SUIM data and one real 1-epoch fit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

TINY: dict[str, Any] = {
    "encoder": "resnet18",
    "decoder_channels": [16, 8, 8, 8],
    "bridge_channels": 16,
}


def make_trainer(root: Path, **kwargs: Any) -> Any:
    """A quiet CPU ``pl.Trainer`` for one epoch, writing under ``root``."""
    import lightning.pytorch as pl

    settings: dict[str, Any] = {
        "max_epochs": 1,
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": True,
        "default_root_dir": root,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return pl.Trainer(**(settings | kwargs))


@dataclass
class Fitted:
    """A ``SUIMSegModule`` after one CPU epoch, and the ``.ckpt`` Lightning wrote."""

    module: Any
    trainer: Any
    data: Any
    ckpt: Path


@pytest.fixture(scope="session")
def suim_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from suimseg.data import make_synthetic_suim

    return make_synthetic_suim(
        tmp_path_factory.mktemp("suim"), n_train_val=10, n_test=3, size=(48, 40)
    )


@pytest.fixture(scope="session")
def fitted(suim_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    """One real ``trainer.fit`` of ``SUIMSegModule(TINY, lr=1e-3)``, shared by the tests."""
    pytest.importorskip("lightning")
    pytest.importorskip("torchmetrics")
    from suimseg.lightning import SUIMDataModule, SUIMSegModule

    root = tmp_path_factory.mktemp("pl")
    torch.manual_seed(0)
    module = SUIMSegModule(TINY, lr=1e-3)
    data = SUIMDataModule(suim_root, image_size=32, batch_size=2)
    trainer = make_trainer(root)
    trainer.fit(module, datamodule=data)
    ckpts = sorted(root.rglob("*.ckpt"))
    assert len(ckpts) == 1
    return Fitted(module, trainer, data, ckpts[0])
