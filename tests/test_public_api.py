"""The curated public API: every name resolves, imports stay lazy and one-way."""

from __future__ import annotations

import subprocess
import sys

import pytest

import suimseg


def test_every_public_name_resolves() -> None:
    for name in suimseg.__all__:
        assert getattr(suimseg, name) is not None, name
    assert set(suimseg.__all__) <= set(dir(suimseg))


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        _ = suimseg.NotAThing  # type: ignore[attr-defined]


def test_star_import_gives_the_api() -> None:
    namespace: dict[str, object] = {}
    exec("from suimseg import *", namespace)
    assert {"UNetResAttnV3", "DiceFocalLoss", "SUIMDataset", "Trainer", "Predictor"} <= set(
        namespace
    )


@pytest.mark.parametrize(
    ("statement", "absent"),
    [
        ("import suimseg", ("suimseg.models", "suimseg.data", "suimseg.engine")),
        ("from suimseg.losses import DiceFocalLoss", ("suimseg.data", "suimseg.engine")),
        ("from suimseg.models import UNetResAttnV3", ("suimseg.data", "suimseg.losses")),
    ],
)
def test_imports_pull_in_nothing_else(statement: str, absent: tuple[str, ...]) -> None:
    code = f"import sys\n{statement}\nprint([m for m in {absent!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", (statement, proc.stdout)
