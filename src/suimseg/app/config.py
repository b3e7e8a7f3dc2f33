"""Typed, frozen configuration of a training run (the V3 recipe's defaults).

The CLI parses arguments into a :class:`TrainConfig`; library code only ever sees this
dataclass. A config round-trips through JSON (``to_json`` / ``from_json``) and is saved
beside the checkpoints so a run can be reproduced.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from suimseg._atomic import atomic_write_text
from suimseg.errors import ConfigError

__all__ = [
    "AmpMode",
    "AugmentOn",
    "CacheSetting",
    "DeviceName",
    "LossName",
    "ModelName",
    "TrainConfig",
]

ModelName = Literal["v3", "deeplabv3"]
LossName = Literal["dice_focal", "ce"]
AmpMode = Literal["auto", "bf16", "fp16", "none"]
DeviceName = Literal["auto", "cpu", "cuda"]
WeightMethod = Literal["inverse_sqrt", "inverse", "median_frequency", "enet", "none"]
CorruptPolicy = Literal["error", "skip"]
AugmentOn = Literal["loader", "device"]
#: ``False`` (no cache), ``True`` (one in-memory cache per process) or ``"shared"`` (one
#: cache in shared memory for all DataLoader workers).
CacheSetting = bool | Literal["shared"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "model": get_args(ModelName),
    "loss": get_args(LossName),
    "amp": get_args(AmpMode),
    "device": get_args(DeviceName),
    "class_weight_method": get_args(WeightMethod),
    "on_corrupt": get_args(CorruptPolicy),
    "augment_on": get_args(AugmentOn),
}


#: (field, largest accepted value, why) checked by TrainConfig.
_UPPER_BOUNDS: tuple[tuple[str, int, str], ...] = (
    ("seed", 2**63 - 1, "torch seeds are 64-bit signed integers"),
    ("image_size", 8192, "SUIM images are at most 1906x1080; larger inputs exhaust memory"),
    ("batch_size", 4096, "a larger batch does not fit in any device's memory at SUIM sizes"),
    ("bridge_channels", 16384, "wider layers do not fit in memory"),
    ("workers", 256, "more DataLoader processes than any machine can run"),
)


#: Int fields and their smallest value; those in _OPTIONAL_INTS may also be None.
_INT_MINIMUMS = {"image_size": 1, "batch_size": 1, "epochs": 1, "bridge_channels": 1}
_INT_MINIMUMS |= {"workers": 0, "plateau_patience": 0, "seed": 0}
_OPTIONAL_INTS = ("val_batch_size", "max_pixels", "early_stopping_patience")
_INT_MINIMUMS |= dict.fromkeys(_OPTIONAL_INTS, 1)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def default_workers(cap: int = 4) -> int:
    """DataLoader workers: ``cap``, or the CPUs this process may run on when fewer."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        usable = os.cpu_count() or 1
    return max(1, min(cap, usable))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Defaults are the V3 design's recipe.

    Attributes:
        data_root: SUIM root folder (holding ``train_val/`` and ``TEST/``).
        out_dir: Where checkpoints, history and the config are written.
        model: ``"v3"`` (UNetResAttnV3) or ``"deeplabv3"`` (the DeepLabV3-ResNet50 baseline).
        encoder: ResNet variant of the V3 encoder.
        encoder_weights: ``"imagenet"``, ``"none"`` or a path to a local state dict.
        decoder_channels: V3 decoder widths (deepest first).
        bridge_channels: V3 bridge width.
        image_size: Training and validation resolution (square).
        batch_size: Images per step (per process under DDP).
        val_batch_size: Images per validation batch (``None``: ``batch_size``).
        epochs: Number of epochs.
        lr: Decoder learning rate (AdamW).
        enc_lr_mult: Encoder learning rate as a multiple of ``lr``.
        weight_decay: AdamW weight decay (not applied to norms and biases).
        grad_clip: Gradient-norm clipping threshold (``0`` disables).
        loss: ``"dice_focal"`` (the design's) or ``"ce"`` (class-weighted cross-entropy).
        focal_gamma: Focal-loss gamma.
        lambda_dice: Weight of the Dice term.
        lambda_focal: Weight of the focal term.
        class_weight_method: Per-class alpha from the training pixel counts (or ``"none"``).
        plateau_factor: ReduceLROnPlateau factor (stepped on validation mIoU, mode max).
        plateau_patience: ReduceLROnPlateau patience in epochs.
        min_lr: ReduceLROnPlateau minimum learning rate.
        early_stopping_patience: Stop after this many epochs without improvement (None: off).
        augment: Apply the training augmentations.
        augment_on: ``"loader"`` (per sample, in the workers) or ``"device"`` (workers pass
            uint8 batches, :class:`~suimseg.data.DeviceAugment` runs on the training device).
        val_fraction: Fraction of ``train_val`` held out for validation (stratified).
        seed: Seed of the split, the initialisation and the data order.
        workers: DataLoader worker processes (default: 4, or the usable CPUs when fewer).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        amp: ``"auto"`` (bf16 on CUDA, off on CPU), ``"bf16"``, ``"fp16"`` or ``"none"``.
        channels_last: Use the channels-last memory format (``None``: on for CUDA).
        compile: Wrap the model with ``torch.compile``.
        cache: Keep decoded images in memory: ``True`` (per loader process), ``"shared"``
            (one shared-memory cache for all workers) or ``False``.
        on_corrupt: ``"error"`` stops at an unreadable sample; ``"skip"`` warns, skips it
            and counts it in the history.
        max_pixels: Refuse images above this many pixels (``None``: 100 million).
        async_checkpoint: Write checkpoints in a background thread (``None``: on for CUDA).
    """

    data_root: str = "SUIM"
    out_dir: str = "runs/v3"
    model: ModelName = "v3"
    encoder: str = "resnet50"
    encoder_weights: str = "imagenet"
    decoder_channels: tuple[int, int, int, int] = (512, 256, 128, 64)
    bridge_channels: int = 1024
    image_size: int = 384
    batch_size: int = 6
    val_batch_size: int | None = None
    epochs: int = 50
    lr: float = 1e-4
    enc_lr_mult: float = 0.1
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    loss: LossName = "dice_focal"
    focal_gamma: float = 2.0
    lambda_dice: float = 0.5
    lambda_focal: float = 0.5
    class_weight_method: WeightMethod = "inverse_sqrt"
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    min_lr: float = 1e-6
    early_stopping_patience: int | None = None
    augment: bool = True
    augment_on: AugmentOn = "loader"
    val_fraction: float = 0.2
    seed: int = 0
    workers: int = dataclasses.field(default_factory=default_workers)
    device: DeviceName = "auto"
    amp: AmpMode = "auto"
    channels_last: bool | None = None
    compile: bool = False
    cache: CacheSetting = False
    on_corrupt: CorruptPolicy = "error"
    max_pixels: int | None = None
    async_checkpoint: bool | None = None

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
        for name, low in _INT_MINIMUMS.items():
            value = getattr(self, name)
            optional = name in _OPTIONAL_INTS
            if (value is None and optional) or (_is_int(value) and value >= low):
                continue
            what = ("None or " if optional else "") + ("a positive int" if low else "an int >= 0")
            raise ConfigError(f"{name}: expected {what}, got {value!r}")
        # Upper bounds: values past these fail deep inside torch (seed overflow, a 120 GB
        # resize buffer, a 4-million-channel layer) instead of with a message.
        for name, upper, why in _UPPER_BOUNDS:
            value = getattr(self, name)
            if value > upper:
                raise ConfigError(f"{name}: expected at most {upper}, got {value!r} ({why})")
        if self.model == "v3" and self.batch_size == 1 and self.image_size < 64:
            raise ConfigError(
                f"batch_size: 1 with image_size {self.image_size} gives UNetResAttnV3 a 1x1 "
                "bottleneck, and BatchNorm cannot train on one value per channel; use "
                "batch_size >= 2 or image_size >= 64"
            )
        if not self.lr > 0:
            raise ConfigError(f"lr: expected a learning rate > 0, got {self.lr!r}")
        for name in (
            "enc_lr_mult",
            "weight_decay",
            "grad_clip",
            "focal_gamma",
            "min_lr",
            "lambda_dice",
            "lambda_focal",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"{name}: expected a number >= 0, got {value!r}")
        if not 0 < self.plateau_factor < 1:
            raise ConfigError(
                f"plateau_factor: expected a factor in (0, 1), got {self.plateau_factor!r}"
            )
        if not 0 < self.val_fraction < 1:
            raise ConfigError(
                f"val_fraction: expected a fraction in (0, 1), got {self.val_fraction!r}"
            )
        if not (isinstance(self.cache, bool) or self.cache == "shared"):
            raise ConfigError(f"cache: expected False, True or 'shared', got {self.cache!r}")
        for name in ("compile", "augment"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        for name in ("channels_last", "async_checkpoint"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"{name}: expected True, False or None, got {value!r}")
        dec = tuple(self.decoder_channels)
        if len(dec) != 4 or not all(isinstance(c, int) and c >= 1 for c in dec):
            raise ConfigError(
                f"decoder_channels: expected 4 positive ints, got {self.decoder_channels!r}"
            )
        object.__setattr__(self, "decoder_channels", dec)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of every field."""
        d = dataclasses.asdict(self)
        d["decoder_channels"] = list(self.decoder_channels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise ``ConfigError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown config keys: {', '.join(unknown)} "
                f"(valid keys: {', '.join(sorted(names))})"
            )
        values = dict(data)
        if "decoder_channels" in values:
            values["decoder_channels"] = tuple(values["decoder_channels"])
        return cls(**values)

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the config as JSON atomically and return the path."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        return atomic_write_text(path, text)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Read a config written by :meth:`to_json`."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {str(p)!r}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r}: expected a JSON object")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> TrainConfig:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
