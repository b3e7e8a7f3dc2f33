"""Every script in examples/ runs, with its small default settings, as a user would run it.

Each example is executed in a fresh ``python`` subprocess (so a renamed argument or a
broken import fails here, not for a user), with one BLAS/OpenMP thread so the tiny models
do not oversubscribe a shared CPU, and ``TMPDIR`` pointed at the test's folder so their
scratch data is cleaned up. The runs start together in a module-scoped pool, as many at
a time as there are CPU cores, so the interpreter start-up and import time overlap.
``--help`` is checked in-process (cheap). The two-process torchrun run of the DDP example
is marked slow; its single-process run is not.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# name -> (extra argv, substrings the output must contain, files that must exist after)
RUNS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "quickstart.py": (
        ["--out", "{tmp}/overlay.png"],
        ["logits (1, 8, 120, 160)", "overlay written to"],
        ["overlay.png"],
    ),
    "custom_training_loop.py": (
        ["--out", "{tmp}/run", "--epochs", "1"],
        ["epoch 1/1", "val mIoU", "best val mIoU"],
        ["run/best.pt"],
    ),
    "trainer.py": (
        ["--out", "{tmp}/run", "--epochs", "1"],
        ["epoch 1/1", "history: 1 epochs", "test set, best checkpoint", "mIoU"],
        ["run/best.pt", "run/last.pt", "run/history.jsonl", "run/history.csv"],
    ),
    "ddp_torchrun.py": (
        ["--out", "{tmp}/run", "--epochs", "1"],
        ["world size 1", "1 epochs"],
        ["run/best.pt"],
    ),
    "tta_ensemble.py": (
        ["--out", "{tmp}/results"],
        ["| mIoU |", "ensemble + TTA", "SUIM-paper protocol"],
        ["results/plain.json", "results/ensemble.json"],
    ),
    "finetune_other_dataset.py": (
        ["--out", "{tmp}/run", "--epochs", "1"],
        ["transferred", "['head.bias', 'head.weight']", "coral", "epoch 1/1"],
        ["run/best.pt"],
    ),
    "lightning_train.py": (
        ["--out", "{tmp}/run"],
        ["output folder:", "val mIoU", "test mIoU", "['config.json', 'model.safetensors']"],
        ["run/pretrained/config.json", "run/pretrained/model.safetensors"],
    ),
}

# Examples that need an optional extra: their runs are skipped without it (--help still runs).
NEEDS: dict[str, str] = {"lightning_train.py": "lightning"}


def _missing_extra(name: str) -> str | None:
    module = NEEDS.get(name)
    return module if module and importlib.util.find_spec(module) is None else None


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TMPDIR=str(tmp_path))
    env.pop("WORLD_SIZE", None)
    return env


def _run(cmd: list[str], tmp_path: Path, timeout: float = 300) -> str:
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{output}"
    return output


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_help(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit, match="0"):
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    assert "Full scale:" in out  # the --help says how to run at full scale


@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_states_full_scale_command(name: str) -> None:
    source = (EXAMPLES / name).read_text(encoding="utf-8")
    docstring = source.split('"""')[1]
    assert "Full scale" in docstring
    assert "SUIM" in docstring
    assert f"examples/{name}" in docstring  # the exact command to run it


@pytest.fixture(scope="module")
def example_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[Path, Future[str]]]]:
    """Start every example's small run at once; each test waits for its own."""
    workers = max(1, min(len(RUNS), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        runs: dict[str, tuple[Path, Future[str]]] = {}
        for name, (argv, _, _) in RUNS.items():
            if _missing_extra(name):
                continue
            tmp = tmp_path_factory.mktemp(name.removesuffix(".py"))
            args = [a.replace("{tmp}", str(tmp)) for a in argv]
            runs[name] = (
                tmp,
                pool.submit(_run, [sys.executable, str(EXAMPLES / name), *args], tmp),
            )
        yield runs


@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_runs(name: str, example_runs: dict[str, tuple[Path, Future[str]]]) -> None:
    if missing := _missing_extra(name):
        pytest.skip(f"{name} needs {missing!r} (pip install 'suimseg[{missing}]')")
    _, expected, files = RUNS[name]
    tmp_path, future = example_runs[name]
    output = future.result()
    for text in expected:
        assert text in output, f"{text!r} missing from the output of {name}:\n{output}"
    for rel in files:
        assert (tmp_path / rel).is_file(), f"{name} did not write {rel}"


def test_example_bad_argument_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["trainer.py", "--epochs", "two"])
    with pytest.raises(SystemExit, match="2"):
        runpy.run_path(str(EXAMPLES / "trainer.py"), run_name="__main__")
    assert "invalid int value: 'two'" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_example_under_torchrun(tmp_path: Path) -> None:
    output = _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(EXAMPLES / "ddp_torchrun.py"),
            "--out",
            str(tmp_path / "run"),
        ],
        tmp_path,
        timeout=300,
    )
    assert "world size 2" in output
    assert "epoch 2/2" in output
    assert (tmp_path / "run" / "best.pt").is_file()
    assert (tmp_path / "run" / "history.jsonl").is_file()
