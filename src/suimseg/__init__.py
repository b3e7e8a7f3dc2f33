"""suimseg: semantic segmentation of underwater imagery (SUIM) with PyTorch.

The root namespace holds what a user needs every day (``__all__``, 18 names): the model, the
losses, the dataset and its transforms, ``param_groups``, ``ConfusionMatrix``, the
``Trainer``, ``load_model``, the ``Predictor`` and the base error. Everything else lives in
its subpackage: ``suimseg.models``, ``suimseg.losses``, ``suimseg.data``, ``suimseg.metrics``,
``suimseg.optim``, ``suimseg.engine``, ``suimseg.inference``, ``suimseg.classes``,
``suimseg.errors``, and the application (``suimseg.app``: recipe, CLI).

Names are imported lazily (PEP 562): ``import suimseg`` is cheap, and a user who takes
only the model (``suimseg.models``) or only the losses (``suimseg.losses``) does not
import the data, training or inference code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from suimseg._version import __version__

if TYPE_CHECKING:
    from suimseg.classes import CLASS_NAMES, NUM_CLASSES
    from suimseg.data import SUIMDataset, eval_transforms, make_synthetic_suim, train_transforms
    from suimseg.engine import Trainer, load_model
    from suimseg.errors import SUIMSegError
    from suimseg.inference import Predictor
    from suimseg.losses import DiceFocalLoss, DiceLoss, FocalLoss, class_weights
    from suimseg.metrics import ConfusionMatrix
    from suimseg.models import UNetResAttnV3
    from suimseg.optim import param_groups

#: Where each public name lives.
_EXPORTS: dict[str, str] = {
    "CLASS_NAMES": "suimseg.classes",
    "NUM_CLASSES": "suimseg.classes",
    "SUIMDataset": "suimseg.data",
    "eval_transforms": "suimseg.data",
    "make_synthetic_suim": "suimseg.data",
    "train_transforms": "suimseg.data",
    "Trainer": "suimseg.engine",
    "load_model": "suimseg.engine",
    "SUIMSegError": "suimseg.errors",
    "Predictor": "suimseg.inference",
    "DiceFocalLoss": "suimseg.losses",
    "DiceLoss": "suimseg.losses",
    "FocalLoss": "suimseg.losses",
    "class_weights": "suimseg.losses",
    "ConfusionMatrix": "suimseg.metrics",
    "UNetResAttnV3": "suimseg.models",
    "param_groups": "suimseg.optim",
}

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "ConfusionMatrix",
    "DiceFocalLoss",
    "DiceLoss",
    "FocalLoss",
    "Predictor",
    "SUIMDataset",
    "SUIMSegError",
    "Trainer",
    "UNetResAttnV3",
    "__version__",
    "class_weights",
    "eval_transforms",
    "load_model",
    "make_synthetic_suim",
    "param_groups",
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
