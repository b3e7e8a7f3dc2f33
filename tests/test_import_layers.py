"""The package's layers import one way only: from the leaves to the application.

The intended direction, written once here (see docs/architecture.md)::

    _version, errors                            (ground floor)
      <- classes, _atomic
        <- models, losses, data                 (independent of each other)
          <- metrics, optim
            <- engine
              <- inference
                <- app                          (recipe, config, evaluate, demo, cli)

A module may import from its own package and from any lower layer, never from its own
layer's other packages or a higher layer. Every ``import`` statement counts, including the
ones inside functions and under ``TYPE_CHECKING``. The package root (``suimseg/__init__.py``,
lazy re-exports) and ``__main__`` (the console entry point) sit above everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "suimseg"

#: Layer of each top-level package/module of suimseg; higher imports lower.
LAYERS: dict[str, int] = {
    "_version": 0,
    "errors": 0,
    "classes": 1,
    "_atomic": 1,
    "models": 2,
    "losses": 2,
    "data": 2,
    "metrics": 3,
    "optim": 3,
    "engine": 4,
    "inference": 5,
    "lightning": 5,  # the [lightning] extra: uses engine and below, not inference or app
    "app": 6,
}
ABOVE_ALL = {"__init__", "__main__"}


def _unit(module: str) -> str:
    """'suimseg.engine.trainer' -> 'engine'; 'suimseg' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every suimseg import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("suimseg")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("suimseg"):
                continue
            if target == "suimseg":  # from suimseg import x: x may be a subpackage
                found += [(node.lineno, f"suimseg.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


def _violations(root: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        source = _unit(_module_name(path, root)) if path.parent != root else path.stem
        if source in ABOVE_ALL:
            continue
        if source not in LAYERS:
            bad.append(f"{path.relative_to(root)}: package {source!r} has no layer in LAYERS")
            continue
        for line, target in _imports(path, root):
            dest = _unit(target)
            if dest == source:
                continue
            if dest not in LAYERS:
                bad.append(f"{path.relative_to(root)}:{line} imports {target} (no layer)")
            elif LAYERS[dest] >= LAYERS[source]:
                kind = "sideways" if LAYERS[dest] == LAYERS[source] else "upward"
                bad.append(
                    f"{path.relative_to(root)}:{line} imports {target} ({kind}: "
                    f"{source} is layer {LAYERS[source]}, {dest} is {LAYERS[dest]})"
                )
    return bad


def test_every_import_points_down() -> None:
    assert _violations() == []


def test_every_package_has_a_layer() -> None:
    units = {p.stem if p.parent == SRC else p.relative_to(SRC).parts[0] for p in SRC.rglob("*.py")}
    assert units - ABOVE_ALL <= set(LAYERS), sorted(units - ABOVE_ALL - set(LAYERS))


def test_the_checker_catches_upward_and_sideways_imports(tmp_path: Path) -> None:
    fake = tmp_path / "suimseg"
    (fake / "models").mkdir(parents=True)
    (fake / "engine").mkdir()
    (fake / "models" / "__init__.py").write_text("from suimseg.engine import Trainer\n")
    (fake / "models" / "x.py").write_text("def f():\n    from ..losses import FocalLoss\n")
    (fake / "engine" / "__init__.py").write_text(
        "from . import trainer\nfrom suimseg import models\n"
    )
    (fake / "engine" / "trainer.py").write_text("from suimseg.models import UNetResAttnV3\n")
    found = _violations(fake)
    assert any("models/__init__.py:1 imports suimseg.engine (upward" in v for v in found), found
    assert any("models/x.py:2 imports suimseg.losses (sideways" in v for v in found), found
    assert not any(v.startswith("engine/") for v in found), found
