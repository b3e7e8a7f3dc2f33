"""The V3 recipe: build model, loss, optimizer, scheduler, loaders and trainer from a config.

This is what ``suimseg train`` runs; it is also a plain library function, so a script can
do ``train(TrainConfig(data_root="SUIM"))``. Every piece is a public suimseg component, so
a user can copy :func:`build_training` and swap any part.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader

from suimseg.app.config import TrainConfig
from suimseg.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from suimseg.data import (
    DeviceAugment,
    DeviceNormalize,
    OutputKind,
    SUIMDataset,
    eval_transforms,
    train_transforms,
)
from suimseg.engine import (
    Callback,
    Checkpoint,
    DeviceTransform,
    EarlyStopping,
    EpochRecord,
    History,
    NonFiniteLoss,
    Progress,
    RankSeed,
    RunDirLock,
    Trainer,
    init_distributed,
    resolve_device,
    shard_loader,
)
from suimseg.errors import ConfigError
from suimseg.losses import DiceFocalLoss, class_weights
from suimseg.models import UNetResAttnV3, deeplabv3_resnet50
from suimseg.optim import group_min_lrs, param_groups

__all__ = [
    "TrainResult",
    "TrainingSetup",
    "build_callbacks",
    "build_loaders",
    "build_loss",
    "build_model_from_config",
    "build_training",
    "device_batch_transforms",
    "train",
]

logger = logging.getLogger("suimseg")


def _amp_mode(config: TrainConfig, device: torch.device) -> Any:
    if config.amp == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return None if config.amp == "none" else config.amp


def build_model_from_config(config: TrainConfig) -> nn.Module:
    """Build the model the config names, with its encoder weights.

    Raises:
        WeightsUnavailableError: ``encoder_weights="imagenet"`` while offline (the message
            says how to pass a local file).
    """
    weights = None if config.encoder_weights.lower() == "none" else config.encoder_weights
    if config.model == "deeplabv3":
        return deeplabv3_resnet50(num_classes=NUM_CLASSES, encoder_weights=weights)
    return UNetResAttnV3(
        num_classes=NUM_CLASSES,
        encoder=config.encoder,
        encoder_weights=weights,
        decoder_channels=config.decoder_channels,
        bridge_channels=config.bridge_channels,
    )


def build_loaders(
    config: TrainConfig, *, device: torch.device | None = None
) -> tuple[DataLoader[tuple[Tensor, Tensor]], DataLoader[tuple[Tensor, Tensor]]]:
    """Training and validation loaders over the stratified ``train_val`` split.

    The training loader shuffles (with the torch RNG that checkpoints restore) and drops
    the last incomplete batch (BatchNorm never sees one image). With ``augment_on ==
    "device"`` both yield uint8 batches for :func:`device_batch_transforms`.
    """
    output: OutputKind = "uint8" if config.augment_on == "device" else "float"
    common: dict[str, Any] = {
        "image_size": config.image_size,
        "val_fraction": config.val_fraction,
        "seed": config.seed,
        "cache": config.cache,
        "on_corrupt": config.on_corrupt,
    }
    if config.max_pixels is not None:
        common["max_pixels"] = config.max_pixels
    # With device-side augmentation the loader only decodes and resizes.
    loader_augment = config.augment and config.augment_on == "loader"
    train_tf = train_transforms(config.image_size, augment=loader_augment, output=output)
    train_ds = SUIMDataset(config.data_root, "train", transform=train_tf, **common)
    val_tf = eval_transforms(config.image_size, output=output)
    val_ds = SUIMDataset(config.data_root, "val", transform=val_tf, **common)
    if len(train_ds) < 2:
        raise ConfigError(
            f"data_root: the training split of {config.data_root!r} has {len(train_ds)} "
            "image(s); at least 2 are needed (BatchNorm cannot train on one image)"
        )
    cuda = device is not None and device.type == "cuda"
    loader_kw: dict[str, Any] = {
        "num_workers": config.workers,
        "pin_memory": cuda,
        "persistent_workers": config.workers > 0,
    }
    if config.workers > 0:
        loader_kw["prefetch_factor"] = 4
    batch = min(config.batch_size, len(train_ds))
    train_loader = DataLoader(train_ds, batch_size=batch, shuffle=True, drop_last=True, **loader_kw)
    val_batch = config.val_batch_size or config.batch_size
    val_loader = DataLoader(val_ds, batch_size=val_batch, shuffle=False, **loader_kw)
    return train_loader, val_loader


def device_batch_transforms(
    config: TrainConfig,
) -> tuple[nn.Module | None, nn.Module | None]:
    """``(train, eval)`` device-side batch transforms: ``(None, None)`` for ``"loader"``, else
    :class:`~suimseg.data.DeviceAugment` (or ``DeviceNormalize`` without ``augment``) and
    :class:`~suimseg.data.DeviceNormalize`.
    """
    if config.augment_on == "loader":
        return None, None
    train_tf: nn.Module = DeviceAugment() if config.augment else DeviceNormalize()
    return train_tf, DeviceNormalize()


class _CrossEntropy(nn.CrossEntropyLoss):
    """``nn.CrossEntropyLoss`` whose mean is 0 (with a zero gradient) on an all-ignored batch.

    Elsewhere it equals torch's (class-weighted) mean, ``sum(w[y] * nll) / sum(w[y])``
    over the pixels that count; torch divides 0 by 0 when no pixel counts (e.g. a batch
    of augmentation padding), a NaN that the recipe's ``NonFiniteLoss("raise")`` would
    blame on the learning rate. suimseg's own losses return 0 there too.
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        total = F.cross_entropy(
            input, target, weight=self.weight, ignore_index=self.ignore_index, reduction="sum"
        )
        valid = target != self.ignore_index
        if self.weight is None:
            count = valid.sum().to(total.dtype)
        else:
            weight = self.weight.to(total.dtype)[torch.where(valid, target, 0)]
            count = torch.where(valid, weight, 0.0).sum()
        return total / count.clamp_min(torch.finfo(total.dtype).tiny)


def build_loss(config: TrainConfig, train_dataset: SUIMDataset) -> tuple[nn.Module, Tensor | None]:
    """The design's loss with per-class alpha from the training split's pixel frequencies.

    ``config.loss == "ce"``: class-weighted cross-entropy (an ``nn.CrossEntropyLoss``)
    that, like the Dice + focal loss, is 0 on a batch whose pixels are all ignored.
    """
    alpha: Tensor | None = None
    if config.class_weight_method != "none":
        counts = train_dataset.class_pixel_counts()
        alpha = class_weights(counts, method=config.class_weight_method)
    if config.loss == "ce":
        return _CrossEntropy(weight=alpha, ignore_index=IGNORE_INDEX), alpha
    loss = DiceFocalLoss(
        lambda_dice=config.lambda_dice,
        lambda_focal=config.lambda_focal,
        gamma=config.focal_gamma,
        alpha=alpha,
        ignore_index=IGNORE_INDEX,
    )
    return loss, alpha


@dataclass
class TrainingSetup:
    """Everything :func:`build_training` assembles, ready for ``trainer.fit``."""

    config: TrainConfig
    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: ReduceLROnPlateau
    train_loader: DataLoader[tuple[Tensor, Tensor]]
    val_loader: DataLoader[tuple[Tensor, Tensor]]
    trainer: Trainer
    class_weights: Tensor | None


class _SaveConfig(Callback):
    """Write ``config.json`` once the run owns its folder (after the run lock is taken)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.is_main_process:
            self.config.to_json(Path(self.config.out_dir) / "config.json")


def build_callbacks(
    config: TrainConfig,
    *,
    device: torch.device,
    progress: bool = True,
    verbose: bool = True,
    overwrite: bool = False,
) -> list[Callback]:
    """The recipe's callbacks, in order: ``RunDirLock``, ``Checkpoint`` (asynchronous on CUDA
    by default, ``run_config=config.to_dict()``), ``History``, ``config.json``,
    ``NonFiniteLoss("raise")``, ``RankSeed``, ``DeviceTransform`` (``augment_on="device"``),
    ``Progress`` and ``EarlyStopping`` (with ``early_stopping_patience``).
    """
    async_ckpt = (
        device.type == "cuda" if config.async_checkpoint is None else config.async_checkpoint
    )
    out = config.out_dir
    callbacks: list[Callback] = [
        RunDirLock(out),
        Checkpoint(out, overwrite=overwrite, async_write=async_ckpt, run_config=config.to_dict()),
        History(out),
        _SaveConfig(config),
        NonFiniteLoss("raise"),
        RankSeed(config.seed),
    ]
    batch_tf, eval_batch_tf = device_batch_transforms(config)
    if batch_tf is not None or eval_batch_tf is not None:
        callbacks.append(DeviceTransform(train=batch_tf, eval=eval_batch_tf))
    callbacks.append(Progress(bar=progress, verbose=verbose))
    if config.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(config.early_stopping_patience))
    return callbacks


def build_training(
    config: TrainConfig, *, progress: bool = True, verbose: bool = True, overwrite: bool = False
) -> TrainingSetup:
    """Build model, loss, AdamW with differential LRs, ReduceLROnPlateau, loaders, trainer.

    Under ``torchrun`` the process group is initialised here and the loaders are sharded.

    Args:
        config: The run's configuration.
        progress: Show per-epoch progress (tqdm when installed).
        verbose: Print a summary line per epoch.
        overwrite: Allow a new run in an ``out_dir`` that holds another run's checkpoints.

    Returns:
        A :class:`TrainingSetup`; run ``setup.trainer.fit(setup.train_loader,
        setup.val_loader, config.epochs)``.
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = build_model_from_config(config)
    train_loader, val_loader = build_loaders(config, device=device)
    if init_distributed(device.type):  # torchrun: shard the loaders across the processes
        train_loader = shard_loader(train_loader, train=True, seed=config.seed)  # type: ignore[assignment]
        val_loader = shard_loader(val_loader, train=False)  # type: ignore[assignment]
    loss_fn, alpha = build_loss(config, cast(SUIMDataset, train_loader.dataset))
    groups = param_groups(model, config.enc_lr_mult, lr=config.lr, weight_decay=config.weight_decay)
    optimizer = AdamW(groups, lr=config.lr, fused=device.type == "cuda")
    scheduler = ReduceLROnPlateau(
        optimizer,
        mode="max",
        factor=config.plateau_factor,
        patience=config.plateau_patience,
        min_lr=group_min_lrs(groups, config.min_lr),
    )
    channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last
    callbacks = build_callbacks(
        config, device=device, progress=progress, verbose=verbose, overwrite=overwrite
    )
    trainer = Trainer(
        model,
        loss_fn,
        optimizer,
        scheduler=scheduler,
        device=device,
        amp=_amp_mode(config, device),
        grad_clip=config.grad_clip if config.grad_clip > 0 else None,
        channels_last=channels_last,
        compile=config.compile,
        class_names=CLASS_NAMES,
        callbacks=callbacks,
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return TrainingSetup(
        config=config,
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        val_loader=val_loader,
        trainer=trainer,
        class_weights=alpha,
    )


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns."""

    out_dir: Path
    history: list[EpochRecord]
    best_miou: float | None
    interrupted: bool


def train(
    config: TrainConfig,
    *,
    resume_from: str | Path | None = None,
    progress: bool = True,
    verbose: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Run the recipe: fit with best/last checkpoints, history and ``config.json``.

    Args:
        config: The run's configuration (saved as ``out_dir/config.json`` once the run
            holds the folder's lock).
        resume_from: A ``last.pt`` to continue from.
        progress: Show per-epoch progress.
        verbose: Print a summary line per epoch.
        overwrite: Replace another run's checkpoints in ``out_dir`` (otherwise refused
            with a :class:`~suimseg.errors.RunLockError`).
    """
    setup = build_training(config, progress=progress, verbose=verbose, overwrite=overwrite)
    out = Path(config.out_dir)
    history = setup.trainer.fit(
        setup.train_loader, setup.val_loader, config.epochs, resume_from=resume_from
    )
    best = setup.trainer.best_metric
    return TrainResult(
        out_dir=out,
        history=history,
        best_miou=None if best is None else float(best),
        interrupted=bool(setup.trainer.interrupted),
    )
