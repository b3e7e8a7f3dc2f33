"""DeepLabV3 with a ResNet-50 backbone: the baseline UNet-ResAttn-V3 is measured against."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from suimseg.errors import ConfigError
from suimseg.models.encoders import (
    EncoderWeights,
    load_resnet_weights,
    resolve_encoder_weights,
)
from suimseg.models.hub import HubMixin

__all__ = ["DeepLabV3ResNet50", "deeplabv3_resnet50"]


def _resize_to(logits: Tensor, x: Tensor) -> Tensor:
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class DeepLabV3ResNet50(HubMixin, nn.Module):
    """torchvision's DeepLabV3-ResNet50 with one Tensor output and a named encoder.

    Exactly ``torchvision.models.segmentation.deeplabv3_resnet50`` (same submodule names, so
    its state dicts load), except that :meth:`forward` returns the logits Tensor, the
    backbone is also ``model.encoder`` (for :func:`suimseg.optim.param_groups`), and the
    model carries ``model_name``/``config`` for checkpoints.

    Args:
        num_classes: Number of output classes (8 for SUIM).
        encoder_weights: As for :class:`~suimseg.models.ResNetEncoder` (a ``resnet50``).
        aux_loss: Also build torchvision's auxiliary FCN head, used only by
            :meth:`forward_with_aux`.

    Shape:
        - Input: ``(N, 3, H, W)`` float
        - Output: ``(N, num_classes, H, W)`` logits

    Example:
        >>> import torch
        >>> model = DeepLabV3ResNet50(num_classes=8).eval()
        >>> model(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 8, 64, 64])
    """

    model_name: ClassVar[str] = "deeplabv3_resnet50"

    def __init__(
        self,
        *,
        num_classes: int = 8,
        encoder_weights: EncoderWeights = None,
        aux_loss: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes: expected a positive int, got {num_classes!r}")
        if not isinstance(aux_loss, bool):
            raise ConfigError(f"aux_loss: expected True or False, got {aux_loss!r}")
        encoder_weights = resolve_encoder_weights(encoder_weights)
        self.config: dict[str, Any] = {"num_classes": num_classes, "aux_loss": aux_loss}
        self.num_classes = num_classes
        tv = torchvision.models.segmentation.deeplabv3_resnet50(
            weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss
        )
        self.backbone: nn.Module = tv.backbone
        self.classifier: DeepLabHead = tv.classifier
        self.aux_classifier: FCNHead | None = tv.aux_classifier
        if encoder_weights is not None:
            load_resnet_weights(self.backbone, "resnet50", encoder_weights, hint="model")

    @property
    def encoder(self) -> nn.Module:
        """The ResNet-50 backbone (the same module as ``backbone``)."""
        return self.backbone

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(
                f"DeepLabV3ResNet50.forward: expected input of shape (N, 3, H, W), got "
                f"{tuple(x.shape)}"
            )
        if self.training and x.shape[0] == 1:
            raise ConfigError(
                "DeepLabV3ResNet50: batch size 1 in training mode: the ASPP image-pooling "
                "branch's BatchNorm sees one value per channel and cannot train. Use a batch "
                "size >= 2 (drop_last=True in the DataLoader), or call model.eval() for "
                "inference."
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return _resize_to(self.classifier(self.backbone(x)["out"]), x)

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(logits, aux_logits)``, both ``(N, num_classes, H, W)``.

        Raises:
            ConfigError: If the model was built with ``aux_loss=False``.
        """
        if self.aux_classifier is None:
            raise ConfigError(
                "forward_with_aux: this DeepLabV3ResNet50 has no auxiliary head; build it "
                "with aux_loss=True."
            )
        self._check_input(x)
        feats = self.backbone(x)
        return _resize_to(self.classifier(feats["out"]), x), _resize_to(
            self.aux_classifier(feats["aux"]), x
        )

    def count_parameters(self) -> dict[str, int]:
        """Parameter counts ``{"encoder", "decoder", "total"}``; decoder: the heads."""
        enc = sum(p.numel() for p in self.backbone.parameters())
        total = sum(p.numel() for p in self.parameters())
        return {"encoder": enc, "decoder": total - enc, "total": total}


def deeplabv3_resnet50(
    *,
    num_classes: int = 8,
    encoder_weights: EncoderWeights = None,
    aux_loss: bool = False,
) -> DeepLabV3ResNet50:
    """Build the DeepLabV3-ResNet50 baseline (arguments of :class:`DeepLabV3ResNet50`).

    Example:
        >>> model = deeplabv3_resnet50(num_classes=8)
        >>> model.count_parameters()["total"]
        39635528
    """
    return DeepLabV3ResNet50(
        num_classes=num_classes, encoder_weights=encoder_weights, aux_loss=aux_loss
    )
