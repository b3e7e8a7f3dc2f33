"""Pure tensor maths of the suimseg losses (no ``nn.Module`` state).

Every function here takes raw logits ``(N, C, *)`` and integer targets ``(N, *)``, checks
them, and computes in float32 (float64 when the logits are float64, so ``gradcheck`` works)
whatever the input dtype or autocast state. Only element-wise ops, ``log_softmax``, ``gather``,
``scatter_add`` and sums are used: none of them is down-cast by autocast, so the float32 maths
stays float32 inside a bf16/fp16 autocast region.

Host syncs: by default nothing here waits for the device (no ``.item()``, ``bool(tensor)`` or
boolean-mask indexing), so a CUDA training step is not stalled by the loss. Target values
outside ``[0, C)`` are then treated like ``ignore_index`` pixels (masked on the device: no
value, no gradient, not counted). ``validate=True`` adds the value check instead, which
raises :class:`~suimseg.errors.ConfigError` naming the bad value at the price of one
device-to-host sync per call.

The :mod:`suimseg.losses` modules are thin wrappers around these functions.
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


# --------------------------------------------------------------------------------------
# Argument checks (shared with the nn.Module wrappers)
# --------------------------------------------------------------------------------------


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
    """Convert a per-class sequence/tensor to a detached 1-D float32 tensor (``None`` passes).

    Raises:
        ConfigError: If ``value`` is not 1-D, is empty, or holds negative/non-finite numbers.
    """
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
    """Check the length of a per-class vector against C and move it to ``like``'s device/dtype."""
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
    """Check logits ``(N, C, *)`` against integer target ``(N, *)``; return the target as int64.

    The shape/dtype/device checks read metadata only (no device sync). The value check runs
    only with ``validate=True``: it costs one device-to-host sync (a single ``.any()``); the
    offending value is only fetched when the check fails. Without it, out-of-range values
    are masked later (see :func:`_prepare`). Comparisons run on the int64 target: comparing
    a ``uint8``/``int8`` tensor with an out-of-range Python int (255, -100, ...) wraps around.

    Raises:
        ConfigError: On a non-tensor input, float/bool target, shape mismatch, fewer than two
            classes, device mismatch, or (``validate=True``) target values outside ``[0, C)``
            other than ``ignore_index``.
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


# --------------------------------------------------------------------------------------
# Maths on pre-computed log-probabilities (inputs already checked)
# --------------------------------------------------------------------------------------


class _Prepared(NamedTuple):
    log_probs: Tensor  # (N, C, *) float32/64
    safe_target: Tensor  # (N, *) int64, ignored pixels mapped to class 0
    valid: Tensor  # (N, *) bool


def _valid_mask(target: Tensor, num_classes: int, ignore_index: int | None) -> Tensor:
    """Pixels that count: a class index in ``[0, C)`` that is not ``ignore_index``.

    Out-of-range values (only possible with ``validate=False``) are masked like ignored
    pixels, on the device, so they can neither index out of bounds nor reach the result.
    """
    valid = (target >= 0) & (target < num_classes)  # target is int64 (see check_inputs)
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        valid &= target != ignore_index
    return valid


def _prepare(logits: Tensor, target: Tensor, ignore_index: int | None) -> _Prepared:
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
    """Check ``alpha``: ``None`` or a per-class vector (see :func:`as_class_vector`).

    Raises:
        ConfigError: For a single number (ambiguous, see the message) or a bad vector.
    """
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
    target = check_inputs(logits, target, ignore_index, validate=validate)
    prep = _prepare(logits, target, ignore_index)
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
    target = check_inputs(logits, target, ignore_index, validate=validate)
    prep = _prepare(logits, target, ignore_index)
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
    target = check_inputs(logits, target, ignore_index, validate=validate)
    prep = _prepare(logits, target, ignore_index)
    num_classes = logits.shape[1]
    a = _class_vector_for(alpha, "alpha", num_classes, prep.log_probs)
    w = _class_vector_for(dice_weight, "dice_weight", num_classes, prep.log_probs)
    dice = _dice_terms(prep, smooth, w, batch_dice)
    focal = _focal_terms(prep, gamma, a, "mean")
    return LossComponents(lambda_dice * dice + lambda_focal * focal, dice, focal)


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


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

    Per non-ignored pixel ``i`` with true class ``y``:
    ``loss_i = -alpha[y] * (1 - p_y)**gamma * log(p_y)`` where ``p = softmax(logits)`` over
    dim 1. Ignored pixels (``target == ignore_index``) contribute exactly 0 to the value and
    the gradient.

    Reductions:

    - ``"mean"``: ``sum_i loss_i / n_valid`` with ``n_valid`` the number of non-ignored pixels.
      With per-class ``alpha`` this is **not** divided by ``sum_i alpha[y_i]`` (which is what
      ``F.cross_entropy(weight=...)`` does); it equals
      ``F.cross_entropy(weight=alpha, reduction="sum") / n_valid`` when ``gamma == 0``. If every
      pixel is ignored the result is 0 (not NaN) and still has a (zero) gradient.
    - ``"sum"``: ``sum_i loss_i``.
    - ``"none"``: the per-pixel losses, shape ``(N, *)``, 0 at ignored pixels.

    With ``gamma=0`` and ``alpha=None`` it equals ``F.cross_entropy(logits, target,
    ignore_index=ignore_index, reduction=reduction)`` (except that ``"mean"`` over an
    all-ignored batch gives 0 where cross-entropy gives NaN).

    Computed from ``log_softmax`` in float32 (float64 for float64 logits) even under
    autocast, so the loss and its gradient stay finite for logits of any finite magnitude.

    Args:
        logits: Raw, unnormalised scores.
        target: Class indices in ``[0, C)`` or ``ignore_index``.
        gamma: Focusing parameter ``>= 0``; 0 gives (alpha-weighted) cross-entropy.
        alpha: ``None`` (no weighting) or a per-class sequence/tensor of length C (e.g. from
            :func:`~suimseg.losses.class_weights`). A single number is refused: it means
            "foreground a, background 1 - a" in torchvision/smp/MONAI; write that out as a
            per-class sequence (see ``docs/losses.md``).
        ignore_index: Target value that marks "don't care" pixels (SUIM: 255), or ``None``
            for no ignored label.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``, as above.
        validate: If True, raise on target values outside ``[0, C)`` (other than
            ``ignore_index``), at the cost of one device-to-host sync. If False (default,
            no sync), such pixels are treated like ignored pixels.

    Returns:
        A float32 (float64 for float64 logits) scalar, or ``(N, *)`` for ``"none"``.

    Raises:
        ConfigError: On bad shapes or dtypes, bad target values (``validate=True``), a
            negative ``gamma``, a scalar ``alpha`` or one of the wrong length, or an unknown
            ``reduction``.

    Shape:
        - logits: ``(N, C, *)``, e.g. ``(N, C, H, W)`` or ``(N, C)``, any float dtype
        - target: ``(N, *)`` integer, e.g. ``(N, H, W)`` or ``(N,)``
        - output: ``()``, or ``(N, *)`` for ``reduction="none"``

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

    For each class ``c`` (and each image, unless ``batch_dice``), over non-ignored pixels:
    ``I_c = sum p_c * g_c``, ``P_c = sum p_c``, ``G_c = sum g_c`` with ``g`` the one-hot
    target, and ``loss_c = 1 - (2 I_c + smooth) / (P_c + G_c + smooth)``.

    Absent classes: a class with no valid target pixel (``G_c == 0``) in the group (the
    image, or the whole batch when ``batch_dice=True``) is **left out of the mean**, so it
    neither pulls the loss towards 0 (the fault of counting it with loss 0) nor towards 1 (a
    near-empty prediction would otherwise score ~1). Probability mass it takes is still
    penalised: it is taken from the true class, lowering that class's ``I_c``. The loss is
    ``sum_c w_c * loss_c / sum_c w_c`` over present classes (``w = weight`` or 1), then the
    mean over images that have a present class of positive weight. A batch with every pixel
    ignored gives 0.

    Ignored pixels are excluded from ``I``, ``P`` and ``G``. The result lies in ``[0, 1]``
    and is computed in float32 (float64 for float64 logits) even under autocast.

    Args:
        logits: Raw, unnormalised scores.
        target: Class indices in ``[0, C)`` or ``ignore_index``.
        smooth: Added to numerator and denominator (``>= 0``). The default ``1e-5`` (as in
            nnU-Net and MONAI) barely biases the value; absent classes need no smoothing
            because they are excluded. Larger values (e.g. 1) soften the loss of small objects.
        weight: Optional per-class weights (length C, ``>= 0``) for the mean over classes.
        ignore_index: Target value that marks "don't care" pixels (SUIM: 255), or ``None``.
        batch_dice: If True, sum ``I, P, G`` over the whole batch (one Dice per class, more
            stable for rare small objects); if False, one Dice per image and class, averaged
            per image, then over images.
        validate: Raise on out-of-range target values (one device sync); see
            :func:`focal_loss`.

    Returns:
        A float32 (float64 for float64 logits) scalar in ``[0, 1]``.

    Raises:
        ConfigError: On bad shapes or dtypes, bad target values (``validate=True``), a
            negative ``smooth`` or a ``weight`` of the wrong length.

    Shape:
        - logits: ``(N, C, *)``, any float dtype
        - target: ``(N, *)`` integer
        - output: ``()``

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

    Checks the inputs and computes the softmax once for both terms.

    Args:
        logits: Raw, unnormalised scores.
        target: Class indices in ``[0, C)`` or ``ignore_index``.
        lambda_dice: Weight of the Dice term (``>= 0``).
        lambda_focal: Weight of the focal term (``>= 0``).
        gamma: Focal focusing parameter, see :func:`focal_loss`.
        alpha: Focal per-class weighting, see :func:`focal_loss`.
        ignore_index: Target value that marks "don't care" pixels (SUIM: 255), or ``None``.
        smooth: Dice smoothing, see :func:`dice_loss`.
        dice_weight: Per-class Dice weights, see :func:`dice_loss` (``weight``).
        batch_dice: See :func:`dice_loss`.
        validate: Raise on out-of-range target values (one device sync); see
            :func:`focal_loss`.

    Returns:
        :class:`LossComponents` ``(total, dice, focal)``: three float32 scalars (float64 for
        float64 logits).

    Shape:
        - logits: ``(N, C, *)``; target: ``(N, *)`` integer; outputs: ``()``

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
