"""benchmarks/quantize.py (int8 vs float32 ONNX latency): one tiny CPU run, its JSON report.

Marked ``bench`` like tests/test_benchmarks_smoke.py (``pytest -m bench`` runs it); checks
the report's keys and invariants, never timings.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")),
        reason="needs the onnx extra",
    ),
]

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_quantize_report(tmp_path: Path) -> None:
    saved = {n: sys.modules.pop(n) for n in ("_common", "quantize") if n in sys.modules}
    sys.path.insert(0, str(BENCH))
    try:
        quantize = importlib.import_module("quantize")
        out = tmp_path / "quantize.json"
        argv = ["--tiny-models", "--size", "32", "--warmup", "0", "--repeats", "2",
                "--calibration-images", "2", "--threads", "1", "--out", str(out)]  # fmt: skip
        assert quantize.main(argv) == 0
    finally:
        sys.path.remove(str(BENCH))
        for n in ("_common", "quantize"):
            sys.modules.pop(n, None)
        sys.modules.update(saved)
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["benchmark"] == "suimseg int8 quantization"
    assert report["machine"]["device"] == "cpu"
    assert report["settings"]["size"] == [32, 32]
    assert report["settings"]["tiny_models"] is True
    assert report["settings"]["file_mib"]["int8"] < report["settings"]["file_mib"]["fp32"]
    rows = {r["backend"]: r for r in report["results"]}
    assert set(rows) == {"eager_fp32", "ort_fp32", "ort_int8"}
    for r in rows.values():
        assert len(r["runs_s"]) == 2
        assert r["latency_ms_median"] > 0
        assert 0.0 <= r["random_input_label_agreement_with_eager"] <= 1.0
    assert rows["ort_fp32"]["random_input_label_agreement_with_eager"] > 0.99
    assert set(report["speedup"]) >= {"int8_vs_ort_fp32", "int8_vs_eager_fp32"}
