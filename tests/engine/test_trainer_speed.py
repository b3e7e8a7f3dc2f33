"""Trainer speed features: device-side batch transforms, async checkpoints, run config."""

from __future__ import annotations

import errno
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import suimseg.engine.callbacks as callbacks_module
from suimseg.engine import (
    Callback,
    Checkpoint,
    DeviceTransform,
    EpochRecord,
    Trainer,
    default_callbacks,
    load_checkpoint,
    read_history,
)
from suimseg.engine.checkpoint import read_run_config, save_safetensors
from suimseg.errors import ConfigError

CE = nn.CrossEntropyLoss(ignore_index=255)
WRITER = "suimseg-checkpoint-writer"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _trainer(model: nn.Module, lr: float = 0.05, **kwargs: Any) -> Trainer:
    """A CPU trainer: ``default_callbacks(checkpoint_dir, ...)``, a ``DeviceTransform`` for
    ``batch_transform``/``eval_batch_transform``, then ``callbacks``."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    cb_kwargs = {"verbose": False}
    for key in ("overwrite", "async_checkpoint", "run_config"):
        if key in kwargs:
            cb_kwargs[key] = kwargs.pop(key)
    callbacks = default_callbacks(kwargs.pop("checkpoint_dir", None), **cb_kwargs)
    train_tf, eval_tf = (
        kwargs.pop("batch_transform", None),
        kwargs.pop("eval_batch_transform", None),
    )
    if train_tf is not None or eval_tf is not None:
        callbacks.append(DeviceTransform(train=train_tf, eval=eval_tf))
    callbacks += list(kwargs.pop("callbacks", ()))
    kwargs.setdefault("device", "cpu")
    return Trainer(model, kwargs.pop("loss_fn", CE), opt, callbacks=callbacks, **kwargs)


def _checkpoint_callback(trainer: Trainer) -> Checkpoint:
    return next(cb for cb in trainer.callbacks if isinstance(cb, Checkpoint))


def _loaders(dataset: Callable[..., TensorDataset], n: int = 8) -> tuple[DataLoader[Any], ...]:
    return (
        DataLoader(dataset(n, seed=0), batch_size=4, shuffle=True),
        DataLoader(dataset(4, seed=1), batch_size=4),
    )


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WRITER]


# ----------------------------------------------------------------------------- batch transforms


def _uint8_loader(dataset: Callable[..., TensorDataset], n: int, seed: int) -> DataLoader[Any]:
    """The loader of ``train_transforms(size, output="uint8")``: uint8 images and masks."""
    images, labels = dataset(n, seed=seed).tensors
    raw = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return DataLoader(TensorDataset(raw, labels.to(torch.uint8)), batch_size=4)


class Normalize(nn.Module):
    """uint8 images -> normalised float32, uint8 masks -> int64 (counts its calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", MEAN.clone())
        self.register_buffer("std", STD.clone())
        self.calls = 0
        self.moved_to: list[Any] = []
        self.seen: list[tuple[torch.dtype, bool, bool]] = []

    def to(self, *args: Any, **kwargs: Any) -> Normalize:  # type: ignore[override]
        self.moved_to.append(args[0] if args else kwargs.get("device"))
        return super().to(*args, **kwargs)

    def forward(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        channels_last = images.is_contiguous(memory_format=torch.channels_last)
        self.seen.append((images.dtype, channels_last, torch.is_autocast_enabled("cpu")))
        x = (images.float() / 255 - self.mean) / self.std
        return x, targets.long()


def test_batch_transforms_normalise_uint8_batches_on_the_device(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    train_tf, eval_tf = Normalize(), Normalize()
    model_inputs: list[tuple[torch.dtype, bool]] = []
    model = tiny_model()
    model.register_forward_pre_hook(
        lambda _m, args: model_inputs.append(
            (args[0].dtype, args[0].is_contiguous(memory_format=torch.channels_last))
        )
    )
    trainer = _trainer(
        model,
        batch_transform=train_tf,
        eval_batch_transform=eval_tf,
        channels_last=True,
        amp="bf16",
    )
    history = trainer.fit(_uint8_loader(dataset, 8, 0), _uint8_loader(dataset, 4, 1), epochs=2)
    assert train_tf.moved_to == [torch.device("cpu")]  # modules go to the trainer's device
    assert eval_tf.moved_to == [torch.device("cpu")]  # (once)
    assert train_tf.calls == 4  # 2 training batches x 2 epochs
    assert eval_tf.calls == 2  # 1 validation batch x 2 epochs
    # Raw uint8 in, before channels_last, outside autocast; the model gets float channels_last.
    assert set(train_tf.seen) == {(torch.uint8, False, False)}
    assert set(eval_tf.seen) == {(torch.uint8, False, False)}
    assert set(model_inputs) == {(torch.float32, True)}
    assert history[-1].val_miou is not None


def test_batch_transform_equals_normalising_in_the_loader(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    raw_loader = _uint8_loader(dataset, 4, 1)
    raw, labels = raw_loader.dataset.tensors  # type: ignore[attr-defined]
    float_loader = DataLoader(
        TensorDataset((raw.float() / 255 - MEAN) / STD, labels.long()), batch_size=4
    )
    model = tiny_model()
    plain = _trainer(model).evaluate(float_loader)
    on_device = _trainer(model, eval_batch_transform=Normalize()).evaluate(raw_loader)
    assert on_device.miou == plain.miou
    assert torch.equal(on_device.confusion, plain.confusion)


def test_plain_callable_transform(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    calls: list[int] = []

    def flip(images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        calls.append(images.shape[0])
        return images.flip(-1), targets.flip(-1)

    trainer = _trainer(tiny_model(), batch_transform=flip)
    train, val = _loaders(dataset)
    trainer.fit(train, val, epochs=1)
    assert calls == [4, 4]  # training batches only; no eval transform given


def test_uint8_images_without_a_transform_raise_clearly(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    train, val = _uint8_loader(dataset, 4, 0), _uint8_loader(dataset, 4, 1)
    with pytest.raises(ConfigError, match=r"training batch: expected float images.*uint8.*"
                       r"DeviceTransform\(train="):  # fmt: skip
        _trainer(tiny_model()).fit(train, epochs=1)
    with pytest.raises(ConfigError, match=r"evaluation batch: expected float images.*"
                       r"eval=DeviceNormalize\(\)"):  # fmt: skip
        _trainer(tiny_model(), batch_transform=Normalize()).fit(train, val, epochs=1)
    with pytest.raises(ConfigError, match=r"evaluation batch.*uint8.*DeviceTransform"):
        _trainer(tiny_model()).evaluate(val)


def test_bad_batch_transforms_raise(
    tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    with pytest.raises(
        ConfigError, match=r"DeviceTransform\(train=...\): expected a callable.*got int"
    ):
        _trainer(tiny_model(), batch_transform=3)
    with pytest.raises(
        ConfigError, match=r"DeviceTransform\(eval=...\): expected a callable.*got str"
    ):
        _trainer(tiny_model(), eval_batch_transform="normalise")
    trainer = _trainer(tiny_model(), batch_transform=lambda x, y: x)
    with pytest.raises(ConfigError, match=r"DeviceTransform\(train=...\): expected it to return an "
                       r"\(images, targets\) tuple of tensors, got Tensor"):  # fmt: skip
        trainer.fit(_loaders(dataset)[0], epochs=1)
    keep_uint8 = _trainer(tiny_model(), batch_transform=lambda x, y: (x.flip(-1), y))
    with pytest.raises(ConfigError, match=r"training batch: expected float images.*returns float"):
        keep_uint8.fit(_uint8_loader(dataset, 4, 0), epochs=1)


# ----------------------------------------------------------------------------- async checkpoints


def _deterministic_run(
    ckpt_dir: Path,
    tiny_model: Callable[..., nn.Module],
    dataset: Callable[..., TensorDataset],
    epochs: int,
    *,
    resume: Path | None = None,
    seed: int = 1,
    **kwargs: Any,
) -> Trainer:
    torch.manual_seed(seed)
    model = tiny_model(dropout=0.3)  # dropout + shuffle exercise the RNG restore
    trainer = _trainer(model, lr=0.02, checkpoint_dir=ckpt_dir, **kwargs)
    trainer.fit(*_loaders(dataset), epochs=epochs, resume_from=resume)
    return trainer


def _same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor), where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict), where
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _comparable(path: Path) -> dict[str, Any]:
    ckpt = load_checkpoint(path)
    for record in [ckpt["extra"]["last_record"], *ckpt["extra"]["history"]]:
        record.pop("epoch_time_s")  # wall-clock figures differ
        record.pop("images_per_s")
    return ckpt


def test_async_and_sync_checkpoints_hold_the_same_state(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    torch.use_deterministic_algorithms(True)
    try:
        sync = _deterministic_run(tmp_path / "sync", tiny_model, dataset, 3)
        asyn = _deterministic_run(tmp_path / "async", tiny_model, dataset, 3, async_checkpoint=True)
    finally:
        torch.use_deterministic_algorithms(False)
    assert sync.best_epoch == asyn.best_epoch is not None
    for name in ("last.pt", "best.pt"):
        _same(_comparable(tmp_path / "sync" / name), _comparable(tmp_path / "async" / name), name)
    assert _writer_threads() == []
    assert not (tmp_path / "async" / ".suimseg.lock").exists()


def test_async_snapshot_is_taken_at_the_epoch_end(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: Callable[..., nn.Module],
    dataset: Callable[..., TensorDataset],
) -> None:
    # The first background write is held back until the next epoch has taken a step, so a
    # write that read the live weights (not the snapshot) would store epoch 2's weights.
    epoch_end_state: list[dict[str, Tensor]] = []
    saved: list[dict[str, Any]] = []
    real_save = callbacks_module.atomic_save

    class Keep(Callback):
        def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
            epoch_end_state.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    trainer = _trainer(tiny_model(), checkpoint_dir=tmp_path, async_checkpoint=True,
                       callbacks=[Keep()])  # fmt: skip

    def slow_save(obj: Any, path: Any) -> Path:
        if not saved:
            deadline = time.monotonic() + 20
            while trainer.global_step < 3 and time.monotonic() < deadline:
                time.sleep(0.005)
        out = real_save(obj, path)
        saved.append(load_checkpoint(out))
        return out

    monkeypatch.setattr(callbacks_module, "atomic_save", slow_save)
    trainer.fit(*_loaders(dataset), epochs=2)
    assert trainer.global_step == 4
    assert [c["epoch"] for c in saved] == [1, 2]
    assert saved[0]["global_step"] == 2
    _same(saved[0]["model_state"], epoch_end_state[0], "epoch 1")
    _same(saved[1]["model_state"], epoch_end_state[1], "epoch 2")
    with pytest.raises(AssertionError):  # the weights did move between the epochs
        _same(epoch_end_state[0], epoch_end_state[1])


def test_exact_resume_from_an_async_checkpoint(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    torch.use_deterministic_algorithms(True)
    try:
        straight = _deterministic_run(tmp_path / "a", tiny_model, dataset, 3)
        _deterministic_run(tmp_path / "b", tiny_model, dataset, 2, async_checkpoint=True)
        resumed = _deterministic_run(
            tmp_path / "b",
            tiny_model,
            dataset,
            3,
            resume=tmp_path / "b" / "last.pt",
            seed=123,  # a different init and RNG: the checkpoint must restore all
            async_checkpoint=True,
        )
    finally:
        torch.use_deterministic_algorithms(False)
    _same(straight.model.state_dict(), resumed.model.state_dict(), "model")
    assert straight.global_step == resumed.global_step == 6
    assert [r["epoch"] for r in read_history(tmp_path / "b")] == [1, 2, 3]
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 3


def _enospc_in_background(monkeypatch: pytest.MonkeyPatch, fail_calls: set[int]) -> list[str]:
    """Make ``torch.save`` fail with ENOSPC on the given calls; record the failing threads."""
    real_save = torch.save
    calls = 0
    threads: list[str] = []

    def save(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls in fail_calls:
            threads.append(threading.current_thread().name)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    return threads


def test_background_write_error_surfaces_at_the_end_of_fit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: Callable[..., nn.Module],
    dataset: Callable[..., TensorDataset],
) -> None:
    trainer = _trainer(tiny_model(), checkpoint_dir=tmp_path, async_checkpoint=True)
    trainer.fit(*_loaders(dataset), epochs=1)
    threads = _enospc_in_background(monkeypatch, {1})
    with pytest.raises(OSError, match=r"last\.pt: No space left on device.*disk is full"):
        trainer.fit(*_loaders(dataset), epochs=2)
    monkeypatch.undo()
    assert threads == [WRITER]
    assert trainer.epoch == 2  # the error came after the epoch, from the background write
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # the last good one
    assert not list(tmp_path.glob("*.tmp*"))
    assert not (tmp_path / ".suimseg.lock").exists()
    assert _writer_threads() == []


def test_background_write_error_surfaces_at_the_next_save(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: Callable[..., nn.Module],
    dataset: Callable[..., TensorDataset],
) -> None:
    trainer = _trainer(tiny_model(), checkpoint_dir=tmp_path, async_checkpoint=True)
    trainer.fit(*_loaders(dataset), epochs=1)
    _enospc_in_background(monkeypatch, {1})  # epoch 2's write fails
    with pytest.raises(OSError, match=r"could not write checkpoint .*last\.pt"):
        trainer.fit(*_loaders(dataset), epochs=4)
    monkeypatch.undo()
    assert trainer.epoch == 3  # raised by epoch 3's save, before it wrote anything
    assert [r["epoch"] for r in read_history(tmp_path)] == [1, 2]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert _writer_threads() == []
    # The run resumes from the last good checkpoint (the history is brought back in step).
    again = _trainer(tiny_model(), checkpoint_dir=tmp_path, async_checkpoint=True)
    again.fit(*_loaders(dataset), epochs=2, resume_from=tmp_path / "last.pt")
    assert [r["epoch"] for r in read_history(tmp_path)] == [1, 2]


def test_training_error_waits_for_the_pending_write(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    calls = 0

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        if calls == 4:  # epoch 2, first step (epoch 1: 2 steps + 1 validation batch)
            raise RuntimeError("boom")
        return CE(logits, target)

    trainer = _trainer(
        tiny_model(), checkpoint_dir=tmp_path, async_checkpoint=True, loss_fn=loss_fn
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(*_loaders(dataset), epochs=3)
    assert _writer_threads() == []
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def test_keyboard_interrupt_with_async_checkpoints_leaves_a_loadable_last(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    calls = 0

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        if calls == 5:  # epoch 2, second step, while epoch 1's write may be in flight
            raise KeyboardInterrupt
        return CE(logits, target)

    trainer = _trainer(
        tiny_model(), checkpoint_dir=tmp_path, async_checkpoint=True, loss_fn=loss_fn
    )
    before = threading.active_count()
    trainer.fit(*_loaders(dataset), epochs=3)
    assert trainer.interrupted
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1
    assert ckpt["extra"]["interrupted"] is True
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert _writer_threads() == []
    assert threading.active_count() == before


def test_async_checkpoint_argument_is_checked(tiny_model: Callable[..., nn.Module]) -> None:
    with pytest.raises(ConfigError, match=r"async_checkpoint: expected True or False, got 'yes'"):
        _trainer(tiny_model(), async_checkpoint="yes")


# ----------------------------------------------------------------------------- run config


def test_run_config_is_stored_in_every_checkpoint(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    config = {"image_size": 32, "decoder_channels": (16, 8), "note": None}
    trainer = _trainer(tiny_model(), checkpoint_dir=tmp_path, run_config=config)
    trainer.fit(*_loaders(dataset), epochs=1)
    expected = {"image_size": 32, "decoder_channels": [16, 8], "note": None}  # JSON form
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(tmp_path / name)["extra"]["run_config"] == expected
        assert read_run_config(tmp_path / name) == expected
    checkpoint = _checkpoint_callback(trainer)
    manual = trainer.save_checkpoint(
        tmp_path / "manual.pt", extra={"run_config": checkpoint.run_config}
    )
    assert read_run_config(manual) == expected
    config["image_size"] = 64  # the callback keeps its own copy
    assert checkpoint.run_config == expected


def test_run_config_travels_into_safetensors_exports(
    tmp_path: Path, tiny_unet: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    pytest.importorskip("safetensors")
    trainer = _trainer(tiny_unet())
    trainer.save_checkpoint(tmp_path / "best.pt", extra={"run_config": {"image_size": 32}})
    exported = save_safetensors(tmp_path / "best.pt", tmp_path / "model.safetensors")
    assert read_run_config(exported) == {"image_size": 32}
    plain = save_safetensors(tiny_unet(), tmp_path / "plain.safetensors")
    assert read_run_config(plain) is None


def test_without_run_config_nothing_is_stored(
    tmp_path: Path, tiny_model: Callable[..., nn.Module]
) -> None:
    path = _trainer(tiny_model()).save_checkpoint(tmp_path / "a.pt")
    assert "run_config" not in load_checkpoint(path)["extra"]
    assert read_run_config(path) is None


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"out_dir": Path("runs")}, r"run_config: expected JSON-serialisable.*Path"),
        ({"lr": float("nan")}, r"run_config: expected JSON-serialisable"),
        ({(2, 3): "b"}, r"run_config: expected JSON-serialisable"),
        ([("image_size", 32)], r"run_config: expected a mapping.*got list"),
    ],
)
def test_bad_run_config_raises(tiny_model: Callable[..., nn.Module], bad: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _trainer(tiny_model(), run_config=bad)


def test_run_config_round_trips_as_json(tiny_model: Callable[..., nn.Module]) -> None:
    config = {"a": [1, 2.5, "x", True, None], "b": {"c": "d"}}
    checkpoint = Checkpoint(".", run_config=config)
    assert json.loads(json.dumps(checkpoint.run_config)) == config


# ----------------------------------------------------------------------------- best.pt link


@pytest.mark.parametrize("async_checkpoint", [False, True])
def test_best_is_a_link_that_survives_the_next_last(
    tmp_path: Path,
    tiny_model: Callable[..., nn.Module],
    dataset: Callable[..., TensorDataset],
    async_checkpoint: bool,
) -> None:
    """best.pt is not a second 0.9 GB write, and it keeps its epoch when last.pt moves on."""

    class Worse(Callback):  # epoch 1 is the best; later epochs only rewrite last.pt
        def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
            if record.epoch == 1 and not async_checkpoint:  # async: may still be writing
                best, last = tmp_path / "best.pt", tmp_path / "last.pt"
                assert best.stat().st_ino == last.stat().st_ino
            trainer.best_metric = 2.0  # nothing can beat it from now on

    trainer = _trainer(
        tiny_model(),
        checkpoint_dir=tmp_path,
        async_checkpoint=async_checkpoint,
        callbacks=[Worse()],
    )
    trainer.fit(*_loaders(dataset), epochs=2)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    assert (tmp_path / "best.pt").stat().st_ino != (tmp_path / "last.pt").stat().st_ino


def test_fit_removes_temporaries_a_killed_run_left(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    stale = [
        tmp_path / ".last.pt.tmp-4242",
        tmp_path / ".best.pt.link-4242",
        tmp_path / ".config.json.tmp-7",
    ]
    for p in stale:
        p.write_bytes(b"left by a SIGKILL")
    unrelated = [tmp_path / ".notes.tmp", tmp_path / "my.tmp-1"]
    for p in unrelated:
        p.write_text("user file")
    _trainer(tiny_model(), checkpoint_dir=tmp_path, overwrite=True).fit(
        *_loaders(dataset), epochs=1
    )
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in unrelated)
