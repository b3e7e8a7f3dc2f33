"""Atomic file writes, the one mechanism every writer in suimseg uses.

The bytes go to a temporary file in the target's folder (``.<name>.tmp-<pid>``), which is
flushed, ``fsync``-ed and renamed over the target with :func:`os.replace`; the folder is
then synced so the rename survives a power cut. A crash, a kill or a full disk mid-write
leaves the previous file untouched (at worst a stray temporary file, which
:func:`remove_stale_temporaries` deletes), never a truncated target.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "remove_stale_temporaries",
    "temporary_path",
]

#: Names :func:`temporary_path` gives: ``.<name>.<kind>-<pid>``.
_TEMPORARY_NAME = re.compile(r"\..+\.(?:tmp|link)-\d+")


def temporary_path(target: Path, kind: str = "tmp") -> Path:
    """The temporary name beside ``target`` that this process writes or links first.

    ``kind`` is ``"tmp"`` (a file being written) or ``"link"`` (a hard link being made).
    """
    if kind not in ("tmp", "link"):
        raise ValueError(f"kind: expected 'tmp' or 'link', got {kind!r}")
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (:func:`temporary_path` names) in ``folder``.

    Only call it while no other process can be writing into ``folder`` (e.g. holding its
    run lock): a killed writer leaves its temporary file behind, a live one still needs it.
    Files that cannot be removed are skipped.

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if _TEMPORARY_NAME.fullmatch(path.name) and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def fsync_dir(directory: Path) -> None:
    """Persist a rename by syncing its folder (best effort; not possible on Windows)."""
    if os.name == "nt":  # pragma: no cover - platform specific
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically: ``write`` receives a binary handle to a temporary file.

    Parent folders are created. Any exception (``OSError`` from a full disk, an error in
    ``write``, ``KeyboardInterrupt``) removes the temporary file and propagates unchanged;
    the target keeps its previous content.

    Returns:
        The target path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(target)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""

    def write(fh: IO[bytes]) -> None:
        fh.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 (no newline translation) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
