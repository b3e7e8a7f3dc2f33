"""PyTorch Lightning integration: a LightningModule, a LightningDataModule and the mIoU metric.

Needs the ``lightning`` extra (``pip install 'suimseg[lightning]'``: ``lightning`` and
``torchmetrics``); importing this package without them raises
:class:`~suimseg.errors.MissingDependencyError`. See ``docs/lightning.md``.

- :class:`SUIMSegModule`: a suimseg model, DiceFocal loss, AdamW over suimseg's parameter
  groups and ``ReduceLROnPlateau`` on ``val_miou``.
- :class:`SUIMDataModule`: the SUIM splits, with unpadded evaluation shards under DDP.
- :class:`SUIMJaccardIndex`: suimseg's dataset-level mIoU as a ``torchmetrics.Metric``
  (importing it alone, from :mod:`suimseg.lightning.metrics`, does not import Lightning).

The names load lazily, so ``import suimseg.lightning`` stays cheap until one is used.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from suimseg.errors import MissingDependencyError

for _package in ("lightning", "torchmetrics"):
    if importlib.util.find_spec(_package) is None:
        raise MissingDependencyError(_package, "lightning", "suimseg.lightning")

if TYPE_CHECKING:
    from suimseg.lightning.datamodule import SUIMDataModule, UnpaddedDistributedSampler
    from suimseg.lightning.metrics import SUIMJaccardIndex
    from suimseg.lightning.module import SUIMSegModule

__all__ = ["SUIMDataModule", "SUIMJaccardIndex", "SUIMSegModule", "UnpaddedDistributedSampler"]

_EXPORTS = {
    "SUIMDataModule": "suimseg.lightning.datamodule",
    "UnpaddedDistributedSampler": "suimseg.lightning.datamodule",
    "SUIMJaccardIndex": "suimseg.lightning.metrics",
    "SUIMSegModule": "suimseg.lightning.module",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'suimseg.lightning' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
