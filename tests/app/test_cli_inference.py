"""Tests of `suimseg evaluate/predict/export/plot/compare` on a tiny trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from suimseg.app.cli import main
from suimseg.classes import rgb_to_index
from suimseg.engine import load_model
from suimseg.inference import Predictor, load_result


def test_evaluate_writes_result_at_native_resolution(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, ckpt = trained
    out = tmp_path / "eval.json"
    args = ["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "native resolution" in text
    assert "human divers" in text
    result = load_result(out)
    assert result.protocol == "dataset-8class"
    assert result.meta["image_size"] == 32  # read from the run's config.json
    assert 0.0 <= result.metrics["miou"] <= 1.0


def test_evaluate_tta_and_ensemble_report_the_gain(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, ckpt = trained
    out = tmp_path / "e.json"
    argv = ["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out),
            "--tta", "--ensemble", str(ckpt), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "mIoU: plain" in text
    assert "-> TTA" in text
    assert "-> ensemble" in text
    for suffix in ("", "_tta", "_ensemble", "_ensemble_tta"):
        assert (tmp_path / f"e{suffix}.json").is_file()
    # An ensemble of a model with itself equals the model.
    plain = load_result(out).metrics["miou"]
    assert load_result(tmp_path / "e_ensemble.json").metrics["miou"] == pytest.approx(plain)
    capsys.readouterr()
    assert main(["compare", str(out), str(tmp_path / "e_tta.json")]) == 0
    table = capsys.readouterr().out
    assert "| mIoU" in table


def test_evaluate_paper_protocol_is_labelled(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, ckpt = trained
    argv = ["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--protocol",
            "suim-paper", "--out", str(tmp_path / "p.json"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert "NOT comparable" in capsys.readouterr().out
    assert load_result(tmp_path / "p.json").protocol == "suim-paper"


def test_predict_writes_palette_masks_that_decode_to_the_prediction(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, ckpt = trained
    images = data / "TEST" / "images"
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(ckpt), str(images), "--out", str(out), "--overlay",
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    first = sorted(images.iterdir())[0]
    mask_file = out / "masks" / (first.stem + ".bmp")
    decoded = rgb_to_index(Image.open(mask_file))
    expected = Predictor(load_model(ckpt), image_size=32).predict([first])[0].labels.numpy()
    np.testing.assert_array_equal(decoded, expected)
    assert (out / "overlays" / (first.stem + ".png")).is_file()
    before = mask_file.stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0  # existing outputs are kept without --overwrite
    assert mask_file.stat().st_mtime_ns == before
    # One summary line naming the inputs, not a warning line per input.
    out_text, err_text = capsys.readouterr()
    n = len(list(images.iterdir()))
    assert "outputs exist already" not in err_text
    assert f"wrote 0 file(s) to {out}; kept the existing outputs of {n} input(s) " in out_text
    assert f"({first.name}, " in out_text
    assert out_text.rstrip().endswith("--overwrite replaces them")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # torch's own deprecation
def test_export_torchscript(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, ckpt = trained
    path = tmp_path / "model.ts"
    assert main(["export", "--checkpoint", str(ckpt), "--torchscript", str(path)]) == 0
    scripted = torch.jit.load(str(path))
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), load_model(ckpt)(x), rtol=1e-4, atol=1e-4)


def test_export_needs_a_format(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "--checkpoint", str(trained[1])]) == 2
    assert "at least one of" in capsys.readouterr().err


def test_plot_history(trained: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    assert main(["plot", str(trained[1].parent / "history.csv"), "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.width > 100


def test_runtime_errors_exit_1_without_traceback(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    code = main(["evaluate", "--checkpoint", str(bad), "--data", str(trained[0])])
    err = capsys.readouterr().err
    assert code == 1
    assert "bad.pt" in err
    assert "Traceback" not in err
    code = main(["compare", str(tmp_path / "missing.json")])
    assert code == 1
    assert "missing.json" in capsys.readouterr().err


def test_input_size_comes_from_the_run(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil
    import warnings

    from suimseg.app.evaluate import input_size_for

    _, ckpt = trained
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert input_size_for(ckpt) == 32  # the run config stored in the checkpoint
        assert input_size_for(ckpt, 48) == 48
        # Moved away from its config.json, the checkpoint still knows its training size
        # (the fallback warning is tested in tests/app/test_evaluate_input_size.py).
        alone = tmp_path / "best.pt"
        shutil.copy(ckpt, alone)
        assert input_size_for(alone) == 32
