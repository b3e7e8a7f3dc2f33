"""``SUIMSegModule``: UNet-ResAttn-V3 (or any suimseg model) as a ``LightningModule``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from suimseg.classes import IGNORE_INDEX
from suimseg.errors import ConfigError
from suimseg.lightning.metrics import SUIMJaccardIndex
from suimseg.losses import DiceFocalLoss
from suimseg.models import build_model
from suimseg.optim import group_min_lrs, param_groups

__all__ = ["SUIMSegModule", "metric_key"]

Batch = tuple[Tensor, Tensor]


def metric_key(class_name: str) -> str:
    """A class name as a logging key: runs of other characters than ``[0-9A-Za-z]`` become
    ``_`` (``"background / waterbody"`` -> ``"background_waterbody"``)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", class_name).strip("_")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _build(model: Mapping[str, Any] | nn.Module | None, model_name: str) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if model is not None and not isinstance(model, Mapping):
        raise ConfigError(
            f"model: expected a dict of {model_name} constructor arguments or an nn.Module, "
            f"got {type(model).__name__}"
        )
    return build_model(model_name, **dict(model or {}))


class SUIMSegModule(pl.LightningModule):
    """Train and evaluate a suimseg model with Lightning, with suimseg's recipe.

    - the model: ``build_model(model_name, **model)`` from a dict of constructor arguments
      (``UNetResAttnV3`` by default), or an ``nn.Module`` you built;
    - the loss: :class:`~suimseg.losses.DiceFocalLoss`; its total, Dice and focal terms
      are logged as ``train_loss``/``train_dice``/``train_focal`` (and ``val_*``);
    - the metric: :class:`~suimseg.lightning.SUIMJaccardIndex`, logged as ``val_miou`` /
      ``test_miou`` (the dataset-level mIoU, summed over processes under DDP), with the
      per-class IoU as ``val_iou_<class>`` when ``log_per_class`` (the class name with
      spaces and punctuation turned into ``_``, e.g. ``val_iou_background_waterbody``);
    - the optimiser: AdamW over :func:`~suimseg.optim.param_groups` (the encoder at
      ``enc_lr_mult`` times ``lr``, no weight decay on norms and biases) and
      ``ReduceLROnPlateau(mode="max")`` on ``val_miou``, whose ``min_lr`` floors keep the
      encoder/decoder ratio (:func:`~suimseg.optim.group_min_lrs`).

    ``save_hyperparameters`` stores the *built* model's config (``model.config``, which has
    no ``encoder_weights``: the trained weights are in the checkpoint), so
    ``SUIMSegModule.load_from_checkpoint(path)`` rebuilds the model without downloading
    anything. An ``nn.Module`` without a suimseg ``config`` is not stored: pass it again,
    ``load_from_checkpoint(path, model=MyNet())``.

    The training image size is stored too, as ``hparams["image_size"]``: given, or taken
    at ``setup`` from the trainer's datamodule (its ``image_size``, e.g.
    :class:`~suimseg.lightning.SUIMDataModule`'s). ``suimseg predict``/``evaluate`` and
    :func:`~suimseg.app.evaluate.input_size_for` then predict a ``.ckpt`` at that size
    (without it, at 384 with a warning unless ``--image-size`` is given).

    Args:
        model: A dict of the model's constructor arguments, an ``nn.Module``, or ``None``
            for the model's defaults.
        model_name: Registry name of the model built from a dict
            (:data:`~suimseg.models.MODEL_NAMES`).
        lr: Base (decoder) learning rate.
        enc_lr_mult: Encoder learning-rate multiplier.
        weight_decay: AdamW weight decay (not applied to norms and biases).
        plateau_factor: ``ReduceLROnPlateau`` factor.
        plateau_patience: ``ReduceLROnPlateau`` patience, in epochs.
        min_lr: Floor of the base learning rate.
        lambda_dice: Weight of the Dice term.
        lambda_focal: Weight of the focal term.
        gamma: Focal focusing parameter.
        class_weights: Focal ``alpha``, one weight per class (e.g. from
            :func:`~suimseg.losses.class_weights`), or ``None``.
        ignore_index: Label value skipped by the loss and the metric.
        log_per_class: Also log each class's validation IoU.
        image_size: The (square) input size the model is trained at, recorded in the
            checkpoint; ``None``: the datamodule's ``image_size`` at ``setup`` (left
            ``None`` when it has none, e.g. with plain dataloaders).

    Raises:
        ConfigError: If ``image_size`` is not a positive int, or the model has no int
            ``num_classes``.

    Example:
        >>> module = SUIMSegModule({"encoder": "resnet18", "decoder_channels": [32, 16, 8, 8],
        ...                         "bridge_channels": 32})
        >>> module(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 8, 32, 32])
        >>> module.hparams["model"]["encoder"]
        'resnet18'
    """

    def __init__(
        self,
        model: Mapping[str, Any] | nn.Module | None = None,
        *,
        model_name: str = "unet_resattn_v3",
        lr: float = 1e-4,
        enc_lr_mult: float = 0.1,
        weight_decay: float = 1e-4,
        plateau_factor: float = 0.5,
        plateau_patience: int = 5,
        min_lr: float = 1e-7,
        lambda_dice: float = 0.5,
        lambda_focal: float = 0.5,
        gamma: float = 2.0,
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = IGNORE_INDEX,
        log_per_class: bool = True,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if image_size is not None and not _positive_int(image_size):
            raise ConfigError(
                f"image_size: expected a positive int (the training input size, e.g. 384) "
                f"or None to take the datamodule's, got {image_size!r}"
            )
        net = _build(model, model_name)
        self.save_hyperparameters(ignore=["model", "model_name"])
        config = getattr(net, "config", None)
        name = getattr(net, "model_name", None)
        if isinstance(config, dict) and isinstance(name, str):
            self.hparams["model"] = dict(config)
            self.hparams["model_name"] = name
        num_classes = getattr(net, "num_classes", None)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise ConfigError(
                f"model: {type(net).__name__} has no int `num_classes` attribute; set "
                "model.num_classes = C so the metric knows the number of classes"
            )
        self.model = net
        self.criterion = DiceFocalLoss(
            lambda_dice=lambda_dice,
            lambda_focal=lambda_focal,
            gamma=gamma,
            alpha=None if class_weights is None else list(class_weights),
            ignore_index=ignore_index,
        )
        self.val_miou = SUIMJaccardIndex(num_classes, ignore_index=ignore_index)
        self.test_miou = SUIMJaccardIndex(num_classes, ignore_index=ignore_index)

    def setup(self, stage: str) -> None:
        """Record the datamodule's ``image_size`` when none was given."""
        if self.hparams.get("image_size") is None:
            size = getattr(getattr(self.trainer, "datamodule", None), "image_size", None)
            if _positive_int(size):
                self.hparams["image_size"] = size

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(N, C, H, W)`` of images ``(N, 3, H, W)``."""
        logits: Tensor = self.model(images)
        return logits

    def _step(self, batch: Batch, stage: str) -> tuple[Tensor, Tensor]:
        images, masks = batch
        logits = self(images)
        parts = self.criterion.components(logits, masks)
        train = stage == "train"
        self.log_dict(
            {f"{stage}_loss": parts.total, f"{stage}_dice": parts.dice,
             f"{stage}_focal": parts.focal},
            on_step=train, on_epoch=True, prog_bar=train, sync_dist=not train,
            batch_size=images.shape[0],
        )  # fmt: skip
        return parts.total, logits

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, _ = self._step(batch, "train")
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        _, logits = self._step(batch, "val")
        self.val_miou.update(logits, batch[1])
        self.log("val_miou", self.val_miou, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.hparams.get("log_per_class", True) and self.val_miou.update_called:
            m = self.val_miou.segmentation_metrics()  # synced; Lightning resets it after
            for name, iou in zip(m.class_names, m.iou.tolist(), strict=True):
                self.log(f"val_iou_{metric_key(name)}", float(iou), sync_dist=True)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        _, logits = self._step(batch, "test")
        self.test_miou.update(logits, batch[1])
        self.log("test_miou", self.test_miou, on_epoch=True)

    def configure_optimizers(self) -> Any:
        """AdamW over suimseg's parameter groups, ``ReduceLROnPlateau`` on ``val_miou``."""
        hp = self.hparams
        groups = param_groups(
            self.model, hp["enc_lr_mult"], lr=hp["lr"], weight_decay=hp["weight_decay"]
        )
        optimizer = torch.optim.AdamW(groups)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=hp["plateau_factor"],
            patience=hp["plateau_patience"],
            min_lr=group_min_lrs(groups, hp["min_lr"]),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_miou", "interval": "epoch"},
        }
