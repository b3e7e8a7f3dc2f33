"""Tests of the benchmark scripts (benchmarks/*.py), the shared harness and report.py.

Marked ``bench``: kept out of the default run (``pytest -m bench`` runs them; CI does).
Every script runs once, tiny, on the CPU (``--tiny-models``, 32x32) in a module fixture;
the tests check the JSON reports' keys and invariants (never timings), and report.py's
tables and target verdicts on those reports, edited into GPU-like ones where needed, so
the schema is always the scripts'.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.bench

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = ("_common", "train_step", "inference", "epoch", "data", "augment", "predict_folder")
MACHINE_KEYS = {"torch", "device", "device_name", "cpu_count", "cuda", "torch_threads"}
CPU = ["--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def mods() -> Iterator[dict[str, ModuleType]]:
    """The benchmark scripts, imported with benchmarks/ on sys.path, and report.py."""
    saved = {n: sys.modules.pop(n) for n in SCRIPTS if n in sys.modules}
    sys.path.insert(0, str(BENCH))
    try:
        loaded = {n: importlib.import_module(n) for n in SCRIPTS}
        spec = importlib.util.spec_from_file_location("suimseg_bench_report", BENCH / "report.py")
        assert spec is not None
        assert spec.loader is not None
        report = importlib.util.module_from_spec(spec)
        sys.modules["suimseg_bench_report"] = report
        spec.loader.exec_module(report)
        loaded["report"] = report
        yield loaded
    finally:
        sys.path.remove(str(BENCH))
        for n in (*SCRIPTS, "suimseg_bench_report"):
            sys.modules.pop(n, None)
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def cpu_reports(
    mods: dict[str, ModuleType], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """The JSON report of one tiny CPU run of every script, by script name."""
    out = tmp_path_factory.mktemp("reports")
    tiny = "--tiny-models --warmup 0 --repeats 2 --models v3,deeplabv3"
    runs = {
        # fp32 only: bf16 autocast is slow on most CPUs (_with_bf16_cl adds rows).
        "train_step": f"{tiny} --size 32 --batch 2 --variants fp32",
        "epoch": "--n-images 8 --source-size 48x32 --image-size 32 --batch-size 2 --epochs 2",
        "inference": f"{tiny} --sizes 32,24x40 --batches 1",
        "augment": "--size 32 --batch 2 --n-images 1 --warmup 0 --repeats 1",
        "predict_folder": "--tiny-models --warmup 0 --repeats 1 --n-images 3 "
        "--source-size 40x32 --big-size 160x200 --image-size 32 --workers 2",
    }
    for name, args in runs.items():
        argv = [*CPU, *args.split(), "--out", str(out / f"{name}.json")]
        assert mods[name].main(argv) == 0
    data = ["--n-images", "2", "--repeats", "1", "--threads", "1"]  # CPU only: no --device
    assert mods["data"].main([*data, "--out", str(out / "data.json")]) == 0
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in out.glob("*.json")}


def _check(report: dict[str, Any], benchmark: str) -> dict[str, Any]:
    assert set(report) >= {"benchmark", "machine", "settings", "results"}
    assert report["benchmark"] == benchmark
    assert set(report["machine"]) >= MACHINE_KEYS
    assert report["machine"]["device"] == "cpu"
    assert report.get("complete", True) is True
    return report


def _write(folder: Path, reports: dict[str, dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in reports.items():
        (folder / f"{name}.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def _render(mods: dict[str, ModuleType], folder: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert mods["report"].main([str(folder)]) == 0
    return capsys.readouterr().out


def _as_gpu(data: dict[str, Any], name: str = "NVIDIA H100 80GB HBM3") -> dict[str, Any]:
    d = copy.deepcopy(data)
    d["machine"].update(device="cuda:0", device_name=name, cuda=True, cuda_version="13.0")
    return d


def _with_bf16_cl(train_step: dict[str, Any]) -> dict[str, Any]:
    """A copy of a train_step report with each fp32 row also as a ``bf16_cl`` row."""
    d = copy.deepcopy(train_step)
    d["results"] += [{**r, "variant": "bf16_cl"} for r in d["results"] if r["variant"] == "fp32"]
    d["settings"]["variants"] = ["fp32", "bf16_cl"]
    return d


def _row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    (row,) = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return row


# --------------------------------------------------------------------------- the scripts


def test_train_step_report(cpu_reports: dict[str, dict[str, Any]]) -> None:
    report = _check(cpu_reports["train_step"], "suimseg training step")
    assert report["settings"]["image_size"] == [32, 32]
    assert report["settings"]["variants"] == ["fp32"]
    rows = {(r["model"], r["variant"]): r for r in report["results"]}
    assert set(rows) == {("v3", "fp32"), ("deeplabv3", "fp32")}
    for r in rows.values():
        assert r["images_per_s"] > 0
        assert r["peak_memory_mib"] is None  # CUDA only
        assert r["train_gflops_per_image"] > r["forward_gflops_per_image"] > 0
        assert r["achieved_tflops"] > 0
        assert len(r["runs_s"]) == 2
        assert r["step_s_median"] == pytest.approx(2 / r["images_per_s"])
    assert rows["deeplabv3", "fp32"]["speedup_vs_deeplabv3"] == pytest.approx(1.0)
    v3, dl = rows["v3", "fp32"], rows["deeplabv3", "fp32"]
    assert v3["speedup_vs_deeplabv3"] == pytest.approx(v3["images_per_s"] / dl["images_per_s"])
    assert v3["forward_gflops_per_image"] < dl["forward_gflops_per_image"]  # narrower stand-in


def test_inference_report(cpu_reports: dict[str, dict[str, Any]]) -> None:
    report = _check(cpu_reports["inference"], "suimseg inference")
    assert report["settings"]["precision"] == "fp32"
    results = report["results"]
    assert len(results) == 2 * 2 * 2  # models x sizes x modes
    assert {tuple(r["size"]) for r in results} == {(32, 32), (24, 40)}
    for r in results:
        assert r["latency_ms_median"] > 0
        assert len(r["runs_s"]) == 2
        assert r["forward_passes"] == (2 if r["mode"] == "tta" else 1)
        assert r["images_per_s"] == pytest.approx(1e3 * r["batch"] / r["latency_ms_median"])
    ratios = report["v3_vs_deeplabv3"]
    assert len(ratios) == 4
    for r in ratios:
        assert r["ratio"] == pytest.approx(r["v3_ms"] / r["deeplabv3_ms"])
        assert r["paired_ratio_median"] > 0


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="needs the onnx extra",
)
def test_inference_backends_report(
    mods: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--backends: every backend in one interleaved run, the CPU named, bf16 explained."""
    from suimseg.inference import export_onnx

    # Plumbing only: a 1x1-conv stand-in export (a real export takes a minute here).
    onnx_file = export_onnx(torch.nn.Conv2d(3, 8, 1), tmp_path / "m.onnx")
    monkeypatch.setattr(mods["inference"], "native_bf16_cpu", lambda: False)
    out = tmp_path / "backends.json"
    argv = [*CPU, "--tiny-models", "--backends", "all", "--sizes", "32", "--warmup", "0",
            "--repeats", "2", "--onnx-model", str(onnx_file), "--int8-model", str(onnx_file),
            "--out", str(out)]  # fmt: skip
    assert mods["inference"].main(argv) == 0
    report = _check(json.loads(out.read_text(encoding="utf-8")), "suimseg inference backends")
    assert report["cpu_model"] == report["machine"]["device_name"]
    rows = {r["backend"]: r for r in report["results"]}
    assert set(rows) == {"eager_fp32", "eager_channels_last", "onnxruntime_fp32",
                         "onnxruntime_int8"}  # fmt: skip
    assert rows["eager_fp32"]["speedup_vs_eager_fp32"] == pytest.approx(1.0)
    for r in rows.values():
        assert len(r["runs_s"]) == 2
        fp32 = rows["eager_fp32"]["latency_ms_median"]
        assert r["speedup_vs_eager_fp32"] == pytest.approx(fp32 / r["latency_ms_median"])
    (skipped,) = report["not_measured"]
    assert skipped["backend"] == "eager_bf16"
    assert "no native bf16 on CPU" in skipped["reason"]
    assert report["target"] is None  # the verdict is for 384x384 only
    verdict = mods["inference"]._backend_verdict(
        [{**r, "size": [384, 384]} for r in report["results"]]
    )
    assert verdict["best_backend"] == max(rows, key=lambda k: rows[k]["speedup_vs_eager_fp32"])


def test_epoch_report(cpu_reports: dict[str, dict[str, Any]]) -> None:
    report = _check(cpu_reports["epoch"], "suimseg training epoch")
    settings = report["settings"]
    assert settings["train_images"] + settings["val_images"] == 8
    assert settings["amp"] is None  # CPU: no autocast by default
    assert settings["fused_adamw"] is False
    first, second = report["results"]["epochs"]
    for row in (first, second):
        for key in ("train_data_wait_s", "train_compute_s", "val_data_wait_s", "val_compute_s"):
            assert row[key] >= 0
        assert row["wall_s"] >= row["train_s"] + row["val_s"] - 1e-6
        assert 0 <= row["data_wait_fraction"] <= 1
    estimate = first["wall_s"] + 49 * second["wall_s"]
    assert report["results"]["estimate_50_epochs_s"] == pytest.approx(estimate)


def test_data_report(cpu_reports: dict[str, dict[str, Any]]) -> None:
    report = _check(cpu_reports["data"], "suimseg data pipeline")
    rows = {r["pipeline"]: r for r in report["results"]}
    assert {"naive", "suimseg", "suimseg + cache, ep. 1", "suimseg + cache, ep. 2+"} <= set(rows)
    assert rows["naive"]["speedup_vs_naive"] == pytest.approx(1.0)
    assert all(r["images_per_s"] > 0 for r in rows.values())
    assert report["settings"]["torch_threads_main_process"] == 1


def test_predict_folder_report(cpu_reports: dict[str, dict[str, Any]]) -> None:
    report = _check(cpu_reports["predict_folder"], "suimseg folder prediction")
    assert report["settings"]["tiny_models"] is True
    folder = report["results"]["folder"]
    assert folder["identical_masks"] is True
    assert [r["workers"] for r in folder["rows"]] == [0, 2]
    for r in folder["rows"]:
        assert r["images_per_s"] == pytest.approx(3 / r["median_s"])
    assert folder["speedup"] == pytest.approx(
        folder["rows"][1]["images_per_s"] / folder["rows"][0]["images_per_s"]
    )
    memory = report["results"]["memory"]
    assert memory["labels_equal"] is True
    rows = {r["variant"]: r for r in memory["rows"]}
    assert set(rows) == {"decode", "one-pass", "strips", "strips-uint8", "mask-file"}
    assert rows["decode"]["labels_sha256"] is None
    digests = {rows[v]["labels_sha256"] for v in rows if v != "decode"}
    assert len(digests) == 1
    assert None not in digests
    for r in rows.values():
        assert r["peak_rss_mib"] >= r["baseline_rss_mib"] > 0


def test_augment_report(cpu_reports: dict[str, dict[str, Any]]) -> None:
    report = _check(cpu_reports["augment"], "suimseg augmentation")
    assert report["settings"]["device_batch"] == 2
    loader = report["results"]["loader"]
    steps = {r["step"] for r in loader}
    assert {"resize (antialias)", "hflip", "vflip", "RandomAffine", "ColorJitter"} <= steps
    assert {"GaussianBlur", "ToDtype + Normalize"} <= steps
    resize = {r["input"] for r in loader if r["step"] == "resize (antialias)"}
    assert resize == {"640x480", "1920x1080"}
    for r in loader:
        assert r["expected_ms_per_image"] == pytest.approx(r["probability"] * r["ms_per_image"])
    device = {r["module"]: r for r in report["results"]["device"]}
    assert {"DeviceNormalize", "DeviceAugment (defaults)"} <= set(device)
    for r in device.values():
        assert r["ms_per_image"] == pytest.approx(r["ms_per_batch"] / 2)


def test_train_step_budget_skips_and_smp_absent(
    mods: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mods["_common"], "smp_available", lambda: False)
    out = tmp_path / "ts.json"
    argv = [*CPU, "--size", "32", "--tiny-models", "--budget-s", "1e-9", "--max-batch"]
    assert mods["train_step"].main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["complete"] is True
    assert report["results"] == []
    reasons = [s["reason"] for s in report["skipped"]]
    assert any("segmentation_models_pytorch is not importable" in r for r in reasons)
    assert reasons.count("time budget") == 2  # v3 and deeplabv3, fp32
    assert reasons.count("time budget (largest batch)") == 2
    assert report["settings"]["budget_s"] == pytest.approx(1e-9)


def test_epoch_budget_stops_after_first_epoch(mods: dict[str, ModuleType], tmp_path: Path) -> None:
    out = tmp_path / "epoch.json"
    argv = [*CPU, "--n-images", "8", "--source-size", "48x32", "--image-size", "32"]
    argv += ["--batch-size", "2", "--epochs", "3", "--budget-s", "1e-9"]
    assert mods["epoch"].main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    (row,) = report["results"]["epochs"]
    assert report["stopped_by_budget"] is True
    assert report["complete"] is True
    assert report["results"]["estimate_50_epochs_s"] == pytest.approx(50 * row["wall_s"])


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("train_step", ["--variants", "fp8"], "unknown"),
        ("train_step", ["--max-batch-variants", "bf16_cl_compile", "--tiny-models"], "compiled"),
        ("inference", ["--modes", "plain,slow"], "--modes: unknown"),
        ("inference", ["--models", "unet"], "--models: unknown"),
        ("inference", ["--backends", "tensorrt"], "--backends: unknown"),
        ("inference", ["--backends", "all", "--models", "unet"], r"'unet'; expected one of"),
        ("predict_folder", ["--models", "unet"], r"'unet'; expected one of \['v3'"),
    ],
)
def test_scripts_reject_bad_choices(
    mods: dict[str, ModuleType], tmp_path: Path, script: str, argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit, match=message):
        mods[script].main([*CPU, *argv, "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("train_step", ["--repeats", "0"], "--repeats: expected ints >= 1, got 0"),
        ("inference", ["--batches", "1,-2"], "--batches: expected ints >= 1"),
        ("inference", ["--sizes", "big"], "expected S or AxB"),
        ("epoch", ["--warmup", "1"], "unrecognized arguments: --warmup"),
        ("epoch", ["--source-size", "64x0"], "expected S or AxB"),
        ("epoch", ["--cache", "maybe"], "invalid choice: 'maybe'"),
        ("data", ["--workers", "-1"], "--workers: expected ints >= 0"),
        ("data", ["--device", "cuda"], "unrecognized arguments: --device"),
        ("augment", ["--threads", "-1"], "--threads: expected ints >= 0"),
    ],
)
def test_shared_flags_are_checked(
    mods: dict[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    script: str,
    argv: list[str],
    message: str,
) -> None:
    """Every script parses its flags with the harness: bad counts are usage errors (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        mods[script].main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "script", ["train_step", "inference", "epoch", "data", "augment", "predict_folder"]
)
def test_every_script_takes_the_shared_flags(
    mods: dict[str, ModuleType], capsys: pytest.CaptureFixture[str], script: str
) -> None:
    with pytest.raises(SystemExit):
        mods[script].main(["--help"])
    text = capsys.readouterr().out
    shared = {"--full", "--threads", "--out", f"benchmarks/results/{script}.json"}
    shared |= {"--device"} if script != "data" else set()
    shared |= {"--budget-s"} if script in ("train_step", "inference", "epoch") else set()
    models = ("train_step", "inference", "predict_folder")
    shared |= {"--tiny-models", "--models"} if script in models else set()
    assert {flag for flag in shared if flag not in text} == set()


def test_parallel_synthetic_set(mods: dict[str, ModuleType], tmp_path: Path) -> None:
    root = mods["epoch"].make_synthetic(tmp_path / "suim", 9, (32, 24), workers=2)
    images = sorted(p.stem for p in (root / "train_val" / "images").glob("*.jpg"))
    masks = sorted(p.stem for p in (root / "train_val" / "masks").glob("*.bmp"))
    assert len(images) == 9
    assert images == masks
    assert all(s.split("_")[0] in {"d", "f", "n", "w"} and s.endswith("_") for s in images)
    assert (root / "TEST" / "images").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suim"]  # chunk folders removed


# --------------------------------------------------------------------------- the harness


def test_time_interleaved_alternates_and_separates_warmup(mods: dict[str, ModuleType]) -> None:
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in ("a", "b")}
    out = mods["_common"].time_interleaved(fns, device=torch.device("cpu"), warmup=1, repeats=3)
    assert calls == ["a", "b"] * 4  # one call of each per round, warm-up round first
    for r in out.values():
        assert len(r["warmup_s"]) == 1
        assert len(r["runs_s"]) == 3
        assert r["min_s"] <= r["median_s"]
        assert r["peak_memory_mib"] is None  # CPU
    single = mods["_common"].time_repeats(
        lambda: time.sleep(0.002), device=torch.device("cpu"), warmup=0, repeats=3
    )
    assert single["median_s"] >= 0.002


def test_budget(mods: dict[str, ModuleType]) -> None:
    budget = mods["_common"].Budget
    assert budget(None).allows(1e9)
    assert not budget(None).exceeded()
    assert budget(0).seconds is None
    b = budget(0.05)
    assert b.allows(0.01)
    assert not b.exceeded()
    time.sleep(0.06)
    assert b.exceeded()
    assert not b.allows(0.0)
    assert b.remaining() < 0


def test_largest_batch(mods: dict[str, ModuleType]) -> None:
    largest = mods["_common"].largest_batch
    calls: list[int] = []

    def fits(b: int) -> bool:
        calls.append(b)
        return b <= 37

    assert largest(fits, start=6) == 37
    assert calls[:4] == [6, 12, 24, 48]
    assert largest(lambda b: b <= 1000, start=6, limit=1024) == 1000
    assert largest(lambda b: True, start=6, limit=100) == 100
    assert largest(lambda b: False, start=6) is None
    calls.clear()
    assert largest(lambda b: calls.append(b) or b <= 100, start=6, tolerance=0.1) in range(91, 101)
    coarse = len(calls)
    calls.clear()
    assert largest(lambda b: calls.append(b) or b <= 100, start=6) == 100
    assert len(calls) > coarse


def test_write_report_is_atomic_and_print_table(
    mods: dict[str, ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = mods["_common"]
    path = tmp_path / "sub" / "r.json"
    common.write_report(path, "b", {"m": 1}, {"s": 2}, [3], complete=True)
    data = json.loads(path.read_text(encoding="utf-8"))
    head = {"benchmark": "b", "machine": {"m": 1}, "settings": {"s": 2}}
    assert data == {**head, "results": [3], "complete": True}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]
    common.print_table(["a", "bb"], [])
    assert capsys.readouterr().out.split() == ["a", "bb"]


@pytest.mark.slow
def test_real_models_flops(mods: dict[str, ModuleType]) -> None:
    """The real factories: V3 needs ~84 forward GFLOPs per 384x384 image, DeepLabV3 ~184."""
    common = mods["_common"]
    factories = common.model_factories()
    v3 = common.train_step_flops(factories["v3"], (384, 384))
    dl = common.train_step_flops(factories["deeplabv3"], (384, 384))
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


# --------------------------------------------------------------------------- report.py


def test_report_tables_hold_the_json_values(
    mods: dict[str, ModuleType],
    cpu_reports: dict[str, dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reports = {**cpu_reports, "train_step": _with_bf16_cl(cpu_reports["train_step"])}
    text = _render(mods, _write(tmp_path, reports), capsys)
    fmt = mods["report"].fmt
    ts = cpu_reports["train_step"]
    assert ts["machine"]["device_name"] in text
    assert f"torch {ts['machine']['torch']}" in text
    for r in ts["results"]:
        assert f"| {fmt(r['images_per_s'])} |" in text
    v3 = _row(ts["results"], model="v3", variant="fp32")
    dl = _row(ts["results"], model="deeplabv3", variant="fp32")
    ratio = v3["images_per_s"] / dl["images_per_s"]
    assert f"{ratio:.2f}x ({v3['images_per_s']:.1f} vs {dl['images_per_s']:.1f} img/s" in text
    ep = cpu_reports["epoch"]["results"]
    assert f"50-epoch estimate: {ep['estimate_50_epochs_s'] / 60:.1f} min" in text
    for e in ep["epochs"]:
        assert f"| {e['epoch']} | {fmt(e['wall_s'])} |" in text
    for r in cpu_reports["inference"]["v3_vs_deeplabv3"]:
        assert f"| {fmt(r['v3_ms'])} | {fmt(r['deeplabv3_ms'])} | {fmt(r['ratio'])} |" in text
    for r in cpu_reports["data"]["results"]:
        assert f"| {r['source']} | {r['pipeline']} | {r['workers']} |" in text
    for part, rows in cpu_reports["augment"]["results"].items():
        assert f"Augmentation, {part} side" in text
        for r in rows:
            assert f"| {fmt(r.get('step') or r.get('module'))} |" in text
    # A CPU run of the GPU targets: a verdict, but marked as indicative only.
    assert "indicative only: not a GPU run; tiny stand-in models; size 32x32" in text
    assert "not measured (no CUDA peak memory on the CPU)" in text
    assert "Tiny stand-in models (a plumbing check)." in text


def test_gpu_speed_and_memory_verdicts(
    mods: dict[str, ModuleType],
    cpu_reports: dict[str, dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ts = _as_gpu(_with_bf16_cl(cpu_reports["train_step"]))
    ts["settings"].update(image_size=[384, 384], batch_size=6, tiny_models=False)
    figures = {  # (model, variant): (images/s, peak MiB)
        ("v3", "fp32"): (150.0, 8000.0),
        ("deeplabv3", "fp32"): (100.0, 9000.0),
        ("v3", "bf16_cl"): (200.0, 4000.0),  # 1.33x DeepLabV3: not met; memory 0.50x: met
        ("deeplabv3", "bf16_cl"): (150.0, 4600.0),  # memory 0.51x: not met
    }
    for r in ts["results"]:
        r["batch"] = 6
        r["images_per_s"], r["peak_memory_mib"] = figures[(r["model"], r["variant"])]
    reports = mods["report"].load_reports([_write(tmp_path, {"train_step": ts})])
    targets = {t.name: t for t in mods["report"].evaluate_targets(reports)}
    assert all(t.gpu for t in targets.values())
    fp32 = targets["V3 training images/s >= 1.5x DeepLabV3-ResNet50's (fp32, batch 6)"]
    cl = targets["V3 training images/s >= 1.5x DeepLabV3-ResNet50's (bf16_cl, batch 6)"]
    assert (fp32.met, fp32.applicable, fp32.verdict) == (True, True, "**met**")  # 1.50x
    assert fp32.measured.startswith("1.50x (150.0 vs 100.0 img/s at 384x384)")
    assert (cl.met, cl.applicable, cl.verdict) == (False, True, "**not met**")
    assert cl.measured.startswith("1.33x")
    mem = "bf16 + channels_last peak memory <= 0.5x fp32's (batch 6)"
    v3_mem, dl_mem = targets[f"V3 {mem}"], targets[f"DeepLabV3-ResNet50 {mem}"]
    assert (v3_mem.met, v3_mem.measured) == (True, "0.50x (4000 vs 8000 MiB)")
    assert (dl_mem.met, dl_mem.verdict) == (False, "**not met**")
    text = _render(mods, tmp_path, capsys)
    assert "| 1.33x (200.0 vs 150.0 img/s at 384x384) | **not met** |" in text
    assert "NVIDIA H100 80GB HBM3" in text
    assert "CUDA 13.0" in text


def test_gpu_epoch_verdicts(
    mods: dict[str, ModuleType], cpu_reports: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    report = mods["report"]

    def target(est: float, device: str) -> Any:
        ep = _as_gpu(cpu_reports["epoch"], device)
        ep["settings"].update(
            train_images=1220, val_images=305, source_size_wh=[640, 480], image_size=384
        )
        ep["settings"]["model_size"] = "design"
        ep["results"]["estimate_50_epochs_s"] = est
        (t,) = report.evaluate_targets(report.load_reports([_write(tmp_path, {"epoch": ep})]))
        return t

    met = target(590.0, "NVIDIA H100 80GB HBM3")
    assert (met.met, met.applicable, met.verdict) == (True, True, "**met**")
    assert met.measured.startswith("9.8 min")
    late = target(610.0, "NVIDIA H100 80GB HBM3")
    assert (late.met, late.verdict) == (False, "**not met**")
    other = target(590.0, "NVIDIA H200")
    assert other.met is True
    assert not other.applicable
    assert "ran on NVIDIA H200, target names an H100" in other.verdict


def test_cpu_target_verdicts(
    mods: dict[str, ModuleType], cpu_reports: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    report = mods["report"]
    inf = copy.deepcopy(cpu_reports["inference"])
    inf["settings"]["tiny_models"] = False
    ratio = inf["v3_vs_deeplabv3"][0]
    inf["v3_vs_deeplabv3"] = [ratio]
    ratio.update(size=[384, 384], batch=1, mode="plain", v3_ms=650.0, deeplabv3_ms=1000.0)
    ratio["ratio"] = 0.65
    data = copy.deepcopy(cpu_reports["data"])
    data["results"] = [
        {**data["results"][0], "source": "synthetic 1920x1080", "pipeline": p, "workers": 0}
        for p in ("suimseg", "suimseg + cache, ep. 2+")
    ]
    data["results"][0].update(speedup_vs_naive=2.6, images_per_s=52.0)
    data["results"][1].update(speedup_vs_naive=9.5, images_per_s=380.0)
    folder = _write(tmp_path, {"inference": inf, "data": data})
    targets = report.evaluate_targets(report.load_reports([folder]))
    assert [(t.met, t.applicable, t.gpu) for t in targets] == [
        (False, True, False),
        (True, True, False),
        (False, True, False),
    ]
    assert targets[0].measured.startswith("0.650x (650 vs 1000 ms")
    assert targets[2].measured == "9.50x (380.0 img/s)"


def test_report_marks_partial_runs_and_skips(
    mods: dict[str, ModuleType],
    cpu_reports: dict[str, dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ts = copy.deepcopy(cpu_reports["train_step"])
    ts["complete"] = False
    ts["skipped"] = [{"model": "smp_unet", "reason": "segmentation_models_pytorch absent"}]
    text = _render(mods, _write(tmp_path, {"train_step": ts}), capsys)
    assert "*Partial: the run stopped before it finished" in text
    assert "Skipped: model smp_unet (segmentation_models_pytorch absent)." in text
    assert "## CPU targets\n\n(no report holds a figure for these targets)" in text


def test_report_bad_inputs(
    mods: dict[str, ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = mods["report"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.load_reports([tmp_path / "missing"])
    (tmp_path / "cut.json").write_text('{"benchmark": ', encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        report.load_reports([tmp_path / "cut.json"])
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a benchmark report"):
        report.load_reports([tmp_path / "list.json"])
    with pytest.raises(SystemExit) as exc:
        report.main([str(tmp_path / "list.json")])
    assert exc.value.code == 2
    assert "expected a benchmark report" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "empty")])
    assert "no *.json reports" in capsys.readouterr().err


@pytest.mark.skipif(
    not list((BENCH / "results").glob("*.json")), reason="no benchmarks/results/*.json here"
)
def test_report_reads_the_local_results_folder(
    mods: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _render(mods, BENCH / "results", capsys)
    assert "## GPU targets" in text
    assert "## CPU targets" in text
