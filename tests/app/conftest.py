"""Fixtures shared by the CLI tests: one tiny trained run."""

from __future__ import annotations

from pathlib import Path

import pytest

from suimseg.app.cli import main
from suimseg.data import make_synthetic_suim

#: `suimseg train` flags of a tiny 1-epoch CPU run at 32 px.
TINY_TRAIN = [
    "--encoder", "resnet18", "--encoder-weights", "none", "--decoder-channels", "16,16,8,8",
    "--bridge-channels", "16", "--image-size", "32", "--workers", "0", "--device", "cpu",
    "--batch-size", "4", "--epochs", "1", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(data root, best.pt)`` of one `suimseg train` run (``TINY_TRAIN``) on a synthetic
    SUIM copy, its run folder holding config.json and the history. Shared: read it only."""
    base = tmp_path_factory.mktemp("cli")
    data = make_synthetic_suim(base / "data", n_train_val=10, n_test=3, size=(48, 40), seed=0)
    out = base / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY_TRAIN]) == 0
    return data, out / "best.pt"
