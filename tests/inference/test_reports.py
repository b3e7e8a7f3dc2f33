"""Evaluation-result files, comparison tables and training-curve plots."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from suimseg.engine.history import EpochRecord, HistoryWriter, read_history
from suimseg.errors import ConfigError, MissingDependencyError
from suimseg.inference import (
    EvaluationResult,
    SUIMPaperMetrics,
    compare_results,
    format_comparison,
    load_result,
    plot_history,
    save_result,
)
from suimseg.metrics import SegmentationMetrics

HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def _metrics(diag: int) -> SegmentationMetrics:
    cm = torch.full((8, 8), 1, dtype=torch.int64) + torch.eye(8, dtype=torch.int64) * diag
    return SegmentationMetrics.from_confusion(cm)


def _paper() -> SUIMPaperMetrics:
    codes = ("HD", "WR", "RO", "RI", "FV")
    return SUIMPaperMetrics(
        class_codes=codes,
        iou=dict.fromkeys(codes, 0.5),
        region_f=dict.fromkeys(codes, 0.6),
        boundary_f=dict.fromkeys(codes, 0.4),
        images_with_class=dict.fromkeys(codes, 2),
        num_images=3,
        size=(240, 320),
        boundary_tolerance=4,
    )


def test_result_roundtrip(tmp_path: Path) -> None:
    m = _metrics(5)
    res = EvaluationResult.from_metrics(m, name="V3", meta={"tta": False, "split": "test"})
    path = save_result(tmp_path / "r" / "v3.json", res)
    data = json.loads(path.read_text())
    assert data["format"] == "suimseg.evaluation"
    assert data["protocol"] == "dataset-8class"
    back = load_result(path)
    assert back == res
    assert back.metrics["miou"] == pytest.approx(m.miou)


def test_bare_and_labelled_metrics_files(tmp_path: Path) -> None:
    bare = tmp_path / "plain_run.json"
    bare.write_text(json.dumps(_metrics(3).to_dict()))
    assert load_result(bare).name == "plain_run"
    labelled = tmp_path / "x.json"
    labelled.write_text(json.dumps({**_metrics(3).to_dict(), "label": "DeepLabV3"}))
    assert load_result(labelled).name == "DeepLabV3"
    paper = tmp_path / "p.json"
    paper.write_text(json.dumps(_paper().to_dict()))
    assert load_result(paper).protocol == "suim-paper"


def test_compare_results_table(tmp_path: Path) -> None:
    a = save_result(tmp_path / "a.json", EvaluationResult.from_metrics(_metrics(3), name="V3"))
    b = save_result(
        tmp_path / "b.json", EvaluationResult.from_metrics(_metrics(7), name="V3 | TTA")
    )
    text = compare_results([a, b])
    lines = text.splitlines()
    assert lines[0].startswith("suimseg protocol: 8-class")
    assert lines[2] == "| Metric | V3 | V3 \\| TTA |"
    miou_a, miou_b = _metrics(3).miou, _metrics(7).miou
    gain = 100 * (miou_b - miou_a)
    assert lines[4] == f"| mIoU | {100 * miou_a:.2f} | {100 * miou_b:.2f} ({gain:+.2f}) |"
    assert len(lines) == 4 + 1 + 8
    assert lines[5].startswith("| background / waterbody |")


def test_compare_refuses_mixed_protocols_and_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="different protocols"):
        format_comparison([("a", _metrics(3)), ("b", _paper())])
    with pytest.raises(ConfigError, match="at least one"):
        format_comparison([])
    with pytest.raises(ConfigError, match="baseline"):
        format_comparison([("a", _metrics(3))], baseline=2)
    three = SegmentationMetrics.from_confusion(torch.eye(3, dtype=torch.int64))
    with pytest.raises(ConfigError, match="other classes"):
        format_comparison([("a", _metrics(3)), ("b", three)])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_result(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(ConfigError, match="expected metrics with 'miou'"):
        load_result(other)
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"format": "suimseg.evaluation", "format_version": 99}))
    with pytest.raises(ConfigError, match="format_version 99"):
        load_result(future)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_result(tmp_path / "missing.json")


def test_paper_results_table() -> None:
    text = format_comparison([("SUIM-Net", _paper()), ("V3", _paper())])
    assert "NOT comparable" in text.splitlines()[0]
    assert "| HD F (contour) | 40.00 | 40.00 (+0.00) |" in text


def _history(tmp_path: Path) -> Path:
    w = HistoryWriter(tmp_path / "run")
    for e in range(1, 4):
        w.append(
            EpochRecord(
                epoch=e,
                train_loss=1.0 / e,
                val_loss=1.2 / e,
                val_miou=0.1 * e,
                lrs=(1e-4 / e, 1e-3 / e),
                is_best=True,
            )
        )
    return tmp_path / "run"


@pytest.mark.skipif(not HAS_MPL, reason="needs the plot extra (matplotlib)")
@pytest.mark.parametrize("name", ["history.csv", "history.jsonl"])
def test_plot_history(tmp_path: Path, name: str) -> None:
    run = _history(tmp_path)
    out = plot_history(run / name, tmp_path / "plots" / "curves.png")
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.width > 600


def test_plot_history_missing_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> object:
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(MissingDependencyError, match=r"suimseg\[plot\]"):
        plot_history(_history(tmp_path), tmp_path / "c.png")


@pytest.mark.skipif(not HAS_MPL, reason="needs the plot extra (matplotlib)")
def test_plot_empty_history(tmp_path: Path) -> None:
    (tmp_path / "history.csv").write_text("")
    with pytest.raises(ConfigError, match="no epochs"):
        plot_history(tmp_path / "history.csv", tmp_path / "c.png")


@pytest.mark.skipif(not HAS_MPL, reason="needs the plot extra (matplotlib)")
@pytest.mark.parametrize("name", ["history.csv", "history.jsonl"])
def test_plot_history_with_named_lr_groups(tmp_path: Path, name: str) -> None:
    """Histories name their parameter groups (``lr/encoder``); plotting read them as ints."""
    w = HistoryWriter(tmp_path / "run")
    for e in (1, 2):
        w.append(EpochRecord(epoch=e, train_loss=1.0 / e, lrs={"encoder": 1e-5, "decoder": 1e-4}))
    out = plot_history(tmp_path / "run" / name, tmp_path / "curves.png")
    assert out.is_file()


@pytest.mark.parametrize("name", ["history.csv", "history.jsonl"])
def test_lr_curves_fold_no_decay_groups_equal_to_their_base(tmp_path: Path, name: str) -> None:
    """param_groups' four groups: two lines when each *_no_decay group has its base's rates."""
    from suimseg.inference.reports import _lr_series

    w = HistoryWriter(tmp_path / "run")
    for e in (1, 2):
        lrs = {"encoder": 1e-5, "encoder_no_decay": 1e-5, "decoder": 1e-4 / e}
        w.append(EpochRecord(epoch=e, train_loss=1.0, lrs={**lrs, "decoder_no_decay": 1e-4}))
    series = _lr_series(read_history(tmp_path / "run" / name))
    # decoder_no_decay differs from decoder at epoch 2, so it keeps its own line
    assert sorted(series) == ["decoder", "decoder_no_decay", "encoder"]
    assert series["decoder"] == [1e-4, 5e-5]
