"""Small helpers of the trainer: devices, batches, learning rates, skipped samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from suimseg.errors import ConfigError

__all__ = ["group_lrs", "resolve_device", "skipped_sample_count", "unpack_batch"]


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a device into a device.

    ``"auto"`` picks CUDA when available. Asking for CUDA on a machine without it raises a
    clear error instead of failing later inside PyTorch.

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

    Reads the ``skipped_samples`` attribute of ``loader.dataset`` (looking through
    :class:`~torch.utils.data.Subset` and :class:`~torch.utils.data.ConcatDataset`).
    :class:`~suimseg.data.SUIMDataset` keeps it in shared memory, so skips made inside
    DataLoader worker processes are counted too. Datasets without it count 0.

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
    """Split a batch into ``(images, targets)``: a tuple/list, or a dict with ``"image"``
    and ``"mask"`` (or ``"target"``/``"label"``).

    Raises:
        ConfigError: If the batch holds no such pair of tensors.
    """
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
