"""Tests of suimseg.engine.checkpoint: atomic writes, safe loading, load_model, RNG state."""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from suimseg.engine import (
    FORMAT_VERSION,
    Trainer,
    atomic_save,
    capture_rng_state,
    default_callbacks,
    load_checkpoint,
    load_model,
    load_training_state,
    make_checkpoint,
    reduce_on_plateau,
    restore_rng_state,
    save_training_state,
)
from suimseg.errors import CheckpointError
from suimseg.losses import DiceFocalLoss
from suimseg.optim import param_groups

CE = nn.CrossEntropyLoss(ignore_index=255)


class _Custom:
    """A plain Python object: pickled by torch.save, refused by weights_only loading."""

    def __init__(self) -> None:
        self.value = 3


def _write(path: Path, model: nn.Module | None = None, **kwargs: Any) -> Path:
    return atomic_save(make_checkpoint(model or nn.Linear(2, 2), model_spec=None, **kwargs), path)


def test_round_trip_is_weights_only_loadable(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    path = _write(tmp_path / "c.pt", model, epoch=4, best_metric=0.5, class_names=["a", "b"])
    raw = torch.load(path, weights_only=True)  # everything inside is plain data
    assert raw["format_version"] == FORMAT_VERSION
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 4
    assert ckpt["best_metric"] == 0.5
    assert ckpt["class_names"] == ["a", "b"]
    assert torch.equal(ckpt["model_state"]["weight"], model.weight)
    assert isinstance(ckpt["rng"]["numpy"]["keys"], torch.Tensor)
    assert not list(tmp_path.glob(".*tmp*"))


def test_rng_state_restores_torch_numpy_and_python() -> None:
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    restore_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]


def test_rng_state_survives_a_checkpoint(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.pt")
    expected = (torch.rand(2), np.random.rand(2), random.random())  # noqa: NPY002
    restore_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(2), expected[0])
    assert np.array_equal(np.random.rand(2), expected[1])  # noqa: NPY002
    assert random.random() == expected[2]


def test_bad_rng_state_raises() -> None:
    with pytest.raises(CheckpointError, match="rng state: expected the dict"):
        restore_rng_state({"torch": torch.get_rng_state()})


def test_load_model_rebuilds_a_trained_unet(
    tmp_path: Path, tiny_unet: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    model = tiny_unet()
    opt = torch.optim.AdamW(param_groups(model, 0.1, lr=1e-3, weight_decay=1e-4))
    trainer = Trainer(
        model,
        DiceFocalLoss(),
        opt,
        scheduler=reduce_on_plateau(opt),
        device="cpu",
        callbacks=default_callbacks(tmp_path, verbose=False),
    )
    loader = DataLoader(dataset(4), batch_size=2)
    trainer.fit(loader, loader, epochs=1)
    rebuilt = load_model(tmp_path / "best.pt")
    assert type(rebuilt) is type(model)
    assert not rebuilt.training
    model.eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["model"]["name"] == "unet_resattn_v3"
    assert ckpt["model"]["config"]["num_classes"] == 3
    assert ckpt["suimseg_version"]
    assert ckpt["optimizer_state"]["state"]
    assert ckpt["scheduler_state"]["mode"] == "max"


def test_load_model_refuses_custom_model(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="custom model"):
        load_model(path)


def test_load_model_refuses_mismatched_weights(tmp_path: Path) -> None:
    ckpt = make_checkpoint(
        nn.Linear(2, 2),
        model_spec={"name": "unet_resattn_v3", "config": {"encoder": "resnet18"}},
    )
    path = atomic_save(ckpt, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)


def test_load_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_load_truncated_file_raises(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"bad\.pt: the file is truncated or corrupt"):
        load_checkpoint(bad)


def test_load_non_suimseg_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(CheckpointError, match="expected a suimseg checkpoint"):
        load_checkpoint(path)


def test_load_newer_format_raises(tmp_path: Path) -> None:
    ckpt = make_checkpoint(nn.Linear(2, 2), model_spec=None)
    ckpt["format_version"] = FORMAT_VERSION + 1
    path = atomic_save(ckpt, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match=r"format 2 .* upgrade suimseg"):
        load_checkpoint(path)


def test_load_pickle_payload_is_refused(tmp_path: Path) -> None:
    ckpt = make_checkpoint(nn.Linear(2, 2), model_spec=None)
    ckpt["extra"]["payload"] = _Custom()
    path = atomic_save(ckpt, tmp_path / "evil.pt")
    with pytest.raises(
        CheckpointError, match=r"evil\.pt: refused: it holds pickled Python code \(.*_Cus"
    ):
        load_checkpoint(path)


def test_crash_during_write_keeps_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "last.pt", epoch=1)
    real_save = torch.save

    def crash(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"PK\x03\x04partial")  # some bytes reach the disk, then the process dies
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _write(path, epoch=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("target", ["save", "replace"])
def test_disk_full_names_path_and_keeps_previous_file(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "last.pt", epoch=1)

    def enospc(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if target == "save":
        monkeypatch.setattr(torch, "save", enospc)
    else:
        monkeypatch.setattr(os, "replace", enospc)
    with pytest.raises(OSError, match=r"could not write checkpoint .*last\.pt.*disk is full") as e:
        _write(path, epoch=2)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_trainer_disk_full_during_fit_keeps_last_good_epoch(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: Callable[..., nn.Module],
    dataset: Callable[..., TensorDataset],
) -> None:
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    trainer = Trainer(
        model, CE, opt, device="cpu", callbacks=default_callbacks(tmp_path, verbose=False)
    )
    loader = DataLoader(dataset(4), batch_size=2)
    trainer.fit(loader, loader, epochs=1)
    real_save = torch.save

    def enospc(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", enospc)
    with pytest.raises(OSError, match=r"last\.pt"):
        trainer.fit(loader, loader, epochs=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_trainer_refuses_checkpoint_of_other_architecture(
    tmp_path: Path, tiny_unet: Callable[..., nn.Module]
) -> None:
    small = tiny_unet(num_classes=3)
    Trainer(small, CE, torch.optim.SGD(small.parameters(), lr=0.1), device="cpu").save_checkpoint(
        tmp_path / "c.pt"
    )
    other = tiny_unet(num_classes=4)
    trainer = Trainer(other, CE, torch.optim.SGD(other.parameters(), lr=0.1), device="cpu")
    with pytest.raises(CheckpointError, match="written for model"):
        trainer.load_checkpoint(tmp_path / "c.pt")


def test_trainer_refuses_mismatched_optimizer(
    tmp_path: Path, tiny_model: Callable[..., nn.Module]
) -> None:
    model = tiny_model()
    groups = [{"params": [p]} for p in model.parameters()]
    Trainer(model, CE, torch.optim.SGD(groups, lr=0.1), device="cpu").save_checkpoint(
        tmp_path / "c.pt"
    )
    trainer = Trainer(model, CE, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu")
    with pytest.raises(CheckpointError, match="optimizer state does not match"):
        trainer.load_checkpoint(tmp_path / "c.pt")


def test_atomic_link_shares_the_file_until_the_source_is_replaced(tmp_path: Path) -> None:
    from suimseg.engine.checkpoint import atomic_link

    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    atomic_save({"epoch": torch.tensor(1)}, last)
    atomic_link(last, best)
    assert best.stat().st_ino == last.stat().st_ino  # no second copy written
    atomic_link(last, best)  # already the same file: still fine, no temporary left
    atomic_save({"epoch": torch.tensor(2)}, last)  # a rename: best keeps epoch 1
    assert int(torch.load(best, weights_only=True)["epoch"]) == 1
    assert int(torch.load(last, weights_only=True)["epoch"]) == 2
    atomic_link(last, best)
    assert int(torch.load(best, weights_only=True)["epoch"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_atomic_link_copies_where_hard_links_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from suimseg.engine.checkpoint import atomic_link

    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    atomic_save({"epoch": torch.tensor(1)}, last)
    atomic_link(last, best)
    assert best.stat().st_ino != last.stat().st_ino
    assert best.read_bytes() == last.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_custom_loop_resumes_exactly_with_the_training_state_functions(
    tmp_path: Path, tiny_model: Callable[..., nn.Module], dataset: Callable[..., TensorDataset]
) -> None:
    """No Trainer at all: save_training_state / load_training_state give an exact resume."""

    def run(epochs: int, resume: Path | None, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = tiny_model(dropout=0.3)  # dropout + shuffle exercise the RNG restore
        opt = torch.optim.AdamW(model.parameters(), lr=0.02)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        start = 0
        if resume is not None:
            start = load_training_state(resume, model, opt, sched)["epoch"]
        loader = DataLoader(dataset(8), batch_size=4, shuffle=True)
        for epoch in range(start + 1, epochs + 1):
            for x, y in loader:
                loss = CE(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            save_training_state(
                tmp_path / "last.pt", model=model, optimizer=opt, scheduler=sched, epoch=epoch
            )
        return model

    torch.use_deterministic_algorithms(True)
    try:
        straight = run(2, None, seed=1).state_dict()
        run(1, None, seed=1)
        resumed = run(2, tmp_path / "last.pt", seed=99).state_dict()  # all restored
    finally:
        torch.use_deterministic_algorithms(False)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 2
    assert ckpt["scheduler_state"]["last_epoch"] == 2
