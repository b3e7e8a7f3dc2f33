"""The runnable examples in the inference docstrings."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch

from suimseg.metrics import ConfusionMatrix, SegmentationMetrics

MODULES = [
    "suimseg.inference",
    "suimseg.inference._images",
    "suimseg.inference.evaluation",
    "suimseg.inference.predictor",
    "suimseg.inference.reports",
    "suimseg.inference.tiling",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    extraglobs = {
        "np": np,
        "torch": torch,
        "SegmentationMetrics": SegmentationMetrics,
        "ConfusionMatrix": ConfusionMatrix,
    }
    result = doctest.testmod(module, extraglobs=extraglobs, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
