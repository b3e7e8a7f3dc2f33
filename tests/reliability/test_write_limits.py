"""Real write failures (a file-size limit, a read-only folder): one OSError naming the target.

``torch.save`` and ``torch.jit.save`` turn a failed write into a ``RuntimeError`` with an
internal message; every suimseg writer must instead raise an ``OSError`` whose errno and
filename are the real ones (the target, never the temporary name) and keep the previous
file. The file-size limit (``ulimit -f``, ``EFBIG``) is set in a child process so that it
is a real kernel error, not a mock.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")

# One child process runs every case (starting Python and importing torch once): the setup
# imports first, then the limit, then each write on its own target in its own folder.
_CHILD_HEAD = """
import errno, json, resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
targets = json.loads(sys.argv[1])
import torch
from torch import nn
{setup}
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
results = {{}}
"""
_CHILD_CASE = """
target = Path(targets[{kind!r}])
try:
    {write}
except OSError as exc:
    results[{kind!r}] = {{"type": type(exc).__name__, "errno": exc.errno,
                         "filename": exc.filename, "text": str(exc)}}
except BaseException as exc:
    results[{kind!r}] = {{"type": type(exc).__name__, "errno": None, "filename": None,
                         "text": str(exc)}}
else:
    results[{kind!r}] = {{"type": "no error", "errno": None, "filename": None, "text": ""}}
"""
_CHILD_TAIL = "print(json.dumps(results))"

CASES = {
    "checkpoint": (
        "from suimseg.engine import atomic_save",
        "atomic_save({'w': torch.zeros(100_000)}, target)",
    ),
    "torchscript": (
        "from suimseg.inference import export_torchscript",
        "export_torchscript(nn.Conv2d(3, 64, 7), target, example_shape=(1, 3, 16, 16))",
    ),
    "json": (
        "from suimseg._atomic import atomic_write_text",
        "atomic_write_text(target, 'x' * 100_000)",
    ),
    "mask": (
        "import numpy as np\nfrom PIL import Image\nfrom suimseg.data._io import atomic_save_image",
        "atomic_save_image(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200,"
        " 3), dtype=np.uint8)), target, format='BMP')",
    ),
}


@pytest.fixture(scope="module")
def size_limited_writes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each case's target (holding b"previous" before) and what its write raised."""
    targets: dict[str, Path] = {}
    for kind in CASES:
        targets[kind] = tmp_path_factory.mktemp(f"limit-{kind}") / f"out.{kind}"
        targets[kind].write_bytes(b"previous")
    code = (
        textwrap.dedent(_CHILD_HEAD).format(setup="\n".join(s for s, _ in CASES.values()))
        + "".join(
            textwrap.dedent(_CHILD_CASE).format(kind=kind, write=write)
            for kind, (_, write) in CASES.items()
        )
        + _CHILD_TAIL
    )
    argv = [sys.executable, "-c", code, json.dumps({k: str(t) for k, t in targets.items()})]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {kind: (targets[kind], results[kind]) for kind in CASES}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_file_size_limit_is_an_oserror_naming_the_target(
    kind: str, size_limited_writes: dict[str, Any]
) -> None:
    target, result = size_limited_writes[kind]
    assert result["type"] == "OSError", result
    assert result["errno"] == errno.EFBIG, result
    assert result["filename"] == str(target), result
    assert "File too large" in result["text"]
    assert ".tmp" not in result["text"]
    assert target.read_bytes() == b"previous"  # the previous file is intact
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temporary left


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores modes")
def test_read_only_folder_is_a_permission_error_naming_the_target(tmp_path: Path) -> None:
    from suimseg._atomic import atomic_write_text

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError) as exc:
            atomic_write_text(folder / "eval.json", "{}")
    finally:
        folder.chmod(0o700)
    assert exc.value.filename == str(folder / "eval.json")


def test_an_oserror_of_the_callers_own_is_not_blamed_on_the_target(tmp_path: Path) -> None:
    from suimseg._atomic import atomic_write

    def write(fh: object) -> None:
        open(tmp_path / "missing-source", "rb")  # noqa: SIM115 - the failure is the point

    with pytest.raises(FileNotFoundError) as exc:
        atomic_write(tmp_path / "out.bin", write)  # type: ignore[arg-type]
    assert exc.value.filename == str(tmp_path / "missing-source")
    assert not (tmp_path / "out.bin").exists()


def test_cli_prints_the_target_and_the_meaning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from suimseg.app import cli
    from suimseg.app.cli import main

    def fail(_: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "last.pt"))

    monkeypatch.setattr(cli, "_cmd_info", fail)
    assert main(["info"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"suimseg: error: {tmp_path / 'last.pt'}: No space left on device"
