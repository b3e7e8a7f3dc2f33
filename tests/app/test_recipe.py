"""Tests of the V3 recipe, the `suimseg train/synth/demo` commands and the demo."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from suimseg.app.cli import build_parser, main, train_config_from_args
from suimseg.app.config import TrainConfig
from suimseg.app.demo import run_demo
from suimseg.app.recipe import build_training
from suimseg.classes import CLASS_NAMES
from suimseg.data import SUIMDataset, make_synthetic_suim
from suimseg.engine import (
    Checkpoint,
    DeviceTransform,
    load_checkpoint,
    load_model,
    read_history,
    resolve_device,
)
from suimseg.errors import ConfigError, DatasetNotFoundError
from suimseg.losses import DiceFocalLoss
from suimseg.models import UNetResAttnV3

TINY = [
    "--encoder", "resnet18", "--encoder-weights", "none", "--decoder-channels", "16,16,8,8",
    "--bridge-channels", "16", "--image-size", "32", "--workers", "0", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("suim")
    return make_synthetic_suim(root, n_train_val=12, n_test=4, size=(48, 40), seed=0)


def _tiny_config(data_root: Path, out: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(
        data_root=str(data_root),
        out_dir=str(out),
        encoder="resnet18",
        encoder_weights="none",
        decoder_channels=(16, 16, 8, 8),
        bridge_channels=16,
        image_size=32,
        batch_size=4,
        epochs=1,
        workers=0,
        device="cpu",
    )
    return base.replace(**changes)


def test_design_command_line_parses_both_spellings() -> None:
    design = "train --data SUIM --epochs 50 --batch_size 6 --lr 1e-4 --focal_gamma 2.0 --use_focal"
    dashed = "train --data SUIM --epochs 50 --batch-size 6 --lr 1e-4 --focal-gamma 2.0 --use-focal"
    parser = build_parser()
    a = train_config_from_args(parser.parse_args(design.split()))
    b = train_config_from_args(parser.parse_args(dashed.split()))
    assert a == b
    assert a == TrainConfig(data_root="SUIM")  # the design's command is the default recipe
    c = train_config_from_args(parser.parse_args(["train", "--data", "X", "--no-focal"]))
    assert c.loss == "ce"


def test_cli_options_override_a_saved_config(tmp_path: Path) -> None:
    saved = TrainConfig(data_root="A", epochs=7, lr=3e-4).to_json(tmp_path / "config.json")
    args = build_parser().parse_args(
        ["train", "--data", "B", "--config", str(saved), "--epochs", "2"]
    )
    config = train_config_from_args(args)
    assert (config.data_root, config.epochs, config.lr) == ("B", 2, 3e-4)


def test_bad_cli_values_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["train", "--data", "X", "--batch-size", "0"],
        ["train", "--data", "X", "--decoder-channels", "1,2,3"],
        ["train", "--data", "X", "--model", "unet"],
        ["train"],
        ["synth", "out", "--size", "big"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "expected 4 comma-separated" in capsys.readouterr().err


def test_build_training_assembles_the_recipe(data_root: Path, tmp_path: Path) -> None:
    setup = build_training(_tiny_config(data_root, tmp_path / "run"), progress=False)
    assert isinstance(setup.model, UNetResAttnV3)
    assert isinstance(setup.loss_fn, DiceFocalLoss)
    assert setup.class_weights is not None
    assert setup.class_weights.shape == (8,)
    lrs = {g["name"]: g["lr"] for g in setup.optimizer.param_groups}
    assert lrs["encoder"] == pytest.approx(0.1 * lrs["decoder"])
    assert setup.scheduler.mode == "max"
    assert setup.scheduler.factor == 0.5
    assert setup.scheduler.patience == 5
    assert setup.train_loader.drop_last
    images, masks = next(iter(setup.train_loader))
    assert images.shape == (4, 3, 32, 32)
    assert masks.dtype == torch.int64


def test_no_focal_cross_entropy_is_zero_on_an_all_ignored_batch(
    data_root: Path, tmp_path: Path
) -> None:
    """Before: torch's weighted mean gave 0/0 = NaN and the run stopped blaming the lr."""
    setup = build_training(
        _tiny_config(data_root, tmp_path / "run", loss="ce"), progress=False, verbose=False
    )
    loss_fn, weight = setup.loss_fn, setup.class_weights
    assert isinstance(loss_fn, torch.nn.CrossEntropyLoss)
    assert weight is not None
    logits = torch.randn(2, 8, 6, 5, requires_grad=True)
    target = torch.randint(0, 8, (2, 6, 5))
    target[0, :3] = 255
    reference = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=255)
    torch.testing.assert_close(loss_fn(logits, target), reference(logits, target))
    ignored = torch.full((2, 6, 5), 255)
    assert torch.isnan(reference(logits, ignored))  # what the recipe used before
    value = loss_fn(logits, ignored)
    value.backward()
    assert value.item() == 0.0
    assert logits.grad is not None
    assert not logits.grad.any()
    # Through the trainer: one all-ignored batch among normal ones trains on.
    images, masks = next(iter(setup.train_loader))
    batches = [(images, torch.full_like(masks, 255)), (images, masks)]
    history = setup.trainer.fit(batches, [(images, masks)], 1)
    assert math.isfinite(history[0].train_loss)


def test_cuda_request_without_cuda_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_wrong_data_path_shows_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DatasetNotFoundError):
        build_training(_tiny_config(tmp_path / "nope", tmp_path / "run"))
    code = main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), *TINY])
    err = capsys.readouterr().err
    assert code == 1
    assert "train_val" in err
    assert "images" in err
    assert "Traceback" not in err


def test_cli_train_writes_checkpoints_history_config_then_resumes(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", str(data_root), "--out", str(out), *TINY]
    assert main([*argv, "--epochs", "1", "--batch_size", "4", "--lr", "1e-3"]) == 0
    for name in ("best.pt", "last.pt", "history.csv", "history.jsonl", "config.json"):
        assert (out / name).is_file(), name
    saved = TrainConfig.from_json(out / "config.json")
    assert (saved.epochs, saved.batch_size, saved.lr, saved.image_size) == (1, 4, 1e-3, 32)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    model = load_model(out / "best.pt")
    assert isinstance(model, UNetResAttnV3)
    assert model.config["decoder_channels"] == [16, 16, 8, 8]

    code = main([*argv, "--epochs", "2", "--batch-size", "4", "--resume", str(out / "last.pt")])
    assert code == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    rows = read_history(out / "history.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert "best validation mIoU" in capsys.readouterr().out


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["synth", str(tmp_path / "s"), "--n-train-val", "8", "--n_test", "2", "--size", "40x30"]
    )
    assert code == 0
    assert len(list((tmp_path / "s" / "train_val" / "images").iterdir())) == 8
    assert len(list((tmp_path / "s" / "TEST" / "masks").glob("*.bmp"))) == 2
    assert "8 train_val + 2 TEST pairs, 40x30" in capsys.readouterr().out


def test_demo_small_settings(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", epochs=2, n_train_val=16, n_test=4, size=(64, 48))
    out = result.out_dir
    report = json.loads((out / "metrics.json").read_text())
    assert set(report) >= {"model", "majority_baseline", "seconds"}
    assert report["model"]["miou"] == pytest.approx(result.metrics.miou)
    assert report["majority_baseline"]["class"] == result.majority_class
    # Predicting class m everywhere: IoU_m = n_m / n_total, IoU 0 for every other class
    # present in the test labels, NaN (excluded) for absent ones.
    counts = SUIMDataset(out / "data", "test").class_pixel_counts()
    m = CLASS_NAMES.index(result.majority_class)
    expected = counts[m] / counts.sum() / np.count_nonzero(counts)
    assert result.majority_metrics.miou == pytest.approx(expected)
    assert len(list((out / "overlays").glob("*.png"))) == 4
    assert (out / "run" / "best.pt").is_file()
    assert len(read_history(out / "run" / "history.csv")) == 2


def test_demo_without_overlays(tmp_path: Path) -> None:
    # n_overlays=0 used to call predict([]), which refuses an empty input list.
    result = run_demo(tmp_path / "demo", epochs=1, n_train_val=10, n_test=2, size=(48, 40),
                      n_overlays=0)  # fmt: skip
    assert (result.out_dir / "metrics.json").is_file()
    assert not (result.out_dir / "overlays").exists()
    with pytest.raises(ConfigError, match="n_overlays"):
        run_demo(tmp_path / "demo2", n_overlays=-1)


@pytest.mark.slow
def test_demo_default_beats_majority_class(tmp_path: Path) -> None:
    """The README's main job: clearly above the majority-class baseline."""
    result = run_demo(tmp_path / "demo")
    assert result.metrics.miou > result.majority_metrics.miou + 0.3


def test_second_run_in_same_folder_is_refused_unless_overwrite(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", str(data_root), "--out", str(out), *TINY, "--batch-size", "4"]
    assert main([*argv, "--epochs", "1", "--seed", "1"]) == 0
    first_config = (out / "config.json").read_text()
    capsys.readouterr()
    assert main([*argv, "--epochs", "1", "--seed", "2"]) == 1
    err = capsys.readouterr().err
    assert "already holds a training run" in err
    assert "--overwrite" in err
    assert (out / "config.json").read_text() == first_config  # the refused run wrote nothing
    assert main([*argv, "--epochs", "1", "--seed", "2", "--overwrite"]) == 0
    assert TrainConfig.from_json(out / "config.json").seed == 2


def test_lenient_and_max_pixels_reach_the_dataset(data_root: Path, tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["train", "--data", str(data_root), "--lenient", "--max-pixels", "5000"]
    )
    config = train_config_from_args(args)
    assert (config.on_corrupt, config.max_pixels) == ("skip", 5000)
    setup = build_training(_tiny_config(data_root, tmp_path / "r", on_corrupt="skip"))
    assert setup.train_loader.dataset.on_corrupt == "skip"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="max_pixels"):
        TrainConfig(max_pixels=0)


def test_recipe_builds_the_deeplabv3_baseline(data_root: Path, tmp_path: Path) -> None:
    from suimseg.models import DeepLabV3ResNet50

    args = build_parser().parse_args(["train", "--data", str(data_root), "--model", "deeplabv3"])
    config = train_config_from_args(args).replace(
        out_dir=str(tmp_path / "r"), encoder_weights="none", image_size=32, workers=0
    )
    setup = build_training(config, progress=False)
    assert isinstance(setup.model, DeepLabV3ResNet50)
    names = {g["name"] for g in setup.optimizer.param_groups}
    assert names == {"encoder", "encoder_no_decay", "decoder", "decoder_no_decay"}


def test_every_config_field_has_a_train_option() -> None:
    import argparse
    import dataclasses

    train_parser = next(
        p
        for a in build_parser()._actions
        if isinstance(a, argparse._SubParsersAction)
        for name, p in a.choices.items()
        if name == "train"
    )
    dests = {a.dest for a in train_parser._actions}
    missing = {f.name for f in dataclasses.fields(TrainConfig)} - dests
    assert not missing, f"TrainConfig fields without a `suimseg train` option: {missing}"


def _callback(setup: Any, kind: type[Any]) -> Any:
    """The trainer's callback of type ``kind`` (``None`` when it has none)."""
    return next((cb for cb in setup.trainer.callbacks if isinstance(cb, kind)), None)


def test_loaders_decode_at_the_training_size(data_root: Path, tmp_path: Path) -> None:
    """The datasets decode (and cache) at image_size, not at the dataset's 384 default."""
    setup = build_training(_tiny_config(data_root, tmp_path / "r", val_batch_size=3))
    for loader in (setup.train_loader, setup.val_loader):
        assert loader.dataset.image_size == (32, 32)  # type: ignore[attr-defined]
    assert setup.val_loader.batch_size == 3
    assert setup.train_loader.batch_size == 4
    assert _callback(setup, DeviceTransform) is None
    assert _callback(setup, Checkpoint).async_write is False  # CPU default


def test_device_augmentation_recipe_trains_and_stores_its_config(
    data_root: Path, tmp_path: Path
) -> None:
    from suimseg.app.evaluate import input_size_for
    from suimseg.data import DeviceAugment, DeviceNormalize

    config = _tiny_config(
        data_root, tmp_path / "r", augment_on="device", cache="shared", async_checkpoint=True
    )
    setup = build_training(config, progress=False, verbose=False)
    images, masks = next(iter(setup.train_loader))
    assert images.dtype == torch.uint8  # a quarter of the bytes between processes
    assert masks.dtype == torch.uint8
    assert isinstance(_callback(setup, DeviceTransform).train, DeviceAugment)
    assert isinstance(_callback(setup, DeviceTransform).eval, DeviceNormalize)
    assert _callback(setup, Checkpoint).async_write is True
    assert setup.train_loader.dataset.cache == "shared"  # type: ignore[attr-defined]
    history = setup.trainer.fit(setup.train_loader, setup.val_loader, 1)
    assert np.isfinite(history[-1].train_loss)
    assert 0.0 <= history[-1].val_miou <= 1.0
    # The run's config travels inside the checkpoint: a moved file keeps its input size.
    moved = tmp_path / "elsewhere" / "best.pt"
    moved.parent.mkdir()
    (tmp_path / "r" / "best.pt").rename(moved)
    assert input_size_for(moved) == 32
    ckpt = load_checkpoint(moved)
    assert TrainConfig.from_dict(ckpt["extra"]["run_config"]) == config


def test_no_augment_on_device_only_normalises(data_root: Path, tmp_path: Path) -> None:
    from suimseg.data import DeviceNormalize

    config = _tiny_config(data_root, tmp_path / "r", augment_on="device", augment=False)
    setup = build_training(config, progress=False)
    assert isinstance(_callback(setup, DeviceTransform).train, DeviceNormalize)
