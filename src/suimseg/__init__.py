"""suimseg: semantic segmentation of underwater imagery (SUIM) with PyTorch.

The public API is listed in ``__all__``; everything else is an implementation detail.
"""

from suimseg._version import __version__
from suimseg.classes import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    SUIM_CLASSES,
    SUIMClass,
    index_to_rgb,
    rgb_to_index,
)
from suimseg.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    DatasetNotFoundError,
    MissingDependencyError,
    SUIMSegError,
    WeightsUnavailableError,
)
from suimseg.metrics import ConfusionMatrix, SegmentationMetrics
from suimseg.models import (
    DeepLabV3ResNet50,
    UNetResAttnV3,
    build_model,
    deeplabv3_resnet50,
    model_spec,
)
from suimseg.optim import group_min_lrs, param_groups

__all__ = [
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "SUIM_CLASSES",
    "CheckpointError",
    "ConfigError",
    "ConfusionMatrix",
    "DatasetError",
    "DatasetNotFoundError",
    "DeepLabV3ResNet50",
    "MissingDependencyError",
    "SUIMClass",
    "SUIMSegError",
    "SegmentationMetrics",
    "UNetResAttnV3",
    "WeightsUnavailableError",
    "__version__",
    "build_model",
    "deeplabv3_resnet50",
    "group_min_lrs",
    "index_to_rgb",
    "model_spec",
    "param_groups",
    "rgb_to_index",
]
