"""Soft multi-class Dice loss as an ``nn.Module``."""

from __future__ import annotations

from torch import Tensor, nn

from suimseg.classes import IGNORE_INDEX
from suimseg.losses._functional import (
    ClassVector,
    as_class_vector,
    check_ignore_index,
    check_non_negative,
    dice_from_checked,
    format_vector,
)

__all__ = ["DiceLoss"]


class DiceLoss(nn.Module):
    r"""Soft multi-class Dice loss on softmax probabilities against one-hot targets.

    Per class ``c`` over non-ignored pixels, ``loss_c = 1 - (2 I_c + smooth) / (P_c + G_c +
    smooth)`` with ``I_c = sum p_c g_c``, ``P_c = sum p_c``, ``G_c = sum g_c``. The result is
    the (optionally ``weight``-ed) mean of ``loss_c`` over the classes **present in the
    target**; see :func:`suimseg.losses.dice_loss` for the full definition.

    Absent-class policy: a class with no valid target pixel in the group (the batch when
    ``batch_dice=True``, else the image) is excluded from the mean, so absent classes neither
    dilute the loss towards 0 nor add a spurious ~1 for a near-empty prediction. Mass predicted
    for it is still penalised through the true class's Dice (and by a focal/CE term).

    Pixels with ``target == ignore_index`` are excluded from every sum. The value lies in
    ``[0, 1]`` and is computed in float32 even under autocast. By default ``forward`` never
    waits for the device; target values outside ``[0, C)`` are then masked like ignored
    pixels (``validate=True`` raises on them instead, with one host sync per call).

    Args:
        smooth: Numerator and denominator smoothing (``>= 0``, default ``1e-5``).
        weight: Optional per-class weights (length C, ``>= 0``), kept as a non-persistent
            buffer so it follows ``.to(device)``.
        ignore_index: Target value for "don't care" pixels (SUIM's convention is 255), or
            ``None`` for no ignored label.
        batch_dice: Sum over the whole batch (True, default) or per image then average
            over images (False).
        validate: Check target values on every call (one host sync) and raise
            :class:`~suimseg.errors.ConfigError` on a value outside ``[0, C)``.

    Raises:
        ConfigError: For a negative ``smooth`` or bad ``weight`` (here), or bad inputs / a
            ``weight`` whose length is not C (in ``forward``).

    Shape:
        - logits: ``(N, C, *)``, any float dtype
        - target: ``(N, *)`` integer class indices
        - output: float32 scalar ``()``

    Example:
        >>> criterion = DiceLoss(batch_dice=False)
        >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> target = torch.randint(0, 3, (2, 8, 8))
        >>> criterion(logits, target).backward()
    """

    weight: Tensor | None

    def __init__(
        self,
        *,
        smooth: float = 1e-5,
        weight: ClassVector | None = None,
        ignore_index: int | None = IGNORE_INDEX,
        batch_dice: bool = True,
        validate: bool = False,
    ) -> None:
        super().__init__()
        self.validate = bool(validate)
        self.smooth = check_non_negative(smooth, "smooth")
        self.ignore_index = check_ignore_index(ignore_index)
        self.batch_dice = bool(batch_dice)
        self.register_buffer("weight", as_class_vector(weight, "weight"), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the Dice loss of ``logits`` against ``target`` (see the class docs)."""
        return dice_from_checked(
            logits,
            target,
            smooth=self.smooth,
            weight=self.weight,
            ignore_index=self.ignore_index,
            batch_dice=self.batch_dice,
            validate=self.validate,
        )

    def extra_repr(self) -> str:
        weight = format_vector(self.weight)
        return (
            f"smooth={self.smooth}, weight={weight}, ignore_index={self.ignore_index}, "
            f"batch_dice={self.batch_dice}, validate={self.validate}"
        )
