"""Tests of suimseg.engine.callbacks and of the Trainer's hook protocol."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from suimseg.engine import (
    Callback,
    EpochRecord,
    NonFiniteLoss,
    Trainer,
    default_callbacks,
    load_checkpoint,
    read_history,
)
from suimseg.engine.callbacks import summary_line
from suimseg.optim import param_groups

CE = nn.CrossEntropyLoss(ignore_index=255)


def _loaders(dataset: Callable[..., TensorDataset]) -> tuple[DataLoader[Any], ...]:
    return (
        DataLoader(dataset(8, seed=0), batch_size=4, shuffle=True),
        DataLoader(dataset(4, seed=1), batch_size=4),
    )


def test_the_trainer_constructor_is_small() -> None:
    params = list(inspect.signature(Trainer.__init__).parameters)[1:]  # without self
    assert len(params) <= 12, params


class _Log(Callback):
    """Records every hook call as ``(name, hook)``."""

    def __init__(self, name: str, calls: list[tuple[str, str]], fail_at_end: bool = False):
        self.name, self.calls, self.fail_at_end = name, calls, fail_at_end

    def on_fit_start(self, trainer: Trainer) -> None:
        self.calls.append((self.name, "fit_start"))

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.calls.append((self.name, f"epoch_start {epoch}"))

    def on_train_batch_end(self, trainer: Trainer, step: int, loss: Tensor) -> None:
        self.calls.append((self.name, f"batch {step}"))

    def on_train_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        self.calls.append((self.name, "train_epoch_end"))

    def on_validation_end(self, trainer: Trainer, metrics: Any) -> None:
        self.calls.append((self.name, "validation_end"))

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        self.calls.append((self.name, f"epoch_end {record.epoch}"))

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        self.calls.append((self.name, f"exception {error}"))

    def on_fit_end(self, trainer: Trainer, history: list[EpochRecord]) -> None:
        self.calls.append((self.name, "fit_end"))
        if self.fail_at_end:
            raise OSError("late failure")


def test_hooks_run_in_order_and_teardown_in_reverse(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    calls: list[tuple[str, str]] = []
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, CE, opt, device="cpu", callbacks=[_Log("a", calls), _Log("b", calls)])
    trainer.fit(*_loaders(dataset), epochs=1)
    assert [c for c in calls if c[0] == "a"] == [
        ("a", "fit_start"),
        ("a", "epoch_start 1"),
        ("a", "batch 1"),
        ("a", "batch 2"),
        ("a", "train_epoch_end"),
        ("a", "validation_end"),
        ("a", "epoch_end 1"),
        ("a", "fit_end"),
    ]
    assert calls[:2] == [("a", "fit_start"), ("b", "fit_start")]
    assert calls[-2:] == [("b", "fit_end"), ("a", "fit_end")]  # reverse order


def test_every_teardown_runs_and_the_lock_is_released_when_one_fails(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    calls: list[tuple[str, str]] = []
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    callbacks = [*default_callbacks(tmp_path, verbose=False), _Log("late", calls, True)]
    trainer = Trainer(model, CE, opt, device="cpu", callbacks=callbacks)
    with pytest.raises(OSError, match="late failure"):
        trainer.fit(*_loaders(dataset), epochs=1)
    assert not (tmp_path / ".suimseg.lock").exists()  # RunDirLock.on_fit_end still ran
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_a_failing_fit_calls_on_exception(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    calls: list[tuple[str, str]] = []

    def boom(logits: Tensor, target: Tensor) -> Tensor:
        raise RuntimeError("boom")

    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, boom, opt, device="cpu", callbacks=[_Log("a", calls)])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(*_loaders(dataset), epochs=1)
    assert calls[-1] == ("a", "exception boom")
    assert ("a", "fit_end") not in calls


def test_a_default_nonfinite_policy_is_added_once(tiny_model: Callable[..., nn.Module]) -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    plain = Trainer(model, CE, opt, device="cpu")
    assert [type(cb) for cb in plain.callbacks] == [NonFiniteLoss]
    skip = NonFiniteLoss("skip")
    assert Trainer(model, CE, opt, device="cpu", callbacks=[skip]).callbacks == [skip]


def test_learning_rates_are_logged_by_group_name(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tiny_unet: Callable[..., nn.Module],
    dataset: Callable[..., TensorDataset],
) -> None:
    model = tiny_unet()
    opt = torch.optim.AdamW(param_groups(model, 0.1, lr=1e-3, weight_decay=1e-4))
    names = [g["name"] for g in opt.param_groups]
    trainer = Trainer(model, CE, opt, device="cpu", callbacks=default_callbacks(tmp_path))
    record = trainer.fit(*_loaders(dataset), epochs=1)[0]
    assert list(record.lrs) == names  # "encoder", "decoder", ... not "0", "1", ...
    assert record.lrs["encoder"] == pytest.approx(1e-4)
    assert record.lrs["decoder"] == pytest.approx(1e-3)
    assert read_history(tmp_path)[0]["lrs"] == record.lrs
    row = read_history(tmp_path / "history.csv")[0]
    assert row["lr/encoder"] == pytest.approx(1e-4)
    assert "lr/0" not in row
    assert "lr encoder 1.00e-04 decoder 1.00e-03" in capsys.readouterr().out


def test_summary_line_labels_and_folds_learning_rates() -> None:
    lrs = {"encoder": 1e-5, "encoder_no_decay": 1e-5, "decoder": 1e-4, "decoder_no_decay": 2e-4}
    line = summary_line(EpochRecord(epoch=1, train_loss=0.5, lrs=lrs), 3)
    assert "lr encoder 1.00e-05 decoder 1.00e-04 decoder_no_decay 2.00e-04  " in line
    old = summary_line(EpochRecord(epoch=1, train_loss=0.5, lrs=(0.1, 0.2)), 3)
    assert "lr 0 1.00e-01 1 2.00e-01" in old
