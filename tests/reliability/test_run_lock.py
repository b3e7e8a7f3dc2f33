"""One run per output folder: RunLock (an OS lock), refusing an existing run, overwrite."""

from __future__ import annotations

import inspect
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from suimseg.engine import LOCK_NAME, RunLock, load_checkpoint, read_history
from suimseg.errors import RunLockError

# The holder runs suimseg's own RunLock (engine/lock.py, loaded from its file so that the
# child starts in a fraction of a second instead of importing torch through suimseg.engine).
_HOLD = (
    "import importlib.util, sys, time; "
    "spec = importlib.util.spec_from_file_location('_suimseg_lock', sys.argv[2]); "
    "lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock); "
    "lock.RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"
)
_LOCK_SOURCE = inspect.getfile(RunLock)


def _holder(folder: Path) -> subprocess.Popen[str]:
    """A subprocess that takes the folder's lock and sleeps; returns once it holds it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder), _LOCK_SOURCE],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_file_holds_pid_and_host_and_is_removed(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run") as lock:
        info = json.loads(lock.path.read_text())
        assert info["pid"] == os.getpid()
        assert info["host"] == socket.gethostname()
        assert isinstance(info["started"], float)
        assert lock.held
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_live_holder_is_refused_naming_pid_host_time_and_path(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    try:
        pattern = rf"in use .*PID {holder.pid} on host {socket.gethostname()} since 20.*\.suimseg"
        with pytest.raises(RunLockError, match=pattern):
            RunLock(tmp_path).acquire()
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid  # untouched
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holders_lock_is_free_at_once(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    path = tmp_path / LOCK_NAME
    assert json.loads(path.read_text())["pid"] == holder.pid  # left behind, but unlocked
    with RunLock(tmp_path) as lock:
        assert lock.held
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


def test_a_leftover_garbage_lock_file_is_no_obstacle(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text("not json")
    with RunLock(tmp_path) as lock:
        assert lock.held


def test_a_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with RunLock(tmp_path), pytest.raises(RunLockError, match=rf"PID {os.getpid()} "):
        RunLock(tmp_path).acquire()


def _contend(folder: str, barrier: Any, results: Any, done: Any) -> None:
    barrier.wait()
    try:
        lock = RunLock(folder).acquire()
    except RunLockError:
        results.put(False)
        return
    results.put(True)
    done.wait(30)  # hold the lock until every contender has tried
    lock.release()


@pytest.mark.parametrize("contenders", [3, pytest.param(6, marks=pytest.mark.slow)])
def test_exactly_one_of_many_simultaneous_contenders_wins(tmp_path: Path, contenders: int) -> None:
    ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for trial in range(30):
        folder = str(tmp_path / f"t{trial}")
        if trial % 2:  # a killed run's leftover file (issue #19: racing takeovers of it)
            os.mkdir(folder)
            stale = {"pid": dead.pid, "host": socket.gethostname(), "started": 0.0}
            Path(folder, LOCK_NAME).write_text(json.dumps(stale))
        barrier, results, done = ctx.Barrier(contenders + 1), ctx.Queue(), ctx.Event()
        procs = [
            ctx.Process(target=_contend, args=(folder, barrier, results, done))
            for _ in range(contenders)
        ]
        for p in procs:
            p.start()
        barrier.wait()  # all start together
        wins = [results.get(timeout=30) for _ in procs]
        done.set()  # let the winner release
        for p in procs:
            p.join(timeout=30)
        assert wins.count(True) == 1, f"trial {trial}: {wins.count(True)} winners"
        assert not (tmp_path / f"t{trial}" / LOCK_NAME).exists()


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
    holder = _holder(tmp_path)
    try:
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
