"""Without the [lightning] extra, suimseg.lightning says which extra to install."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

from suimseg.errors import MissingDependencyError


@pytest.mark.parametrize("missing", ["lightning", "torchmetrics"])
def test_import_without_the_extra_names_it(missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object, **kwargs: object) -> object:
        return None if name == missing else real_find_spec(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for mod in [
        m for m in sys.modules if m == "suimseg.lightning" or m.startswith("suimseg.lightning.")
    ]:
        monkeypatch.delitem(sys.modules, mod)
    with pytest.raises(MissingDependencyError, match=r"pip install 'suimseg\[lightning\]'") as info:
        importlib.import_module("suimseg.lightning")
    if real_find_spec("lightning") is not None:  # else "lightning" is reported first
        assert info.value.package == missing


def test_the_rest_of_suimseg_does_not_import_lightning() -> None:
    """Only suimseg.lightning may import lightning/torchmetrics (any import statement)."""
    src = Path(__file__).resolve().parents[2] / "src" / "suimseg"
    offenders = []
    for path in sorted(src.rglob("*.py")):
        if path.relative_to(src).parts[0] == "lightning":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            offenders += [
                f"{path.relative_to(src)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in ("lightning", "torchmetrics", "pytorch_lightning")
            ]
    assert offenders == []
