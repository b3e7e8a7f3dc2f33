"""One run per output folder: RunLock, stale locks, refusing an existing run, overwrite."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from suimseg.engine import LOCK_NAME, RunLock, load_checkpoint, read_history
from suimseg.engine.lock import pid_alive
from suimseg.errors import RunLockError


def _write_lock(folder: Path, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    info = {"pid": pid, "host": host or socket.gethostname(), "started": 0.0}
    path.write_text(json.dumps(info))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def test_lock_file_holds_pid_and_host_and_is_removed(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run") as lock:
        info = json.loads(lock.path.read_text())
        assert info["pid"] == os.getpid()
        assert info["host"] == socket.gethostname()
        assert isinstance(info["started"], float)
        assert lock.held
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_live_holder_is_refused_naming_pid_and_path(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path = _write_lock(tmp_path, holder.pid)
        with pytest.raises(RunLockError, match=rf"in use .*process {holder.pid}.*\.suimseg\.lock"):
            RunLock(tmp_path).acquire()
        assert json.loads(path.read_text())["pid"] == holder.pid  # untouched
        with RunLock(tmp_path, overwrite=True):  # the user says the other run is gone
            assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_dead_process_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid = _dead_pid()
    path = _write_lock(tmp_path, pid)
    with caplog.at_level(logging.WARNING, logger="suimseg"), RunLock(tmp_path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"process {pid}, which is no longer running" in caplog.text
    assert not path.exists()


def test_other_host_is_refused_unless_overwrite(tmp_path: Path) -> None:
    _write_lock(tmp_path, 1, host="some-other-machine")
    with pytest.raises(RunLockError, match="on host 'some-other-machine'"):
        RunLock(tmp_path).acquire()
    with RunLock(tmp_path, overwrite=True) as lock:
        assert lock.held


def test_garbage_lock_file_is_treated_as_stale(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    path.write_text("not json")
    os.utime(path, (0, 0))  # old: not being written right now
    with RunLock(tmp_path) as lock:
        assert lock.held


def test_release_leaves_a_lock_taken_over_by_someone_else(tmp_path: Path) -> None:
    lock = RunLock(tmp_path).acquire()
    _write_lock(tmp_path, 1, host="other")  # another run forced its way in
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()


def test_unwritable_folder_names_the_lock_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def denied(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(LOCK_NAME):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(OSError, match=r"could not create the run lock .*\.suimseg\.lock"):
        RunLock(tmp_path).acquire()


# ----------------------------------------------------------------------------- Trainer.fit


def test_fit_refuses_a_folder_locked_by_a_live_run(
    tmp_path: Path, make_trainer: Any, make_loader: Any
) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _write_lock(tmp_path, holder.pid)
        with pytest.raises(RunLockError, match="in use by another suimseg run"):
            make_trainer(tmp_path).fit(make_loader(), epochs=1)
        assert not (tmp_path / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()


def test_fit_holds_the_lock_while_running_and_releases_it_on_errors(
    tmp_path: Path, make_trainer: Any, make_loader: Any
) -> None:
    from suimseg.engine import Callback

    seen: list[bool] = []

    class Probe(Callback):
        def on_epoch_end(self, trainer: Any, record: Any) -> None:
            seen.append((tmp_path / LOCK_NAME).exists())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        make_trainer(tmp_path, callbacks=[Probe()]).fit(make_loader(), epochs=2)
    assert seen == [True]
    assert not (tmp_path / LOCK_NAME).exists()


def test_second_run_in_a_finished_folder_refuses_then_resume_and_overwrite_work(
    tmp_path: Path, make_trainer: Any, make_loader: Any
) -> None:
    make_trainer(tmp_path).fit(make_loader(), epochs=2)
    with pytest.raises(RunLockError, match=r"already holds a training run .*last\.pt.*overwrite"):
        make_trainer(tmp_path).fit(make_loader(), epochs=1)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2  # untouched

    resumed = make_trainer(tmp_path)
    resumed.fit(make_loader(), epochs=3, resume_from=tmp_path / "last.pt")
    assert [r["epoch"] for r in read_history(tmp_path)] == [1, 2, 3]

    fresh = make_trainer(tmp_path, overwrite=True)
    fresh.fit(make_loader(), epochs=1)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert [r["epoch"] for r in read_history(tmp_path)] == [1]  # new history
    assert [r["epoch"] for r in read_history(tmp_path / "history.csv")] == [1]


def test_same_trainer_may_continue_its_own_run(
    tmp_path: Path, make_trainer: Any, make_loader: Any
) -> None:
    trainer = make_trainer(tmp_path)
    trainer.fit(make_loader(), epochs=1)
    trainer.fit(make_loader(), epochs=2)  # the trainer owns last.pt: no refusal
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
