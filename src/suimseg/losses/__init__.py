"""Segmentation losses: softmax focal, soft Dice, their sum, and class weights.

The maths lives in :mod:`suimseg.losses._functional` as pure functions (also exported here
as :func:`focal_loss`, :func:`dice_loss`, :func:`dice_focal_loss`); the modules are thin
``nn.Module`` wrappers. Losses know nothing of models or datasets.
"""

from suimseg.losses._functional import (
    REDUCTIONS,
    LossComponents,
    Reduction,
    dice_focal_loss,
    dice_loss,
    focal_loss,
)
from suimseg.losses.dice import DiceLoss
from suimseg.losses.dice_focal import DiceFocalLoss
from suimseg.losses.focal import FocalLoss
from suimseg.losses.weights import WEIGHT_METHODS, WeightMethod, class_weights

__all__ = [
    "REDUCTIONS",
    "WEIGHT_METHODS",
    "DiceFocalLoss",
    "DiceLoss",
    "FocalLoss",
    "LossComponents",
    "Reduction",
    "WeightMethod",
    "class_weights",
    "dice_focal_loss",
    "dice_loss",
    "focal_loss",
]
