"""Multi-class softmax focal loss as an ``nn.Module``."""

from __future__ import annotations

from torch import Tensor, nn

from suimseg.classes import IGNORE_INDEX
from suimseg.losses._functional import (
    ClassVector,
    Reduction,
    check_alpha,
    check_ignore_index,
    check_non_negative,
    check_reduction,
    focal_from_checked,
    format_vector,
)

__all__ = ["FocalLoss"]


class FocalLoss(nn.Module):
    r"""Multi-class softmax focal loss (Lin et al., 2017) as a module; see :func:`focal_loss`.

    ``loss = -alpha[y] * (1 - p_y)**gamma * log(p_y)`` per non-ignored pixel, computed in
    float32 even under autocast, with no host sync unless ``validate=True``.

    Args:
        gamma: Focusing parameter ``>= 0`` (the design uses 2.0).
        alpha: ``None`` or per-class weights of length C (e.g. from
            :func:`~suimseg.losses.class_weights`), a non-persistent buffer (follows
            ``.to(device)``, not in ``state_dict``). A single number is refused as ambiguous:
            pass ``[1 - a] + [a] * (C - 1)`` or ``[a] * C``.
        ignore_index: Target value of "don't care" pixels (SUIM: 255), or ``None``.
        reduction: ``"mean"`` (over non-ignored pixels), ``"sum"`` or ``"none"``.
        validate: Raise on target values outside ``[0, C)`` (one host sync per call).

    Raises:
        ConfigError: For a bad argument here, or bad inputs / a wrong-length ``alpha`` in
            ``forward``.

    Example:
        >>> criterion = FocalLoss(gamma=2.0, alpha=[0.5, 2.0, 1.0])
        >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> target = torch.randint(0, 3, (2, 8, 8))
        >>> criterion(logits, target).backward()
    """

    alpha: Tensor | None

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: ClassVector | None = None,
        ignore_index: int | None = IGNORE_INDEX,
        reduction: Reduction = "mean",
        validate: bool = False,
    ) -> None:
        super().__init__()
        self.gamma = check_non_negative(gamma, "gamma")
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction: Reduction = check_reduction(reduction)
        self.validate = bool(validate)
        self.register_buffer("alpha", check_alpha(alpha), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the focal loss of ``logits`` against ``target`` (see the class docs)."""
        return focal_from_checked(
            logits,
            target,
            gamma=self.gamma,
            alpha=self.alpha,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            validate=self.validate,
        )

    def extra_repr(self) -> str:
        alpha = format_vector(self.alpha)
        return (
            f"gamma={self.gamma}, alpha={alpha}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}, validate={self.validate}"
        )
