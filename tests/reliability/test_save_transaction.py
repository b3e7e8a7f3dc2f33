"""One epoch's save is one transaction: Ctrl-C or a read-only folder at any of its writes.

The writes of one save, in commit order: ``last.pt`` (atomic rename), the ``best.pt`` link
(best epochs only), the ``history.jsonl`` line, the ``history.csv`` line. ``last.pt``
holds every epoch's record and the best epoch, so whatever stops the save part-way, the
resumed run ends with ``best.pt`` = the best epoch's weights and both history files
complete and equal, like an uninterrupted run. SIGKILL at each write is in
``test_kill_resume.py``; these run in-process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import suimseg.engine.callbacks as callbacks_mod
import suimseg.engine.history as history_mod
from suimseg.engine import (
    EpochRecord,
    HistoryWriter,
    Trainer,
    atomic_save,
    default_callbacks,
    load_checkpoint,
    make_checkpoint,
    read_history,
)
from suimseg.errors import CheckpointError

from .conftest import CE, TinyNet, tiny_loader

EPOCHS, BEST_EPOCH = 3, 2
WRITES = ("last.pt", "best.pt", "history.jsonl", "history.csv")  # of a best epoch's save
WALL_CLOCK = ("epoch_time_s", "images_per_s")


def _trainer(out: Path) -> Trainer:
    """TinyNet whose epoch 3 trains on the negated loss: epochs 1, 2 improve, 3 does not."""
    torch.manual_seed(0)
    model = TinyNet()
    trainer: Trainer

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        loss = CE(logits, target)
        return -loss if model.training and trainer.current_epoch == 3 else loss

    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    callbacks = default_callbacks(out, verbose=False, progress=False)
    trainer = Trainer(model, loss_fn, opt, device="cpu", callbacks=callbacks)
    return trainer


def _fit(out: Path, *, resume: bool = False, epochs: int = EPOCHS) -> Trainer:
    trainer = _trainer(out)
    loaders = tiny_loader(n=8, size=8), tiny_loader(n=4, size=8, seed=1)
    trainer.fit(*loaders, epochs=epochs, resume_from=out / "last.pt" if resume else None)
    return trainer


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    _fit(out)
    assert [r["is_best"] for r in read_history(out / "history.jsonl")] == [True, True, False]
    return out


def _rows(path: Path) -> list[dict[str, Any]]:
    rows = read_history(path)
    if path.suffix == ".jsonl":
        rows = [EpochRecord.from_dict(r).to_row() for r in rows]
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]


def _assert_like_reference(out: Path, reference: Path) -> None:
    ref_best, best = load_checkpoint(reference / "best.pt"), load_checkpoint(out / "best.pt")
    assert ref_best["epoch"] == best["epoch"] == BEST_EPOCH
    for key, value in ref_best["model_state"].items():
        assert torch.equal(value, best["model_state"][key]), key
    expected = _rows(reference / "history.csv")
    assert [r["epoch"] for r in expected] == list(range(1, EPOCHS + 1))
    assert _rows(out / "history.jsonl") == expected
    assert _rows(out / "history.csv") == expected


@pytest.fixture
def at_write(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, int, Callable[[], None]], None]:
    """``at_write(epoch, k, action)``: run ``action`` before the k-th write of that save."""

    def install(epoch: int, k: int, action: Callable[[], None]) -> None:
        count = {"epoch": 0, "n": 0}

        def counted(real: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                trainer_epoch = _current[0].epoch if _current else 0
                if trainer_epoch != count["epoch"]:
                    count["epoch"], count["n"] = trainer_epoch, 0
                if trainer_epoch == epoch:
                    count["n"] += 1
                    if count["n"] == k:
                        action()
                return real(*args, **kwargs)

            return wrapper

        monkeypatch.setattr(callbacks_mod, "atomic_save", counted(callbacks_mod.atomic_save))
        monkeypatch.setattr(callbacks_mod, "atomic_link", counted(callbacks_mod.atomic_link))
        monkeypatch.setattr(history_mod, "_append_line", counted(history_mod._append_line))

    return install


_current: list[Trainer] = []  # the trainer whose writes at_write counts


@pytest.fixture(autouse=True)
def _track_trainer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_fit = Trainer.fit

    def fit(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        _current[:] = [self]
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", fit)
    yield
    _current.clear()


def _interrupt() -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("k", range(1, len(WRITES) + 1), ids=WRITES)
def test_ctrl_c_at_every_write_of_a_save_then_resume(
    k: int,
    tmp_path: Path,
    reference: Path,
    at_write: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ctrl-C before the k-th write of the best epoch's save (the last, 2 of 3)."""
    at_write(BEST_EPOCH, k, _interrupt)
    with caplog.at_level(logging.WARNING, logger="suimseg"):
        trainer = _fit(tmp_path)
    assert trainer.interrupted
    last = tmp_path / "last.pt"
    where = f"after epoch {BEST_EPOCH} of {EPOCHS} finished"
    assert f"training interrupted {where}; saved {last} (epoch {BEST_EPOCH})" in caplog.text
    assert load_checkpoint(last)["epoch"] == BEST_EPOCH
    # The Ctrl-C save commits the whole epoch: best.pt too, whichever write it stopped.
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == BEST_EPOCH
    _fit(tmp_path, resume=True)
    _assert_like_reference(tmp_path, reference)


def test_ctrl_c_in_the_last_epochs_save_says_after_not_during(
    tmp_path: Path, at_write: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    at_write(EPOCHS, 3, _interrupt)  # epoch 3 (not best): last.pt, history.jsonl, csv
    with caplog.at_level(logging.WARNING, logger="suimseg"):
        trainer = _fit(tmp_path)
    assert trainer.interrupted
    assert f"training interrupted after epoch {EPOCHS} of {EPOCHS} finished" in caplog.text
    assert f"epoch {EPOCHS + 1}" not in caplog.text  # was "during epoch 4" of a 3-epoch run
    # ... and the next resume has nothing left to do but repair the history's last line.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="suimseg"):
        assert _fit(tmp_path, resume=True).history[-1].epoch == EPOCHS
    assert "history.csv rewritten from the checkpoint of epoch 3" in caplog.text
    assert _rows(tmp_path / "history.csv") == _rows(tmp_path / "history.jsonl")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores modes")
@pytest.mark.parametrize(
    ("k", "failing"),
    [(1, "last.pt"), (2, "best.pt"), (3, "last.pt")],
    ids=["before-last.pt", "before-best.pt", "before-history.jsonl"],
)
def test_read_only_folder_during_a_save_fails_naming_the_file_then_resume_repairs(
    k: int, failing: str, tmp_path: Path, reference: Path, at_write: Callable[..., None]
) -> None:
    """The folder turns read-only before the k-th write of epoch 2's save.

    Appending to an existing history file needs no new directory entry, so with k=3 the
    history lines are written and the run fails at epoch 3's ``last.pt`` instead.
    """
    at_write(BEST_EPOCH, k, lambda: tmp_path.chmod(0o500))
    try:
        with pytest.raises(OSError, match=rf"could not write checkpoint .*{failing}: ") as error:
            _fit(tmp_path)
    finally:
        tmp_path.chmod(0o700)
    assert error.value.filename == str(tmp_path / failing)
    assert failing in str(error.value)
    _fit(tmp_path, resume=True)
    _assert_like_reference(tmp_path, reference)


@pytest.mark.parametrize(
    ("k", "failing"),
    [(1, "last.pt"), (2, "best.pt"), (3, "last.pt")],
    ids=["before-last.pt", "before-best.pt", "before-history.jsonl"],
)
def test_simulated_read_only_folder_fails_naming_the_file_then_resume_repairs(
    k: int,
    failing: str,
    tmp_path: Path,
    reference: Path,
    at_write: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The test above for a root user (who ignores modes, as CI's may): from the k-th write
    of epoch 2's save on, creating a file or a link in the run folder fails with EACCES, as
    in a read-only folder (appending to an existing file still works), until "chmod back".
    """
    import errno

    import suimseg._atomic as atomic_mod
    import suimseg.engine.checkpoint as checkpoint_mod

    read_only = [False]

    def denied(path: Any) -> None:
        if read_only[0] and Path(path).parent == tmp_path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    real_open, real_link = open, os.link

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wx") or ("a" in mode and not Path(file).exists()):
            denied(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        denied(dst)
        real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(atomic_mod, "open", fake_open, raising=False)
    monkeypatch.setattr(checkpoint_mod.os, "link", fake_link)
    at_write(BEST_EPOCH, k, lambda: read_only.__setitem__(0, True))
    try:
        with pytest.raises(OSError, match=rf"could not write checkpoint .*{failing}: ") as error:
            _fit(tmp_path)
    finally:
        read_only[0] = False  # the folder is writable again
    assert error.value.filename == str(tmp_path / failing)
    _fit(tmp_path, resume=True)
    _assert_like_reference(tmp_path, reference)


def test_a_missing_best_pt_of_an_earlier_epoch_is_reported_as_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fit(tmp_path)
    (tmp_path / "best.pt").unlink()  # outside suimseg: the commit order never does this
    with caplog.at_level(logging.WARNING, logger="suimseg"):
        _fit(tmp_path, resume=True, epochs=EPOCHS + 1)
    assert f"{tmp_path / 'best.pt'} is missing, not the best epoch {BEST_EPOCH}" in caplog.text
    assert "this folder no longer holds those weights" in caplog.text


def test_resume_from_another_folders_last_pt_carries_the_whole_history(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fit(tmp_path / "a", epochs=BEST_EPOCH)
    trainer = _trainer(tmp_path / "b")
    loaders = tiny_loader(n=8, size=8), tiny_loader(n=4, size=8, seed=1)
    with caplog.at_level(logging.WARNING, logger="suimseg"):
        trainer.fit(*loaders, epochs=EPOCHS, resume_from=tmp_path / "a" / "last.pt")
    assert "best.pt" not in caplog.text  # a's best epoch is in a/best.pt: nothing to say
    assert [r["epoch"] for r in read_history(tmp_path / "b" / "history.csv")] == [1, 2, 3]
    assert _rows(tmp_path / "b" / "history.csv") == _rows(tmp_path / "b" / "history.jsonl")


def test_overwrite_removes_the_old_runs_best_pt(tmp_path: Path) -> None:
    _fit(tmp_path)
    trainer = _trainer(tmp_path)
    trainer.callbacks = default_callbacks(tmp_path, overwrite=True, verbose=False, progress=False)
    trainer.fit(tiny_loader(n=8, size=8), None, epochs=1)  # no validation: no best epoch
    assert not (tmp_path / "best.pt").exists()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


# ----------------------------------------------------------------------------- units


def test_checkpoint_holds_every_epochs_record_beyond_the_64_kib_of_extra(
    tmp_path: Path,
) -> None:
    record = EpochRecord(epoch=1, train_loss=0.5, val_iou={f"c{i}": 0.5 for i in range(8)})
    rows = [{**record.to_dict(), "epoch": e} for e in range(1, 301)]  # ~150 KB of JSON
    path = atomic_save(
        make_checkpoint(torch.nn.Linear(2, 2), model_spec=None, epoch=300,
                        extra={"history": rows}),
        tmp_path / "last.pt",
    )  # fmt: skip
    assert load_checkpoint(path)["extra"]["history"] == rows


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ({"epoch": 1}, "must be a list"),
        ([1.5], "row 0 must be a dict"),
        ([{"epoch": 1, "val_iou": {"a": {"b": 1}}}], "nested deeper"),
        ([{"epoch": 1, "note": "x" * 70_000}], "above the limit"),
    ],
    ids=["not-a-list", "not-a-dict", "too-deep", "too-big"],
)
def test_a_damaged_history_field_is_refused(history: Any, message: str, tmp_path: Path) -> None:
    path = atomic_save(
        make_checkpoint(torch.nn.Linear(2, 2), model_spec=None, epoch=1,
                        extra={"history": history}),
        tmp_path / "last.pt",
    )  # fmt: skip
    with pytest.raises(CheckpointError, match=f"extra.history.*{message}"):
        load_checkpoint(path)


def test_sync_rewrites_only_the_file_that_differs_from_the_records(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path)
    records = [EpochRecord(epoch=e, train_loss=1.0 / e) for e in (1, 2)]
    writer.append(records[0])
    history_mod._append_line(writer.jsonl_path, '{"epoch": 2, "train_lo')  # torn jsonl
    before = writer.csv_path.read_bytes()
    dicts = [r.to_dict() for r in records]
    assert writer.sync_to_epoch(2, records=dicts)
    assert [r["epoch"] for r in read_history(writer.jsonl_path)] == [1, 2]
    assert [r["epoch"] for r in read_history(writer.csv_path)] == [1, 2]
    assert writer.csv_path.read_bytes().startswith(before)
    assert not writer.sync_to_epoch(2, records=dicts)  # nothing left to do
    # The records are the source of truth: rows beyond them (an uncommitted epoch) go.
    writer.append(EpochRecord(epoch=3, train_loss=0.1))
    assert writer.sync_to_epoch(2, records=dicts)
    assert _rows(writer.csv_path) == _rows(writer.jsonl_path)
    assert [r["epoch"] for r in read_history(writer.csv_path)] == [1, 2]
