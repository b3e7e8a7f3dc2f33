"""TorchScript and ONNX export with output parity."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from suimseg.errors import ConfigError, MissingDependencyError
from suimseg.inference import export_onnx, export_torchscript, verify_onnx
from suimseg.inference.export import _quiet_exporter_logs

from .conftest import tiny_unet


class SmallSegNet(nn.Module):
    """Conv-BN down by 2, then bilinear back to the input size (a dynamic-shape op)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(torch.relu(self.down(x)))
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear")


HAS_ONNX = all(
    importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime")
)


def _models() -> list[nn.Module]:
    return [SmallSegNet(), pytest.param(tiny_unet(), marks=pytest.mark.slow)]  # type: ignore[list-item]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("net", _models())
def test_torchscript_parity_at_other_sizes(tmp_path: Path, net: nn.Module) -> None:
    net.train()
    path = export_torchscript(net, tmp_path / "sub" / "model.ts.pt")
    assert net.training  # mode restored
    loaded = torch.jit.load(str(path))
    net.eval()
    for shape in [(1, 3, 64, 64), (3, 3, 33, 70)]:
        x = torch.rand(shape)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x), atol=1e-4, rtol=1e-4)
    assert not list(path.parent.glob(".*tmp*"))


def test_torchscript_detects_baked_shapes(tmp_path: Path) -> None:
    class ShapeDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            if int(x.shape[-1]) > 60:  # Python control flow: tracing keeps one branch
                return y * 2
            return y

    with pytest.raises(ConfigError, match="differs from the eager model"):
        export_torchscript(ShapeDependent(), tmp_path / "m.pt", example_shape=(1, 3, 32, 32))
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(ConfigError, match="example_shape"):
        export_torchscript(ShapeDependent(), tmp_path / "m.pt", example_shape=(1, 3, 32))  # type: ignore[arg-type]


@pytest.mark.skipif(not HAS_ONNX, reason="needs the onnx extra (onnx, onnxscript, onnxruntime)")
@pytest.mark.parametrize("net", _models())
def test_onnx_parity_with_dynamic_batch_and_size(tmp_path: Path, net: nn.Module) -> None:
    path = export_onnx(net, tmp_path / "model.onnx")
    assert path.is_file()
    for shape in [(1, 3, 64, 64), (3, 3, 40, 57)]:
        assert verify_onnx(net, path, torch.rand(shape)) < 1e-4


def test_onnx_missing_dependency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args: object) -> object:
        return None if name == "onnx" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(MissingDependencyError, match=r"pip install 'suimseg\[onnx\]'"):
        export_onnx(SmallSegNet(), tmp_path / "m.onnx")


@pytest.mark.skipif(not HAS_ONNX, reason="needs the onnx extra (onnx, onnxscript, onnxruntime)")
def test_onnx_export_adds_no_exporter_lines_to_an_info_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # What the CLI's logging.basicConfig(level=INFO) installs: the root logger at INFO,
    # printing to stderr. Before, each export printed the exporter's per-pass lines there
    # ("Removed 11 unused nodes", "Applied 3 of general pattern rewrite rules.", ...).
    caplog.set_level(logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(handler)
    net = SmallSegNet()
    try:
        path = export_onnx(net, tmp_path / "model.onnx")
    finally:
        logging.getLogger().removeHandler(handler)
    assert verify_onnx(net, path, torch.rand(1, 3, 32, 40)) < 1e-4
    assert capsys.readouterr() == ("", "")
    assert [r.getMessage() for r in caplog.records] == []
    for name in ("torch.onnx", "onnxscript", "onnx_ir", "onnxruntime"):
        assert logging.getLogger(name).level == logging.NOTSET  # restored


def test_quiet_exporter_logs_keeps_warnings_errors_and_explicit_levels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    rewriter = logging.getLogger("onnxscript.rewriter")
    explicit = logging.getLogger("onnx_ir")
    explicit.setLevel(logging.DEBUG)  # the caller debugging an export keeps its level
    try:
        with _quiet_exporter_logs():
            rewriter.info("Applied 3 of general pattern rewrite rules.")
            rewriter.warning("a real warning")
            rewriter.error("a real error")
            explicit.info("kept: onnx_ir's level was set by the caller")
            logging.getLogger("suimseg").info("suimseg's own line")
        rewriter.info("after the block")
    finally:
        explicit.setLevel(logging.NOTSET)
    assert [r.getMessage() for r in caplog.records] == [
        "a real warning",
        "a real error",
        "kept: onnx_ir's level was set by the caller",
        "suimseg's own line",
        "after the block",
    ]
