"""Atomic file writes, the one mechanism every writer in suimseg uses.

The bytes go to a temporary file in the target's folder (``.<name>.tmp-<pid>``), which is
flushed, ``fsync``-ed and renamed over the target with :func:`os.replace`; the folder is
then synced so the rename survives a power cut. A crash, a kill or a full disk mid-write
leaves the previous file untouched (at worst a stray temporary file, which
:func:`remove_stale_temporaries` deletes), never a truncated target.

A failed write is always an :class:`OSError` that names the *target* (never the temporary
name) and the errno's meaning, e.g. ``[Errno 28] No space left on device: 'run/last.pt'``,
also where a library (``torch.save``) would have turned the disk error into a
``RuntimeError``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "named_write_errors",
    "remove_stale_temporaries",
    "temporary_path",
    "write_error",
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


def write_error(target: Path, cause: OSError) -> OSError:
    """The OSError of a failed write of ``target``: its errno, meaning and the target's name.

    ``OSError(errno, ...)`` returns the fitting subclass (``PermissionError`` for EACCES,
    ...), so ``except PermissionError`` keeps working.
    """
    code = cause.errno if cause.errno is not None else errno.EIO
    meaning = os.strerror(code)
    if code == errno.ENOSPC:
        meaning += " (the disk is full; free some space)"
    elif code == errno.EFBIG:
        meaning += " (the file system or a ulimit -f caps the file size)"
    return OSError(code, f"{meaning}; any previous file there is unchanged", str(target))


@contextlib.contextmanager
def named_write_errors(target: Path) -> Iterator[None]:
    """Re-raise an OSError from writing ``target`` (or its temporary file) by ``target``."""
    try:
        yield
    except OSError as exc:
        if exc.filename == str(target) and exc.errno is not None:
            raise
        raise write_error(target, exc) from exc


class _RecordingFile:
    """A binary file that remembers the OSError of a failed write.

    ``torch.save`` turns an OSError raised by ``write`` into a ``RuntimeError`` with an
    internal message ("unexpected pos 704 vs 598"); the recorded error gives the cause back.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def fileno(self) -> int:
        # Without a descriptor, writers (PIL's encoders) go through write(), where a
        # failure is recorded; with one they write to it directly and lose the errno.
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically: ``write`` receives a binary handle to a temporary file.

    Parent folders are created. Any exception (an error in ``write``,
    ``KeyboardInterrupt``) removes the temporary file and propagates; a failed write or
    rename (a full disk, a file-size limit, a read-only folder) is raised as
    :func:`write_error`'s ``OSError`` naming the target. The target keeps its previous
    content.

    Returns:
        The target path.
    """
    target = Path(path)
    with named_write_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(target)
    recorder: _RecordingFile | None = None
    in_callback = False
    try:
        with open(tmp, "wb") as fh:
            recorder = _RecordingFile(fh)
            in_callback = True
            write(cast(IO[bytes], recorder))
            in_callback = False
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        # A write to the temporary file failed, or opening/flushing/renaming it did; an
        # OSError of the callback's own (e.g. reading a source file) propagates as it is.
        cause = recorder.error if recorder is not None else None
        if cause is None and isinstance(exc, OSError) and not in_callback:
            cause = exc
        if cause is not None:
            raise write_error(target, cause) from exc
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
