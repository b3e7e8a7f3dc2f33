"""`suimseg export --onnx --int8`: calibrated int8 ONNX from a checkpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from suimseg.app.cli import main

HAS_ONNX = all(
    importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime")
)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ONNX, reason="needs the onnx extra")
def test_int8_export_calibrates_on_the_runs_training_images(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx
    import onnxruntime

    data, ckpt = trained
    path = tmp_path / "model.int8.onnx"
    argv = ["export", "--checkpoint", str(ckpt), "--onnx", str(path), "--int8",
            "--calibration-images", "3"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    # The default calibration folder comes from the checkpoint's run_config (its data root),
    # and the calibration size is the training size (32), not --example-size.
    assert f"up to 3 images from {data / 'train_val' / 'images'} at 32x32" in out
    assert f"wrote {path}" in out
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(path)).graph.node}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": np.zeros((1, 3, 40, 48), np.float32)})[0]
    assert logits.shape == (1, 8, 40, 48)


def test_int8_without_onnx_is_a_usage_error(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "--checkpoint", str(trained[1]), "--torchscript", "m.ts", "--int8"]) == 2
    assert "--int8 quantizes the ONNX export; add --onnx FILE or drop --int8" in (
        capsys.readouterr().err
    )


def test_int8_without_calibration_images_is_a_usage_error(
    trained: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import suimseg.app.evaluate

    monkeypatch.setattr(suimseg.app.evaluate, "run_config_for", lambda *a, **k: None)
    path = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(trained[1]), "--onnx", str(path), "--int8"]) == 2
    assert "--int8 needs training images to calibrate on: add --calibration-dir DIR" in (
        capsys.readouterr().err
    )
    assert not path.exists()
    missing = tmp_path / "nowhere"
    argv = ["export", "--checkpoint", str(trained[1]), "--onnx", str(path), "--int8",
            "--calibration-dir", str(missing)]  # fmt: skip
    assert main(argv) == 1
    assert f"--calibration-dir {missing}: does not exist" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ONNX, reason="needs the onnx extra")
def test_onnx_export_records_the_training_size_for_predict(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exported .onnx away from its run's config.json still predicts at 32, not 384."""
    import warnings

    from suimseg.app.evaluate import input_size_for
    from suimseg.inference.backends import IMAGE_SIZE_KEY, read_onnx_metadata

    data, ckpt = trained
    path = tmp_path / "exported" / "model.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(path)]) == 0
    assert read_onnx_metadata(path)[IMAGE_SIZE_KEY] == "32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "predicting at 384x384" warning
        assert input_size_for(path) == 32
    image = next((data / "TEST" / "images").iterdir())
    argv = ["predict", "--checkpoint", str(path), "--backend", "onnxruntime",
            "--out", str(tmp_path / "preds"), str(image)]  # fmt: skip
    assert main(argv) == 0
    assert "384" not in capsys.readouterr().err
