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
    r"""``lambda_dice * DiceLoss + lambda_focal * FocalLoss`` (defaults 0.5 / 0.5).

    The design's loss for UNet-ResAttn-V3: 50 % soft Dice + 50 % focal loss with
    ``gamma=2.0`` and ``alpha`` = per-class weights from the training set's pixel frequencies
    (:func:`~suimseg.losses.class_weights`). The focal term uses ``"mean"`` reduction (sum over
    non-ignored pixels / their number); the Dice term follows :class:`~suimseg.losses.DiceLoss`
    (absent classes left out of the mean). Inputs are checked and the softmax computed once;
    by default without any host sync (out-of-range target values are masked like ignored
    pixels; ``validate=True`` raises on them, with one sync per call).

    ``forward`` returns the total as a scalar tensor; :meth:`components` returns a
    :class:`LossComponents` ``(total, dice, focal)`` for logging.

    Args:
        lambda_dice: Weight of the Dice term (``>= 0``).
        lambda_focal: Weight of the focal term (``>= 0``).
        gamma: Focal focusing parameter (``>= 0``).
        alpha: Focal class weighting: ``None`` or per-class weights of length C (a single
            number is refused as ambiguous, see :class:`~suimseg.losses.FocalLoss`).
        ignore_index: Target value for "don't care" pixels (SUIM's convention is 255), or
            ``None`` for no ignored label.
        smooth: Dice smoothing (``>= 0``).
        dice_weight: Optional per-class weights for the Dice mean (length C).
        batch_dice: Dice over the whole batch (True) or per image (False).
        validate: Check target values on every call (one host sync) and raise
            :class:`~suimseg.errors.ConfigError` on a value outside ``[0, C)``.

    Raises:
        ConfigError: For a negative ``lambda_*``/``gamma``/``smooth`` or a bad ``alpha`` /
            ``dice_weight`` (here), or bad inputs / per-class lengths not equal to C
            (in ``forward``).

    Shape:
        - logits: ``(N, C, *)``, any float dtype
        - target: ``(N, *)`` integer class indices
        - output: float32 scalar ``()``

    Example:
        >>> from suimseg.losses import class_weights
        >>> criterion = DiceFocalLoss(alpha=class_weights([900, 60, 40]))
        >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> target = torch.randint(0, 3, (2, 8, 8))
        >>> parts = criterion.components(logits, target)
        >>> parts.total.backward()
        >>> log = {"dice": parts.dice.item(), "focal": parts.focal.item()}
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
        """Return ``(total, dice, focal)``; ``total`` is what :meth:`forward` returns.

        Args:
            logits: Raw scores ``(N, C, *)``.
            target: Integer class indices ``(N, *)``.

        Returns:
            A :class:`LossComponents` of three float32 scalars, all attached to the graph.
        """
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
