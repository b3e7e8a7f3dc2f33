"""SUIMJaccardIndex: equals torchmetrics' macro Jaccard and suimseg's ConfusionMatrix, syncs."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")
torchmetrics = pytest.importorskip("torchmetrics")

from torchmetrics.classification import MulticlassJaccardIndex  # noqa: E402

from suimseg.errors import ConfigError  # noqa: E402
from suimseg.lightning import SUIMJaccardIndex  # noqa: E402
from suimseg.metrics import ConfusionMatrix  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _ddp_worker  # noqa: E402

sys.path.remove(str(HERE))


def _all_three(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float, float]:
    ours = SUIMJaccardIndex(8)
    tm = MulticlassJaccardIndex(num_classes=8, average="macro", ignore_index=255)
    cm = ConfusionMatrix(8)
    for logits, target in batches:
        ours.update(logits, target)
        tm.update(logits.argmax(1), target)
        cm.update(logits, target)
    return float(ours.compute()), float(tm.compute()), cm.compute().miou


def test_equals_torchmetrics_and_confusion_matrix_on_random_batches() -> None:
    ours, tm, cm = _all_three(_ddp_worker.batches(seed=1))
    assert ours == pytest.approx(cm, abs=1e-6)
    assert ours == pytest.approx(tm, abs=1e-6)
    assert 0.05 < ours < 0.5  # random predictions: far from 0 and 1


def test_absent_classes_are_left_out_like_torchmetrics_macro() -> None:
    """Classes 6 and 7 appear in neither labels nor predictions; class 5 only predicted."""
    g = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(4):
        preds = torch.randint(0, 6, (2, 16, 16), generator=g)
        target = torch.randint(0, 5, (2, 16, 16), generator=g)
        target[:, 0] = 255
        batches.append((torch.nn.functional.one_hot(preds, 8).permute(0, 3, 1, 2).float(), target))
    ours, tm, cm = _all_three(batches)
    assert ours == pytest.approx(cm, abs=1e-6)
    assert ours == pytest.approx(tm, abs=1e-6)
    # Per class, the one documented difference: NaN here, 0 (zero_division) in torchmetrics.
    per_class = SUIMJaccardIndex(8, average="none")
    tm_none = MulticlassJaccardIndex(num_classes=8, average="none", ignore_index=255)
    for logits, target in batches:
        per_class.update(logits, target)
        tm_none.update(logits.argmax(1), target)
    ours_iou, tm_iou = per_class.compute(), tm_none.compute()
    assert ours_iou.shape == (8,)
    assert torch.isnan(ours_iou[6:]).all()
    assert tm_iou[6:].tolist() == [0.0, 0.0]
    assert ours_iou[5].item() == 0.0  # predicted, never labelled: counts as 0
    torch.testing.assert_close(ours_iou[:6], tm_iou[:6])


def test_in_range_ignore_index_matches_torchmetrics() -> None:
    batches = _ddp_worker.batches(seed=2)
    ours = SUIMJaccardIndex(8, ignore_index=0)
    tm = MulticlassJaccardIndex(num_classes=8, average="macro", ignore_index=0)
    for logits, target in batches:
        target = torch.where(target == 255, 0, target)
        ours.update(logits, target)
        tm.update(logits.argmax(1), target)
    assert float(ours.compute()) == pytest.approx(float(tm.compute()), abs=1e-6)


def test_reset_and_segmentation_metrics() -> None:
    metric = SUIMJaccardIndex(3, class_names=["water", "fish", "reef"])
    metric.update(torch.tensor([[0, 1, 1, 2]]), torch.tensor([[0, 1, 2, 255]]))
    m = metric.segmentation_metrics()
    assert m.class_names == ("water", "fish", "reef")
    assert m.iou.tolist() == [1.0, 0.5, 0.0]
    assert float(metric.compute()) == pytest.approx(0.5)
    metric.reset()
    assert int(metric.confmat.sum()) == 0
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(metric.compute()))


def test_bad_arguments_and_labels_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="average"):
        SUIMJaccardIndex(8, average="micro")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_classes"):
        SUIMJaccardIndex(0)
    metric = SUIMJaccardIndex(3)
    with pytest.raises(ConfigError, match="shape"):
        metric.update(
            torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long)
        )
    metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 7]]))
    with pytest.raises(ConfigError, match=r"1 pixel\(s\) had a label outside \[0, 3\)"):
        metric.compute()


def test_state_is_summed_across_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two gloo processes, each updating half the batches, get the single-process mIoU."""
    import torch.multiprocessing as mp

    monkeypatch.syspath_prepend(str(HERE))  # the spawned processes import _ddp_worker
    single = SUIMJaccardIndex(8)
    single_none = SUIMJaccardIndex(8, average="none")
    for logits, target in _ddp_worker.batches():
        single.update(logits, target)
        single_none.update(logits, target)
    expected, expected_iou = float(single.compute()), single_none.compute().tolist()
    total = int(single.confmat.sum())

    # spawn, not fork: a fork of the test process (its OpenMP and gloo threads already
    # started by earlier tests) deadlocked in all_gather in the full suite. A deadline so
    # that a hang fails this test instead of the whole run.
    context = mp.start_processes(
        _ddp_worker.run,
        args=(2, str(tmp_path / "pg"), str(tmp_path)),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 240
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in context.processes:
                proc.kill()
            pytest.fail("the 2-process gloo run did not finish within 240 s")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in results:
        assert r["miou"] == pytest.approx(expected, abs=1e-6)
        assert r["iou"] == pytest.approx(expected_iou, abs=1e-6)
        assert r["pixels"] == total
    # Each rank saw only its half, and compute() left its local state in place.
    assert results[0]["local_pixels"] + results[1]["local_pixels"] == total
    assert 0 < results[0]["local_pixels"] < total
