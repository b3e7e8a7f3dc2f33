"""Building blocks of the decoder: conv-BN-ReLU, squeeze-excitation and attention gates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation
from torchvision.ops import SqueezeExcitation as _TVSqueezeExcitation

__all__ = ["AttentionGate", "ConvBNReLU", "DecoderBlock", "ResidualDoubleConv", "SqueezeExcitation"]


#: torchvision's ``Conv2dNormActivation`` (3x3 conv, ``BatchNorm2d``, ReLU) under the
#: decoder's name; its submodules ``0``/``1``/``2`` keep the checkpoints' state-dict keys.
ConvBNReLU = Conv2dNormActivation


class ResidualDoubleConv(nn.Module):
    """Two 3x3 conv-BN-ReLU layers with a residual shortcut (a ResNet basic block).

    The shortcut is the identity when ``in_channels == out_channels``, else a 1x1 conv + BN.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))
        return out


class SqueezeExcitation(_TVSqueezeExcitation):  # type: ignore[misc]
    """Squeeze-and-excitation (Hu et al. 2018): torchvision's, by reduction ratio.

    The squeeze width is ``max(1, channels // reduction)`` (``reduction`` 16 in SENet).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__(channels, max(1, channels // reduction))
        self.reduction = reduction


class AttentionGate(nn.Module):
    """Additive attention gate of Attention U-Net (Oktay et al. 2018).

    ``x * sigmoid(psi(relu(W_g g + W_x x)))`` for the gating signal ``g``
    ``(N, gate_channels, H, W)`` and the skip ``x`` ``(N, skip_channels, H, W)``, with
    ``W_g``, ``W_x`` 1x1 projections to ``inter_channels``.
    """

    def __init__(self, gate_channels: int, skip_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.w_g = nn.Sequential(
            nn.Conv2d(gate_channels, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels)
        )
        self.w_x = nn.Sequential(
            nn.Conv2d(skip_channels, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels)
        )
        self.psi = nn.Sequential(
            nn.Conv2d(inter_channels, 1, 1, bias=False), nn.BatchNorm2d(1), nn.Sigmoid()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, g: Tensor, x: Tensor) -> Tensor:
        coeff: Tensor = self.psi(self.relu(self.w_g(g) + self.w_x(x)))
        return x * coeff


class DecoderBlock(nn.Module):
    """One U-Net decoder stage: up-convolution, attention-gated skip, residual convs, SE.

    A 3x3 conv-BN-ReLU at the coarse resolution (a quarter of the cost of convolving after
    the resize), a bilinear resize to the skip's size, the skip gated by an
    :class:`AttentionGate` (``attention``), concatenation, a :class:`ResidualDoubleConv` and
    squeeze-excitation (``se``, ``se_reduction``).

    Shape:
        - x: ``(N, in_channels, h, w)``; skip: ``(N, skip_channels, H, W)``
        - Output: ``(N, out_channels, H, W)``
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        attention: bool = True,
        se: bool = True,
        se_reduction: int = 16,
    ) -> None:
        super().__init__()
        self.up_conv = ConvBNReLU(in_channels, out_channels)
        self.gate: nn.Module = (
            AttentionGate(out_channels, skip_channels, max(1, out_channels // 2))
            if attention
            else nn.Identity()
        )
        self.attention = attention
        self.conv = ResidualDoubleConv(out_channels + skip_channels, out_channels)
        self.se: nn.Module = SqueezeExcitation(out_channels, se_reduction) if se else nn.Identity()

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up_conv(x)  # 3x3 conv at the coarse resolution: 4x cheaper than after
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        skip = self.gate(x, skip) if self.attention else skip
        x = torch.cat([skip, x], dim=1)
        x = self.conv(x)
        out: Tensor = self.se(x)
        return out
