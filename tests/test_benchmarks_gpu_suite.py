"""Tests of the GPU suite's pieces: time budgets, report.py's tables and target verdicts.

The JSON reports come from running the benchmark scripts themselves, tiny, on the CPU
(``--tiny-models``, 32x32); target verdicts are then checked by editing figures in those
reports into GPU-like ones (device, sizes, timings), so the schema is always the scripts'.
The end-to-end run of ``benchmarks/gpu_suite.sh --quick`` is marked slow.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = ("_common", "train_step", "inference", "epoch", "data")


@pytest.fixture(scope="module")
def mods() -> Iterator[dict[str, ModuleType]]:
    """The benchmark scripts, imported with benchmarks/ on sys.path."""
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
    """JSON reports written by tiny CPU runs of train_step, epoch, inference and data."""
    out = tmp_path_factory.mktemp("reports")
    common = ["--device", "cpu", "--threads", "1"]
    ts = ["--size", "32", "--batch", "2", "--variants", "fp32,bf16_cl", "--tiny-models"]
    ts += ["--warmup", "0", "--repeats", "1", "--steps", "1", "--models", "v3,deeplabv3"]
    assert mods["train_step"].main(common + ts + ["--out", str(out / "train_step.json")]) == 0
    ep = ["--n-images", "8", "--source-size", "48x32", "--image-size", "32", "--epochs", "2"]
    ep += ["--batch-size", "2"]
    assert mods["epoch"].main(common + ep + ["--out", str(out / "epoch.json")]) == 0
    inf = ["--sizes", "32", "--batches", "1", "--modes", "plain", "--tiny-models"]
    inf += ["--warmup", "0", "--repeats", "1"]
    assert mods["inference"].main(common + inf + ["--out", str(out / "inference.json")]) == 0
    data = ["--n-images", "2", "--repeats", "1", "--out", str(out / "data.json")]
    assert mods["data"].main(data) == 0
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in out.glob("*.json")}


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


def _row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    (row,) = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return row


# --------------------------------------------------------------------------- the scripts


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


def test_largest_batch_tolerance(mods: dict[str, ModuleType]) -> None:
    largest = mods["_common"].largest_batch
    calls: list[int] = []

    def fits(b: int) -> bool:
        calls.append(b)
        return b <= 100

    assert largest(fits, start=6, tolerance=0.1) in range(91, 101)
    coarse = len(calls)
    calls.clear()
    assert largest(fits, start=6) == 100
    assert len(calls) > coarse


def test_train_step_budget_skips_and_smp_absent(
    mods: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ts = mods["train_step"]
    monkeypatch.setattr(ts, "smp_available", lambda: False)
    out = tmp_path / "ts.json"
    argv = ["--device", "cpu", "--size", "32", "--tiny-models", "--budget-s", "1e-9"]
    assert ts.main([*argv, "--max-batch", "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["complete"] is True
    assert report["results"] == []
    reasons = [s["reason"] for s in report["skipped"]]
    assert any("segmentation_models_pytorch is not importable" in r for r in reasons)
    assert reasons.count("time budget") == 2  # v3 and deeplabv3, fp32
    assert reasons.count("time budget (largest batch)") == 2
    assert report["settings"]["budget_s"] == pytest.approx(1e-9)


def test_train_step_rejects_compiled_max_batch_variant(
    mods: dict[str, ModuleType], tmp_path: Path
) -> None:
    argv = ["--device", "cpu", "--max-batch-variants", "bf16_cl_compile", "--tiny-models"]
    with pytest.raises(SystemExit, match="max-batch-variants"):
        mods["train_step"].main([*argv, "--out", str(tmp_path / "x.json")])


def test_epoch_budget_stops_after_first_epoch(mods: dict[str, ModuleType], tmp_path: Path) -> None:
    out = tmp_path / "epoch.json"
    argv = ["--device", "cpu", "--threads", "1", "--n-images", "8", "--source-size", "48x32"]
    argv += ["--image-size", "32", "--batch-size", "2", "--epochs", "3", "--budget-s", "1e-9"]
    assert mods["epoch"].main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    (row,) = report["results"]["epochs"]
    assert report["stopped_by_budget"] is True
    assert report["complete"] is True
    assert report["results"]["estimate_50_epochs_s"] == pytest.approx(50 * row["wall_s"])


def test_parallel_synthetic_set(mods: dict[str, ModuleType], tmp_path: Path) -> None:
    root = mods["epoch"].make_synthetic(tmp_path / "suim", 9, (32, 24), workers=2)
    images = sorted(p.stem for p in (root / "train_val" / "images").glob("*.jpg"))
    masks = sorted(p.stem for p in (root / "train_val" / "masks").glob("*.bmp"))
    assert len(images) == 9
    assert images == masks
    assert all(s.split("_")[0] in {"d", "f", "n", "w"} and s.endswith("_") for s in images)
    assert (root / "TEST" / "images").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suim"]  # chunk folders removed


# --------------------------------------------------------------------------- report.py


def test_report_tables_hold_the_json_values(
    mods: dict[str, ModuleType],
    cpu_reports: dict[str, dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _render(mods, _write(tmp_path, cpu_reports), capsys)
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
    ratio_row = cpu_reports["inference"]["v3_vs_deeplabv3"][0]
    assert f"| {fmt(ratio_row['v3_ms'])} | {fmt(ratio_row['deeplabv3_ms'])} |" in text
    for r in cpu_reports["data"]["results"]:
        assert f"| {r['source']} | {r['pipeline']} | {r['workers']} |" in text
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
    ts = _as_gpu(cpu_reports["train_step"])
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
    targets = {t.name: t for t in mods["report"].evaluate_targets(reports, "gpu")}
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
    (ratio,) = inf["v3_vs_deeplabv3"]
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
    targets = report.evaluate_targets(report.load_reports([folder]), "cpu")
    assert [(t.met, t.applicable) for t in targets] == [(False, True), (True, True), (False, True)]
    assert targets[0].measured.startswith("0.650x (650 vs 1000 ms")
    assert targets[2].measured == "9.50x (380.0 img/s)"
    assert report.evaluate_targets(report.load_reports([folder]), "gpu") == []


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
    with pytest.raises(ValueError, match="which: expected"):
        report.evaluate_targets([], "tpu")
    with pytest.raises(SystemExit) as exc:
        report.main([str(tmp_path / "list.json")])
    assert exc.value.code == 2
    assert "expected a benchmark report" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "empty")])
    assert "no *.json reports" in capsys.readouterr().err


def test_report_writes_markdown_file(
    mods: dict[str, ModuleType], cpu_reports: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    folder = _write(tmp_path / "in", {"epoch": cpu_reports["epoch"]})
    out = tmp_path / "md" / "report.md"
    assert mods["report"].main([str(folder), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("## Machines")
    assert "## GPU targets" in text
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.md"]


@pytest.mark.skipif(not (BENCH / "augment.py").is_file(), reason="no benchmarks/augment.py")
def test_report_renders_augment_tables(
    mods: dict[str, ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "augment.json"
    argv = ["--device", "cpu", "--repeats", "1", "--warmup", "0", "--n-images", "1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCH))
        augment = importlib.import_module("augment")
        try:
            assert augment.main([*argv, "--batch", "2", "--out", str(out)]) == 0
        finally:
            sys.modules.pop("augment", None)
    data = json.loads(out.read_text(encoding="utf-8"))
    text = _render(mods, tmp_path, capsys)
    fmt = mods["report"].fmt
    for part, rows in data["results"].items():
        assert f"Augmentation, {part} side:" in text
        for r in rows:
            first = next(iter(r.values()))
            assert f"| {fmt(first)} |" in text


@pytest.mark.skipif(
    not list((BENCH / "results").glob("*.json")), reason="no benchmarks/results/*.json here"
)
def test_report_reads_the_checked_in_results_folder(
    mods: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _render(mods, BENCH / "results", capsys)
    assert "## GPU targets" in text
    assert "## CPU targets" in text


# --------------------------------------------------------------------------- the suite


def _suite(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    return subprocess.run(
        ["bash", str(BENCH / "gpu_suite.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
        check=False,
    )


def test_suite_rejects_bad_arguments(tmp_path: Path) -> None:
    bad = _suite("--bogus", "--out", str(tmp_path))
    assert bad.returncode == 2
    assert "unknown argument '--bogus'" in bad.stderr
    budget = _suite("--budget-s", "soon", "--out", str(tmp_path))
    assert budget.returncode == 2
    assert "--budget-s must be a whole number" in budget.stderr
    quick = _suite(env={"SUIMSEG_SUITE_QUICK": "yes"})
    assert quick.returncode == 2
    assert "SUIMSEG_SUITE_QUICK must be 0 or 1" in quick.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_suite_quick_end_to_end(tmp_path: Path) -> None:
    """``gpu_suite.sh --quick``: every stage writes its JSON, the report is printed."""
    out = tmp_path / "out"
    # A generous budget: the quick run takes about 1-1.5 min, more on a loaded machine.
    run = _suite("--quick", "--out", str(out), env={"SUIMSEG_SUITE_BUDGET_S": "300"}, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:]
    names = {p.name for p in out.iterdir()}
    required = {"suite.log", "suite.json", "train_step.json", "epoch.json", "inference.json"}
    required |= {"epoch_device.json", "data.json"}
    assert names - {"augment.json"} == required  # augment: if augment.py exists
    assert len(names) <= 8  # the device tool brings back at most 8 files
    suite = json.loads((out / "suite.json").read_text(encoding="utf-8"))
    stages = {s["stage"]: s for s in suite["results"]}
    for name in ("env", "train_step", "epoch", "inference", "epoch_device", "data"):
        assert stages[name]["status"] == "ok", stages[name]
    device_run = json.loads((out / "epoch_device.json").read_text(encoding="utf-8"))
    assert device_run["settings"]["augment_on"] == "device"
    assert device_run["settings"]["cache"] == "shared"
    assert stages["train_step"]["json"] == "train_step.json"
    assert suite["environment"]["torch"]
    log = (out / "suite.log").read_text(encoding="utf-8")
    assert "## GPU targets" in log
    assert "=== done in" in log
    assert "(the suite's environment probe): python" in log
    for name in ("train_step", "epoch", "inference", "data"):
        data = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        assert data["machine"]["cuda"] is False
        assert data.get("complete", True) is True
