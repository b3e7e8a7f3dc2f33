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
import json
import os
import re
import runpy
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# name -> (extra argv, substrings the output must contain, files that must exist after).
# The fast runs shrink the documented defaults (fewer images and epochs, smaller inputs);
# the slow tests below run the defaults and check that the models learn.
SMALL = ["--n-images", "12", "--image-size", "64"]
RUNS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "quickstart.py": (
        ["--out", "{tmp}/out"],
        [
            "model input (1, 3, 64, 64) -> logits (1, 8, 64, 64), resized to (1, 8, 120, 160)",
            "overlay written to",
        ],
        ["out/overlay.png"],
    ),
    "custom_training_loop.py": (
        ["--out", "{tmp}/out", "--epochs", "1", *SMALL],
        ["epoch 1/1", "val mIoU", "best val mIoU", "test mIoU", "majority-class baseline"],
        ["out/best.pt"],
    ),
    "trainer.py": (
        ["--out", "{tmp}/out", "--epochs", "1", *SMALL],
        ["epoch 1/1", "history: 1 epochs", "test set, best checkpoint", "majority-class"],
        ["out/best.pt", "out/last.pt", "out/history.jsonl", "out/history.csv"],
    ),
    "ddp_torchrun.py": (
        ["--out", "{tmp}/out", "--epochs", "1"],
        ["world size 1", "1 epochs"],
        ["out/best.pt"],
    ),
    "tta_ensemble.py": (
        ["--out", "{tmp}/out", "--epochs", "1", *SMALL],
        ["| mIoU |", "ensemble + TTA", "SUIM-paper protocol", "majority-class baseline"],
        [f"out/{n}.json" for n in ("plain", "tta", "ensemble", "ensemble_tta")]
        + ["out/model0.pt", "out/model1.pt"],
    ),
    "finetune_other_dataset.py": (
        ["--out", "{tmp}/out", "--epochs", "1", "--pretrain-epochs", "1", *SMALL],
        ["transferred", "['head.bias', 'head.weight']", "coral", "epoch 1/1", "test mIoU"],
        ["out/best.pt"],
    ),
    "lightning_train.py": (
        ["--out", "{tmp}/out"],
        ["output folder:", "val mIoU", "test mIoU", "['config.json', 'model.safetensors']"],
        ["out/pretrained/config.json", "out/pretrained/model.safetensors"],
    ),
}
_MIOU = re.compile(r"test mIoU (?P<model>[\d.]+)%.*? vs majority-class baseline (?P<base>[\d.]+)%")


def _scratch(tmp_path: Path) -> Path:
    """The run's TMPDIR: a folder of its own, so leftovers can be seen."""
    scratch = tmp_path / "tmpdir"
    scratch.mkdir(exist_ok=True)
    return scratch


# Examples that need an optional extra: their runs are skipped without it (--help still runs).
NEEDS: dict[str, str] = {"lightning_train.py": "lightning"}


def _missing_extra(name: str) -> str | None:
    module = NEEDS.get(name)
    return module if module and importlib.util.find_spec(module) is None else None


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TMPDIR=str(_scratch(tmp_path)))
    # PyTorch's own cache folder (created by the optimizer step, not by the examples)
    # defaults to $TMPDIR/torchinductor_<user>; keep it out of the leftovers check.
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "torchinductor")
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
    # One named output folder, printed at the start and the end; no temporary leftovers.
    out = (tmp_path / "out").resolve()
    assert output.count(f"output folder: {out}") == 2, output
    leftovers = sorted(p.name for p in _scratch(tmp_path).iterdir())
    assert not leftovers, f"{name} left temporary files behind: {leftovers}"


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
            str(tmp_path / "out"),
        ],
        tmp_path,
        timeout=300,
    )
    assert "world size 2" in output
    assert "epoch 2/2" in output
    assert (tmp_path / "out" / "best.pt").is_file()
    assert (tmp_path / "out" / "history.jsonl").is_file()
    # Rank 0 removed the synthetic data. torchrun's agent keeps its own log folder
    # (torchelastic_*) in the same TMPDIR; that one is not the example's.
    left = [p for p in _scratch(tmp_path).iterdir() if not p.name.startswith("torchelastic_")]
    assert not left


def _beats_majority(model: float, baseline: float) -> bool:
    """The margin the training examples promise: 2x the baseline and +15 points."""
    return model >= 2 * baseline and model >= baseline + 15


# Examples whose documented default settings must train a model that learns.
LEARNING = ["custom_training_loop.py", "finetune_other_dataset.py", "trainer.py", "tta_ensemble.py"]


@pytest.mark.slow
@pytest.mark.parametrize("name", LEARNING)
def test_example_defaults_beat_majority_baseline(name: str, tmp_path: Path) -> None:
    output = _run(
        [sys.executable, str(EXAMPLES / name), "--out", str(tmp_path / "out")],
        tmp_path,
        timeout=3600,
    )
    m = _MIOU.search(output)
    assert m is not None, f"no 'test mIoU ... vs majority-class baseline' line:\n{output}"
    model, baseline = float(m["model"]), float(m["base"])
    print(f"{name}: test mIoU {model:.2f}% vs majority-class baseline {baseline:.2f}%")
    assert _beats_majority(model, baseline), f"{name}: {model}% vs {baseline}%:\n{output}"


QUICKSTART_CLI = re.compile(r"```bash\n(suimseg synth .*?)```", re.S)


@pytest.mark.slow
def test_quickstart_cli_commands_beat_majority_baseline(tmp_path: Path) -> None:
    """docs/quickstart.md's synth/train/evaluate commands, run twice in one folder."""
    from suimseg import CLASS_NAMES, SUIMDataset
    from suimseg.metrics import SegmentationMetrics

    page = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    block = QUICKSTART_CLI.search(page)
    assert block is not None, "the quickstart lost its 'suimseg synth ...' command block"
    commands = [c.split() for c in block[1].replace("\\\n", " ").strip().splitlines()]
    assert [c[:2] for c in commands] == [
        ["suimseg", "synth"],
        ["suimseg", "train"],
        ["suimseg", "evaluate"],
    ]
    for _ in range(2):  # the second round re-runs into the same folders
        for command in commands:
            _run([sys.executable, "-m", "suimseg", *command[1:]], tmp_path, timeout=3600)

    result = json.loads((tmp_path / "runs" / "cli" / "eval_test.json").read_text())
    model = 100 * result["metrics"]["miou"]
    data = tmp_path / "suim-synth"
    counts = SUIMDataset(data, "train").class_pixel_counts()
    confusion = torch.zeros(8, 8, dtype=torch.int64)
    confusion[:, int(counts.argmax())] = torch.from_numpy(
        SUIMDataset(data, "test").class_pixel_counts()
    )
    baseline = 100 * SegmentationMetrics.from_confusion(confusion, CLASS_NAMES).miou
    print(f"quickstart CLI: test mIoU {model:.2f}% vs majority-class baseline {baseline:.2f}%")
    assert _beats_majority(model, baseline), f"test mIoU {model:.2f}% vs {baseline:.2f}%"
