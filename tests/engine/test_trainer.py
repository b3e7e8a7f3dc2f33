"""Tests of suimseg.engine.trainer: learning, schedules, robustness, resume, arguments."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from suimseg.engine import (
    Callback,
    EarlyStopping,
    EpochRecord,
    Trainer,
    default_callbacks,
    load_checkpoint,
    read_history,
    reduce_on_plateau,
)
from suimseg.errors import ConfigError, NonFiniteLossError
from suimseg.metrics import ConfusionMatrix
from suimseg.optim import param_groups

CE = nn.CrossEntropyLoss(ignore_index=255)


#: Keyword arguments of default_callbacks (everything else goes to the Trainer).
_CALLBACK_KWARGS = {
    "overwrite",
    "async_checkpoint",
    "run_config",
    "early_stopping_patience",
    "nonfinite",
    "nonfinite_check_interval",
    "progress",
    "log_interval",
    "verbose",
    "seed",
}


def _trainer(model: nn.Module, lr: float = 0.05, **kwargs: Any) -> Trainer:
    """A CPU trainer with ``default_callbacks(checkpoint_dir, ...)`` then ``callbacks``."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    kwargs.setdefault("verbose", False)
    kwargs.setdefault("device", "cpu")
    cb_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _CALLBACK_KWARGS}
    callbacks = default_callbacks(kwargs.pop("checkpoint_dir", None), **cb_kwargs)
    callbacks += list(kwargs.pop("callbacks", ()))
    return Trainer(model, kwargs.pop("loss_fn", CE), opt, callbacks=callbacks, **kwargs)


def _loaders(dataset: Callable[..., TensorDataset], n: int = 8) -> tuple[DataLoader[Any], ...]:
    return (
        DataLoader(dataset(n, seed=0), batch_size=4, shuffle=True),
        DataLoader(dataset(4, seed=1), batch_size=4),
    )


def test_learning_loss_falls_and_miou_rises(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    trainer = _trainer(tiny_model())
    train, val = _loaders(dataset)
    before = trainer.evaluate(val).miou
    history = trainer.fit(train, val, epochs=6)
    assert [r.epoch for r in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1].train_loss < 0.6 * history[0].train_loss
    assert history[-1].val_loss is not None
    assert history[0].val_loss is not None
    assert history[-1].val_loss < history[0].val_loss
    after = history[-1].val_miou
    assert after is not None
    assert after > before + 0.25
    assert after > 0.7
    assert trainer.best_metric == max(r.val_miou for r in history if r.val_miou is not None)


def test_fit_writes_last_best_and_history(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    trainer = _trainer(tiny_model(), checkpoint_dir=tmp_path)
    history = trainer.fit(*_loaders(dataset), epochs=3)
    assert {p.name for p in tmp_path.iterdir()} == {
        "last.pt",
        "best.pt",
        "history.csv",
        "history.jsonl",
    }
    last = load_checkpoint(tmp_path / "last.pt")
    best = load_checkpoint(tmp_path / "best.pt")
    assert last["epoch"] == 3
    best_epoch = max(history, key=lambda r: r.val_miou or -1.0).epoch
    assert best["epoch"] == best_epoch
    assert best["best_metric"] == pytest.approx(trainer.best_metric)
    assert last["class_names"] == ["class_0", "class_1", "class_2"]
    assert last["model"] is None  # a custom model has no spec
    rows = read_history(tmp_path / "history.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert set(rows[0]["val_iou"]) == {"class_0", "class_1", "class_2"}
    assert rows[0]["lrs"] == {"0": 0.05}  # an unnamed parameter group: named by its index
    assert rows[0]["images_per_s"] > 0
    assert rows[0]["epoch_time_s"] > 0
    csv_rows = read_history(tmp_path / "history.csv")
    assert [r["epoch"] for r in csv_rows] == [1, 2, 3]
    assert csv_rows[2]["val_miou"] == pytest.approx(rows[2]["val_miou"])
    assert "val_iou/class_1" in csv_rows[0]
    assert "lr/0" in csv_rows[0]


def test_evaluate_matches_confusion_matrix_and_restores_mode(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    model = tiny_model()
    trainer = _trainer(model)
    val = DataLoader(dataset(5, seed=3), batch_size=2)
    model.train()
    metrics = trainer.evaluate(val)
    assert model.training
    cm = ConfusionMatrix(3)
    model.eval()
    with torch.no_grad():
        for x, y in val:
            cm.update(model(x), y)
    assert torch.equal(metrics.confusion, cm.compute().confusion)
    assert metrics.miou == cm.compute().miou


class _ZeroLoss:
    """A loss with zero gradient: the model never changes, so mIoU never improves."""

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        return logits.sum() * 0.0


def test_plateau_scheduler_halves_lr_when_miou_stalls(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = reduce_on_plateau(opt, patience=0)
    trainer = Trainer(model, _ZeroLoss(), opt, scheduler=sched, device="cpu")
    history = trainer.fit(*_loaders(dataset), epochs=3)
    assert [r.lrs["0"] for r in history] == pytest.approx([0.1, 0.1, 0.05])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_reduce_on_plateau_defaults() -> None:
    opt = torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=1e-4)
    sched = reduce_on_plateau(opt)
    assert sched.mode == "max"
    assert sched.factor == 0.5
    assert sched.patience == 5
    assert sched.min_lrs == [1e-6]


def test_reduce_on_plateau_keeps_the_encoder_ratio(tiny_unet: Callable[..., nn.Module]) -> None:
    groups = param_groups(tiny_unet(), 0.1, lr=1e-4, weight_decay=1e-4)
    opt = torch.optim.AdamW(groups)
    mults = [g["lr_mult"] for g in opt.param_groups]
    assert sorted(set(mults)) == [0.1, 1.0]
    sched = reduce_on_plateau(opt, min_lr=1e-6)
    assert sched.min_lrs == pytest.approx([1e-6 * m for m in mults])


def test_step_scheduler_is_stepped_every_step(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    trainer = Trainer(model, CE, opt, scheduler=sched, scheduler_interval="step", device="cpu")
    trainer.fit(*_loaders(dataset), epochs=2)  # 2 steps per epoch
    assert trainer.global_step == 4
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0 / 16)


def test_early_stopping_stops_after_patience(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, _ZeroLoss(), opt, device="cpu", callbacks=[EarlyStopping(2)])
    history = trainer.fit(*_loaders(dataset), epochs=10)
    assert len(history) == 3  # epoch 1 is best, 2 and 3 do not improve
    assert trainer.should_stop
    assert [r.is_best for r in history] == [True, False, False]


class _NaNAt:
    """Cross-entropy that returns NaN on the given (1-based) calls."""

    def __init__(self, bad_calls: set[int]) -> None:
        self.bad_calls = bad_calls
        self.calls = 0

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        self.calls += 1
        loss = CE(logits, target)
        return loss * math.nan if self.calls in self.bad_calls else loss


def test_nan_loss_raises_naming_epoch_and_step(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    # 2 train steps + 1 eval batch per epoch: call 5 is epoch 2, step 2.
    trainer = _trainer(tiny_model(), loss_fn=_NaNAt({5}))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2"):
        trainer.fit(*_loaders(dataset), epochs=3)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_deferred_nan_check_names_first_bad_step(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    trainer = _trainer(tiny_model(), loss_fn=_NaNAt({2, 3}), nonfinite_check_interval=4)
    train = DataLoader(dataset(8), batch_size=2)  # 4 steps: checked at step 4
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 2"):
        trainer.train_one_epoch(train, epoch=1)


def test_nan_loss_skip_counts_skipped_steps(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    trainer = _trainer(tiny_model(), loss_fn=_NaNAt({2}), nonfinite="skip", checkpoint_dir=tmp_path)
    history = trainer.fit(*_loaders(dataset), epochs=2)
    assert [r.skipped_steps for r in history] == [1, 0]
    assert trainer.global_step == 3
    assert math.isfinite(history[0].train_loss)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert read_history(tmp_path)[0]["skipped_steps"] == 1
    assert load_checkpoint(tmp_path / "last.pt")["extra"]["skipped_steps"] == 1


class _InterruptAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.ended = False

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt

    def on_fit_end(self, trainer: Trainer, history: list[EpochRecord]) -> None:
        self.ended = True


def test_keyboard_interrupt_saves_last_and_returns(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    cb = _InterruptAt(epoch=3)
    trainer = _trainer(tiny_model(), checkpoint_dir=tmp_path, callbacks=[cb])
    history = trainer.fit(*_loaders(dataset), epochs=5)
    assert len(history) == 2
    assert trainer.interrupted
    assert cb.ended
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 2
    assert ckpt["extra"]["interrupted"] is True


def test_keyboard_interrupt_mid_epoch(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    calls = 0

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        return CE(logits, target)

    trainer = _trainer(tiny_model(), checkpoint_dir=tmp_path, loss_fn=loss_fn)
    trainer.fit(*_loaders(dataset), epochs=3)
    assert trainer.interrupted
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def _state(trainer: Trainer) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_exact_resume_matches_straight_training(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    torch.use_deterministic_algorithms(True)
    try:

        def run(epochs: int, ckpt_dir: Path, resume: Path | None = None) -> Trainer:
            model = tiny_model(dropout=0.3)  # dropout + shuffle exercise the RNG restore
            opt = torch.optim.AdamW(model.parameters(), lr=0.02)
            trainer = Trainer(
                model,
                CE,
                opt,
                scheduler=reduce_on_plateau(opt, patience=0),
                device="cpu",
                callbacks=default_callbacks(ckpt_dir, verbose=False),
            )
            trainer.fit(*_loaders(dataset), epochs=epochs, resume_from=resume)
            return trainer

        torch.manual_seed(1)
        straight = run(2, tmp_path / "a")
        torch.manual_seed(1)
        run(1, tmp_path / "b")
        torch.manual_seed(123)  # a different init and RNG: the checkpoint must restore all
        resumed = run(2, tmp_path / "b", resume=tmp_path / "b" / "last.pt")
    finally:
        torch.use_deterministic_algorithms(False)
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]
    assert straight.global_step == resumed.global_step == 4
    rows = read_history(tmp_path / "b")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["val_miou"] == pytest.approx(straight.history[1].val_miou, abs=0)


def test_resume_past_the_end_runs_nothing(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    trainer = _trainer(tiny_model(), checkpoint_dir=tmp_path)
    trainer.fit(*_loaders(dataset), epochs=1)
    again = _trainer(tiny_model(), checkpoint_dir=tmp_path)
    assert again.fit(*_loaders(dataset), epochs=1, resume_from=tmp_path / "last.pt") == []
    assert again.epoch == 1


def test_bf16_autocast_and_channels_last_on_cpu(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    trainer = _trainer(tiny_model(), amp="bf16", channels_last=True)
    history = trainer.fit(*_loaders(dataset), epochs=1)
    assert math.isfinite(history[0].train_loss)
    assert trainer.model.body[0].weight.is_contiguous(memory_format=torch.channels_last)


class _DictDataset(Dataset[dict[str, Tensor]]):
    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        image, mask = self.base[i]
        return {"image": image, "mask": mask.to(torch.uint8), "name": torch.tensor(i)}


def test_dict_batches_and_uint8_masks(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    trainer = _trainer(tiny_model())
    loader = DataLoader(_DictDataset(dataset(4)), batch_size=2)
    assert trainer.fit(loader, loader, epochs=1)[0].val_miou is not None


def test_bad_batch_raises(tiny_model: Callable[..., nn.Module]) -> None:
    trainer = _trainer(tiny_model())
    loader = DataLoader(TensorDataset(torch.rand(2, 3, 8, 8)), batch_size=2)
    with pytest.raises(ConfigError, match="expected \\(images, targets\\)"):
        trainer.evaluate(loader)


def test_empty_eval_loader_raises(tiny_model: Callable[..., nn.Module]) -> None:
    trainer = _trainer(tiny_model())
    empty = DataLoader(TensorDataset(torch.rand(0, 3, 8, 8), torch.zeros(0, 8, 8)))
    with pytest.raises(ConfigError, match="at least one batch"):
        trainer.evaluate(empty)


def test_summary_line_and_progress_logs(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tiny_model: Callable[..., nn.Module],
    dataset: Callable[..., TensorDataset],
) -> None:
    trainer = _trainer(tiny_model(), verbose=True, log_interval=1, progress=True)
    with caplog.at_level(logging.INFO, logger="suimseg"):
        trainer.fit(*_loaders(dataset), epochs=1)
    out = capsys.readouterr().out
    assert out.startswith("epoch 1/1  train_loss ")
    assert "mIoU" in out
    assert "*best*" in out
    try:
        import tqdm  # noqa: F401
    except ImportError:  # plain log lines instead of a bar
        assert any("epoch 1 step 2/2 loss" in r.getMessage() for r in caplog.records)


def test_callbacks_see_every_epoch(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    seen: list[int] = []

    class Stop(Callback):
        def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
            seen.append(record.epoch)
            if record.epoch == 2:
                trainer.should_stop = True

    trainer = _trainer(tiny_model(), callbacks=[Stop()])
    assert len(trainer.fit(*_loaders(dataset), epochs=5)) == 2
    assert seen == [1, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"amp": "fp32"}, "amp: expected 'bf16', 'fp16' or None"),
        ({"amp": "fp16"}, "'fp16' needs a CUDA device"),
        ({"device": "tpu9"}, "device: expected 'auto'"),
        ({"grad_clip": 0}, "grad_clip: expected a positive number"),
        ({"early_stopping_patience": 0}, "early_stopping_patience: expected a positive int"),
        ({"nonfinite": "ignore"}, "nonfinite: expected 'raise' or 'skip'"),
        ({"nonfinite": "skip", "nonfinite_check_interval": 5}, "needs a check every step"),
        ({"scheduler_interval": "batch"}, "scheduler_interval: expected 'epoch' or 'step'"),
        ({"callbacks": [object()]}, "callbacks: expected suimseg.engine.Callback"),
        ({"log_interval": 0}, "log_interval: expected a positive int"),
        ({"async_checkpoint": "yes"}, "async_checkpoint: expected True or False"),
    ],
)
def test_bad_arguments_raise(
    kwargs: dict[str, Any], match: str, tiny_model: Callable[..., nn.Module]
) -> None:
    with pytest.raises(ConfigError, match=match):
        _trainer(tiny_model(), **kwargs)


def test_class_names_are_checked_against_the_model(tiny_unet: Callable[..., nn.Module]) -> None:
    with pytest.raises(ConfigError, match="class_names"):
        _trainer(tiny_unet(num_classes=3), class_names=["a", "b"])


def test_bad_constructor_types_raise(tiny_model: Callable[..., nn.Module]) -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=r"model: expected an nn\.Module"):
        Trainer("model", CE, opt)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="loss_fn: expected a callable"):
        Trainer(model, "ce", opt)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"optimizer: expected a torch\.optim\.Optimizer"):
        Trainer(model, CE, "adam")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ReduceLROnPlateau is stepped"):
        Trainer(model, CE, opt, scheduler=reduce_on_plateau(opt), scheduler_interval="step")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_raises(tiny_model: Callable[..., nn.Module]) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        _trainer(tiny_model(), device="cuda")


def test_fit_argument_errors(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    train, _ = _loaders(dataset)
    with pytest.raises(ConfigError, match="epochs: expected a positive int"):
        _trainer(tiny_model()).fit(train, None, epochs=0)
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    plateau = Trainer(model, CE, opt, scheduler=reduce_on_plateau(opt), device="cpu")
    with pytest.raises(ConfigError, match="validation loader is required"):
        plateau.fit(train, None, epochs=1)
    with pytest.raises(ConfigError, match="early_stopping_patience=None"):
        _trainer(tiny_model(), early_stopping_patience=2).fit(train, None, epochs=1)


def test_fit_without_validation(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    trainer = _trainer(tiny_model(), checkpoint_dir=tmp_path)
    history = trainer.fit(_loaders(dataset)[0], None, epochs=1)
    assert history[0].val_miou is None
    assert history[0].val_iou == {}
    assert (tmp_path / "last.pt").is_file()
    assert not (tmp_path / "best.pt").exists()


@pytest.mark.slow
def test_compile_trains_and_evaluates(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    trainer = _trainer(tiny_model(), compile=True)
    history = trainer.fit(*_loaders(dataset), epochs=1)
    assert math.isfinite(history[0].train_loss)
    assert history[0].val_miou is not None
