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
    r"""Multi-class softmax focal loss (Lin et al., 2017), vectorised over classes.

    Per non-ignored pixel with true class ``y`` and ``p = softmax(logits, dim=1)``:
    ``loss = -alpha[y] * (1 - p_y)**gamma * log(p_y)``. See
    :func:`suimseg.losses.focal_loss` for the exact reductions; in short:

    - ``"mean"`` divides the sum by the number of non-ignored pixels, also with per-class
      ``alpha`` (``F.cross_entropy(weight=...)`` divides by ``sum(alpha[y])`` instead). An
      all-ignored batch gives 0, not NaN, and still back-propagates.
    - ``gamma=0, alpha=None`` equals ``F.cross_entropy(..., ignore_index=ignore_index)``.
    - ``target == ignore_index`` pixels have no effect on the value or the gradient.

    The maths runs in float32 from ``log_softmax`` even under bf16/fp16 autocast. By
    default ``forward`` never waits for the device (no host sync); target values outside
    ``[0, C)`` are then masked like ignored pixels. ``validate=True`` raises on them instead
    (one device-to-host sync per call).

    Args:
        gamma: Focusing parameter ``>= 0`` (the design uses 2.0).
        alpha: ``None`` or per-class weights (length C; e.g.
            :func:`~suimseg.losses.class_weights`), kept as a non-persistent buffer, so it
            follows ``.to(device)`` but is not in ``state_dict``. A single number is refused
            as ambiguous (torchvision/smp/MONAI read it as foreground ``a``, background
            ``1 - a``): pass ``[1 - a] + [a] * (C - 1)`` or ``[a] * C`` explicitly.
        ignore_index: Target value for "don't care" pixels (SUIM's convention is 255), or
            ``None`` for no ignored label.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate: Check target values on every call (one host sync) and raise
            :class:`~suimseg.errors.ConfigError` on a value outside ``[0, C)``.

    Raises:
        ConfigError: For a negative ``gamma``, a scalar or bad ``alpha`` or an unknown
            ``reduction`` (here), or bad inputs / an ``alpha`` whose length is not C (in
            ``forward``).

    Shape:
        - logits: ``(N, C, H, W)``, ``(N, C)`` or any ``(N, C, *)``; any float dtype
        - target: ``(N, H, W)``, ``(N,)`` or ``(N, *)``; integer class indices
        - output: float32 scalar ``()``, or ``(N, *)`` for ``reduction="none"``

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
