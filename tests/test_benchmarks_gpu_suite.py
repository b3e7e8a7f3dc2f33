"""Tests of ``benchmarks/gpu_suite.sh``: its argument checks, and (slow) a quick CPU run.

Marked ``bench`` (out of the default run; ``pytest -m bench``). The end-to-end run of
``gpu_suite.sh --quick`` is also marked slow: ``pytest -m "bench and slow"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.bench

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


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
    stages = ["train_step", "epoch", "inference", "epoch_device", "data", "augment"]
    assert names == {"suite.log", "suite.json"} | {f"{s}.json" for s in stages}
    assert len(names) <= 8  # the device tool brings back at most 8 files
    suite = json.loads((out / "suite.json").read_text(encoding="utf-8"))
    status = {s["stage"]: s for s in suite["results"]}
    for name in ["env", *stages]:
        assert status[name]["status"] == "ok", status[name]
    device_run = json.loads((out / "epoch_device.json").read_text(encoding="utf-8"))
    assert device_run["settings"]["augment_on"] == "device"
    assert device_run["settings"]["cache"] == "shared"
    assert status["train_step"]["json"] == "train_step.json"
    assert suite["environment"]["torch"]
    log = (out / "suite.log").read_text(encoding="utf-8")
    assert "## GPU targets" in log
    assert "=== done in" in log
    assert "(the suite's environment probe): python" in log
    for name in stages:
        data = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        assert data["machine"]["cuda"] is False
        assert data.get("complete", True) is True
