"""Checkpoints both ways: a real Lightning ``.ckpt`` in suimseg, a suimseg one in Lightning."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("lightning")
pytest.importorskip("torchmetrics")

import suimseg
from suimseg.app.cli import main
from suimseg.app.evaluate import input_size_for
from suimseg.engine import convert_checkpoint, load_checkpoint, read_run_config
from suimseg.errors import CheckpointError
from suimseg.inference import load_result
from suimseg.lightning import SUIMSegModule
from suimseg.models import UNetResAttnV3

from .conftest import Fitted


def _assert_same_weights(got: torch.nn.Module, want: torch.nn.Module) -> None:
    a, b = got.state_dict(), want.state_dict()
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_a_lightning_checkpoint_loads_with_load_model_bit_exactly(fitted: Fitted) -> None:
    model = suimseg.load_model(fitted.ckpt)
    assert isinstance(model, UNetResAttnV3)
    assert not model.training
    assert model.config == fitted.module.model.config
    _assert_same_weights(model, fitted.module.model)
    fitted.module.eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), fitted.module(x))


def test_suimseg_predict_runs_on_a_lightning_checkpoint(fitted: Fitted, tmp_path: Path) -> None:
    images = sorted((fitted.data.root / "TEST" / "images").iterdir())[:2]
    out = tmp_path / "masks"
    argv = ["predict", "--checkpoint", str(fitted.ckpt), "--out", str(out), "--device", "cpu",
            "--image-size", "32", "--format", "png", *map(str, images)]  # fmt: skip
    assert main(argv) == 0
    masks = sorted((out / "masks").glob("*.png"))
    assert [m.stem for m in masks] == [i.stem for i in images]
    for mask, image in zip(masks, images, strict=True):
        rgb = Image.open(mask).convert("RGB")
        assert rgb.size == Image.open(image).size
        assert set(np.unique(np.asarray(rgb)).tolist()) <= {0, 255}  # SUIM palette colours


def test_converted_both_ways_and_back_bit_exactly(fitted: Fitted, tmp_path: Path) -> None:
    # Lightning -> suimseg: a checkpoint load_checkpoint accepts, same weights.
    pt = convert_checkpoint(fitted.ckpt, tmp_path / "best.pt")
    ckpt = load_checkpoint(pt)
    assert ckpt["model"] == {"name": "unet_resattn_v3", "config": fitted.module.model.config}
    assert ckpt["global_step"] == fitted.trainer.global_step
    _assert_same_weights(suimseg.load_model(pt), fitted.module.model)
    # suimseg -> Lightning: SUIMSegModule.load_from_checkpoint rebuilds it.
    back = convert_checkpoint(pt, tmp_path / "back.ckpt")
    module = SUIMSegModule.load_from_checkpoint(back, map_location="cpu")
    assert module.hparams["model"] == fitted.module.model.config
    _assert_same_weights(module.model, fitted.module.model)
    # ... and load_model reads that file too.
    _assert_same_weights(suimseg.load_model(back), fitted.module.model)
    assert main(["convert", str(back), str(tmp_path / "again.pt")]) == 0
    _assert_same_weights(suimseg.load_model(tmp_path / "again.pt"), fitted.module.model)
    # The training image size (32, from the datamodule) travels every way.
    assert read_run_config(pt) == {"image_size": 32}
    assert module.hparams["image_size"] == 32
    assert torch.load(back, weights_only=True)["hyper_parameters"]["image_size"] == 32
    assert read_run_config(tmp_path / "again.pt") == {"image_size": 32}


def test_the_ckpt_records_the_training_image_size_for_predict_and_evaluate(
    fitted: Fitted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = torch.load(fitted.ckpt, weights_only=True)
    assert raw["hyper_parameters"]["image_size"] == fitted.data.image_size == 32
    assert fitted.module.hparams["image_size"] == 32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "predicting at 384x384" warning
        assert input_size_for(fitted.ckpt) == 32
    images = sorted((fitted.data.root / "TEST" / "images").iterdir())[:2]
    argv = ["predict", "--checkpoint", str(fitted.ckpt), "--out", str(tmp_path / "masks"),
            "--device", "cpu", "--format", "png", *map(str, images)]  # fmt: skip
    assert main(argv) == 0
    result = tmp_path / "eval.json"
    argv = ["evaluate", "--checkpoint", str(fitted.ckpt), "--data", str(fitted.data.root),
            "--out", str(result), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert load_result(result).meta["image_size"] == 32
    assert "predicting at" not in capsys.readouterr().err
    # Lightning loads the module back with it.
    assert SUIMSegModule.load_from_checkpoint(fitted.ckpt).hparams["image_size"] == 32


def test_a_ckpt_without_the_image_size_keeps_the_warned_default(
    fitted: Fitted, tmp_path: Path
) -> None:
    raw = torch.load(fitted.ckpt, weights_only=True)
    del raw["hyper_parameters"]["image_size"]  # a .ckpt written before it was recorded
    old = tmp_path / "old.ckpt"
    torch.save(raw, old)
    assert read_run_config(old) is None
    with pytest.warns(UserWarning, match="predicting at 384x384"):
        assert input_size_for(old) == 384
    assert read_run_config(convert_checkpoint(old, tmp_path / "o.pt")) is None
    raw["hyper_parameters"]["image_size"] = "384"  # not an int: refused, named
    bad = tmp_path / "bad.ckpt"
    torch.save(raw, bad)
    with pytest.raises(CheckpointError, match=r"hyper_parameters\.image_size"):
        read_run_config(bad)
    with pytest.warns(UserWarning, match="predicting at 384x384"):
        assert input_size_for(bad) == 384


def test_a_custom_module_checkpoint_loads_with_the_model_given(
    fitted: Fitted, tmp_path: Path
) -> None:
    """Without suimseg hyper-parameters the file is refused, and loads with model=."""
    raw = torch.load(fitted.ckpt, weights_only=True)
    del raw["hyper_parameters"]["model"], raw["hyper_parameters"]["model_name"]
    path = tmp_path / "custom.ckpt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="without suimseg hyperparameters"):
        suimseg.load_model(path)
    model = suimseg.load_model(path, model=UNetResAttnV3(**fitted.module.model.config))
    _assert_same_weights(model, fitted.module.model)


def test_suimseg_evaluate_and_export_read_a_lightning_checkpoint(
    fitted: Fitted, tmp_path: Path
) -> None:
    pytest.importorskip("safetensors")
    result = tmp_path / "eval.json"
    argv = ["evaluate", "--checkpoint", str(fitted.ckpt), "--data", str(fitted.data.root),
            "--out", str(result), "--image-size", "32", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert 0.0 <= load_result(result).metrics["miou"] <= 1.0
    weights, ts = tmp_path / "m.safetensors", tmp_path / "m.ts.pt"
    argv = ["export", "--checkpoint", str(fitted.ckpt), "--safetensors", str(weights),
            "--torchscript", str(ts), "--example-size", "32"]  # fmt: skip
    assert main(argv) == 0
    _assert_same_weights(suimseg.load_model(weights), fitted.module.model)
    assert read_run_config(weights) == {"image_size": 32}
    assert ts.is_file()
