"""SIGKILL at any moment, then resume: the finished run equals an uninterrupted one.

One driver subprocess imports torch and suimseg once, then forks one child per run: a
reference run, and for every kill point a run that SIGKILLs itself there (mid-step,
mid-validation, inside the checkpoint write, inside the best.pt copy, inside the history
append, and before, inside and after each of the four writes of one epoch's save)
followed by a run resumed from ``last.pt``. The kill points are placed by patching
functions inside the child only; the library has no test hook. With deterministic CPU
settings the resumed runs' weights, optimizer state and history must equal the reference
bit for bit, and every derived file (``best.pt``, both history files) must be repaired.

One save is one transaction: epochs 1 and 2 are best epochs and epoch 3 is not (its
training loss is negated), so a kill inside epoch 2's save that is not repaired on resume
leaves ``best.pt`` holding epoch 1 at the end, which the tests catch.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from suimseg.engine import EpochRecord, load_checkpoint, read_history

EPOCHS = 3

DRIVER = r"""
import json, logging, os, random, shutil, signal, sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import suimseg.engine.callbacks as callbacks_mod
import suimseg.engine.history as history_mod
import suimseg.engine.checkpoint as checkpoint_mod
from suimseg.engine import Callback, Trainer, default_callbacks

ROOT = Path(sys.argv[1])
EPOCHS = int(sys.argv[2])
KILLS = json.loads(sys.argv[3])


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Dropout2d(0.2), nn.Conv2d(4, 3, 1),
        )

    def forward(self, x):
        return self.body(x)


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_write(state, kill_epoch, kill_at, mode):
    # The writes of one epoch's save, in commit order: atomic_save(last.pt),
    # atomic_link(best.pt) (best epochs only), history.jsonl append, history.csv append.
    # Die before the k-th, inside it (a torn write) or after it.
    real_save, real_link = callbacks_mod.atomic_save, callbacks_mod.atomic_link
    real_append = history_mod._append_line

    def torn_save(obj, path):
        def half(obj, f, *a, **k):
            f.write(b"PK\x03\x04 half a checkpoint")
            f.flush()
            die()
        torch.save = half
        real_save(obj, path)

    def torn_link(src, dst):
        real_os_link = checkpoint_mod.os.link
        def link(a, b, *args, **kwargs):
            real_os_link(a, b, *args, **kwargs)
            die()  # the temporary link exists, best.pt is not replaced yet
        checkpoint_mod.os.link = link
        real_link(src, dst)

    def torn_append(path, line):
        real_write = os.write
        def write(fd, data):
            real_write(fd, data[: len(data) // 2])
            die()
        history_mod.os.write = write
        real_append(path, line)

    def counted(real, torn):
        def wrapper(*args, **kwargs):
            if state["epoch"] == kill_epoch:
                state["writes"] += 1
                if state["writes"] == kill_at:
                    if mode == "before":
                        die()
                    if mode == "torn":
                        torn(*args, **kwargs)
                    real(*args, **kwargs)
                    die()
            return real(*args, **kwargs)
        return wrapper

    callbacks_mod.atomic_save = counted(real_save, torn_save)
    callbacks_mod.atomic_link = counted(real_link, torn_link)
    history_mod._append_line = counted(real_append, torn_append)


def run(out, kill, resume):
    logging.basicConfig(filename=f"{out}-{'resume' if resume else 'first'}.log",
                        level=logging.INFO, force=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0); random.seed(0); np.random.seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 8, 8, generator=g)
    y = x.argmax(1)
    y[:, 0, 0] = 255
    train = DataLoader(TensorDataset(x, y), batch_size=2, shuffle=True)
    val = DataLoader(TensorDataset(x[:4], y[:4]), batch_size=2)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    ce = nn.CrossEntropyLoss(ignore_index=255)
    state = {"epoch": 0, "step": 0, "saves": 0, "writes": 0}

    class Probe(Callback):
        def on_epoch_start(self, trainer, epoch):
            state["epoch"], state["step"], state["writes"] = epoch, 0, 0

    def loss_fn(logits, target):
        if model.training:
            state["step"] += 1
            if kill == ["step", state["epoch"], state["step"]]:
                die()  # after the forward pass, before backward/step
        elif kill == ["eval", state["epoch"]]:
            die()
        if model.training and state["epoch"] == 3:
            return -ce(logits, target)  # epoch 3 gets worse: the best epoch stays 2
        return ce(logits, target)

    if kill and kill[0] == "save":
        real_save = torch.save
        def save(obj, f, *a, **k):
            state["saves"] += 1
            if state["saves"] == kill[1]:
                f.write(b"PK\x03\x04 half a checkpoint")
                f.flush()  # in the kernel's page cache: a SIGKILL keeps it (no fileno: see _atomic)
                die()
            return real_save(obj, f, *a, **k)
        torch.save = save
    if kill and kill[0] == "best":
        # best.pt is a hard link to last.pt made under a temporary name, then renamed:
        # die once the temporary link exists, before the rename.
        real_link = checkpoint_mod.os.link
        def link(src, dst, *a, **k):
            real_link(src, dst, *a, **k)
            if state["epoch"] == kill[1]:
                die()
        checkpoint_mod.os.link = link
    if kill and kill[0] == "history":
        real_write = os.write
        def write(fd, data):
            if state["epoch"] == kill[1] and data.startswith(b"{"):
                real_write(fd, data[: len(data) // 2])
                die()
            return real_write(fd, data)
        history_mod.os.write = write

    if kill and kill[0] == "write":
        kill_at_write(state, *kill[1:])

    callbacks = default_callbacks(out, verbose=False, progress=False) + [Probe()]
    trainer = Trainer(model, loss_fn, opt, device="cpu", callbacks=callbacks)
    trainer.fit(train, val, epochs=EPOCHS,
                resume_from=out / "last.pt" if resume else None)


def child(out, kill, resume):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            run(out, kill, resume)
        except BaseException as exc:  # report, never fall back into the driver
            print(f"child failed: {exc!r}", file=sys.stderr, flush=True)
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


report = {"reference": child(ROOT / "reference", None, False)}
for name, kill in KILLS.items():
    out = ROOT / name
    first = child(out, kill, False)
    shutil.copytree(out, ROOT / (name + "-after-kill"))
    second = child(out, kill=None, resume=True)
    report[name] = [first, second]
print(json.dumps(report))
"""

KILLS = {
    "mid-step": ["step", 2, 3],
    "mid-validation": ["eval", 2],
    "inside-checkpoint-write": ["save", 2],
    "inside-best-link": ["best", 2],
    "inside-history-append": ["history", 2],
}
# Completed epochs that last.pt must hold right after each kill.
LAST_AFTER_KILL = {
    "mid-step": 1,
    "mid-validation": 1,
    "inside-checkpoint-write": 1,
    "inside-best-link": 2,
    "inside-history-append": 2,
}
BEST_EPOCH = 2  # of the reference run (asserted)
# The writes of epoch 2's save, in commit order; a kill before, inside ("torn") or after
# each. What the resume must repair, and say it repaired, after each kill point:
SAVE_WRITES = ("last.pt", "best.pt", "history.jsonl", "history.csv")
ALL_FILES = {"best.pt", "history.jsonl", "history.csv"}
REPAIRS: dict[str, set[str]] = {}
for _k, _file in enumerate(SAVE_WRITES, start=1):
    for _mode in ("before", "torn", "after"):
        _done = SAVE_WRITES[: _k if _mode == "after" else _k - 1]  # writes that committed
        _name = f"save-{_mode}-{_file}"
        KILLS[_name] = ["write", BEST_EPOCH, _k, _mode]
        LAST_AFTER_KILL[_name] = BEST_EPOCH if "last.pt" in _done else BEST_EPOCH - 1
        # last.pt of epoch 2 committed: every later write of the save it lacks is redone
        REPAIRS[_name] = (ALL_FILES - set(_done)) if "last.pt" in _done else set()
# Kept in the default run (the rest are @slow): the gap between last.pt and the best.pt
# link, the gap between the two history files, and a torn CSV line.
DEFAULT_WRITE_KILLS = ("save-before-best.pt", "save-after-history.jsonl", "save-torn-history.csv")
SLOW = [n for n in KILLS if n in REPAIRS and n not in DEFAULT_WRITE_KILLS]


def _drive(root: Path, names: list[str]) -> Path:
    script = root / "driver.py"
    script.write_text(DRIVER)
    kills = {name: KILLS[name] for name in names}
    proc = subprocess.run(
        [sys.executable, str(script), str(root), str(EPOCHS), json.dumps(kills)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["reference"] == 0, proc.stderr[-3000:]
    for name in kills:
        assert report[name] == [-9, 0], (name, report[name], proc.stderr[-3000:])
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _drive(tmp_path_factory.mktemp("kill"), [n for n in KILLS if n not in SLOW])


@pytest.fixture(scope="module")
def slow_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _drive(tmp_path_factory.mktemp("kill-slow"), SLOW)


def _param(name: str) -> Any:
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


def _root(request: pytest.FixtureRequest, name: str) -> Path:
    return cast(Path, request.getfixturevalue("slow_runs" if name in SLOW else "runs"))


def _history(folder: Path) -> list[tuple[int, float, float]]:
    rows = read_history(folder / "history.jsonl")
    return [(r["epoch"], r["train_loss"], r["val_miou"]) for r in rows]


@pytest.mark.parametrize("name", [_param(n) for n in KILLS])
def test_killed_run_keeps_a_loadable_checkpoint(request: pytest.FixtureRequest, name: str) -> None:
    runs = _root(request, name)
    after = runs / f"{name}-after-kill"
    ckpt = load_checkpoint(after / "last.pt")
    assert ckpt["epoch"] == LAST_AFTER_KILL[name]
    assert load_checkpoint(after / "best.pt")["epoch"] >= 1
    assert (after / ".suimseg.lock").exists()  # SIGKILL cannot clean up: a stale lock
    if name in ("inside-checkpoint-write", "inside-best-link"):  # ... nor its temporary file
        assert [p for p in after.iterdir() if ".tmp-" in p.name or ".link-" in p.name]


@pytest.mark.parametrize("name", [_param(n) for n in KILLS])
def test_resumed_run_equals_the_uninterrupted_run(
    request: pytest.FixtureRequest, name: str
) -> None:
    runs = _root(request, name)
    ref = load_checkpoint(runs / "reference" / "last.pt")
    got = load_checkpoint(runs / name / "last.pt")
    assert got["epoch"] == ref["epoch"] == EPOCHS
    assert got["global_step"] == ref["global_step"]
    assert ref["model_state"].keys() == got["model_state"].keys()
    for key, value in ref["model_state"].items():
        assert torch.equal(value, got["model_state"][key]), key
    got_state = got["optimizer_state"]["state"]
    for pid, st in ref["optimizer_state"]["state"].items():
        assert torch.equal(st["momentum_buffer"], got_state[pid]["momentum_buffer"])
    assert _history(runs / name) == _history(runs / "reference")
    csv_epochs = [r["epoch"] for r in read_history(runs / name / "history.csv")]
    assert csv_epochs == list(range(1, EPOCHS + 1))
    assert not (runs / name / ".suimseg.lock").exists()
    # The resumed run removed the temporary files that the kill left behind.
    leftovers = [p.name for p in (runs / name).iterdir() if ".tmp-" in p.name or ".link-" in p.name]
    assert leftovers == []


WALL_CLOCK = ("epoch_time_s", "images_per_s")


def _rows(path: Path) -> list[dict[str, Any]]:
    """The file's rows, flat (CSV columns) and without the wall-clock figures."""
    rows = read_history(path)
    if path.suffix == ".jsonl":
        rows = [EpochRecord.from_dict(r).to_row() for r in rows]
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]


@pytest.mark.parametrize("name", [_param(n) for n in KILLS])
def test_resume_repairs_every_derived_file(request: pytest.FixtureRequest, name: str) -> None:
    runs = _root(request, name)
    ref, got = runs / "reference", runs / name
    ref_best = load_checkpoint(ref / "best.pt")
    assert ref_best["epoch"] == BEST_EPOCH < EPOCHS  # the scenario the kill points need
    best = load_checkpoint(got / "best.pt")
    assert best["epoch"] == BEST_EPOCH
    for key, value in ref_best["model_state"].items():
        assert torch.equal(value, best["model_state"][key]), key  # bit for bit
    expected = _rows(ref / "history.csv")
    assert [r["epoch"] for r in expected] == list(range(1, EPOCHS + 1))
    assert _rows(got / "history.jsonl") == expected  # complete, and equal to each other
    assert _rows(got / "history.csv") == expected
    for file in ("history.jsonl", "history.csv"):  # whole lines only: nothing torn
        assert (got / file).read_text().endswith("\n"), file


@pytest.mark.parametrize("name", [_param(n) for n in REPAIRS])
def test_resume_messages_are_true(request: pytest.FixtureRequest, name: str) -> None:
    runs = _root(request, name)
    log = (runs / f"{name}-resume.log").read_text()
    last = LAST_AFTER_KILL[name]
    assert f"resumed from {runs / name / 'last.pt'} after epoch {last}" in log
    assert all(int(n) <= EPOCHS for n in re.findall(r"epoch (\d+)", log)), log
    repaired = REPAIRS[name]
    relinked = f"relinked to {runs / name / 'last.pt'} (epoch {BEST_EPOCH})" in log
    assert relinked == ("best.pt" in repaired), log
    rewritten = re.search(r"(history\S+)(?: and (history\S+))? rewritten from the checkpoint "
                          rf"of epoch {last} \({last} epoch records\)", log)  # fmt: skip
    files = {f for f in rewritten.groups() if f} if rewritten else set()
    assert files == repaired - {"best.pt"}, log
    assert "no longer holds" not in log
