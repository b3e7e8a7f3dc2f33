"""Tests of the `suimseg` command line (the foundation commands)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import suimseg
from suimseg.app.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"suimseg {suimseg.__version__}"


def test_info_prints_versions_cuda_and_class_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    import torch
    import torchvision

    assert f"torch        {torch.__version__}" in out
    assert f"torchvision  {torchvision.__version__}" in out
    assert "CUDA" in out
    for c in suimseg.classes.SUIM_CLASSES:
        assert c.code in out
        assert c.name in out
    assert "(255,   0, 255)" in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "a command is required" in capsys.readouterr().err


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_python_dash_m_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "suimseg", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"suimseg {suimseg.__version__}"


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from suimseg.errors import DatasetNotFoundError

    (tmp_path / "best.pt").write_bytes(b"not read: the data folder is checked first")
    argv = ["evaluate", "--checkpoint", str(tmp_path / "best.pt"), "--data", str(tmp_path / "x")]
    assert main(argv) == 1
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(DatasetNotFoundError, match="train_val"):
        main(["--debug", *argv])
