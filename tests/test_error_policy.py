"""Every deliberate raise in src/suimseg is a suimseg error (a SUIMSegError subclass that
also subclasses the fitting builtin), never a bare ValueError/TypeError/RuntimeError."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "suimseg"
BARE = {"ValueError", "TypeError", "RuntimeError"}


def _bare_raises(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id in BARE:
                    found.append(f"{path.relative_to(root)}:{node.lineno} raise {exc.id}")
    return found


def test_no_bare_builtin_raises_in_the_library() -> None:
    assert _bare_raises(SRC) == []


def test_the_scan_finds_a_bare_raise(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def f():\n    raise ValueError('x')\n")
    (tmp_path / "ok.py").write_text("def g():\n    raise ConfigError('x')\n")
    assert _bare_raises(tmp_path) == ["m.py:2 raise ValueError"]
