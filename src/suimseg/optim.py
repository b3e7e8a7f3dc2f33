"""Optimizer parameter groups: a lower learning rate for the pre-trained encoder, no weight
decay on norms and biases.

As in timm, the base learning rate and weight decay belong to the optimizer:
``AdamW(param_groups(model), lr=3e-4, weight_decay=0.05)`` trains at the numbers it names,
the encoder at ``lr * enc_lr_mult``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from suimseg.errors import ConfigError

__all__ = ["GROUP_NAMES", "ParamGroup", "group_min_lrs", "param_groups"]

#: Names of the groups :func:`param_groups` can return, in the order it returns them.
GROUP_NAMES: tuple[str, ...] = ("encoder", "encoder_no_decay", "decoder", "decoder_no_decay")


def _non_negative(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        if math.isfinite(v) and (v > 0 if positive else v >= 0):
            return v
    kind = "a positive" if positive else "a non-negative"
    raise ConfigError(f"{name}: expected {kind} finite number, got {value!r}")


class ParamGroup(dict[str, Any]):
    """A parameter-group dict whose missing ``"lr"`` is filled as ``base * group["lr_mult"]``.

    ``Optimizer.add_param_group`` fills missing options with ``group.setdefault``; only that
    call changes. Optimizer state dicts hold plain dicts with the resolved ``"lr"``.

    Example:
        >>> g = ParamGroup(params=[], lr_mult=0.1)
        >>> g.setdefault("lr", 1e-3), g.setdefault("lr", 5.0)
        (0.0001, 0.0001)
    """

    def setdefault(self, key: str, default: Any = None, /) -> Any:
        if key == "lr" and key not in self and default is not None:
            default = default * self.get("lr_mult", 1.0)
        return super().setdefault(key, default)


def _find_encoder(model: nn.Module, encoder: nn.Module | None) -> nn.Module:
    if encoder is not None:
        if not isinstance(encoder, nn.Module):
            raise ConfigError(
                f"encoder: expected an nn.Module (a submodule of model), got "
                f"{type(encoder).__name__}"
            )
        if not any(m is encoder for m in model.modules()):
            raise ConfigError(
                f"encoder: the given {type(encoder).__name__} is not a submodule of the "
                f"{type(model).__name__} model; pass a module reachable from model.modules() "
                "(e.g. encoder=model.backbone)."
            )
        return encoder
    found = getattr(model, "encoder", None)
    if isinstance(found, nn.Module):
        return found
    raise ConfigError(
        f"param_groups: cannot find the encoder of {type(model).__name__}: it has no `encoder` "
        "submodule. Pass it explicitly, e.g. param_groups(model, encoder=model.backbone), or "
        "use torch.optim's plain model.parameters() if the model has no pre-trained part."
    )


def param_groups(
    model: nn.Module,
    enc_lr_mult: float = 0.1,
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
    encoder: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Split a model's trainable parameters into AdamW-ready groups.

    Up to four non-empty groups, ``"encoder"``, ``"encoder_no_decay"``, ``"decoder"``,
    ``"decoder_no_decay"`` ("decoder": everything outside the encoder); ``ndim <= 1``
    parameters (biases, norm weights) get ``weight_decay=0.0``; frozen ones are skipped.
    Every group carries ``"name"``, ``"params"`` and ``"lr_mult"`` (``enc_lr_mult`` or 1).
    Give ``ReduceLROnPlateau`` ``min_lr=group_min_lrs(groups, m)`` to keep the ratio.

    Args:
        model: The model. Its encoder is ``model.encoder`` unless ``encoder`` is given.
        enc_lr_mult: Encoder learning-rate multiplier (``>= 0``; 0 freezes it in effect).
        lr: Base (decoder) learning rate (``> 0``), set as ``lr * lr_mult`` on every group
            (overriding the optimizer's); ``None``: the optimizer's ``lr * lr_mult``.
        weight_decay: Weight decay of the decaying groups (``>= 0``); ``None``: the
            optimizer's.
        encoder: The encoder submodule, for models without an ``encoder`` attribute.

    Returns:
        :class:`ParamGroup` dicts, in the order of :data:`GROUP_NAMES`.

    Raises:
        ConfigError: For invalid numbers, an ``encoder`` that is not a submodule of
            ``model``, a model with no identifiable encoder, or no trainable parameters.

    Example:
        >>> import torch
        >>> from suimseg.models import UNetResAttnV3
        >>> model = UNetResAttnV3(encoder="resnet18", decoder_channels=(32, 16, 8, 8),
        ...                       bridge_channels=32)
        >>> opt = torch.optim.AdamW(param_groups(model, 0.1), lr=2e-4, weight_decay=0.05)
        >>> [(g["name"], g["lr"], g["weight_decay"]) for g in opt.param_groups]
        ... # doctest: +NORMALIZE_WHITESPACE
        [('encoder', 2e-05, 0.05), ('encoder_no_decay', 2e-05, 0.0),
         ('decoder', 0.0002, 0.05), ('decoder_no_decay', 0.0002, 0.0)]
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: expected an nn.Module, got {type(model).__name__}")
    mult = _non_negative("enc_lr_mult", enc_lr_mult)
    base_lr = None if lr is None else _non_negative("lr", lr, positive=True)
    wd = None if weight_decay is None else _non_negative("weight_decay", weight_decay)
    enc = _find_encoder(model, encoder)
    enc_ids = {id(p) for p in enc.parameters()}

    buckets: dict[str, list[nn.Parameter]] = {name: [] for name in GROUP_NAMES}
    # named_parameters() yields each shared parameter once.
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "encoder" if id(p) in enc_ids else "decoder"
        key = f"{part}_no_decay" if p.ndim <= 1 else part
        buckets[key].append(p)

    groups: list[dict[str, Any]] = []
    for name in GROUP_NAMES:
        params = buckets[name]
        if not params:
            continue
        group_mult = mult if name.startswith("encoder") else 1.0
        group = ParamGroup(name=name, params=params, lr_mult=group_mult)
        if base_lr is not None:
            group["lr"] = base_lr * group_mult
        if name.endswith("no_decay"):
            group["weight_decay"] = 0.0
        elif wd is not None:
            group["weight_decay"] = wd
        groups.append(group)
    if not groups:
        raise ConfigError(
            f"param_groups: {type(model).__name__} has no trainable parameters "
            "(all have requires_grad=False); unfreeze some before building an optimizer."
        )
    return groups


def group_min_lrs(groups: Sequence[dict[str, Any]], min_lr: float) -> list[float]:
    """Per-group ``min_lr`` for ``ReduceLROnPlateau``: ``min_lr * lr_mult`` keeps the lr ratios.

    Args:
        groups: Groups from :func:`param_groups` (or an optimizer's); no ``"lr_mult"``: 1.
        min_lr: Floor of the base (decoder) learning rate (``>= 0``).

    Returns:
        One floor per group.

    Example:
        >>> group_min_lrs([{"lr_mult": 0.1}, {"lr_mult": 1.0}], 1e-6)
        [1e-07, 1e-06]
    """
    floor = _non_negative("min_lr", min_lr)
    return [
        floor * _non_negative(f"groups[{i}]['lr_mult']", g.get("lr_mult", 1.0))
        for i, g in enumerate(groups)
    ]
