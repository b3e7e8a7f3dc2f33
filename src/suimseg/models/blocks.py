"""Building blocks of the decoder: conv-BN-ReLU, squeeze-excitation and attention gates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation
from torchvision.ops import SqueezeExcitation as _TVSqueezeExcitation

__all__ = ["AttentionGate", "ConvBNReLU", "DecoderBlock", "ResidualDoubleConv", "SqueezeExcitation"]


#: torchvision's ``Conv2dNormActivation`` (conv without bias, ``BatchNorm2d``, in-place ReLU,
#: "same" padding), under the name the decoder has always used. Its submodules are numbered
#: ``0``/``1``/``2`` exactly like the former hand-written ``nn.Sequential``, so state dicts
#: (and the committed checkpoints) keep their keys.
ConvBNReLU = Conv2dNormActivation


class ResidualDoubleConv(nn.Module):
    """Two 3x3 conv-BN-ReLU layers with a residual shortcut (a ResNet basic block).

    ``out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` where the shortcut is the
    identity when the channel counts match and a 1x1 conv + BN projection otherwise.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.

    Shape:
        - Input: ``(N, in_channels, H, W)``; Output: ``(N, out_channels, H, W)``
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
    """Squeeze-and-excitation channel attention (Hu et al. 2018).

    A thin wrapper around :class:`torchvision.ops.SqueezeExcitation` parametrised by a
    reduction ratio: the squeeze width is ``max(1, channels // reduction)``.

    Args:
        channels: Channels of the input (and output).
        reduction: Channel reduction ratio of the bottleneck (16 in SENet).

    Shape:
        - Input: ``(N, C, H, W)``; Output: same shape.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__(channels, max(1, channels // reduction))
        self.reduction = reduction


class AttentionGate(nn.Module):
    """Additive attention gate of Attention U-Net (Oktay et al. 2018).

    The gating signal ``g`` (the upsampled decoder feature) and the skip feature ``x`` are
    projected to ``inter_channels``, summed, passed through ReLU, a 1x1 projection to one
    channel and a sigmoid; the skip is multiplied by that per-pixel coefficient in ``[0, 1]``.

    Args:
        gate_channels: Channels of the gating signal ``g``.
        skip_channels: Channels of the skip feature ``x``.
        inter_channels: Width of the intermediate projection.

    Shape:
        - g: ``(N, gate_channels, H, W)``; x: ``(N, skip_channels, H, W)``
        - Output: ``(N, skip_channels, H, W)``
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

    A 3x3 conv-BN-ReLU maps the input to ``out_channels`` at its coarse resolution (the
    "up-conv" of Attention U-Net, run before the resize at a quarter of the cost), then it
    is resized to the skip's spatial size (bilinear), so any input size works.
    The skip goes through an :class:`AttentionGate` driven by that upsampled feature, both are
    concatenated, and a :class:`ResidualDoubleConv` (two 3x3 conv-BN-ReLU with a projection
    shortcut) plus a squeeze-excitation block follow.

    Args:
        in_channels: Channels of the incoming decoder feature.
        skip_channels: Channels of the encoder skip feature.
        out_channels: Channels produced by the block.
        attention: Use the attention gate on the skip (ablation switch).
        se: Use the squeeze-excitation block (ablation switch).
        se_reduction: Reduction ratio of the SE block.

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
