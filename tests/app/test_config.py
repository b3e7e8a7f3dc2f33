"""Tests of TrainConfig: defaults of the design, validation, JSON round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from suimseg.app.config import TrainConfig
from suimseg.errors import ConfigError


def test_defaults_are_the_design_recipe() -> None:
    c = TrainConfig()
    assert (c.image_size, c.batch_size, c.epochs) == (384, 6, 50)
    assert (c.lr, c.enc_lr_mult, c.weight_decay, c.grad_clip) == (1e-4, 0.1, 1e-4, 1.0)
    assert (c.loss, c.focal_gamma, c.lambda_dice, c.lambda_focal) == ("dice_focal", 2.0, 0.5, 0.5)
    assert c.class_weight_method == "inverse_sqrt"
    assert (c.plateau_factor, c.plateau_patience, c.min_lr) == (0.5, 5, 1e-6)
    assert c.encoder == "resnet50"
    assert c.encoder_weights == "imagenet"


def test_json_round_trip(tmp_path: Path) -> None:
    c = TrainConfig(data_root="/data/SUIM", epochs=3, decoder_channels=(8, 8, 8, 8), amp="bf16")
    path = c.to_json(tmp_path / "sub" / "config.json")
    assert json.loads(path.read_text())["decoder_channels"] == [8, 8, 8, 8]
    assert TrainConfig.from_json(path) == c
    assert not list(path.parent.glob(".*tmp*"))


def test_speed_options_round_trip(tmp_path: Path) -> None:
    c = TrainConfig(cache="shared", augment_on="device", val_batch_size=12, async_checkpoint=True)
    assert TrainConfig.from_json(c.to_json(tmp_path / "config.json")) == c
    # A config.json written before these options existed still loads, with the defaults.
    old = {
        k: v
        for k, v in TrainConfig().to_dict().items()
        if k not in ("augment_on", "val_batch_size", "async_checkpoint")
    }
    restored = TrainConfig.from_dict(old)
    assert (restored.augment_on, restored.val_batch_size, restored.async_checkpoint) == (
        "loader",
        None,
        None,
    )


def test_frozen_and_replace() -> None:
    c = TrainConfig()
    with pytest.raises(AttributeError):
        c.epochs = 3  # type: ignore[misc]
    assert c.replace(epochs=3).epochs == 3
    with pytest.raises(ConfigError, match="epochs"):
        c.replace(epochs=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "unet"}, "model: expected one of v3, deeplabv3, got 'unet'"),
        ({"amp": "fp8"}, "amp: expected one of auto, bf16, fp16, none"),
        ({"device": "tpu"}, "device: expected one of"),
        ({"loss": "dice"}, "loss: expected one of"),
        ({"batch_size": 0}, "batch_size: expected a positive int, got 0"),
        ({"lr": 0.0}, "lr: expected a learning rate > 0"),
        ({"grad_clip": -1.0}, "grad_clip: expected a number >= 0"),
        ({"plateau_factor": 1.5}, "plateau_factor"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"decoder_channels": (8, 8)}, "decoder_channels: expected 4 positive ints"),
        ({"early_stopping_patience": 0}, "early_stopping_patience"),
        ({"workers": -1}, "workers: expected an int >= 0"),
        ({"cache": "yes"}, "cache: expected False, True or 'shared', got 'yes'"),
        ({"cache": 1}, "cache: expected False, True or 'shared', got 1"),
        ({"augment_on": "gpu"}, "augment_on: expected one of loader, device, got 'gpu'"),
        ({"val_batch_size": 0}, "val_batch_size: expected None or a positive int, got 0"),
        ({"async_checkpoint": "on"}, "async_checkpoint: expected True, False or None"),
        ({"compile": 1}, "compile: expected True or False, got 1"),
    ],
)
def test_bad_values_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_from_dict_rejects_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown config keys: epoch "):
        TrainConfig.from_dict({"epoch": 3})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        TrainConfig.from_json(bad)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        TrainConfig.from_json(tmp_path / "missing.json")
