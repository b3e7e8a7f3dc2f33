"""The design's loss: a weighted sum of soft Dice and softmax focal loss."""

from __future__ import annotations

from torch import Tensor, nn

from suimseg.classes import IGNORE_INDEX
from suimseg.losses._functional import (
    ClassVector,
    LossComponents,
    as_class_vector,
    check_alpha,
    check_ignore_index,
    check_non_negative,
    dice_focal_from_checked,
    format_vector,
)

__all__ = ["DiceFocalLoss", "LossComponents"]


class DiceFocalLoss(nn.Module):
    r"""``lambda_dice * DiceLoss + lambda_focal * FocalLoss``; see :func:`dice_focal_loss`.

    The design's loss: 0.5 soft Dice + 0.5 focal (``gamma=2``, ``alpha`` from
    :func:`~suimseg.losses.class_weights`). ``forward`` returns the total; :meth:`components`
    returns ``(total, dice, focal)`` for logging.

    Args:
        lambda_dice: Weight of the Dice term (``>= 0``).
        lambda_focal: Weight of the focal term (``>= 0``).
        gamma: Focal focusing parameter (``>= 0``).
        alpha: ``None`` or per-class focal weights of length C (see
            :class:`~suimseg.losses.FocalLoss`).
        ignore_index: Target value of "don't care" pixels (SUIM: 255), or ``None``.
        smooth: Dice smoothing (``>= 0``).
        dice_weight: Optional per-class weights for the Dice mean (length C).
        batch_dice: Dice over the whole batch (True) or per image (False).
        validate: Raise on target values outside ``[0, C)`` (one host sync per call).

    Raises:
        ConfigError: For a bad argument here, or bad inputs / wrong per-class lengths in
            ``forward``.

    Example:
        >>> from suimseg.losses import class_weights
        >>> criterion = DiceFocalLoss(alpha=class_weights([900, 60, 40]))
        >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> target = torch.randint(0, 3, (2, 8, 8))
        >>> parts = criterion.components(logits, target)
        >>> parts.total.backward()
    """

    alpha: Tensor | None
    dice_weight: Tensor | None

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        self.lambda_dice = check_non_negative(lambda_dice, "lambda_dice")
        self.lambda_focal = check_non_negative(lambda_focal, "lambda_focal")
        self.gamma = check_non_negative(gamma, "gamma")
        self.ignore_index = check_ignore_index(ignore_index)
        self.smooth = check_non_negative(smooth, "smooth")
        self.batch_dice = bool(batch_dice)
        self.validate = bool(validate)
        self.register_buffer("alpha", check_alpha(alpha), persistent=False)
        self.register_buffer(
            "dice_weight", as_class_vector(dice_weight, "dice_weight"), persistent=False
        )

    def components(self, logits: Tensor, target: Tensor) -> LossComponents:
        """Return ``(total, dice, focal)``, float32 scalars attached to the graph."""
        return dice_focal_from_checked(
            logits,
            target,
            lambda_dice=self.lambda_dice,
            lambda_focal=self.lambda_focal,
            gamma=self.gamma,
            alpha=self.alpha,
            ignore_index=self.ignore_index,
            smooth=self.smooth,
            dice_weight=self.dice_weight,
            batch_dice=self.batch_dice,
            validate=self.validate,
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute ``lambda_dice * dice + lambda_focal * focal`` as a scalar tensor."""
        return self.components(logits, target).total

    def extra_repr(self) -> str:
        alpha = format_vector(self.alpha)
        return (
            f"lambda_dice={self.lambda_dice}, lambda_focal={self.lambda_focal}, "
            f"gamma={self.gamma}, alpha={alpha}, ignore_index={self.ignore_index}, "
            f"smooth={self.smooth}, dice_weight={format_vector(self.dice_weight)}, "
            f"batch_dice={self.batch_dice}, validate={self.validate}"
        )
