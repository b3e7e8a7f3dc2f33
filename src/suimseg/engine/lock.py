"""One run per output folder: an OS lock on the ``.suimseg.lock`` file.

:class:`RunLock` holds an exclusive OS lock on ``.suimseg.lock`` (``fcntl.flock`` on
POSIX, ``msvcrt.locking`` on Windows) with the holder's ``{"pid", "host", "started"}``
inside for a second run's error message. The kernel drops the lock when the holder dies,
so there is no stale lock to take over, and of processes starting together exactly one wins.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from suimseg.errors import RunLockError

__all__ = ["LOCK_NAME", "RunLock"]

#: Name of the lock file inside an output folder.
LOCK_NAME = ".suimseg.lock"
_WINDOWS_LOCK_OFFSET = 1 << 20  # msvcrt locks bytes; lock one past the info so it stays readable

PathLike = str | os.PathLike[str]


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting; ``False`` if another holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK):
            return False
        raise
    return True


class RunLock:
    """Hold the OS lock on an output folder's ``.suimseg.lock`` while a run writes into it.

    The file is removed on :meth:`release`; a killed holder leaves it behind, unlocked.

    Args:
        directory: The run's output folder (created if needed).

    Raises:
        RunLockError: On :meth:`acquire` (or ``with``), if another process holds the lock;
            the message names its PID, host and start time.
        OSError: If the lock file cannot be created or locked; the message names the path.

    Example:
        >>> import tempfile
        >>> with RunLock(tempfile.mkdtemp()) as lock:
        ...     lock.path.name
        '.suimseg.lock'
    """

    def __init__(self, directory: PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._fd is not None

    def read(self) -> dict[str, Any] | None:
        """Return the lock file's JSON content, ``{}`` if unreadable, ``None`` if absent."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def acquire(self) -> RunLock:
        """Take the lock and write this process's PID, host and time into the file.

        Returns:
            ``self``.
        """
        if self._fd is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = -1
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                locked = _try_lock(fd)
            except OSError as exc:
                if fd >= 0:
                    os.close(fd)
                raise OSError(
                    exc.errno,
                    f"could not create the run lock {self.path}: {exc.strerror or exc}; check "
                    "that the output folder is writable",
                    str(self.path),
                ) from exc
            if not locked:
                os.close(fd)
                raise RunLockError(self._in_use_message())
            # The previous holder removes the file while holding the lock: if it did so
            # after our open, we locked a deleted file; open the new one.
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            os.close(fd)
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        with contextlib.suppress(OSError):  # only for messages: a full disk must not stop us
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(info).encode())
            os.fsync(fd)
        return self

    def _in_use_message(self) -> str:
        info = self.read() or {}
        for _ in range(20):  # the holder may not have written its info yet
            if "pid" in info:
                break
            time.sleep(0.05)
            info = self.read() or {}
        started = info.get("started")
        when = ""
        if isinstance(started, (int, float)):
            when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started))
        return (
            f"output folder {self.directory} is in use by another suimseg run: PID "
            f"{info.get('pid', '?')} on host {info.get('host', '?')}{when} (lock file "
            f"{self.path}). Wait for it to finish or choose another output folder."
        )

    def release(self) -> None:
        """Remove the lock file and drop the lock if this object holds it (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):  # while locked: see acquire
            self.path.unlink()
        os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.directory)!r}, held={self.held})"
