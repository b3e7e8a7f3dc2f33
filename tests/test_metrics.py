"""Tests of suimseg.metrics: hand-computed values, the NaN rule, validation, accumulation."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

from suimseg.classes import CLASS_NAMES
from suimseg.errors import ConfigError, SUIMSegError
from suimseg.metrics import ConfusionMatrix, SegmentationMetrics


def _reference_matrix(
    preds: torch.Tensor, target: torch.Tensor, c: int, ignore: int
) -> torch.Tensor:
    """A slow, obviously-correct confusion matrix (loop over pixels)."""
    m = torch.zeros(c, c, dtype=torch.int64)
    for p, t in zip(preds.reshape(-1).tolist(), target.reshape(-1).tolist(), strict=True):
        if t != ignore:
            m[t, p] += 1
    return m


def test_hand_computed_two_class() -> None:
    # target: 0 0 0 1 | preds: 0 1 1 1
    cm = ConfusionMatrix(2, class_names=["a", "b"])
    cm.update(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 0, 1]]))
    assert cm.matrix.tolist() == [[1, 2], [0, 1]]
    m = cm.compute()
    # class a: TP 1, FN 2, FP 0 -> IoU 1/3, F1 2/4; class b: TP 1, FP 2, FN 0 -> IoU 1/3, F1 2/4
    assert m.iou.tolist() == pytest.approx([1 / 3, 1 / 3])
    assert m.f1.tolist() == pytest.approx([0.5, 0.5])
    assert m.precision.tolist() == pytest.approx([1.0, 1 / 3])
    assert m.recall.tolist() == pytest.approx([1 / 3, 1.0])
    assert m.support.tolist() == [3, 1]
    assert m.miou == pytest.approx(1 / 3)
    assert m.mean_f1 == pytest.approx(0.5)
    assert m.pixel_accuracy == pytest.approx(0.5)
    assert m.mean_class_accuracy == pytest.approx((1 / 3 + 1) / 2)
    assert m.fw_iou == pytest.approx(0.75 * (1 / 3) + 0.25 * (1 / 3))
    assert m.iou.dtype == torch.float64
    assert m.confusion.device.type == "cpu"


def test_logits_are_argmaxed() -> None:
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2, 0, 0] = 5.0
    logits[0, 1, 1, 1] = 5.0  # others argmax to 0 (first max)
    target = torch.tensor([[[2, 0], [0, 1]]])
    cm = ConfusionMatrix(3)
    cm.update(logits, target)
    assert cm.compute().pixel_accuracy == 1.0
    assert cm.matrix.diagonal().tolist() == [2, 1, 1]


@pytest.mark.parametrize("num_classes", [2, 5, 8])
@pytest.mark.parametrize("shape", [(2, 7, 5), (3, 16), (1, 2, 4, 4)])
def test_matches_reference_with_ignore(num_classes: int, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(num_classes * 100 + len(shape))
    target = torch.randint(0, num_classes, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.2] = 255
    logits = torch.randn(shape[0], num_classes, *shape[1:], generator=g)
    preds = logits.argmax(1)
    cm = ConfusionMatrix(num_classes)
    cm.update(logits, target)
    ref = _reference_matrix(preds, target, num_classes, 255)
    assert torch.equal(cm.matrix, ref)
    assert int(cm.matrix.sum()) == int((target != 255).sum())


def test_accumulates_over_batches_and_resets() -> None:
    g = torch.Generator().manual_seed(0)
    t1, t2 = (
        torch.randint(0, 4, (2, 8, 8), generator=g),
        torch.randint(0, 4, (3, 5, 5), generator=g),
    )
    p1, p2 = (
        torch.randint(0, 4, (2, 8, 8), generator=g),
        torch.randint(0, 4, (3, 5, 5), generator=g),
    )
    cm = ConfusionMatrix(4)
    cm.update(p1, t1)
    cm.update(p2, t2)
    expected = _reference_matrix(p1, t1, 4, 255) + _reference_matrix(p2, t2, 4, 255)
    assert torch.equal(cm.matrix, expected)
    cm.reset()
    assert int(cm.matrix.sum()) == 0
    assert math.isnan(cm.compute().miou)


def test_absent_class_is_nan_and_excluded_from_means() -> None:
    # class 2 appears nowhere; class 1 is predicted but absent from the labels (IoU 0, counted)
    cm = ConfusionMatrix(3, class_names=["x", "y", "z"])
    cm.update(torch.tensor([[0, 0, 1]]), torch.tensor([[0, 0, 0]]))
    m = cm.compute()
    assert m.iou[0].item() == pytest.approx(2 / 3)
    assert m.iou[1].item() == 0.0
    assert math.isnan(m.iou[2].item())
    assert math.isnan(m.f1[2].item())
    assert math.isnan(m.recall[1].item())  # absent from labels
    assert m.miou == pytest.approx((2 / 3 + 0.0) / 2)
    assert m.mean_class_accuracy == pytest.approx(2 / 3)  # only class 0 is labelled
    d = m.to_dict()
    assert d["iou"] == {"x": pytest.approx(2 / 3), "y": 0.0, "z": None}
    assert d["recall"]["y"] is None


def test_perfect_prediction_gives_one() -> None:
    target = torch.randint(0, 8, (2, 16, 16), generator=torch.Generator().manual_seed(3))
    cm = ConfusionMatrix(8)
    cm.update(target.clone(), target)
    m = cm.compute()
    assert m.miou == 1.0
    assert m.mean_f1 == 1.0
    assert m.pixel_accuracy == 1.0
    assert m.fw_iou == pytest.approx(1.0)


def test_empty_matrix_gives_nan_and_json_none() -> None:
    m = ConfusionMatrix(3).compute()
    assert math.isnan(m.miou)
    assert math.isnan(m.pixel_accuracy)
    d = m.to_dict()
    assert d["miou"] is None
    assert d["pixel_accuracy"] is None
    json.dumps(d, allow_nan=False)


def test_all_ignored_counts_nothing() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 255))
    assert int(cm.matrix.sum()) == 0


def test_custom_ignore_index_and_uint8_target() -> None:
    cm = ConfusionMatrix(2, ignore_index=-100)
    cm.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, -100, 1]]))
    assert cm.matrix.tolist() == [[1, 0], [0, 1]]
    cm2 = ConfusionMatrix(2)
    cm2.update(
        torch.tensor([[1, 1]], dtype=torch.uint8), torch.tensor([[1, 255]], dtype=torch.uint8)
    )
    assert cm2.matrix.tolist() == [[0, 0], [0, 1]]


def test_default_class_names() -> None:
    assert ConfusionMatrix(8).class_names == CLASS_NAMES
    assert ConfusionMatrix(3).class_names == ("class_0", "class_1", "class_2")


def test_to_dict_is_json_and_keyed_by_name() -> None:
    cm = ConfusionMatrix(8)
    t = torch.randint(0, 8, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    cm.update(torch.randn(2, 8, 8, 8), t)
    d = cm.compute().to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert set(back["iou"]) == set(CLASS_NAMES)
    assert back["class_names"] == list(CLASS_NAMES)
    assert sum(back["support"].values()) == 2 * 8 * 8
    assert back["confusion"] == cm.matrix.tolist()


def test_format_table_lists_classes_and_means() -> None:
    cm = ConfusionMatrix(3, class_names=["water", "fish", "reef"])
    cm.update(torch.tensor([[0, 1, 0, 0]]), torch.tensor([[0, 1, 1, 0]]))
    table = cm.compute().format_table()
    lines = table.splitlines()
    assert lines[0].split() == ["class", "IoU", "%", "F1", "%"]
    assert lines[1].split() == ["water", "66.67", "80.00"]
    assert lines[2].split() == ["fish", "50.00", "66.67"]
    assert lines[3].split() == ["reef", "n/a", "n/a"]
    assert "mIoU" in table
    assert "58.33" in table  # (66.67 + 50) / 2
    assert len({len(line) for line in lines[:4]}) == 1  # aligned


def test_from_confusion_matches_update() -> None:
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 0, 1]]))
    m = SegmentationMetrics.from_confusion(torch.tensor([[1, 2], [0, 1]]))
    assert m.miou == cm.compute().miou


def test_metrics_are_frozen() -> None:
    m = ConfusionMatrix(2).compute()
    with pytest.raises(AttributeError):
        m.miou = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------- validation


def test_rejects_float_target() -> None:
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match=r"target must be an integer label map.*float32"):
        cm.update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4))


def test_rejects_out_of_range_target_value_naming_it() -> None:
    cm = ConfusionMatrix(3, validate=True)
    with pytest.raises(ConfigError, match=r"target holds label 7, outside \[0, 3\)"):
        cm.update(torch.zeros(1, 4, dtype=torch.long), torch.tensor([[0, 7, 255, 1]]))
    with pytest.raises(ValueError, match=r"target holds label -1"):
        cm.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[-1, 0]]))
    assert int(cm.matrix.sum()) == 0  # nothing counted on error


def test_rejects_out_of_range_prediction_value() -> None:
    cm = ConfusionMatrix(3, validate=True)
    with pytest.raises(ConfigError, match=r"predictions hold label 5"):
        cm.update(torch.tensor([[0, 5]]), torch.tensor([[0, 1]]))
    # a bad prediction at an ignored pixel does not matter
    cm.update(torch.tensor([[0, 5]]), torch.tensor([[0, 255]]))
    assert int(cm.matrix.sum()) == 1


def test_rejects_shape_mismatch_naming_both_shapes() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"\(1, 3, 8, 8\).*\(1, 4, 4\)"):
        cm.update(torch.randn(1, 3, 8, 8), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(1, 5, 4, 4\).*\(1, 4, 4\).*must be \(1, 3, 4, 4\)"):
        cm.update(torch.randn(1, 5, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(1, 4, 4\)"):
        cm.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"float predictions are taken as logits"):
        cm.update(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "num_classes: expected a positive int"),
        ({"num_classes": True}, "num_classes: expected a positive int"),
        ({"num_classes": 2, "ignore_index": 1.5}, "ignore_index: expected an int"),
        ({"num_classes": 2, "class_names": ["a"]}, "expected 2 names"),
        ({"num_classes": 2, "class_names": ["a", "a"]}, "duplicates"),
        ({"num_classes": 2, "class_names": "ab"}, "sequence of 2 strings"),
    ],
)
def test_constructor_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ConfusionMatrix(**kwargs)  # type: ignore[arg-type]


def test_from_confusion_validation() -> None:
    with pytest.raises(ConfigError, match="square"):
        SegmentationMetrics.from_confusion(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="integer matrix"):
        SegmentationMetrics.from_confusion(torch.zeros(2, 2))
    with pytest.raises(ConfigError, match="non-negative"):
        SegmentationMetrics.from_confusion(torch.tensor([[1, -1], [0, 0]]))


# ---------------------------------------------------------------- devices and distributed


def test_matrix_follows_input_device_meta() -> None:
    cm = ConfusionMatrix(2, device="meta")
    assert cm.matrix.device.type == "meta"
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    assert cm.matrix.device.type == "cpu"
    assert cm.matrix.tolist() == [[1, 0], [0, 1]]
    cm.reset()
    assert cm.matrix.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_update() -> None:
    t = torch.randint(0, 4, (2, 16, 16), device="cuda")
    cm = ConfusionMatrix(4)
    cm.update(torch.randn(2, 4, 16, 16, device="cuda"), t)
    assert cm.matrix.device.type == "cuda"
    assert int(cm.matrix.sum()) == 2 * 16 * 16


def test_all_reduce_is_noop_without_process_group() -> None:
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    cm.all_reduce()
    assert cm.matrix.tolist() == [[1, 0], [0, 1]]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_all_reduce_single_process_gloo(tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        cm = ConfusionMatrix(2)
        cm.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]]))
        cm.all_reduce()
        assert cm.matrix.tolist() == [[1, 1], [0, 1]]
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- host syncs


@pytest.mark.parametrize("validate", [False, True])
def test_update_makes_no_host_sync_unless_validating(
    validate: bool, count_host_syncs: Callable[[Callable[[], object]], list[str]]
) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    target[0, 0] = 255
    cm = ConfusionMatrix(4, validate=validate)
    cm.update(logits, target)  # the first update allocates on the input's device
    ops = count_host_syncs(lambda: cm.update(logits, target))
    # Was 1 per update before (bool(bad.any()), plus bincount's hidden max() on CUDA).
    assert (len(ops) > 0) == validate


def test_out_of_range_labels_are_skipped_and_compute_raises() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 1, 2, 1]]), torch.tensor([[0, 7, 255, 1]]))
    cm.update(torch.tensor([[5, 0]]), torch.tensor([[0, 0]]))  # bad prediction
    assert cm.matrix.tolist() == [[2, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert int(cm.out_of_range) == 2
    with pytest.raises(ConfigError, match=r"2 pixel\(s\) .*outside \[0, 3\).*validate=True"):
        cm.compute()
    cm.reset()
    assert math.isnan(cm.compute().miou)


def test_validated_out_of_range_label_is_a_suimseg_error() -> None:
    cm = ConfusionMatrix(3, validate=True)
    with pytest.raises(SUIMSegError, match="target holds label 3"):
        cm.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 3]]))
    assert int(cm.matrix.sum()) == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda cm: cm.update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4)),
        lambda cm: cm.update([0, 1], torch.zeros(1, 2, dtype=torch.long)),
        lambda cm: cm.update(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)),
        lambda cm: cm.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor(0)),
        lambda cm: cm.update(torch.zeros(1, 2, dtype=torch.complex64), torch.zeros(1, 2).long()),
    ],
)
def test_update_errors_are_config_errors(call: Any) -> None:
    with pytest.raises(ConfigError):
        call(ConfusionMatrix(2))


# ---------------------------------------------------------------- ignore_index


def test_ignore_index_none_counts_every_label() -> None:
    cm = ConfusionMatrix(3, ignore_index=None)
    cm.update(torch.tensor([[0, 1, 2, 2]]), torch.tensor([[0, 1, 2, 0]]))
    assert int(cm.matrix.sum()) == 4
    assert "ignore_index=None" in repr(cm)
    cm.update(torch.tensor([[0]]), torch.tensor([[255]]))  # 255 is now just out of range
    with pytest.raises(ConfigError, match="ignore_index=None"):
        cm.compute()


def test_in_range_ignore_index_is_excluded_from_every_mean() -> None:
    # ignore_index=0: label-0 pixels are skipped; the column of class 0 still counts the
    # pixels wrongly predicted as 0. As torchmetrics' MulticlassJaccardIndex(ignore_index=0),
    # class 0 is left out of the averages rather than scored IoU 0.
    target = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 2]])
    preds = torch.tensor([[1, 2, 1, 1, 0, 2, 2, 1]])
    cm = ConfusionMatrix(3, ignore_index=0)
    cm.update(preds, target)
    assert cm.matrix.tolist() == [[0, 0, 0], [1, 2, 0], [0, 1, 2]]
    m = cm.compute()
    for per_class in (m.iou, m.f1, m.precision, m.recall):
        assert math.isnan(per_class[0].item())
    # class 1: TP 2, FN 1, FP 1 -> IoU 1/2, F1 2/3; class 2: TP 2, FN 1, FP 0 -> 2/3, 4/5
    assert m.iou[1:].tolist() == pytest.approx([1 / 2, 2 / 3])
    assert m.miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m.mean_f1 == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m.mean_class_accuracy == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert m.pixel_accuracy == pytest.approx(4 / 6)  # the pixel predicted 0 is an error
    assert m.fw_iou == pytest.approx(0.5 * 1 / 2 + 0.5 * 2 / 3)
    assert m.to_dict()["iou"]["class_0"] is None
    # Without the exclusion, class 0 would count with IoU 0 and pull the mean down.
    plain = SegmentationMetrics.from_confusion(cm.matrix)
    assert plain.iou[0].item() == 0.0
    assert plain.miou == pytest.approx((0 + 1 / 2 + 2 / 3) / 3)


# ---------------------------------------------------------------- nn.Module, state, merging


def _shards(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(4):
        t = torch.randint(0, 4, (2, 6, 6), generator=g)
        t[torch.rand(t.shape, generator=g) < 0.2] = 255
        out.append((torch.randn(2, 4, 6, 6, generator=g), t))
    return out


def test_is_a_module_with_buffers_that_follow_to() -> None:
    cm = ConfusionMatrix(3)
    assert isinstance(cm, torch.nn.Module)
    assert set(dict(cm.named_buffers())) == {"matrix", "out_of_range"}
    cm.to("meta")
    assert cm.matrix.device.type == "meta"
    assert cm.out_of_range.device.type == "meta"
    cm.reset()  # reset keeps the device given by .to()
    assert cm.matrix.device.type == "meta"
    cm.to(torch.float64)  # integer counts are not cast
    assert cm.matrix.dtype == torch.int64
    assert repr(ConfusionMatrix(3)) == "ConfusionMatrix(num_classes=3, ignore_index=255, pixels=0)"


def test_calling_the_module_is_update() -> None:
    a, b = ConfusionMatrix(4), ConfusionMatrix(4)
    for logits, target in _shards():
        a(logits, target)
        b.update(logits, target)
    assert torch.equal(a.matrix, b.matrix)


def test_state_dict_round_trip_and_resume(tmp_path: Path) -> None:
    batches = _shards(1)
    whole = ConfusionMatrix(4)
    for logits, target in batches:
        whole.update(logits, target)
    first = ConfusionMatrix(4)
    for logits, target in batches[:2]:
        first.update(logits, target)
    torch.save(first.state_dict(), tmp_path / "cm.pt")
    resumed = ConfusionMatrix(4)
    resumed.load_state_dict(torch.load(tmp_path / "cm.pt", weights_only=True))
    assert torch.equal(resumed.matrix, first.matrix)
    for logits, target in batches[2:]:  # the loaded counts survive the next update
        resumed.update(logits, target)
    assert torch.equal(resumed.matrix, whole.matrix)
    assert resumed.compute().miou == whole.compute().miou


def test_merge_equals_one_matrix_over_all_batches() -> None:
    batches = _shards(2)
    whole = ConfusionMatrix(4)
    for logits, target in batches:
        whole.update(logits, target)
    parts = [ConfusionMatrix(4) for _ in batches]
    for cm, (logits, target) in zip(parts, batches, strict=True):
        cm.update(logits, target)
    merged = ConfusionMatrix(4, device="meta")  # a fresh matrix adopts the others' device
    for cm in parts[:2]:
        merged.merge_state(cm)
    merged += parts[2]
    merged += parts[3]
    merged += ConfusionMatrix(4)  # an empty one changes nothing
    assert torch.equal(merged.matrix, whole.matrix)
    assert torch.equal(parts[0].matrix, parts[0].matrix.clone())  # sources untouched
    bad_parts = ConfusionMatrix(4)
    bad_parts.update(torch.tensor([[9]]), torch.tensor([[1]]))
    merged += bad_parts  # the out-of-range tally merges too
    with pytest.raises(ConfigError, match="1 pixel"):
        merged.compute()


@pytest.mark.parametrize(
    "other",
    [ConfusionMatrix(3), ConfusionMatrix(4, ignore_index=0), torch.zeros(4, 4, dtype=torch.long)],
)
def test_merge_refuses_a_different_setup(other: object) -> None:
    with pytest.raises(ConfigError, match="other: expected a ConfusionMatrix"):
        ConfusionMatrix(4).merge_state(other)  # type: ignore[arg-type]


def test_majority_baseline_puts_every_test_pixel_in_the_training_majority_column() -> None:
    # Train: class 2 dominates. Test: 6 pixels of class 0, 3 of class 2, 1 of class 1.
    k, m = SegmentationMetrics.majority_baseline(
        np.array([5, 1, 40]), torch.tensor([6, 1, 3]), ("a", "b", "c")
    )
    assert k == 2
    # Only class 2 has TP (3 of a union of 10); classes 0 and 1 have IoU 0.
    assert m.iou.tolist() == pytest.approx([0.0, 0.0, 0.3])
    assert m.miou == pytest.approx(0.1)
    assert m.pixel_accuracy == pytest.approx(0.3)
    assert m.class_names == ("a", "b", "c")


@pytest.mark.parametrize(
    ("train", "test", "needle"),
    [
        ([1.0, 2.0], [1, 2], "train_counts"),
        ([1, 2], [[1, 2]], "test_counts"),
        ([1, -2], [1, 2], "non-negative"),
        ([1, 2], [1, 2, 3], "2 and 3 classes"),
        ([0, 0], [1, 2], "0 training pixels"),
    ],
)
def test_majority_baseline_refuses_bad_counts(train: Any, test: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        SegmentationMetrics.majority_baseline(train, test)
