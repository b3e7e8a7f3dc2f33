#!/usr/bin/env python3
"""Print the lowest versions that pyproject.toml declares for the runtime dependencies.

Each ``name>=X`` of ``[project] dependencies`` becomes ``name==X`` (one per line), the
input of ``scripts/check_floor.sh``, so the floor that is tested is always the floor that
is declared. A dependency without a ``>=`` floor, or a torch/torchvision pair that was never
released together, is an error (exit status 1).

Usage: ``python scripts/floor_requirements.py [PYPROJECT]``
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*(?P<version>[0-9][0-9.]*)\s*$"
)


class FloorError(ValueError):
    """pyproject.toml's runtime dependencies do not describe a testable floor."""


def declared_dependencies(pyproject: Path) -> list[str]:
    """Return the ``[project] dependencies`` strings of ``pyproject``."""
    text = pyproject.read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: read the one array this script needs
        m = re.search(r"^dependencies\s*=\s*\[(?P<body>.*?)\]", text, re.M | re.S)
        if m is None:
            raise FloorError(f"{pyproject}: no [project] dependencies array found") from None
        return re.findall(r"\"([^\"]+)\"", m["body"])
    return list(tomllib.loads(text)["project"]["dependencies"])


def floor_pins(dependencies: list[str]) -> list[str]:
    """Turn each ``name>=X`` into ``name==X``; check that torch and torchvision pair up.

    Raises:
        FloorError: a dependency has no single ``>=`` floor, or the torch and torchvision
            floors were never released together (torchvision 0.N pairs with torch 2.(N-15)).
    """
    pins: dict[str, str] = {}
    for dep in dependencies:
        m = _REQUIREMENT.match(dep)
        if m is None:
            raise FloorError(
                f"dependency {dep!r}: expected exactly one lower bound 'name>=X' so the floor "
                "can be installed and tested; write it that way or extend this script"
            )
        pins[m["name"].lower()] = m["version"]
    torch, vision = pins.get("torch"), pins.get("torchvision")
    if torch is not None and vision is not None:
        t_major, t_minor = (int(p) for p in torch.split(".")[:2])
        v_major, v_minor = (int(p) for p in vision.split(".")[:2])
        if t_major != 2 or v_major != 0 or v_minor != t_minor + 15:
            raise FloorError(
                f"torch>={torch} and torchvision>={vision} were never released together "
                f"(torch 2.N pairs with torchvision 0.(N+15)); raise the lower one"
            )
    return [f"{name}=={version}" for name, version in pins.items()]


def main(argv: list[str]) -> int:
    pyproject = Path(argv[1]) if len(argv) > 1 else ROOT / "pyproject.toml"
    try:
        pins = floor_pins(declared_dependencies(pyproject))
    except FloorError as exc:
        print(f"floor_requirements: {exc}", file=sys.stderr)
        return 1
    print("\n".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
