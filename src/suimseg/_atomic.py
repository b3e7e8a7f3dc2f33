"""Atomic file writes, the one mechanism every writer in suimseg uses.

The bytes go to ``.<name>.tmp-<pid>`` beside the target, which is ``fsync``-ed and renamed
over it (then the folder is synced): a crash or full disk mid-write leaves the previous file
untouched, never a truncated one. A failed write is an :class:`OSError` naming the *target*
and the errno's meaning (``[Errno 28] No space left on device: 'run/last.pt'``), also where
``torch.save`` would have raised a ``RuntimeError``.
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

from suimseg.errors import ConfigError

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
    """The temporary name beside ``target``: ``kind`` ``"tmp"`` (written) or ``"link"``."""
    if kind not in ("tmp", "link"):
        raise ConfigError(f"kind: expected 'tmp' or 'link', got {kind!r}")
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete and return the temporary files (:func:`temporary_path` names) in ``folder``.

    Call it only while no other process can write there (e.g. holding its run lock).
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
    """The OSError (errno's subclass, e.g. ``PermissionError``) of a failed write of ``target``."""
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
    """A binary file that remembers the OSError of a failed write (``torch.save`` hides it)."""

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

    Parent folders are created. On any exception the temporary file is removed and the
    target keeps its content; a failed write or rename raises :func:`write_error`'s
    ``OSError``. Returns the target path.
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
