"""suimseg: semantic segmentation of underwater imagery (SUIM) with PyTorch.

The public API is listed in ``__all__``; everything else is an implementation detail.

Names are imported lazily (PEP 562): ``import suimseg`` is cheap, and a user who takes
only the model (``suimseg.models``) or only the losses (``suimseg.losses``) does not
import the data, training or inference code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from suimseg._version import __version__

if TYPE_CHECKING:
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
        DeviceAugment,
        DeviceNormalize,
        SUIMDataset,
        colorize,
        eval_transforms,
        make_synthetic_suim,
        overlay,
        read_image,
        train_transforms,
    )
    from suimseg.engine import (
        Callback,
        EpochRecord,
        RunLock,
        Trainer,
        load_checkpoint,
        load_model,
        read_history,
        reduce_on_plateau,
        save_safetensors,
    )
    from suimseg.errors import (
        CheckpointError,
        ConfigError,
        DatasetError,
        DatasetNotFoundError,
        InputNotFoundError,
        MissingDependencyError,
        NonFiniteLossError,
        RunLockError,
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
    from suimseg.losses import (
        DiceFocalLoss,
        DiceLoss,
        FocalLoss,
        LossComponents,
        class_weights,
    )
    from suimseg.metrics import (
        ConfusionMatrix,
        SegmentationMetrics,
    )
    from suimseg.models import (
        DeepLabV3ResNet50,
        UNetResAttnV3,
        build_model,
        deeplabv3_resnet50,
        model_spec,
    )
    from suimseg.optim import (
        group_min_lrs,
        param_groups,
    )

#: Where each public name lives.
_EXPORTS: dict[str, str] = {
    "RunLock": "suimseg.engine",
    "RunLockError": "suimseg.errors",
    "save_safetensors": "suimseg.engine",
    "read_image": "suimseg.data",
    "CLASS_NAMES": "suimseg.classes",
    "Callback": "suimseg.engine",
    "CheckpointError": "suimseg.errors",
    "ConfigError": "suimseg.errors",
    "ConfusionMatrix": "suimseg.metrics",
    "DatasetError": "suimseg.errors",
    "DatasetNotFoundError": "suimseg.errors",
    "InputNotFoundError": "suimseg.errors",
    "DeepLabV3ResNet50": "suimseg.models",
    "DiceFocalLoss": "suimseg.losses",
    "DiceLoss": "suimseg.losses",
    "EpochRecord": "suimseg.engine",
    "FocalLoss": "suimseg.losses",
    "IGNORE_INDEX": "suimseg.classes",
    "LossComponents": "suimseg.losses",
    "MissingDependencyError": "suimseg.errors",
    "NUM_CLASSES": "suimseg.classes",
    "NonFiniteLossError": "suimseg.errors",
    "Prediction": "suimseg.inference",
    "Predictor": "suimseg.inference",
    "SUIMClass": "suimseg.classes",
    "SUIMDataset": "suimseg.data",
    "DeviceAugment": "suimseg.data",
    "DeviceNormalize": "suimseg.data",
    "SUIMSegError": "suimseg.errors",
    "SUIM_CLASSES": "suimseg.classes",
    "SegmentationMetrics": "suimseg.metrics",
    "TTA": "suimseg.inference",
    "Tiling": "suimseg.inference",
    "Trainer": "suimseg.engine",
    "UNetResAttnV3": "suimseg.models",
    "WeightsUnavailableError": "suimseg.errors",
    "build_model": "suimseg.models",
    "class_weights": "suimseg.losses",
    "colorize": "suimseg.data",
    "compare_results": "suimseg.inference",
    "deeplabv3_resnet50": "suimseg.models",
    "eval_transforms": "suimseg.data",
    "evaluate_predictor": "suimseg.inference",
    "evaluate_suim_paper": "suimseg.inference",
    "export_onnx": "suimseg.inference",
    "export_torchscript": "suimseg.inference",
    "group_min_lrs": "suimseg.optim",
    "index_to_rgb": "suimseg.classes",
    "load_checkpoint": "suimseg.engine",
    "load_model": "suimseg.engine",
    "make_synthetic_suim": "suimseg.data",
    "model_spec": "suimseg.models",
    "overlay": "suimseg.data",
    "param_groups": "suimseg.optim",
    "plot_history": "suimseg.inference",
    "predict_files": "suimseg.inference",
    "read_history": "suimseg.engine",
    "reduce_on_plateau": "suimseg.engine",
    "rgb_to_index": "suimseg.classes",
    "train_transforms": "suimseg.data",
}

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
    "DeviceAugment",
    "DeviceNormalize",
    "DiceFocalLoss",
    "DiceLoss",
    "EpochRecord",
    "FocalLoss",
    "InputNotFoundError",
    "LossComponents",
    "MissingDependencyError",
    "NonFiniteLossError",
    "Prediction",
    "Predictor",
    "RunLock",
    "RunLockError",
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
    "read_image",
    "reduce_on_plateau",
    "rgb_to_index",
    "save_safetensors",
    "train_transforms",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'suimseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
