"""One run per output folder: the ``.suimseg.lock`` file.

Two training runs writing ``last.pt`` and ``history.jsonl`` into one folder would overwrite
each other's checkpoints and interleave their histories. :class:`RunLock` prevents that:
the first run creates ``.suimseg.lock`` (exclusively, with ``O_CREAT | O_EXCL``) holding
JSON ``{"pid", "host", "started"}`` and removes it when it ends, also on errors.

A second run pointed at the folder finds the lock and:

* refuses with a :class:`~suimseg.errors.RunLockError` naming the holder's PID and host
  when that process is alive (same host), or runs on another host (liveness cannot be
  checked from here);
* takes the lock over with a warning when the holder ran on this host and its PID is no
  longer alive (a crashed or killed run left a *stale* lock);
* with ``overwrite=True`` takes it over regardless (the user asserts the other run is gone).

A process that is killed (SIGKILL) cannot remove its lock file; the stale-lock rule above
is what lets the next ``resume`` proceed without manual cleanup.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from suimseg.errors import RunLockError

__all__ = ["LOCK_NAME", "RunLock", "pid_alive"]

logger = logging.getLogger("suimseg")

#: Name of the lock file inside an output folder.
LOCK_NAME = ".suimseg.lock"

PathLike = str | os.PathLike[str]


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine.

    Args:
        pid: A process id.

    Returns:
        ``True`` if the process exists (also when it belongs to another user).

    Example:
        >>> pid_alive(os.getpid())
        True
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # pragma: no cover - e.g. platforms without signal 0
        return True
    return True


class RunLock:
    """Hold the ``.suimseg.lock`` file of an output folder while a run writes into it.

    Args:
        directory: The run's output folder (created if needed).
        overwrite: Take the lock even if another process appears to hold it.

    Raises:
        RunLockError: On :meth:`acquire` (or ``with``), if another live process on this
            host, or any process on another host, holds the folder and ``overwrite`` is
            false.
        OSError: If the lock file cannot be created (read-only folder, ...); the message
            names the path.

    Example:
        >>> import tempfile
        >>> with RunLock(tempfile.mkdtemp()) as lock:
        ...     lock.path.name
        '.suimseg.lock'
    """

    def __init__(self, directory: PathLike, *, overwrite: bool = False) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.overwrite = overwrite
        self._held = False

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._held

    def read(self) -> dict[str, Any] | None:
        """Return the lock file's JSON content, ``{}`` if unreadable, ``None`` if absent."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            info = json.loads(text)
        except json.JSONDecodeError:
            return {}
        return info if isinstance(info, dict) else {}

    def _try_create(self) -> bool:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"could not create the run lock {self.path}: {exc.strerror or exc}; check "
                "that the output folder is writable",
                str(self.path),
            ) from exc
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(info))
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def acquire(self) -> RunLock:
        """Create the lock file, taking over a stale one; see the module docstring.

        Returns:
            ``self``.
        """
        if self._held:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # another process may remove/replace the file between steps
            if self._try_create():
                self._held = True
                return self
            info = self.read()
            if info is None:
                continue  # released meanwhile: try again
            pid, host = info.get("pid"), info.get("host")
            here = socket.gethostname()
            if pid == os.getpid() and host == here:
                reason = "left by this process"  # e.g. an earlier fit() that crashed
            elif not isinstance(pid, int) or not isinstance(host, str):
                reason = "unreadable"
                if self.path.stat().st_mtime > time.time() - 5.0:
                    time.sleep(0.2)  # being written right now; look again
                    continue
            elif host == here and not pid_alive(pid):
                reason = f"left by process {pid}, which is no longer running"
            elif self.overwrite:
                reason = f"held by process {pid} on {host}, taken over because overwrite=True"
            else:
                where = "on this machine" if host == here else f"on host {host!r}"
                raise RunLockError(
                    f"output folder {self.directory} is in use by another suimseg run "
                    f"(process {pid} {where}, lock file {self.path}). Wait for it to finish, "
                    "choose another output folder, or, if that run is gone, delete the "
                    "lock file or pass overwrite=True (--overwrite)."
                )
            logger.warning("taking over the stale run lock %s (%s)", self.path, reason)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        raise RunLockError(
            f"output folder {self.directory}: could not acquire the run lock {self.path} "
            "(another process keeps re-creating it); choose another output folder"
        )

    def release(self) -> None:
        """Remove the lock file if this object holds it (idempotent)."""
        if not self._held:
            return
        self._held = False
        info = self.read()
        if info is not None and info.get("pid") not in (os.getpid(), None):
            return  # someone took it over (overwrite=True); leave theirs alone
        with contextlib.suppress(OSError):
            self.path.unlink()

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
        return f"RunLock({str(self.directory)!r}, held={self._held})"
