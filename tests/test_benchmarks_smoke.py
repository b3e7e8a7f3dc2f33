"""Smoke tests of the benchmark scripts (benchmarks/*.py) at their smallest settings.

They check that each script runs end to end and writes a JSON report with the expected
keys; they never assert on timings (benchmarks are run by hand, see docs/benchmarks.md).
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
MACHINE_KEYS = {"torch", "device", "device_name", "cpu_count", "cuda", "torch_threads"}


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Import a benchmark script by name with benchmarks/ on sys.path."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))

    def load(name: str) -> ModuleType:
        return importlib.import_module(name)

    yield load
    for name in ("_common", "train_step", "inference", "epoch", "data"):
        sys.modules.pop(name, None)


def _tiny_v3(width: int = 8) -> torch.nn.Module:
    from suimseg.models import UNetResAttnV3

    return UNetResAttnV3(
        encoder="resnet18", decoder_channels=(width, width, 8, 8), bridge_channels=width
    )


# Stand-ins for the full-size models so the smoke tests stay fast; the scripts' own
# factories are exercised by the slow test at the end.
TINY_MODELS = {"v3": _tiny_v3, "deeplabv3": lambda: _tiny_v3(16)}


def _report(path: Path, benchmark: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert set(report) >= {"benchmark", "machine", "settings", "results"}
    assert report["benchmark"] == benchmark
    assert set(report["machine"]) >= MACHINE_KEYS
    assert report["machine"]["device"] == "cpu"
    return report


def test_train_step_writes_report(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = bench("train_step")
    monkeypatch.setattr(module, "model_factories", lambda: dict(TINY_MODELS))
    out = tmp_path / "train_step.json"
    argv = ["--device", "cpu", "--size", "32", "--batch", "2", "--threads", "1"]
    argv += ["--warmup", "0", "--repeats", "1", "--out", str(out)]
    assert module.main(argv) == 0
    report = _report(out, "suimseg training step")
    assert report["settings"]["image_size"] == [32, 32]
    assert report["settings"]["variants"] == ["fp32"]
    rows = {r["model"]: r for r in report["results"]}
    assert set(rows) == {"v3", "deeplabv3"}
    for r in rows.values():
        assert r["images_per_s"] > 0
        assert r["peak_memory_mib"] is None  # CUDA only
        assert r["forward_gflops_per_image"] > 0
        assert r["train_gflops_per_image"] > r["forward_gflops_per_image"]
        assert r["achieved_tflops"] > 0
        assert len(r["runs_s"]) == 1
    assert rows["deeplabv3"]["speedup_vs_deeplabv3"] == pytest.approx(1.0)
    assert rows["v3"]["speedup_vs_deeplabv3"] > 0
    assert rows["v3"]["forward_gflops_per_image"] < rows["deeplabv3"]["forward_gflops_per_image"]


def test_train_step_rejects_unknown_variant(bench: Any, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown"):
        bench("train_step").main(["--variants", "fp8", "--out", str(tmp_path / "x.json")])


def test_inference_writes_report(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = bench("inference")
    for name, make in TINY_MODELS.items():
        monkeypatch.setitem(module.MODELS, name, make)
    out = tmp_path / "inference.json"
    argv = ["--device", "cpu", "--sizes", "32,24x40", "--batches", "1", "--warmup", "0"]
    argv += ["--repeats", "2", "--threads", "1", "--out", str(out)]
    assert module.main(argv) == 0
    report = _report(out, "suimseg inference")
    assert report["settings"]["precision"] == "fp32"
    results = report["results"]
    assert len(results) == 2 * 2 * 2  # models x sizes x modes
    for r in results:
        assert set(r) >= {"model", "size", "batch", "mode", "latency_ms_median", "images_per_s"}
        assert r["latency_ms_median"] > 0
        assert len(r["runs_s"]) == 2
        assert r["forward_passes"] == (2 if r["mode"] == "tta" else 1)
    ratios = report["v3_vs_deeplabv3"]
    assert len(ratios) == 4
    for r in ratios:
        assert math.isfinite(r["ratio"])
        assert r["ratio"] > 0
        assert r["paired_ratio_median"] > 0


def test_inference_rejects_bad_size(bench: Any) -> None:
    with pytest.raises(SystemExit):
        bench("inference").main(["--sizes", "big"])


def test_epoch_writes_report(bench: Any, tmp_path: Path) -> None:
    out = tmp_path / "epoch.json"
    argv = ["--device", "cpu", "--n-images", "10", "--source-size", "64x48"]
    argv += ["--image-size", "32", "--batch-size", "2", "--threads", "1", "--out", str(out)]
    assert bench("epoch").main(argv) == 0
    report = _report(out, "suimseg training epoch")
    settings = report["settings"]
    assert settings["train_images"] + settings["val_images"] == 10
    assert settings["amp"] is None  # CPU: no autocast by default
    assert settings["fused_adamw"] is False
    (row,) = report["results"]["epochs"]
    for key in ("train_data_wait_s", "train_compute_s", "val_data_wait_s", "val_compute_s"):
        assert row[key] >= 0
    assert row["wall_s"] >= row["train_s"] + row["val_s"] - 1e-6
    assert 0 <= row["data_wait_fraction"] <= 1
    assert report["results"]["estimate_50_epochs_s"] == pytest.approx(50 * row["wall_s"])


def test_largest_batch_doubles_then_bisects(bench: Any) -> None:
    common = bench("_common")
    calls: list[int] = []

    def fits(b: int) -> bool:
        calls.append(b)
        return b <= 37

    assert common.largest_batch(fits, start=6) == 37
    assert calls[:4] == [6, 12, 24, 48]
    assert common.largest_batch(lambda b: b <= 1000, start=6, limit=1024) == 1000
    assert common.largest_batch(lambda b: True, start=6, limit=100) == 100
    assert common.largest_batch(lambda b: False, start=6) is None


def test_write_json_is_atomic_and_readable(bench: Any, tmp_path: Path) -> None:
    common = bench("_common")
    path = tmp_path / "sub" / "r.json"
    common.write_json(path, {"a": [1, 2]})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_print_table_handles_no_rows(bench: Any, capsys: pytest.CaptureFixture[str]) -> None:
    bench("_common").print_table(["a", "bb"], [])
    assert capsys.readouterr().out.split() == ["a", "bb"]


@pytest.mark.slow
def test_real_models_flops(bench: Any) -> None:
    """The real factories: V3 needs ~84 forward GFLOPs per 384x384 image, DeepLabV3 ~184."""
    module = bench("train_step")
    factories = module.model_factories()
    v3 = bench("_common").train_step_flops(factories["v3"], (384, 384))
    dl = bench("_common").train_step_flops(factories["deeplabv3"], (384, 384))
    assert v3["forward_gflops"] == pytest.approx(84.0, abs=1.0)
    assert dl["forward_gflops"] == pytest.approx(184.0, abs=1.0)


@pytest.mark.slow
def test_v3_compiles_without_graph_breaks() -> None:
    """``torch.compile(fullgraph=True)`` fails on any graph break in V3's forward."""
    from suimseg.models import UNetResAttnV3

    torch.manual_seed(0)
    model = UNetResAttnV3(encoder="resnet18", decoder_channels=(16, 16, 8, 8), bridge_channels=16)
    model.train()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3, 64, 64)
    out = compiled(x)
    out.sum().backward()
    assert out.shape == (2, 8, 64, 64)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_data_writes_report(bench: Any, tmp_path: Path) -> None:
    data = bench("data")
    out = tmp_path / "data.json"
    assert data.main(["--n-images", "4", "--repeats", "1", "--out", str(out)]) == 0
    report = _report(out, "suimseg data pipeline")
    pipelines = {r["pipeline"] for r in report["results"]}
    assert {"naive", "suimseg", "suimseg + cache, ep. 2+"} <= pipelines
    assert all(r["images_per_s"] > 0 for r in report["results"])


def test_augment_writes_report(bench: Any, tmp_path: Path) -> None:
    out = tmp_path / "augment.json"
    argv = ["--device", "cpu", "--size", "32", "--batch", "2", "--n-images", "1"]
    argv += ["--warmup", "0", "--repeats", "1", "--threads", "1", "--out", str(out)]
    try:
        assert bench("augment").main(argv) == 0
    finally:
        sys.modules.pop("augment", None)
    report = _report(out, "suimseg augmentation")
    assert report["settings"]["device_batch"] == 2
    loader = report["results"]["loader"]
    steps = {r["step"] for r in loader}
    assert {"resize (antialias)", "hflip", "vflip", "RandomAffine", "ColorJitter"} <= steps
    assert {"GaussianBlur", "ToDtype + Normalize"} <= steps
    assert {r["input"] for r in loader if r["step"] == "resize (antialias)"} == {
        "640x480",
        "1920x1080",
    }
    for r in loader:
        assert r["ms_per_image"] > 0
        assert r["expected_ms_per_image"] == pytest.approx(r["probability"] * r["ms_per_image"])
    device = {r["module"]: r for r in report["results"]["device"]}
    assert {"DeviceNormalize", "DeviceAugment (defaults)"} <= set(device)
    for r in device.values():
        assert r["batch"] == 2
        assert r["ms_per_image"] == pytest.approx(r["ms_per_batch"] / 2)
        assert r["images_per_s"] > 0
