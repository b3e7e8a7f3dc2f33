"""Pure tensor maths of the suimseg losses (the :mod:`suimseg.losses` modules wrap it).

Logits ``(N, C, *)``, integer targets ``(N, *)``; the maths runs in float32 (float64 for
float64 logits) from ``log_softmax`` whatever the dtype or autocast state. By default no call
syncs with the device: target values outside ``[0, C)`` are masked like ``ignore_index``
pixels; ``validate=True`` raises :class:`~suimseg.errors.ConfigError` on them instead (one
device-to-host sync). See ``docs/losses.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple, TypeAlias, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from suimseg.classes import IGNORE_INDEX
from suimseg.errors import ConfigError

__all__ = [
    "REDUCTIONS",
    "ClassVector",
    "LossComponents",
    "Reduction",
    "dice_focal_loss",
    "dice_loss",
    "focal_loss",
]

#: How a per-pixel loss is reduced: average over non-ignored pixels, sum, or no reduction.
Reduction: TypeAlias = Literal["mean", "sum", "none"]
#: The valid values of :data:`Reduction`.
REDUCTIONS: tuple[str, ...] = get_args(Reduction)

#: A per-class vector: a sequence of numbers or a 1-D tensor of length C.
ClassVector: TypeAlias = Sequence[float] | Tensor

_INT_DTYPES = frozenset(
    {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}
    | {getattr(torch, n) for n in ("uint16", "uint32", "uint64") if hasattr(torch, n)}
)


def check_reduction(reduction: str) -> Reduction:
    """Return ``reduction`` if valid, else raise :class:`~suimseg.errors.ConfigError`."""
    if reduction not in REDUCTIONS:
        raise ConfigError(
            f"reduction: expected one of {', '.join(repr(r) for r in REDUCTIONS)}, "
            f"got {reduction!r}"
        )
    return reduction  # type: ignore[return-value]


def check_non_negative(value: float, name: str) -> float:
    """Return ``float(value)`` if it is a finite number >= 0, else raise ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: expected a finite number >= 0, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def check_ignore_index(ignore_index: int | None) -> int | None:
    """Return ``ignore_index`` if it is an ``int`` or ``None``, else raise ``ConfigError``."""
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ConfigError(
            f"ignore_index: expected an int (SUIM uses 255) or None (no ignored label), got "
            f"{type(ignore_index).__name__} {ignore_index!r}"
        )
    return ignore_index


def as_class_vector(value: ClassVector | None, name: str) -> Tensor | None:
    """A per-class vector as a detached 1-D float32 tensor of finite numbers >= 0."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        vec = value.detach().to(torch.float32)
    else:
        try:
            vec = torch.as_tensor(value, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"{name}: expected a sequence of numbers (one per class), got {value!r}"
            ) from exc
    if vec.ndim != 1 or vec.numel() == 0:
        raise ConfigError(
            f"{name}: expected a 1-D sequence with one number per class, got shape "
            f"{tuple(vec.shape)}"
        )
    if not bool(torch.isfinite(vec).all()) or bool((vec < 0).any()):
        raise ConfigError(f"{name}: expected finite numbers >= 0, got {vec.tolist()}")
    return vec


def format_vector(vec: Tensor | None) -> float | list[float] | None:
    """A short, rounded form of a scalar or per-class buffer for ``extra_repr``."""
    if vec is None:
        return None
    if vec.ndim == 0:
        return round(float(vec), 4)
    return [round(v, 4) for v in vec.tolist()]


def _class_vector_for(
    vec: Tensor | None, name: str, num_classes: int, like: Tensor
) -> Tensor | None:
    """Check a per-class vector's length against C; move it to ``like``'s device/dtype."""
    if vec is None:
        return None
    if vec.numel() != num_classes:
        raise ConfigError(
            f"{name}: expected one value per class ({num_classes} for logits with C="
            f"{num_classes}), got {vec.numel()} values; pass a sequence of length {num_classes}"
        )
    return vec.to(device=like.device, dtype=like.dtype)


def _compute_dtype(logits: Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def check_inputs(
    logits: Tensor, target: Tensor, ignore_index: int | None, *, validate: bool = False
) -> Tensor:
    """Check logits ``(N, C, *)`` against target ``(N, *)``; return the target as int64.

    Metadata checks only, unless ``validate`` (one ``.any()`` sync). Values are compared as
    int64: a ``uint8`` tensor compared with 255 or -100 would wrap around.
    """
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise ConfigError(
            f"logits and target: expected torch.Tensors, got {type(logits).__name__} and "
            f"{type(target).__name__}"
        )
    if not logits.is_floating_point():
        raise ConfigError(
            f"logits: expected a floating-point tensor of raw scores, got dtype {logits.dtype}"
        )
    if logits.ndim < 2:
        raise ConfigError(
            f"logits: expected shape (N, C, *) with at least 2 dims, got {tuple(logits.shape)}"
        )
    if target.dtype not in _INT_DTYPES:
        raise ConfigError(
            f"target: expected an integer tensor of class indices (e.g. torch.int64), got dtype "
            f"{target.dtype}; convert with target.long()"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        hint = ""
        if target.ndim == logits.ndim and target.shape[1] == 1:
            hint = "; drop the channel dim with target.squeeze(1)"
        raise ConfigError(
            f"target: expected shape (N, *) = {expected} to match logits (N, C, *) = "
            f"{tuple(logits.shape)}, got target shape {tuple(target.shape)}{hint}"
        )
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ConfigError(
            f"logits: expected at least 2 classes in dim 1 (softmax over C), got C={num_classes}; "
            "for a binary task use 2-class logits"
        )
    if target.device != logits.device:
        raise ConfigError(
            f"target: expected the same device as logits ({logits.device}), got {target.device}"
        )
    target = target.long()
    if validate:
        bad = (target < 0) | (target >= num_classes)
        if ignore_index is not None:
            bad &= target != ignore_index
        if bool(bad.any()):
            value = int(target[bad][0].item())
            raise ConfigError(
                f"target: expected class indices in [0, {num_classes}) or ignore_index="
                f"{ignore_index}, got value {value}; remap it or set ignore_index={value} "
                "to ignore it"
            )
    return target


class _Prepared(NamedTuple):
    log_probs: Tensor  # (N, C, *) float32/64
    safe_target: Tensor  # (N, *) int64, ignored pixels mapped to class 0
    valid: Tensor  # (N, *) bool


def _valid_mask(target: Tensor, num_classes: int, ignore_index: int | None) -> Tensor:
    """Pixels that count: in ``[0, C)`` and not ``ignore_index`` (masked on the device)."""
    valid = (target >= 0) & (target < num_classes)  # target is int64 (see check_inputs)
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        valid &= target != ignore_index
    return valid


def _prepare(logits: Tensor, target: Tensor, ignore_index: int | None, validate: bool) -> _Prepared:
    target = check_inputs(logits, target, ignore_index, validate=validate)
    valid = _valid_mask(target, logits.shape[1], ignore_index)
    # Zero the logits of ignored pixels so that even inf/NaN there (e.g. padding) cannot
    # reach the value or the gradient; `where` passes exactly 0 gradient to them.
    logits = torch.where(valid.unsqueeze(1), logits.to(_compute_dtype(logits)), 0.0)
    log_probs = F.log_softmax(logits, dim=1)
    safe_target = torch.where(valid, target, 0)
    return _Prepared(log_probs, safe_target, valid)


def _focal_terms(
    prep: _Prepared, gamma: float, alpha: Tensor | None, reduction: Reduction
) -> Tensor:
    log_probs, safe_target, valid = prep
    logp_t = log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)  # (N, *)
    loss = -logp_t
    if gamma != 0.0:
        # 1 - p_t computed as -expm1(log p_t): accurate when p_t is close to 1. The clamp
        # keeps d/dx x**gamma finite at p_t == 1 for 0 < gamma < 1 (its gradient is 0 there).
        one_minus_p = (-torch.expm1(logp_t)).clamp_min(torch.finfo(logp_t.dtype).tiny)
        loss = one_minus_p.pow(gamma) * loss
    if alpha is not None:
        loss = alpha[safe_target] * loss
    # `where` (not a multiply) so ignored pixels give exactly 0 value and 0 gradient.
    loss = torch.where(valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / valid.sum().clamp_min(1).to(total.dtype)


def _dice_terms(prep: _Prepared, smooth: float, weight: Tensor | None, batch_dice: bool) -> Tensor:
    log_probs, safe_target, valid = prep
    n, c = log_probs.shape[:2]
    probs = log_probs.exp().reshape(n, c, -1)  # (N, C, P)
    tgt = safe_target.reshape(n, -1)  # (N, P)
    mask = valid.reshape(n, -1).to(probs.dtype)  # (N, P)
    # Per (image, class) sums without a one-hot tensor: scatter the true-class probability
    # (intersection) and the valid-pixel indicator (target count) into class bins.
    p_true = probs.gather(1, tgt.unsqueeze(1)).squeeze(1) * mask  # (N, P)
    zeros = probs.new_zeros(n, c)
    intersection = zeros.scatter_add(1, tgt, p_true)  # (N, C)
    target_sum = zeros.scatter_add(1, tgt, mask)  # (N, C)
    pred_sum = (probs * mask.unsqueeze(1)).sum(2)  # (N, C)
    if batch_dice:
        intersection, target_sum, pred_sum = (
            t.sum(0, keepdim=True) for t in (intersection, target_sum, pred_sum)
        )
    present = target_sum > 0  # absent classes are left out of the mean
    denom = torch.where(present, pred_sum + target_sum + smooth, 1.0)
    per_class = torch.where(present, 1.0 - (2.0 * intersection + smooth) / denom, 0.0)
    w = present.to(per_class.dtype)
    if weight is not None:
        w = w * weight
    w_sum = w.sum(1)  # (G,), G = 1 (batch Dice) or N (per image)
    counted = w_sum > 0
    per_group = (per_class * w).sum(1) / torch.where(counted, w_sum, 1.0)
    return per_group.sum() / counted.sum().clamp_min(1).to(per_group.dtype)


class LossComponents(NamedTuple):
    """The parts of :class:`~suimseg.losses.DiceFocalLoss`, for logging.

    Attributes:
        total: ``lambda_dice * dice + lambda_focal * focal`` (what ``forward`` returns;
            back-propagate it directly rather than calling the loss twice).
        dice: The (unweighted) Dice loss term.
        focal: The (unweighted) focal loss term, ``"mean"`` reduction.
    """

    total: Tensor
    dice: Tensor
    focal: Tensor


def check_alpha(alpha: ClassVector | None) -> Tensor | None:
    """``alpha`` as a per-class vector; a single number is refused as ambiguous."""
    if alpha is None:
        return None
    if isinstance(alpha, (bool, int, float)) or getattr(alpha, "ndim", None) == 0:
        raise ConfigError(
            f"alpha: expected None or one weight per class (a sequence or 1-D tensor of length "
            f"C), got the single number {alpha!r}. A scalar alpha is ambiguous: torchvision, "
            "segmentation_models_pytorch and MONAI read alpha=a as weight a for the foreground "
            "and 1 - a for the background, while suimseg 0.1.0 scaled every pixel by a. Pass "
            "alpha=[1 - a] + [a] * (C - 1) for the former, alpha=[a] * C for the latter, or "
            "class_weights(pixel_counts) to weight by class frequency."
        )
    return as_class_vector(alpha, "alpha")


def focal_from_checked(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: float,
    alpha: Tensor | None,
    ignore_index: int | None,
    reduction: Reduction,
    validate: bool = False,
) -> Tensor:
    """:func:`focal_loss` with its arguments already checked (used by the modules)."""
    prep = _prepare(logits, target, ignore_index, validate)
    a = _class_vector_for(alpha, "alpha", logits.shape[1], prep.log_probs)
    return _focal_terms(prep, gamma, a, reduction)


def dice_from_checked(
    logits: Tensor,
    target: Tensor,
    *,
    smooth: float,
    weight: Tensor | None,
    ignore_index: int | None,
    batch_dice: bool,
    validate: bool = False,
) -> Tensor:
    """:func:`dice_loss` with its arguments already checked (used by the modules)."""
    prep = _prepare(logits, target, ignore_index, validate)
    w = _class_vector_for(weight, "weight", logits.shape[1], prep.log_probs)
    return _dice_terms(prep, smooth, w, batch_dice)


def dice_focal_from_checked(
    logits: Tensor,
    target: Tensor,
    *,
    lambda_dice: float,
    lambda_focal: float,
    gamma: float,
    alpha: Tensor | None,
    ignore_index: int | None,
    smooth: float,
    dice_weight: Tensor | None,
    batch_dice: bool,
    validate: bool = False,
) -> LossComponents:
    """:func:`dice_focal_loss` with its arguments already checked (used by the modules)."""
    prep = _prepare(logits, target, ignore_index, validate)
    num_classes = logits.shape[1]
    a = _class_vector_for(alpha, "alpha", num_classes, prep.log_probs)
    w = _class_vector_for(dice_weight, "dice_weight", num_classes, prep.log_probs)
    dice = _dice_terms(prep, smooth, w, batch_dice)
    focal = _focal_terms(prep, gamma, a, "mean")
    return LossComponents(lambda_dice * dice + lambda_focal * focal, dice, focal)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: float = 2.0,
    alpha: ClassVector | None = None,
    ignore_index: int | None = IGNORE_INDEX,
    reduction: Reduction = "mean",
    validate: bool = False,
) -> Tensor:
    r"""Multi-class softmax focal loss (Lin et al., 2017).

    Per non-ignored pixel with true class ``y`` and ``p = softmax(logits, dim=1)``:
    ``loss = -alpha[y] * (1 - p_y)**gamma * log(p_y)``; ignored pixels give exactly 0 value
    and gradient. ``"mean"`` divides the sum by the number of non-ignored pixels (not by
    ``sum(alpha[y])`` as ``F.cross_entropy(weight=...)`` does) and gives 0 when all are
    ignored. ``gamma=0, alpha=None`` equals ``F.cross_entropy(..., ignore_index=...)``.
    Exact relations: ``docs/losses.md``.

    Args:
        logits: Raw scores ``(N, C, *)``, any float dtype.
        target: Class indices ``(N, *)`` in ``[0, C)`` or ``ignore_index``.
        gamma: Focusing parameter ``>= 0``; 0 gives (alpha-weighted) cross-entropy.
        alpha: ``None`` or per-class weights of length C (e.g. from
            :func:`~suimseg.losses.class_weights`); a single number is refused as ambiguous.
        ignore_index: Target value of "don't care" pixels (SUIM: 255), or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-pixel ``(N, *)``, 0 where ignored).
        validate: Raise on target values outside ``[0, C)`` (one device sync); if False they
            are treated like ignored pixels.

    Returns:
        A float32 (float64 for float64 logits) scalar, or ``(N, *)`` for ``"none"``.

    Raises:
        ConfigError: On bad shapes, dtypes or target values (``validate=True``), a negative
            ``gamma``, a scalar or wrong-length ``alpha``, or an unknown ``reduction``.

    Example:
        >>> logits = torch.zeros(1, 2, 1, 2)
        >>> target = torch.tensor([[[0, 255]]])
        >>> round(focal_loss(logits, target, gamma=0.0).item(), 4)  # = ln 2
        0.6931
    """
    return focal_from_checked(
        logits,
        target,
        gamma=check_non_negative(gamma, "gamma"),
        alpha=check_alpha(alpha),
        ignore_index=check_ignore_index(ignore_index),
        reduction=check_reduction(reduction),
        validate=bool(validate),
    )


def dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    smooth: float = 1e-5,
    weight: ClassVector | None = None,
    ignore_index: int | None = IGNORE_INDEX,
    batch_dice: bool = True,
    validate: bool = False,
) -> Tensor:
    r"""Soft multi-class Dice loss on softmax probabilities against one-hot targets.

    Per class over non-ignored pixels, ``loss_c = 1 - (2 I_c + smooth) / (P_c + G_c +
    smooth)`` (``I_c = sum p_c g_c``, ``P_c = sum p_c``, ``G_c = sum g_c``); the loss is the
    ``weight``-ed mean over the classes **present in the target** of the group (the batch,
    or each image then averaged), so absent classes neither dilute it nor add ~1. All pixels
    ignored gives 0. Details: ``docs/losses.md``.

    Args:
        logits: Raw scores ``(N, C, *)``, any float dtype.
        target: Class indices ``(N, *)`` in ``[0, C)`` or ``ignore_index``.
        smooth: Added to numerator and denominator (``>= 0``; ``1e-5`` as in nnU-Net/MONAI).
        weight: Optional per-class weights (length C, ``>= 0``) for the mean over classes.
        ignore_index: Target value of "don't care" pixels (SUIM: 255), or ``None``.
        batch_dice: Sum ``I, P, G`` over the batch (True) or per image (False).
        validate: Raise on out-of-range target values (one device sync).

    Returns:
        A float32 (float64 for float64 logits) scalar in ``[0, 1]``.

    Raises:
        ConfigError: On bad shapes, dtypes or target values (``validate=True``), a negative
            ``smooth`` or a ``weight`` of the wrong length.

    Example:
        >>> target = torch.tensor([[[0, 1], [1, 1]]])
        >>> logits = 30.0 * F.one_hot(target, 2).permute(0, 3, 1, 2).float()
        >>> dice_loss(logits, target).item() < 1e-6  # perfect prediction
        True
    """
    return dice_from_checked(
        logits,
        target,
        smooth=check_non_negative(smooth, "smooth"),
        weight=as_class_vector(weight, "weight"),
        ignore_index=check_ignore_index(ignore_index),
        batch_dice=bool(batch_dice),
        validate=bool(validate),
    )


def dice_focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    lambda_dice: float = 0.5,
    lambda_focal: float = 0.5,
    gamma: float = 2.0,
    alpha: ClassVector | None = None,
    ignore_index: int | None = IGNORE_INDEX,
    smooth: float = 1e-5,
    dice_weight: ClassVector | None = None,
    batch_dice: bool = True,
    validate: bool = False,
) -> LossComponents:
    """``lambda_dice * dice_loss + lambda_focal * focal_loss`` (focal with ``"mean"``).

    The inputs are checked and the softmax computed once for both terms.

    Args:
        logits: Raw scores ``(N, C, *)``, any float dtype.
        target: Class indices ``(N, *)`` in ``[0, C)`` or ``ignore_index``.
        lambda_dice: Weight of the Dice term (``>= 0``).
        lambda_focal: Weight of the focal term (``>= 0``).
        gamma: Focal focusing parameter, see :func:`focal_loss`.
        alpha: Focal per-class weighting, see :func:`focal_loss`.
        ignore_index: Target value of "don't care" pixels (SUIM: 255), or ``None``.
        smooth: Dice smoothing, see :func:`dice_loss`.
        dice_weight: Per-class Dice weights, see :func:`dice_loss` (``weight``).
        batch_dice: See :func:`dice_loss`.
        validate: Raise on out-of-range target values (one device sync).

    Returns:
        :class:`LossComponents` ``(total, dice, focal)``, float32 (float64) scalars.

    Example:
        >>> total, dice, focal = dice_focal_loss(torch.zeros(1, 2, 2, 2),
        ...                                      torch.zeros(1, 2, 2, dtype=torch.long))
        >>> bool(torch.isclose(total, 0.5 * dice + 0.5 * focal))
        True
    """
    return dice_focal_from_checked(
        logits,
        target,
        lambda_dice=check_non_negative(lambda_dice, "lambda_dice"),
        lambda_focal=check_non_negative(lambda_focal, "lambda_focal"),
        gamma=check_non_negative(gamma, "gamma"),
        alpha=check_alpha(alpha),
        ignore_index=check_ignore_index(ignore_index),
        smooth=check_non_negative(smooth, "smooth"),
        dice_weight=as_class_vector(dice_weight, "dice_weight"),
        batch_dice=bool(batch_dice),
        validate=bool(validate),
    )
