"""The issue's quality gate for int8 ONNX, on the demo's trained checkpoint (slow).

int8 is kept only if, on the demo model, its labels agree with eager float32 on >= 99% of
the synthetic TEST pixels and its mIoU is within 0.5 points (docs/inference.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from suimseg.app.demo import run_demo
from suimseg.app.evaluate import input_size_for
from suimseg.data import SUIMDataset
from suimseg.engine import load_model
from suimseg.inference import Predictor, evaluate_predictor, export_onnx

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")),
        reason="needs the onnx extra",
    ),
]


class OrtModel(nn.Module):
    """An onnxruntime session as a module, so the Predictor's pre/post-processing is shared."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime

        self.session: Any = onnxruntime.InferenceSession(
            str(path), providers=["CPUExecutionProvider"]
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.from_numpy(self.session.run(None, {"image": x.cpu().numpy()})[0])


def test_int8_demo_model_agrees_with_fp32(tmp_path: Path) -> None:
    demo = run_demo(tmp_path / "demo")
    ckpt = demo.out_dir / "run" / "best.pt"
    size = input_size_for(ckpt)
    model = load_model(ckpt).eval()
    data = demo.out_dir / "data"
    calibration = data / "train_val" / "images"
    path = export_onnx(model, tmp_path / "demo.int8.onnx", int8=True,
                       calibration=calibration, calibration_size=size)  # fmt: skip
    eager = Predictor(model, image_size=size)
    int8 = Predictor(OrtModel(path), image_size=size)
    test = SUIMDataset(data, "test", image_size=None)
    same = total = 0
    for i in range(len(test)):
        image, _ = test.get_raw(i)
        a, b = eager.predict(image)[0].labels, int8.predict(image)[0].labels
        same += int((a == b).sum())
        total += a.numel()
    drop = 100 * (evaluate_predictor(eager, test).miou - evaluate_predictor(int8, test).miou)
    assert same / total >= 0.99
    assert drop <= 0.5
