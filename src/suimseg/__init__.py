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
from suimseg.models import UNetResAttnV3

__all__ = [
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "SUIM_CLASSES",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "DatasetNotFoundError",
    "MissingDependencyError",
    "SUIMClass",
    "SUIMSegError",
    "UNetResAttnV3",
    "WeightsUnavailableError",
    "__version__",
    "index_to_rgb",
    "rgb_to_index",
]
