"""Atomic file writes, the one mechanism every writer in suimseg uses.

The bytes go to ``.<name>.tmp-<pid>`` beside the target, which is ``fsync``-ed and renamed
over it (then the folder is synced): a crash or full disk mid-write leaves the previous file
untouched, never a truncated one. A failed write is an :class:`OSError` naming the *target*
and the errno's meaning, also where ``torch.save`` would have raised a ``RuntimeError``;
every writer words it with :func:`write_error` (``could not write checkpoint run/last.pt:
No space left on device (the disk is full: at least 310.2 MiB to write, 12.0 MiB free in run;
free some space there or write to another disk); any previous file there is unchanged``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import shutil
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


#: What :func:`write_error` says is left of the target after a failed atomic write.
PREVIOUS_KEPT = "any previous file there is unchanged"


def _amount(n: int) -> str:
    if n < 2**20:
        return f"{n} bytes"
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def _disk_full(target: Path, size: int | None, minimum: bool) -> str:
    """Why and what to do for ENOSPC: the bytes to write (if known), the space left, the fix."""
    facts = []
    if size is not None:
        facts.append(f"{'at least ' if minimum else ''}{_amount(size)} to write")
    with contextlib.suppress(OSError):
        facts.append(f"{_amount(shutil.disk_usage(target.parent).free)} free in {target.parent}")
    known = f": {', '.join(facts)}" if facts else ""
    return f"the disk is full{known}; free some space there or write to another disk"


def write_error(
    target: Path,
    cause: OSError,
    *,
    what: str = "file",
    kept: str = PREVIOUS_KEPT,
    size: int | None = None,
    minimum: bool = False,
) -> OSError:
    """The OSError of a failed write of ``target``: the one wording of every writer.

    ``could not write <what> <target>: <errno meaning> (<cause and fix>); <kept>``, raised
    as the errno's subclass (e.g. ``PermissionError``) with ``filename=target``. For a full
    disk (ENOSPC) the parenthesis gives the bytes to write (``size``; "at least" with
    ``minimum``, when only the bytes reached before the failure are known), the space
    left in the target's folder and the fix.

    Args:
        target: The file that was being written.
        cause: The error (its errno is kept; EIO when it has none).
        what: The kind of file, for the message (``"checkpoint"``, ``"history file"``).
        kept: What is left of the target (e.g. "its earlier lines are unchanged").
        size: Bytes to write, when known.
        minimum: ``size`` is a lower bound.
    """
    code = cause.errno if cause.errno is not None else errno.EIO
    meaning = os.strerror(code)
    if code == errno.ENOSPC:
        meaning += f" ({_disk_full(target, size, minimum)})"
    elif code == errno.EFBIG:
        meaning += " (the file system or a ulimit -f caps the file size)"
    return OSError(code, f"could not write {what} {target}: {meaning}; {kept}", str(target))


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
        self.written = 0  # bytes written; with a failed write, the bytes it tried too

    def write(self, data: Any) -> int:
        try:
            n = self._fh.write(data)
        except OSError as exc:
            self.error = exc
            self.written += len(memoryview(data))
            raise
        self.written += n
        return n

    def fileno(self) -> int:
        # Without a descriptor, writers (PIL's encoders) go through write(), where a
        # failure is recorded; with one they write to it directly and lose the errno.
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[IO[bytes]], None],
    *,
    what: str = "file",
    kept: str = PREVIOUS_KEPT,
) -> Path:
    """Write a file atomically: ``write`` receives a binary handle to a temporary file.

    Parent folders are created. On any exception the temporary file is removed and the
    target keeps its content; a failed write or rename raises :func:`write_error`'s
    ``OSError`` (``what`` and ``kept`` word it). Returns the target path.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(target, exc, what=what, kept=kept) from exc
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
            size = None if recorder is None else recorder.written
            failed_midway = recorder is not None and recorder.error is not None
            raise write_error(
                target, cause, what=what, kept=kept, size=size, minimum=failed_midway
            ) from exc
        raise
    fsync_dir(target.parent)
    return target


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, what: str = "file", kept: str = PREVIOUS_KEPT
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""

    def write(fh: IO[bytes]) -> None:
        fh.write(data)

    return atomic_write(path, write, what=what, kept=kept)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, what: str = "file", kept: str = PREVIOUS_KEPT
) -> Path:
    """Write ``text`` as UTF-8 (no newline translation) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), what=what, kept=kept)
