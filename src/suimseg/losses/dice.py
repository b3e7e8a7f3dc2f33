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
    r"""Soft multi-class Dice loss as a module; see :func:`dice_loss`.

    The mean of ``1 - (2 I_c + smooth) / (P_c + G_c + smooth)`` over the classes **present in
    the target** (absent classes are left out), in ``[0, 1]``, computed in float32 even
    under autocast, with no host sync unless ``validate=True``.

    Args:
        smooth: Numerator and denominator smoothing (``>= 0``).
        weight: Optional per-class weights (length C, ``>= 0``), a non-persistent buffer.
        ignore_index: Target value of "don't care" pixels (SUIM: 255), or ``None``.
        batch_dice: Sum over the whole batch (True) or per image, then average (False).
        validate: Raise on target values outside ``[0, C)`` (one host sync per call).

    Raises:
        ConfigError: For a bad argument here, or bad inputs / a wrong-length ``weight`` in
            ``forward``.

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
