"""What a CLI user sees for the faults of issue #19: one line naming the cause, exit 1.

Each test drives ``suimseg`` as a user would and checks the exit status, that no
traceback reaches stderr, and that the message names the file or flag at fault.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from suimseg.app.cli import main
from suimseg.data import make_synthetic_suim
from suimseg.engine import atomic_save, make_checkpoint, read_history
from suimseg.errors import ConfigError, DatasetError, MissingDependencyError
from suimseg.inference import Predictor
from suimseg.models import UNetResAttnV3
from suimseg.models.registry import model_spec

TINY = [
    "--encoder", "resnet18", "--encoder-weights", "none", "--decoder-channels", "16,16,8,8",
    "--bridge-channels", "16", "--image-size", "32", "--device", "cpu", "--batch-size", "4",
    "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("suim")
    return make_synthetic_suim(root, n_train_val=10, n_test=3, size=(48, 40), seed=0)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("suimseg: error:")]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


def test_corrupt_file_in_a_dataloader_worker_is_one_line(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    root = Path(shutil.copytree(data_root, tmp_path / "data"))
    bad = sorted((root / "train_val" / "images").iterdir())[0]
    buf = io.BytesIO()  # a PNG under the .jpg name, its header intact and its pixels cut,
    noise = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "PNG")  # so the dataset's header check passes and
    bad.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # the worker's read fails
    shown = {}
    for workers in ("2", "0"):
        argv = ["train", "--data", str(root), "--out", str(tmp_path / f"run{workers}"), *TINY]
        assert main([*argv, "--epochs", "1", "--workers", workers]) == 1
        err = capsys.readouterr().err
        shown[workers] = _one_error_line(err)
        assert "worker" not in err
    assert bad.name in shown["2"]
    assert shown["2"] == shown["0"]  # the worker's own message, as without workers


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (DatasetError("cannot read image file a.jpg: truncated"), "a.jpg: truncated"),
        (PermissionError(13, "Permission denied", "b.png"), "Permission denied"),
        # Not constructible from one string: torch raises a RuntimeError instead.
        (MissingDependencyError("matplotlib", "plot", "plotting"), "pip install"),
    ],
)
def test_errors_re_raised_from_workers_show_the_original_message(
    error: Exception,
    shown: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torch._utils import ExceptionWrapper

    try:
        raise error
    except Exception:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")

    def plot(args: object) -> int:
        wrapper.reraise()
        return 0

    monkeypatch.setattr("suimseg.app.cli._cmd_plot", plot)
    assert main(["plot", "h.csv", "--out", "x.png"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert shown in line
    assert "Caught" not in line


def test_other_runtime_errors_from_workers_keep_their_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torch._utils import ExceptionWrapper

    try:
        raise RuntimeError("a bug in a transform")
    except RuntimeError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    monkeypatch.setattr("suimseg.app.cli._cmd_plot", lambda args: wrapper.reraise())
    with pytest.raises(RuntimeError, match="a bug in a transform"):
        main(["plot", "h.csv", "--out", "x.png"])


def test_plot_of_a_non_numeric_history_csv_names_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: an empty plot written and exit 0."""
    pytest.importorskip("matplotlib")
    history = tmp_path / "history.csv"
    history.write_text("epoch,train_loss,val_miou\n1,0.9,0.2\n2,n/a,0.3\n")
    out = tmp_path / "curves.png"
    assert main(["plot", str(history), "--out", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "history.csv:3: column 'train_loss'" in line
    assert "'n/a'" in line
    assert not out.exists()


def test_resume_into_a_folder_holding_another_run_is_refused_unless_overwrite(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: X's run silently replaced Y's checkpoints and mixed into Y's history."""
    import json
    import shutil

    x, y = tmp_path / "X", tmp_path / "Y"
    train = ["train", "--data", str(data_root), *TINY, "--workers", "0"]
    assert main([*train, "--out", str(x), "--epochs", "1"]) == 0
    shutil.copytree(x, y)  # Y: another finished run (a copy, with its own history)
    record = json.loads((y / "history.jsonl").read_text())
    (y / "history.jsonl").write_text(json.dumps({**record, "train_loss": 9.0}) + "\n")
    before = {p.name: p.read_bytes() for p in y.iterdir()}
    capsys.readouterr()
    resume = [*train, "--epochs", "2", "--resume", str(x / "last.pt")]
    assert main([*resume, "--out", str(y)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"{y} already holds a training run" in line
    assert "--overwrite" in line
    assert {p.name: p.read_bytes() for p in y.iterdir()} == before  # nothing written
    # --overwrite: Y continues X's run, with X's history (not Y's first epoch).
    assert main([*resume, "--out", str(y), "--overwrite"]) == 0
    x_history = read_history(x / "history.jsonl")
    y_history = read_history(y / "history.jsonl")
    assert [r["epoch"] for r in y_history] == [1, 2]
    assert y_history[0] == x_history[0]  # not Y's own epoch 1 (train_loss 9.0)
    # Resuming into the checkpoint's own folder stays allowed: test_recipe.py's resume test.


def _unet(in_channels: int) -> UNetResAttnV3:
    return UNetResAttnV3(
        encoder="resnet18", decoder_channels=(16, 16, 8, 8), bridge_channels=16,
        in_channels=in_channels,
    )  # fmt: skip


def test_checkpoint_expecting_other_input_channels_is_named_before_the_forward_pass(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "UNetResAttnV3.forward: expected input of shape (N, 4, H, W), got (1, 3, ...)"
    (no checkpoint named, no fix)."""
    rgbn = _unet(4)
    path = tmp_path / "rgbn.pt"
    extra = {"run_config": {"image_size": 32}}
    atomic_save(make_checkpoint(rgbn, model_spec=model_spec(rgbn), extra=extra), path)
    images = data_root / "TEST" / "images"
    commands = [
        ["predict", "--checkpoint", str(path), "--out", str(tmp_path / "p"), str(images)],
        ["evaluate", "--checkpoint", str(path), "--data", str(data_root)],
    ]
    for argv in commands:
        assert main(argv) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert f"checkpoint {path}: its model expects 4 input channels" in line
        assert "RGB (3 channels)" in line
    assert not (tmp_path / "p").exists()
    with pytest.raises(ConfigError, match=r"models\[1\]: the model expects 4 input channels"):
        Predictor([_unet(3), rgbn])


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_uses_the_models_input_channels(tmp_path: Path) -> None:
    rgbn = _unet(4)
    path = tmp_path / "rgbn.pt"
    atomic_save(make_checkpoint(rgbn, model_spec=model_spec(rgbn)), path)
    out = tmp_path / "rgbn.ts"
    assert main(["export", "--checkpoint", str(path), "--torchscript", str(out)]) == 0
    assert torch.jit.load(str(out))(torch.rand(1, 4, 64, 64)).shape == (1, 8, 64, 64)
