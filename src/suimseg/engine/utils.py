"""Helpers of the trainer: devices, batches, learning rates, argument checks, wrappers."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from suimseg.engine import distributed as dist_utils
from suimseg.engine.callbacks import Callback
from suimseg.errors import ConfigError
from suimseg.optim import group_min_lrs

__all__ = [
    "group_lrs",
    "reduce_on_plateau",
    "resolve_device",
    "skipped_sample_count",
    "unpack_batch",
]


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` into a device.

    Raises:
        ConfigError: For an unknown device name, or CUDA requested without CUDA.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {str(device)!r} was requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}). Use "
            "device 'cpu' or 'auto' (--device cpu), or a CUDA build of PyTorch on a GPU machine."
        )
    return resolved


def group_lrs(optimizer: Optimizer) -> dict[str, float]:
    """The current learning rate of each parameter group, by the group's ``"name"``.

    Groups without a ``"name"`` key (or with a duplicate one) are named by their index.

    Example:
        >>> opt = torch.optim.SGD([{"params": [torch.zeros(1)], "name": "decoder"},
        ...                        {"params": [torch.zeros(1)]}], lr=0.1)
        >>> group_lrs(opt)
        {'decoder': 0.1, '1': 0.1}
    """
    out: dict[str, float] = {}
    for i, group in enumerate(optimizer.param_groups):
        name = group.get("name")
        key = str(name) if isinstance(name, str) and name and name not in out else str(i)
        out[key] = float(group["lr"])
    return out


def skipped_sample_count(loader: Any) -> int:
    """Total corrupt samples skipped so far by the dataset(s) behind ``loader``.

    Sums the ``skipped_samples`` attributes (shared memory in
    :class:`~suimseg.data.SUIMDataset`, so worker processes count) through ``Subset`` and
    ``ConcatDataset``; datasets without it count 0.

    Example:
        >>> skipped_sample_count([])
        0
    """
    total = 0
    stack = [getattr(loader, "dataset", None)]
    while stack:
        ds = stack.pop()
        if ds is None:
            continue
        count = getattr(ds, "skipped_samples", None)
        if isinstance(count, int) and not isinstance(count, bool):
            total += count
            continue
        stack.extend(getattr(ds, "datasets", ()) or ())
        inner = getattr(ds, "dataset", None)
        if inner is not None and inner is not ds:
            stack.append(inner)
    return total


def unpack_batch(batch: Any) -> tuple[Tensor, Tensor]:
    """Split a tuple/list batch, or a dict with ``"image"`` and ``"mask"`` (or
    ``"target"``/``"label"``), into ``(images, targets)``."""
    if isinstance(batch, Mapping):
        image = batch.get("image")
        target = next((batch[k] for k in ("mask", "target", "label") if k in batch), None)
    elif isinstance(batch, Sequence) and len(batch) >= 2:
        image, target = batch[0], batch[1]
    else:
        image = target = None
    if not isinstance(image, Tensor) or not isinstance(target, Tensor):
        raise ConfigError(
            "batch: expected (images, targets) tensors or a dict with 'image' and 'mask' "
            f"tensors, got {type(batch).__name__}; make the dataset return (image, mask)"
        )
    return image, target


def reduce_on_plateau(
    optimizer: Optimizer, *, factor: float = 0.5, patience: int = 5, min_lr: float = 1e-6
) -> ReduceLROnPlateau:
    """The design's schedule: halve the LR when validation mIoU stalls for 5 epochs.

    A ``ReduceLROnPlateau(mode="max")`` whose ``min_lr`` is scaled by each group's
    ``"lr_mult"`` (:func:`suimseg.optim.param_groups`), so the encoder/decoder ratio
    survives the floor.

    Args:
        optimizer: The optimizer whose learning rates are reduced.
        factor: Multiplier applied to the LR on a plateau.
        patience: Epochs without improvement before reducing.
        min_lr: Lower bound of the base LR (groups without ``"lr_mult"`` get exactly this).

    Returns:
        The scheduler, to pass as ``Trainer(..., scheduler=...)``.

    Example:
        >>> opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-4)
        >>> reduce_on_plateau(opt).mode
        'max'
    """
    return ReduceLROnPlateau(
        optimizer,
        mode="max",
        factor=factor,
        patience=patience,
        min_lr=group_min_lrs(optimizer.param_groups, min_lr),
    )


def check_trainer_args(
    model: Any,
    loss_fn: Any,
    optimizer: Any,
    scheduler: Any,
    scheduler_interval: Any,
    amp: Any,
    grad_clip: Any,
    callbacks: Sequence[Any],
) -> None:
    """Validate the trainer's arguments (the messages name the argument and the fix)."""
    for name, value, ok, expected in (
        ("model", model, isinstance(model, nn.Module), "an nn.Module"),
        ("loss_fn", loss_fn, callable(loss_fn), "a callable"),
        ("optimizer", optimizer, isinstance(optimizer, Optimizer), "a torch.optim.Optimizer"),
    ):
        if not ok:
            raise ConfigError(f"{name}: expected {expected}, got {type(value).__name__}")
    if scheduler_interval not in ("epoch", "step"):
        raise ConfigError(
            f"scheduler_interval: expected 'epoch' or 'step', got {scheduler_interval!r}"
        )
    if isinstance(scheduler, ReduceLROnPlateau) and scheduler_interval == "step":
        raise ConfigError(
            "scheduler_interval: ReduceLROnPlateau is stepped with the validation mIoU "
            "once per epoch; use scheduler_interval='epoch'"
        )
    if amp not in (None, "bf16", "fp16"):
        raise ConfigError(f"amp: expected 'bf16', 'fp16' or None, got {amp!r}")
    if grad_clip is not None and not (isinstance(grad_clip, (int, float)) and grad_clip > 0):
        raise ConfigError(f"grad_clip: expected a positive number or None, got {grad_clip!r}")
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise ConfigError(
                f"callbacks: expected suimseg.engine.Callback instances, got "
                f"{type(cb).__name__}; subclass Callback"
            )


def wrap_model(
    model: nn.Module, device: torch.device, *, compile: bool
) -> tuple[nn.Module, nn.Module]:
    """``(train_module, eval_module)``: DDP (when distributed) and ``torch.compile`` wrappers."""
    train_module: nn.Module = model
    if dist_utils.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        train_module = DistributedDataParallel(model, device_ids=ids)
    if not compile:
        return train_module, model
    eval_module = cast(nn.Module, torch.compile(model))
    if train_module is model:
        return eval_module, eval_module
    return cast(nn.Module, torch.compile(train_module)), eval_module


def training_device(device: str | torch.device, amp: str | None) -> torch.device:
    """:func:`resolve_device` (``"cuda"`` is ``cuda:LOCAL_RANK`` under DDP), made current."""
    resolved = resolve_device(device)
    if dist_utils.is_distributed() and str(resolved) == "cuda":  # no index: LOCAL_RANK
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if amp == "fp16" and resolved.type != "cuda":
        raise ConfigError(
            f"amp: 'fp16' needs a CUDA device, got device {resolved}; use amp='bf16' "
            "or None on the CPU"
        )
    return resolved


def model_num_classes(model: nn.Module, class_names: Sequence[str] | None) -> int | None:
    """The class count from the model's ``config`` (suimseg models) or ``class_names``."""
    config = getattr(model, "config", None)
    found = config.get("num_classes") if isinstance(config, dict) else None
    if isinstance(found, int):
        return found
    return None if class_names is None else len(class_names)


def not_float_error(images: Tensor, train: bool) -> ConfigError:
    """The error for non-float images reaching the model (e.g. a uint8 loader)."""
    return ConfigError(
        f"{'training' if train else 'evaluation'} batch: expected float images for "
        f"the model, got {images.dtype} (a loader built with output='uint8' yields "
        "unnormalised uint8 images); normalise them on the device with a "
        "DeviceTransform callback that returns float images (e.g. DeviceTransform("
        "train=DeviceAugment(), eval=DeviceNormalize())), or build the loader's "
        "transforms with output='float'"
    )
