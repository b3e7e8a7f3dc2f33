"""Tests of suimseg.engine.history: EpochRecord, HistoryWriter and read_history."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from suimseg.engine import EpochRecord, HistoryWriter, read_history
from suimseg.errors import HistoryError


def _record(epoch: int, miou: float | None = 0.5) -> EpochRecord:
    return EpochRecord(
        epoch=epoch,
        train_loss=1.0 / epoch,
        val_loss=0.9,
        val_miou=miou,
        val_pixel_accuracy=0.8,
        val_mean_f1=0.6,
        val_iou={"water, deep": 0.7, "fish": math.nan},
        lrs={"decoder": 1e-4, "encoder": 1e-5},
        epoch_time_s=2.5,
        images_per_s=40.0,
        skipped_steps=0,
        is_best=epoch == 1,
    )


def test_jsonl_and_csv_round_trip(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path / "run")
    writer.append(_record(1))
    writer.append(_record(2, miou=math.inf))
    rows = read_history(writer.jsonl_path)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["val_iou"] == {"water, deep": 0.7, "fish": None}  # NaN -> null
    assert rows[0]["lrs"] == {"decoder": 1e-4, "encoder": 1e-5}
    assert rows[1]["val_miou"] is None
    assert rows[0]["is_best"] is True
    assert read_history(tmp_path / "run") == rows  # a folder reads history.jsonl
    csv_rows = read_history(writer.csv_path)
    assert csv_rows[0]["val_iou/water, deep"] == 0.7
    assert csv_rows[0]["val_iou/fish"] is None
    assert csv_rows[0]["lr/encoder"] == 1e-5  # columns named by parameter group
    assert csv_rows[1]["is_best"] is False
    assert csv_rows[1]["epoch"] == 2
    assert writer.csv_path.read_text().count("\n") == 3  # header + 2 rows


def test_every_line_is_complete(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path)
    for epoch in (1, 2, 3):
        writer.append(_record(epoch))
        assert writer.jsonl_path.read_text().endswith("\n")
        assert writer.csv_path.read_text().endswith("\n")


@pytest.mark.parametrize("name", ["history.jsonl", "history.csv"])
def test_torn_last_line_is_tolerated(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = HistoryWriter(tmp_path)
    writer.append(_record(1))
    writer.append(_record(2))
    path = tmp_path / name
    text = path.read_text()
    path.write_text(text + text.splitlines()[-1][:17])  # a crash mid-append
    rows = read_history(path)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert "incomplete last line" in caplog.text


def test_corrupt_middle_line_raises(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path)
    writer.append(_record(1))
    writer.jsonl_path.write_text("{not json\n" + writer.jsonl_path.read_text())
    with pytest.raises(HistoryError, match=r"history\.jsonl:1: expected one JSON object"):
        read_history(writer.jsonl_path)


def test_csv_row_with_wrong_width_raises(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text("epoch,train_loss\n1,0.5,extra\n")
    with pytest.raises(HistoryError, match=r"history\.csv:2: expected 2 comma-separated values"):
        read_history(path)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_history(tmp_path / "history.jsonl")


def test_changed_columns_keep_the_csv_header(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = HistoryWriter(tmp_path)
    writer.append(_record(1))
    writer.append(EpochRecord(epoch=2, train_loss=0.3))
    assert "columns differ" in caplog.text
    rows = read_history(writer.csv_path)
    assert rows[1]["train_loss"] == 0.3
    assert rows[1]["val_iou/fish"] is None
    assert read_history(writer.jsonl_path)[1]["val_iou"] == {}


def test_old_files_with_unnamed_learning_rates_still_read(tmp_path: Path) -> None:
    """Files written before groups were named hold ``"lrs": [...]`` and ``lr/0`` columns."""
    old = {"epoch": 1, "train_loss": 0.5, "lrs": [1e-4, 1e-5], "val_iou": {}}
    (tmp_path / "history.jsonl").write_text(json.dumps(old) + "\n")
    rows = read_history(tmp_path)
    record = EpochRecord.from_dict(rows[0])
    assert record.lrs == {"0": 1e-4, "1": 1e-5}
    assert record.to_row()["lr/1"] == 1e-5
    # A resumed old run appends named records after the old ones; sync keeps both readable.
    writer = HistoryWriter(tmp_path)
    writer.append(EpochRecord(epoch=2, train_loss=0.4, lrs={"encoder": 1e-5}))
    assert [EpochRecord.from_dict(r).lrs for r in read_history(tmp_path)] == [
        {"0": 1e-4, "1": 1e-5},
        {"encoder": 1e-5},
    ]


@pytest.mark.parametrize(
    ("name", "old", "new", "named"),
    [
        ("history.csv", "\n2,0.5,0.9,", "\n2,0.5,abc,", r"csv:3: column 'val_loss'"),
        ("history.csv", ",True,", ",yes,", r"history\.csv:2: column 'is_best': expected True"),
        ("history.csv", "\n1,", "\none,", r"history\.csv:2: column 'epoch': expected an integer"),
        ("history.jsonl", '"train_loss": 0.5', '"train_loss": "x"', r"jsonl:2: field 'train_loss'"),
        ("history.jsonl", '"decoder": 0.0001', '"decoder": "fast"', r"jsonl:1: field 'lrs'"),
        ("history.jsonl", '"fish": null', '"fish": "?"', r"history\.jsonl:1: field 'val_iou'"),
    ],
)
def test_a_known_field_of_the_wrong_type_names_file_line_and_column(
    name: str, old: str, new: str, named: str, tmp_path: Path
) -> None:
    """`suimseg plot` wrote an empty plot and exited 0 for a non-numeric history.csv."""
    writer = HistoryWriter(tmp_path)
    writer.append(_record(1))
    writer.append(_record(2))
    path = tmp_path / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(HistoryError, match=named):
        read_history(path)


def test_unknown_fields_are_left_to_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text("epoch,train_loss,note\n1,0.5,warm-up\n2,,\n")
    assert read_history(path)[0]["note"] == "warm-up"
    assert read_history(path)[1]["train_loss"] is None
