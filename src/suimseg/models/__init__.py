"""Segmentation models and their building blocks."""

from suimseg.models.blocks import (
    AttentionGate,
    ConvBNReLU,
    DecoderBlock,
    ResidualDoubleConv,
    SqueezeExcitation,
)
from suimseg.models.deeplab import DeepLabV3ResNet50, deeplabv3_resnet50
from suimseg.models.encoders import ENCODER_NAMES, ResNetEncoder
from suimseg.models.hub import HubMixin
from suimseg.models.registry import MODEL_NAMES, build_model, model_spec
from suimseg.models.unet_resattn_v3 import UNetResAttnV3

__all__ = [
    "ENCODER_NAMES",
    "MODEL_NAMES",
    "AttentionGate",
    "ConvBNReLU",
    "DecoderBlock",
    "DeepLabV3ResNet50",
    "HubMixin",
    "ResNetEncoder",
    "ResidualDoubleConv",
    "SqueezeExcitation",
    "UNetResAttnV3",
    "build_model",
    "deeplabv3_resnet50",
    "model_spec",
]
