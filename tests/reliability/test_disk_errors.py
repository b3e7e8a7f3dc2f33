"""Disk errors while writing checkpoints and history: clear errors, nothing good lost."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from suimseg.engine import (
    EpochRecord,
    HistoryWriter,
    atomic_save,
    load_checkpoint,
    make_checkpoint,
    read_history,
)

ERRNOS = [
    pytest.param(errno.ENOSPC, "No space left on device", id="ENOSPC"),
    pytest.param(errno.EIO, "Input/output error", id="EIO"),
    pytest.param(errno.EACCES, "Permission denied", id="EACCES"),
]


def _ckpt(epoch: int) -> dict[str, Any]:
    return make_checkpoint(nn.Linear(2, 2), model_spec=None, epoch=epoch)


@pytest.mark.parametrize(("code", "text"), ERRNOS)
@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_checkpoint_write_error_names_path_and_keeps_previous(
    code: int, text: str, where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = atomic_save(_ckpt(1), tmp_path / "last.pt")

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, text)

    if where == "write":
        monkeypatch.setattr(torch, "save", fail)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", fail)
    else:
        monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match=rf"could not write checkpoint .*last\.pt: {text}") as e:
        atomic_save(_ckpt(2), path)
    assert e.value.errno == code
    assert e.value.filename == str(path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


@pytest.mark.parametrize(("code", "text"), ERRNOS)
def test_history_write_error_names_file_and_leaves_no_partial_line(
    code: int, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = HistoryWriter(tmp_path)
    writer.append(EpochRecord(epoch=1, train_loss=0.5))
    before = writer.jsonl_path.read_bytes()
    real_write = os.write

    def partial_then_fail(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])  # half the line reaches the disk
        raise OSError(code, text)

    monkeypatch.setattr(os, "write", partial_then_fail)
    with pytest.raises(OSError, match=rf"could not write history file .*history\.jsonl: {text}"):
        writer.append(EpochRecord(epoch=2, train_loss=0.4))
    monkeypatch.undo()
    assert writer.jsonl_path.read_bytes() == before  # cut back: no torn line
    assert [r["epoch"] for r in read_history(writer.jsonl_path)] == [1]
    writer.append(EpochRecord(epoch=2, train_loss=0.4))  # and it keeps working afterwards
    assert [r["epoch"] for r in read_history(writer.jsonl_path)] == [1, 2]
    assert [r["epoch"] for r in read_history(writer.csv_path)] == [1, 2]


def test_history_open_error_names_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: Any, **kwargs: Any) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PermissionError, match=r"history\.jsonl: Permission denied"):
        HistoryWriter(tmp_path).append(EpochRecord(epoch=1, train_loss=0.5))


def test_torn_last_line_from_an_older_crash_is_tolerated(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path)
    writer.append(EpochRecord(epoch=1, train_loss=0.5))
    with open(writer.jsonl_path, "a") as fh:
        fh.write('{"epoch": 2, "train_l')
    with open(writer.csv_path, "a") as fh:
        fh.write("2,0.4")
    assert [r["epoch"] for r in read_history(writer.jsonl_path)] == [1]
    assert [r["epoch"] for r in read_history(writer.csv_path)] == [1]


@pytest.mark.parametrize(("code", "text"), ERRNOS)
def test_fit_disk_error_in_checkpoint_keeps_last_good_epoch(
    code: int,
    text: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_trainer: Any,
    make_loader: Any,
) -> None:
    trainer = make_trainer(tmp_path)
    trainer.fit(make_loader(), epochs=1)
    real_save = torch.save

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, text)

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match=rf"last\.pt: {text}"):
        trainer.fit(make_loader(), epochs=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert not (tmp_path / ".suimseg.lock").exists()  # released despite the error


def test_fit_disk_error_in_history_names_file_and_resume_repairs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_trainer: Any, make_loader: Any
) -> None:
    trainer = make_trainer(tmp_path)
    trainer.fit(make_loader(), epochs=1)
    real_write = os.write

    def enospc(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", enospc)
    with pytest.raises(OSError, match=r"history\.jsonl: No space left on device.*disk is full"):
        trainer.fit(make_loader(), epochs=2)
    monkeypatch.setattr(os, "write", real_write)
    # last.pt holds epoch 2 but the history stops at 1; resuming restores the line.
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    assert [r["epoch"] for r in read_history(tmp_path)] == [1]
    make_trainer(tmp_path).fit(make_loader(), epochs=3, resume_from=tmp_path / "last.pt")
    assert [r["epoch"] for r in read_history(tmp_path)] == [1, 2, 3]
    assert [r["epoch"] for r in read_history(tmp_path / "history.csv")] == [1, 2, 3]
