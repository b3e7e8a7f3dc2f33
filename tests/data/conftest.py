"""Fixtures for the data-layer tests: a tiny synthetic SUIM copy and the real samples."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from suimseg.data import make_synthetic_suim

#: The 8 real TEST pairs, outside the repository (never copied into it).
REAL_SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "suim-samples"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean synthetic dataset (read-only by convention: copy it before modifying)."""
    root = tmp_path_factory.mktemp("suim_clean")
    return make_synthetic_suim(root, n_train_val=20, n_test=4, size=(64, 48), seed=0)


@pytest.fixture
def make_root(synthetic_root: Path, tmp_path: Path) -> Callable[[], Path]:
    """Return a factory giving a private, modifiable copy of the synthetic dataset."""

    def _copy() -> Path:
        dst = tmp_path / "suim"
        shutil.copytree(synthetic_root, dst)
        return dst

    return _copy


@pytest.fixture
def real_samples() -> Path:
    """The real sample folder; skips the test when it is absent."""
    if not (REAL_SAMPLES / "TEST" / "images").is_dir():
        pytest.skip(f"real SUIM samples not found at {REAL_SAMPLES.resolve()}")
    return REAL_SAMPLES.resolve()
