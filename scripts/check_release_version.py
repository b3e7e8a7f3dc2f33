#!/usr/bin/env python3
"""Check that a release tag, the package version and CHANGELOG.md agree.

Run by the release workflow before anything is built or published:

    python scripts/check_release_version.py v0.2.0        # or refs/tags/v0.2.0

It passes (exit status 0) only when

- the tag is ``v`` + a ``MAJOR.MINOR.PATCH`` version (SemVer), optionally with a
  pre-release suffix in the spelling PyPI keeps unchanged (``v1.2.3rc1``, ``v1.2.3b2``),
- ``src/suimseg/_version.py`` says ``__version__ = "1.2.3"`` (the same version), and
- ``CHANGELOG.md`` has a non-empty section headed ``## [1.2.3] - YYYY-MM-DD``
  (Keep a Changelog: the ``[Unreleased]`` entries moved under the new version).

Otherwise it prints every problem with its fix and exits with status 1. The files are
read as text: the package is not imported, so no dependency needs to be installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION_FILE = Path("src/suimseg/_version.py")
CHANGELOG = Path("CHANGELOG.md")

# MAJOR.MINOR.PATCH, optionally aN/bN/rcN: a version PEP 440 does not re-spell, so the
# tag, __version__ and the sdist/wheel file names all carry the same string.
_SEMVER = r"(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)(?:(?:a|b|rc)(?:0|[1-9]\d*))?"
_TAG = re.compile(rf"^(?:refs/tags/)?v(?P<version>{_SEMVER})$")
_VERSION_LINE = re.compile(r"""^__version__\s*=\s*["'](?P<version>[^"']+)["']\s*$""", re.M)
_SECTION = re.compile(r"^## \[(?P<name>[^\]]+)\](?P<rest>.*)$", re.M)
_DATE = re.compile(r"^ - \d{4}-\d{2}-\d{2}$")


def package_version(root: Path) -> str:
    """Return the ``__version__`` string written in ``src/suimseg/_version.py``."""
    text = (root / VERSION_FILE).read_text(encoding="utf-8")
    m = _VERSION_LINE.search(text)
    if m is None:
        raise SystemExit(f"{VERSION_FILE}: no line '__version__ = \"X.Y.Z\"' found")
    return m["version"]


def changelog_sections(text: str) -> dict[str, tuple[str, str]]:
    """Map each ``## [name] rest`` heading of a changelog to ``(rest, body)``."""
    heads = list(_SECTION.finditer(text))
    sections: dict[str, tuple[str, str]] = {}
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        sections[m["name"]] = (m["rest"], text[m.end() : end])
    return sections


def check(tag: str, root: Path = ROOT) -> list[str]:
    """Return the problems that stop ``tag`` from being released (empty: release it)."""
    m = _TAG.match(tag)
    if m is None:
        return [
            f"tag {tag!r}: expected 'v' + a version such as v0.2.0 or v0.2.0rc1; "
            "delete it and push a tag of that form"
        ]
    tagged = m["version"]
    problems = []
    version = package_version(root)
    if version != tagged:
        problems.append(
            f"tag {tag!r} says {tagged} but {VERSION_FILE} says __version__ = {version!r}; "
            f"set __version__ = {tagged!r} (or tag v{version}) and tag the commit that has it"
        )
    sections = changelog_sections((root / CHANGELOG).read_text(encoding="utf-8"))
    if tagged not in sections:
        problems.append(
            f"{CHANGELOG} has no '## [{tagged}] - YYYY-MM-DD' section; move the [Unreleased] "
            f"entries under that heading (found: {', '.join(sections) or 'no sections'})"
        )
    else:
        rest, body = sections[tagged]
        if not _DATE.match(rest):
            problems.append(
                f"{CHANGELOG}: the heading of [{tagged}] is '## [{tagged}]{rest}'; "
                f"expected '## [{tagged}] - YYYY-MM-DD' (the release date)"
            )
        if not re.search(r"^- ", body, re.M):
            problems.append(f"{CHANGELOG}: section [{tagged}] lists no changes; add its entries")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tag", help="the release tag, e.g. v0.2.0 or refs/tags/v0.2.0")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    problems = check(args.tag, args.root)
    for problem in problems:
        print(f"release check: {problem}", file=sys.stderr)
    if not problems:
        print(f"release check: {args.tag} = {VERSION_FILE} = CHANGELOG.md section: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
