"""The curated public API: a small root namespace, every name resolves, imports stay lazy.

One-way imports between the packages are checked in ``tests/test_import_layers.py``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

import suimseg

#: The root namespace: what a user needs every day. Adding a name here is a promise.
ROOT_API = {
    "__version__": "suimseg._version",
    "UNetResAttnV3": "suimseg.models",
    "FocalLoss": "suimseg.losses",
    "DiceLoss": "suimseg.losses",
    "DiceFocalLoss": "suimseg.losses",
    "class_weights": "suimseg.losses",
    "SUIMDataset": "suimseg.data",
    "make_synthetic_suim": "suimseg.data",
    "train_transforms": "suimseg.data",
    "eval_transforms": "suimseg.data",
    "param_groups": "suimseg.optim",
    "ConfusionMatrix": "suimseg.metrics",
    "Trainer": "suimseg.engine",
    "load_model": "suimseg.engine",
    "Predictor": "suimseg.inference",
    "SUIMSegError": "suimseg.errors",
    "CLASS_NAMES": "suimseg.classes",
    "NUM_CLASSES": "suimseg.classes",
}


def test_root_namespace_is_small_and_exactly_the_curated_set() -> None:
    assert len(suimseg.__all__) <= 20
    assert len(set(suimseg.__all__)) == len(suimseg.__all__)
    assert set(suimseg.__all__) == set(ROOT_API)


@pytest.mark.parametrize("name", sorted(ROOT_API))
def test_each_root_name_is_its_subpackage_object(name: str) -> None:
    # The root re-exports the subpackage's own object (no copies, no wrappers).
    module = importlib.import_module(ROOT_API[name])
    assert getattr(suimseg, name) is getattr(module, name)
    assert name in dir(suimseg)


@pytest.mark.parametrize("name", ["RunLock", "read_history", "save_safetensors", "build_model"])
def test_plumbing_stays_in_its_subpackage(name: str) -> None:
    with pytest.raises(AttributeError):
        getattr(suimseg, name)


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        _ = suimseg.NotAThing  # type: ignore[attr-defined]


def test_star_import_gives_the_api() -> None:
    namespace: dict[str, object] = {}
    exec("from suimseg import *", namespace)
    assert {"UNetResAttnV3", "DiceFocalLoss", "SUIMDataset", "Trainer", "Predictor"} <= set(
        namespace
    )


IMPORT_CHECKS: dict[str, tuple[str, ...]] = {
    "import suimseg": ("suimseg.models", "suimseg.data", "suimseg.engine"),
    "from suimseg.losses import DiceFocalLoss": ("suimseg.data", "suimseg.engine"),
    "from suimseg.models import UNetResAttnV3": ("suimseg.data", "suimseg.losses"),
}


@pytest.fixture(scope="module")
def fresh_imports() -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Each statement run in a fresh interpreter, all started at once (their imports overlap)."""
    procs = {}
    for statement, absent in IMPORT_CHECKS.items():
        code = f"import sys\n{statement}\nprint([m for m in {absent!r} if m in sys.modules])"
        procs[statement] = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    try:
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:  # a test that failed before reading its process
                proc.kill()
                proc.communicate()


@pytest.mark.parametrize("statement", sorted(IMPORT_CHECKS))
def test_imports_pull_in_nothing_else(
    statement: str, fresh_imports: dict[str, subprocess.Popen[str]]
) -> None:
    out, err = fresh_imports[statement].communicate(timeout=300)
    assert fresh_imports[statement].returncode == 0, err
    assert out.strip() == "[]", (statement, IMPORT_CHECKS[statement], out)
