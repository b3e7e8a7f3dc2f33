"""SIGKILL at any moment, then resume: the finished run equals an uninterrupted one.

One driver subprocess imports torch and suimseg once, then forks one child per run: a
reference run, and for every kill point a run that SIGKILLs itself there (mid-step,
mid-validation, inside the checkpoint write, inside the best.pt copy, inside the history
append) followed by a run resumed from ``last.pt``. The kill points are placed by patching
functions inside the child only; the library has no test hook. With deterministic CPU
settings the resumed runs' weights, optimizer state and history must equal the reference
bit for bit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from suimseg.engine import load_checkpoint, read_history

EPOCHS = 3

DRIVER = r"""
import json, os, random, shutil, signal, sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

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


def run(out, kill, resume):
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
    state = {"epoch": 0, "step": 0, "saves": 0}

    class Probe(Callback):
        def on_epoch_start(self, trainer, epoch):
            state["epoch"], state["step"] = epoch, 0

    def loss_fn(logits, target):
        if model.training:
            state["step"] += 1
            if kill == ["step", state["epoch"], state["step"]]:
                die()  # after the forward pass, before backward/step
        elif kill == ["eval", state["epoch"]]:
            die()
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


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kill")
    script = root / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.run(
        [sys.executable, str(script), str(root), str(EPOCHS), json.dumps(KILLS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["reference"] == 0, proc.stderr[-3000:]
    for name in KILLS:
        assert report[name] == [-9, 0], (name, report[name], proc.stderr[-3000:])
    return root


def _history(folder: Path) -> list[tuple[int, float, float]]:
    rows = read_history(folder / "history.jsonl")
    return [(r["epoch"], r["train_loss"], r["val_miou"]) for r in rows]


@pytest.mark.parametrize("name", list(KILLS))
def test_killed_run_keeps_a_loadable_checkpoint(runs: Path, name: str) -> None:
    after = runs / f"{name}-after-kill"
    ckpt = load_checkpoint(after / "last.pt")
    assert ckpt["epoch"] == LAST_AFTER_KILL[name]
    assert load_checkpoint(after / "best.pt")["epoch"] >= 1
    assert (after / ".suimseg.lock").exists()  # SIGKILL cannot clean up: a stale lock
    if name in ("inside-checkpoint-write", "inside-best-link"):  # ... nor its temporary file
        assert [p for p in after.iterdir() if ".tmp-" in p.name or ".link-" in p.name]


@pytest.mark.parametrize("name", list(KILLS))
def test_resumed_run_equals_the_uninterrupted_run(runs: Path, name: str) -> None:
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
