"""SUIMSegModule + SUIMDataModule: one CPU epoch, logged metrics, checkpoint round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("lightning")
pytest.importorskip("torchmetrics")

from torch.utils.data import DistributedSampler

from suimseg.classes import CLASS_NAMES
from suimseg.errors import ConfigError
from suimseg.lightning import (
    SUIMDataModule,
    SUIMJaccardIndex,
    SUIMSegModule,
    UnpaddedDistributedSampler,
)
from suimseg.lightning.module import metric_key
from suimseg.models import UNetResAttnV3

from .conftest import TINY, Fitted, make_trainer


def test_one_epoch_logs_val_miou_and_checkpoint_loads_back(fitted: Fitted) -> None:
    module, trainer, data = fitted.module, fitted.trainer, fitted.data

    logged = trainer.callback_metrics
    assert 0.0 <= float(logged["val_miou"]) <= 1.0
    for key in ("train_loss_epoch", "train_dice_epoch", "train_focal_epoch", "val_loss",
                "val_dice", "val_focal"):  # fmt: skip
        assert math.isfinite(float(logged[key])), key
    keys = [f"val_iou_{metric_key(name)}" for name in CLASS_NAMES]
    assert keys[0] == "val_iou_background_waterbody"
    assert set(keys) <= set(logged)
    # The logged figure is the per-class mean over classes present (NaN ones left out).
    per_class = torch.tensor([float(logged[k]) for k in keys])
    assert float(logged["val_miou"]) == pytest.approx(float(per_class.nanmean()), abs=1e-6)

    loaded = SUIMSegModule.load_from_checkpoint(fitted.ckpt, map_location="cpu")
    assert isinstance(loaded.model, UNetResAttnV3)
    assert loaded.model.config == module.model.config
    assert loaded.hparams["lr"] == 1e-3
    for (k, a), (_, b) in zip(
        module.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k

    # The scheduler is ReduceLROnPlateau(mode="max") on val_miou over suimseg's groups.
    config = trainer.lr_scheduler_configs[0]
    assert config.monitor == "val_miou"
    assert isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert config.scheduler.mode == "max"
    groups = trainer.optimizers[0].param_groups
    assert groups[0]["name"] == "encoder"
    assert {g["name"]: g["lr"] for g in groups}["encoder"] == pytest.approx(1e-4)
    assert {g["name"]: g["lr"] for g in groups}["decoder"] == pytest.approx(1e-3)

    # trainer.test on the TEST split logs test_miou.
    results = trainer.test(loaded, datamodule=data, verbose=False)
    assert 0.0 <= results[0]["test_miou"] <= 1.0


def test_val_miou_equals_confusion_matrix_evaluation(suim_root: Path, tmp_path: Path) -> None:
    """What Lightning logs is suimseg's dataset-level mIoU of the same predictions."""
    from suimseg.metrics import ConfusionMatrix

    torch.manual_seed(0)
    module = SUIMSegModule(TINY)
    data = SUIMDataModule(suim_root, image_size=32, batch_size=3)
    trainer = make_trainer(tmp_path, enable_checkpointing=False)
    [result] = trainer.validate(module, datamodule=data, verbose=False)
    cm = ConfusionMatrix(8)
    module.eval()
    with torch.no_grad():
        for images, masks in data.val_dataloader():
            cm.update(module(images), masks)
    assert result["val_miou"] == pytest.approx(cm.compute().miou, abs=1e-6)


def test_hparams_hold_the_built_models_config_not_weight_sources() -> None:
    module = SUIMSegModule({**TINY, "encoder_weights": None}, class_weights=[1.0] * 8)
    assert module.hparams["model"] == UNetResAttnV3(**TINY).config
    assert "encoder_weights" not in module.hparams["model"]
    assert module.hparams["model_name"] == "unet_resattn_v3"


def test_image_size_given_wins_over_the_datamodules_and_is_checked() -> None:
    from types import SimpleNamespace

    given = SUIMSegModule(TINY, image_size=48)
    taken = SUIMSegModule(TINY)
    assert given.hparams["image_size"] == 48
    assert taken.hparams["image_size"] is None
    for module in (given, taken):  # what Trainer.fit attaches before calling setup
        module._trainer = SimpleNamespace(datamodule=SimpleNamespace(image_size=32))
        module.setup("fit")
    assert given.hparams["image_size"] == 48
    assert taken.hparams["image_size"] == 32
    plain = SUIMSegModule(TINY)
    plain._trainer = SimpleNamespace(datamodule=None)  # fit with plain dataloaders
    plain.setup("fit")
    assert plain.hparams["image_size"] is None
    for bad in (0, -3, 32.0, True, "384"):
        with pytest.raises(ConfigError, match="image_size: expected a positive int"):
            SUIMSegModule(TINY, image_size=bad)  # type: ignore[arg-type]


def test_custom_module_must_be_passed_again(tmp_path: Path) -> None:
    class Net(nn.Module):
        num_classes = 8

        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Conv2d(4, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(x))

    module = SUIMSegModule(Net())
    assert "model" not in module.hparams
    assert module(torch.randn(1, 3, 8, 8)).shape == (1, 8, 8, 8)
    with pytest.raises(ConfigError, match="num_classes"):
        SUIMSegModule(nn.Conv2d(3, 8, 1))
    with pytest.raises(ConfigError, match="model: expected a dict"):
        SUIMSegModule("unet")  # type: ignore[arg-type]


def test_unpadded_sampler_deals_each_sample_once() -> None:
    shards = [list(UnpaddedDistributedSampler(range(7), num_replicas=3, rank=r)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(i for s in shards for i in s) == list(range(7))  # no padding, no repeats
    # Lightning keeps any DistributedSampler it finds instead of injecting its padded one.
    assert isinstance(UnpaddedDistributedSampler(range(7), num_replicas=3, rank=0),
                      DistributedSampler)  # fmt: skip
    padded = [len(list(DistributedSampler(range(7), num_replicas=3, rank=r))) for r in range(3)]
    assert padded == [3, 3, 3]  # what the default sampler would do: 9 samples, 2 repeats


def test_datamodule_validation(suim_root: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        SUIMDataModule(suim_root, batch_size=0)
    with pytest.raises(ConfigError, match="split"):
        SUIMDataModule(suim_root, split="train")
    data = SUIMDataModule(suim_root, image_size=32)
    with pytest.raises(ConfigError, match=r"setup\('validate'\)"):
        data.val_dataloader()


def test_fewer_validation_images_than_processes_is_refused_not_a_hang(
    suim_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process without a validation batch would skip the epoch-end metric sync and leave
    # the others waiting forever; the data module refuses before that can happen.
    import suimseg.lightning.datamodule as dm_module

    data = SUIMDataModule(suim_root, image_size=32, val_fraction=0.2)
    data.setup("validate")
    assert data.val_set is not None
    n = len(data.val_set)
    monkeypatch.setattr(dm_module, "is_distributed", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: n + 1)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, **k: 0)
    with pytest.raises(ConfigError, match=rf"{n} image\(s\) for {n + 1} processes"):
        data.val_dataloader()
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: n)
    assert isinstance(data.val_dataloader().sampler, UnpaddedDistributedSampler)


def test_metric_is_a_torchmetrics_metric() -> None:
    import torchmetrics

    assert isinstance(SUIMJaccardIndex(), torchmetrics.Metric)


def test_deeplab_baseline_by_name() -> None:
    from suimseg.models import DeepLabV3ResNet50

    module = SUIMSegModule({"num_classes": 8}, model_name="deeplabv3_resnet50")
    assert isinstance(module.model, DeepLabV3ResNet50)
    assert module.hparams["model_name"] == "deeplabv3_resnet50"
    optim = module.configure_optimizers()
    names = [g["name"] for g in optim["optimizer"].param_groups]
    assert names[0] == "encoder"
    assert "decoder" in names
