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
from suimseg.data import (
    SUIMDataset,
    colorize,
    eval_transforms,
    make_synthetic_suim,
    overlay,
    train_transforms,
)
from suimseg.engine import (
    Callback,
    EpochRecord,
    Trainer,
    load_checkpoint,
    load_model,
    read_history,
    reduce_on_plateau,
)
from suimseg.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    DatasetNotFoundError,
    MissingDependencyError,
    NonFiniteLossError,
    SUIMSegError,
    WeightsUnavailableError,
)
from suimseg.inference import (
    TTA,
    Prediction,
    Predictor,
    Tiling,
    compare_results,
    evaluate_predictor,
    evaluate_suim_paper,
    export_onnx,
    export_torchscript,
    plot_history,
    predict_files,
)
from suimseg.losses import DiceFocalLoss, DiceLoss, FocalLoss, LossComponents, class_weights
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
    "TTA",
    "Callback",
    "CheckpointError",
    "ConfigError",
    "ConfusionMatrix",
    "DatasetError",
    "DatasetNotFoundError",
    "DeepLabV3ResNet50",
    "DiceFocalLoss",
    "DiceLoss",
    "EpochRecord",
    "FocalLoss",
    "LossComponents",
    "MissingDependencyError",
    "NonFiniteLossError",
    "Prediction",
    "Predictor",
    "SUIMClass",
    "SUIMDataset",
    "SUIMSegError",
    "SegmentationMetrics",
    "Tiling",
    "Trainer",
    "UNetResAttnV3",
    "WeightsUnavailableError",
    "__version__",
    "build_model",
    "class_weights",
    "colorize",
    "compare_results",
    "deeplabv3_resnet50",
    "eval_transforms",
    "evaluate_predictor",
    "evaluate_suim_paper",
    "export_onnx",
    "export_torchscript",
    "group_min_lrs",
    "index_to_rgb",
    "load_checkpoint",
    "load_model",
    "make_synthetic_suim",
    "model_spec",
    "overlay",
    "param_groups",
    "plot_history",
    "predict_files",
    "read_history",
    "reduce_on_plateau",
    "rgb_to_index",
    "train_transforms",
]
