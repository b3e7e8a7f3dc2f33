"""Optimizer parameter groups: a lower learning rate for the pre-trained encoder, no weight
decay on norms and biases.

The UNet-ResAttn-V3 recipe trains the ImageNet encoder at 0.1x the decoder's learning rate
(AdamW, ``lr=1e-4``, ``weight_decay=1e-4``). :func:`param_groups` builds those groups;
:func:`group_min_lrs` gives ``ReduceLROnPlateau`` per-group floors that keep the ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from suimseg.errors import ConfigError

__all__ = ["GROUP_NAMES", "group_min_lrs", "param_groups"]

#: Names of the groups :func:`param_groups` can return, in the order it returns them.
GROUP_NAMES: tuple[str, ...] = ("encoder", "encoder_no_decay", "decoder", "decoder_no_decay")


def _non_negative(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        if math.isfinite(v) and (v > 0 if positive else v >= 0):
            return v
    kind = "a positive" if positive else "a non-negative"
    raise ConfigError(f"{name}: expected {kind} finite number, got {value!r}")


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
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    encoder: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Split a model's trainable parameters into AdamW-ready groups.

    Encoder parameters get ``lr * enc_lr_mult``, everything else ``lr``. Parameters with
    ``ndim <= 1`` (every bias and the weights of BatchNorm/LayerNorm/GroupNorm) get
    ``weight_decay=0``, the rest ``weight_decay``. This gives up to four groups, named
    ``"encoder"``, ``"encoder_no_decay"``, ``"decoder"``, ``"decoder_no_decay"`` (the
    ``"decoder"`` groups hold everything outside the encoder: bridge, decoder, head). Empty
    groups are dropped, frozen parameters (``requires_grad=False``) are skipped, and every
    trainable parameter appears in exactly one group.

    Each group is a dict with keys ``"name"``, ``"params"``, ``"lr"``, ``"weight_decay"``
    and ``"lr_mult"`` (the group's learning rate relative to ``lr``: ``enc_lr_mult`` or 1).
    ``ReduceLROnPlateau`` multiplies every group's ``lr`` by the same factor, so the
    encoder/decoder ratio survives reductions; give it ``min_lr=group_min_lrs(groups, m)``
    so that its floor does not break the ratio either.

    Args:
        model: The model. Its encoder is ``model.encoder`` unless ``encoder`` is given.
        enc_lr_mult: Encoder learning-rate multiplier (``>= 0``; 0 freezes it in effect).
        lr: Base (decoder) learning rate (``> 0``).
        weight_decay: Weight decay of the decaying groups (``>= 0``).
        encoder: The encoder submodule, for models without an ``encoder`` attribute.

    Returns:
        The parameter groups, in the order of :data:`GROUP_NAMES`.

    Raises:
        ConfigError: For invalid numbers, an ``encoder`` that is not a submodule of
            ``model``, a model with no identifiable encoder, or no trainable parameters.

    Example:
        >>> import torch
        >>> from suimseg.models import UNetResAttnV3
        >>> model = UNetResAttnV3(encoder="resnet18", decoder_channels=(32, 16, 8, 8),
        ...                       bridge_channels=32)
        >>> groups = param_groups(model, 0.1, lr=1e-4)
        >>> [(g["name"], g["lr"]) for g in groups]  # doctest: +NORMALIZE_WHITESPACE
        [('encoder', 1e-05), ('encoder_no_decay', 1e-05), ('decoder', 0.0001),
         ('decoder_no_decay', 0.0001)]
        >>> opt = torch.optim.AdamW(groups)
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: expected an nn.Module, got {type(model).__name__}")
    mult = _non_negative("enc_lr_mult", enc_lr_mult)
    base_lr = _non_negative("lr", lr, positive=True)
    wd = _non_negative("weight_decay", weight_decay)
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
        groups.append(
            {
                "name": name,
                "params": params,
                "lr": base_lr * group_mult,
                "weight_decay": 0.0 if name.endswith("no_decay") else wd,
                "lr_mult": group_mult,
            }
        )
    if not groups:
        raise ConfigError(
            f"param_groups: {type(model).__name__} has no trainable parameters "
            "(all have requires_grad=False); unfreeze some before building an optimizer."
        )
    return groups


def group_min_lrs(groups: Sequence[dict[str, Any]], min_lr: float) -> list[float]:
    """Per-group ``min_lr`` for ``ReduceLROnPlateau`` that keeps the groups' lr ratios.

    A single ``min_lr`` floor clamps the (smaller) encoder learning rate first and breaks
    the encoder/decoder ratio; scaling the floor by each group's ``lr_mult`` keeps it.

    Args:
        groups: Groups from :func:`param_groups` (or an optimizer's ``param_groups``);
            a group without ``"lr_mult"`` counts as 1.
        min_lr: Floor of the base (decoder) learning rate (``>= 0``).

    Returns:
        One floor per group.

    Example:
        >>> group_min_lrs([{"lr_mult": 0.1}, {"lr_mult": 1.0}], 1e-6)
        [1e-07, 1e-06]
    """
    floor = _non_negative("min_lr", min_lr)
    out = []
    for i, g in enumerate(groups):
        mult = g.get("lr_mult", 1.0)
        out.append(floor * _non_negative(f"groups[{i}]['lr_mult']", mult))
    return out
