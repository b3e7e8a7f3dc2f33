"""Disk errors while writing checkpoints and history: clear errors, nothing good lost."""

from __future__ import annotations

import errno
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from suimseg._atomic import atomic_write_text
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


def _disk_full_text(what: str, path: Path, size: int, kept: str) -> str:
    """The one full-disk wording of every writer, as a regex (the free space varies)."""
    free = r"[0-9.]+ (?:bytes|MiB|GiB) free in " + re.escape(str(path.parent))
    return (
        rf"could not write {what} {re.escape(str(path))}: No space left on device \(the disk "
        rf"is full: {size} bytes to write, {free}; free some space there or write to another "
        rf"disk\); {kept}"
    )


def test_a_full_disk_reads_the_same_from_every_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file, the bytes it needed, the space left and the fix, in one wording."""

    def enospc(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    kept = "any previous file there is unchanged"
    state = {"w": torch.zeros(100)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    history = HistoryWriter(tmp_path)
    record = EpochRecord(epoch=1, train_loss=0.5)
    line = json.dumps(record.to_dict(), allow_nan=False) + "\n"
    monkeypatch.setattr(os, "replace", enospc)  # all bytes written, then the rename fails
    with pytest.raises(OSError, match="disk is full") as e:
        atomic_save(state, tmp_path / "last.pt")
    text = _disk_full_text("checkpoint", tmp_path / "last.pt", len(buffer.getvalue()), kept)
    assert re.fullmatch(text, e.value.strerror), e.value.strerror
    with pytest.raises(OSError, match="disk is full") as e:
        atomic_write_text(tmp_path / "result.json", "x" * 10)
    assert re.fullmatch(_disk_full_text("file", tmp_path / "result.json", 10, kept),
                        e.value.strerror), e.value.strerror  # fmt: skip
    monkeypatch.setattr(os, "write", enospc)  # history lines are appended with os.write
    with pytest.raises(OSError, match="disk is full") as e:
        history.append(record)
    text = _disk_full_text(
        "history file", history.jsonl_path, len(line), "its earlier lines are unchanged"
    )
    assert re.fullmatch(text, e.value.strerror), e.value.strerror
    assert e.value.errno == errno.ENOSPC
