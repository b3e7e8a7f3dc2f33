"""int8 ONNX export (static QDQ quantization) on a briefly trained tiny model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from suimseg.data import SUIMDataset
from suimseg.errors import ConfigError, InputNotFoundError, MissingDependencyError
from suimseg.inference import export_onnx, quantize_onnx
from suimseg.inference.export import calibration_inputs

from .conftest import tiny_unet

HAS_ONNX = all(
    importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime")
)
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="needs the onnx extra")


class SmallConvNet(nn.Module):
    """Conv-BN-ReLU blocks down by 4, a 1x1 head, bilinear back up (fast to export)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.body(x))
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear")


def _trained(net: nn.Module, root: Path, steps: int = 12) -> nn.Module:
    """``net`` after a few Adam steps on the synthetic data (so labels are not constant)."""
    ds = SUIMDataset(root, "train_val", image_size=64)
    xs = torch.stack([ds[i][0] for i in range(len(ds))])
    ys = torch.stack([ds[i][1] for i in range(len(ds))])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xs), ys, ignore_index=255).backward()
        opt.step()
    return net.eval()


def _session(path: Path) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(
    scope="module",
    params=["small", pytest.param("resnet18_unet", marks=pytest.mark.slow)],
)
def int8_export(
    request: pytest.FixtureRequest, suim_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[nn.Module, Path]:
    """A briefly trained model and its int8 export, calibrated on the train_val images."""
    if not HAS_ONNX:
        pytest.skip("needs the onnx extra")
    # The U-Net trains longer: after 12 steps many of its pixels are near-ties between two
    # classes, which int8 rounding flips (93% agreement, varying with the thread count).
    small = request.param == "small"
    net = _trained(SmallConvNet() if small else tiny_unet(seed=3), suim_root,
                   steps=12 if small else 60)  # fmt: skip
    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    path = export_onnx(net, out, int8=True, calibration=suim_root / "train_val" / "images",
                       calibration_size=64)  # fmt: skip
    return net, path


@needs_onnx
def test_int8_file_is_quantized_and_keeps_dynamic_shapes(
    int8_export: tuple[nn.Module, Path],
) -> None:
    import onnx

    _, path = int8_export
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 2  # activations
    assert ops.count("DequantizeLinear") >= 4  # activations and weights
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 2
    assert not list(path.parent.glob(".*tmp*"))  # no float32 or pre-processed leftovers
    session = _session(path)
    for shape in [(1, 3, 64, 64), (2, 3, 40, 56)]:
        logits = session.run(None, {"image": np.zeros(shape, np.float32)})[0]
        assert logits.shape == (shape[0], 8, *shape[2:])


@needs_onnx
def test_int8_labels_agree_with_eager_fp32(
    int8_export: tuple[nn.Module, Path], suim_root: Path
) -> None:
    net, path = int8_export
    session = _session(path)
    images = sorted((suim_root / "TEST" / "images").iterdir())  # not calibrated on
    same = total = 0
    classes: set[int] = set()
    for x in calibration_inputs(images, 64):
        with torch.no_grad():
            want = net(x).argmax(1)
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0]).argmax(1)
        classes |= set(want.unique().tolist())
        same += int((got == want).sum())
        total += want.numel()
    assert len(classes) >= 2  # the briefly trained model does not predict one class
    assert same / total >= 0.95


@needs_onnx
def test_int8_needs_calibration_images(tmp_path: Path, suim_root: Path) -> None:
    net = tiny_unet()
    with pytest.raises(ConfigError, match="calibration: int8=True needs calibration images"):
        export_onnx(net, tmp_path / "m.onnx", int8=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="calibration: no images"):
        export_onnx(net, tmp_path / "m.onnx", int8=True, calibration=tmp_path / "empty")
    with pytest.raises(InputNotFoundError, match=r"calibration: .* does not exist"):
        export_onnx(net, tmp_path / "m.onnx", int8=True, calibration=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="min_agreement"):
        export_onnx(net, tmp_path / "m.onnx", int8=True, calibration=suim_root,
                    min_agreement=1.5)  # fmt: skip
    assert not list(tmp_path.glob("*.onnx"))
    assert not list(tmp_path.glob(".*"))


def test_calibration_inputs_are_the_predictors_model_inputs(suim_root: Path) -> None:
    from suimseg.inference import Predictor

    files = sorted((suim_root / "train_val" / "images").iterdir())
    xs = calibration_inputs(suim_root / "train_val" / "images", 32, max_images=3)
    assert [tuple(x.shape) for x in xs] == [(1, 3, 32, 32)] * 3
    seen: list[torch.Tensor] = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 8, *x.shape[2:])

    Predictor(Spy(), image_size=32, batch_size=1).predict(files[0])
    torch.testing.assert_close(xs[0], seen[0], rtol=0, atol=0)
    every = calibration_inputs(suim_root / "train_val" / "images", 32, max_images=8)
    spread = calibration_inputs(suim_root / "train_val" / "images", 32, max_images=4)
    assert torch.equal(spread[1], every[2])  # every other file of 8, not the first 4


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_int8_missing_extra_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str, suim_root: Path
) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args: object) -> object:
        return None if name == missing else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(MissingDependencyError, match=r"pip install 'suimseg\[onnx\]'"):
        export_onnx(tiny_unet(), tmp_path / "m.onnx", int8=True, calibration=suim_root)
    if missing == "onnxruntime":
        with pytest.raises(
            MissingDependencyError, match=r"int8 ONNX quantization.*suimseg\[onnx\]"
        ):
            quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", suim_root)
