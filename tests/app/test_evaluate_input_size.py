"""The training image size travels with the checkpoint (run_config), config.json second."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from suimseg.app.config import TrainConfig
from suimseg.app.evaluate import (
    DEFAULT_IMAGE_SIZE,
    evaluate_checkpoint,
    input_size_for,
    run_config_for,
)
from suimseg.data import make_synthetic_suim
from suimseg.engine import Trainer, load_checkpoint
from suimseg.engine.callbacks import json_run_config
from suimseg.engine.checkpoint import atomic_save, make_checkpoint, read_run_config
from suimseg.models import build_model, model_spec

GOLDEN_V1 = Path(__file__).parents[1] / "reliability" / "data" / "checkpoint_v1.pt"
TINY = {
    "encoder": "resnet18",
    "encoder_weights": "none",
    "decoder_channels": [16, 16, 8, 8],
    "bridge_channels": 16,
}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(
        "unet_resattn_v3",
        encoder="resnet18",
        decoder_channels=(16, 16, 8, 8),
        bridge_channels=16,
    )


def _write(path: Path, run_config: dict[str, Any] | None) -> Path:
    """A checkpoint written by the Trainer, with or without a run config."""
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, device="cpu")
    if run_config is None:
        return trainer.save_checkpoint(path)
    # What the Checkpoint callback stores (suimseg train passes TrainConfig.to_dict()).
    return trainer.save_checkpoint(path, extra={"run_config": json_run_config(run_config)})


def _config(size: int, **kwargs: Any) -> TrainConfig:
    return TrainConfig(image_size=size, model="v3", **TINY, **kwargs)


def test_moved_checkpoint_keeps_its_image_size(tmp_path: Path) -> None:
    run = _config(32, seed=7, val_fraction=0.25)
    ckpt = _write(tmp_path / "run" / "best.pt", run.to_dict())
    run.to_json(tmp_path / "run" / "config.json")
    moved = tmp_path / "elsewhere" / "model.pt"
    moved.parent.mkdir()
    shutil.move(ckpt, moved)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert input_size_for(moved) == 32
        found = run_config_for(moved)
    assert found == run
    assert input_size_for(moved, 48) == 48  # an explicit size still wins


def test_checkpoint_run_config_comes_before_config_json(tmp_path: Path) -> None:
    ckpt = _write(tmp_path / "best.pt", _config(32).to_dict())
    _config(48).to_json(tmp_path / "config.json")  # e.g. a later run reusing the folder
    assert input_size_for(ckpt) == 32
    found = run_config_for(ckpt)
    assert found is not None
    assert found.image_size == 32


def test_checkpoint_without_run_config_reads_config_json_then_warns(tmp_path: Path) -> None:
    ckpt = _write(tmp_path / "run" / "best.pt", None)
    _config(48).to_json(tmp_path / "run" / "config.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert input_size_for(ckpt) == 48
    found = run_config_for(ckpt)
    assert found is not None
    assert found.image_size == 48
    alone = tmp_path / "best.pt"
    shutil.copy(ckpt, alone)
    with pytest.warns(UserWarning, match=r"no run config in .*best\.pt and no config\.json "
                      r"beside it.*predicting at 384x384"):  # fmt: skip
        assert input_size_for(alone) == DEFAULT_IMAGE_SIZE
    assert run_config_for(alone) is None


def test_golden_format_1_checkpoint_still_works() -> None:
    assert read_run_config(GOLDEN_V1) is None
    assert run_config_for(GOLDEN_V1) is None
    with pytest.warns(UserWarning, match="no config.json beside"):
        assert input_size_for(GOLDEN_V1) == DEFAULT_IMAGE_SIZE


def test_custom_run_config_gives_its_image_size(tmp_path: Path) -> None:
    ckpt = _write(tmp_path / "best.pt", {"image_size": 40, "note": "my own settings"})
    assert input_size_for(ckpt) == 40
    assert run_config_for(ckpt) is None  # not a TrainConfig, and no config.json
    _config(48).to_json(tmp_path / "config.json")
    found = run_config_for(ckpt)
    assert found is not None
    assert found.image_size == 48


@pytest.mark.parametrize("bad", ["big", 0, -32, True, 32.5, None])
def test_invalid_stored_size_falls_back(tmp_path: Path, bad: Any) -> None:
    ckpt = _write(tmp_path / "best.pt", {"image_size": bad})
    _config(48).to_json(tmp_path / "config.json")
    assert input_size_for(ckpt) == 48


def test_loaded_checkpoint_data_is_used_without_opening_the_file(tmp_path: Path) -> None:
    data = {"extra": {"run_config": _config(64).to_dict()}}
    nowhere = tmp_path / "never-written.pt"
    assert input_size_for(nowhere, checkpoint_data=data) == 64
    found = run_config_for(nowhere, checkpoint_data=data)
    assert found is not None
    assert found.image_size == 64
    with pytest.warns(UserWarning, match="no run config in"):
        assert input_size_for(nowhere) == DEFAULT_IMAGE_SIZE


def test_mmap_loading_matches_a_full_read(tmp_path: Path) -> None:
    ckpt = _write(tmp_path / "best.pt", {"image_size": 32})
    full, mapped = load_checkpoint(ckpt), load_checkpoint(ckpt, mmap=True)
    assert full.keys() == mapped.keys()
    for key, value in full["model_state"].items():
        assert torch.equal(value, mapped["model_state"][key]), key
    assert mapped["extra"]["run_config"] == {"image_size": 32}
    legacy = tmp_path / "legacy.pt"  # the pre-zip torch.save format cannot be mapped
    torch.save(
        make_checkpoint(nn.Linear(2, 2), model_spec=None, extra={"run_config": {"image_size": 8}}),
        legacy,
        _use_new_zipfile_serialization=False,
    )
    assert load_checkpoint(legacy, mmap=True)["extra"]["run_config"] == {"image_size": 8}
    assert read_run_config(legacy) == {"image_size": 8}


def test_evaluate_a_moved_checkpoint_at_its_training_size(tmp_path: Path) -> None:
    data = make_synthetic_suim(tmp_path / "data", n_train_val=4, n_test=2, size=(48, 40), seed=0)
    model = _model()
    spec = model_spec(model)
    ckpt = make_checkpoint(
        model, model_spec=spec, extra={"run_config": _config(32, val_fraction=0.5).to_dict()}
    )
    moved = atomic_save(ckpt, tmp_path / "shared" / "v3.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = evaluate_checkpoint(moved, data, split="test", device="cpu", batch_size=2)
    assert report.results[0].meta["image_size"] == 32
    assert report.paths[0] == tmp_path / "shared" / "eval_test.json"


def test_onnx_file_gives_the_size_in_its_metadata(tmp_path: Path) -> None:
    """`suimseg export --onnx` stamps the training size; an .onnx alone then needs no guess."""
    onnx = pytest.importorskip("onnx")
    from suimseg.inference.backends import IMAGE_SIZE_KEY, write_onnx_metadata

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["logits"])],
        "g",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, None)],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)],
    )
    path = tmp_path / "model.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.warns(UserWarning, match="predicting at 384x384"):
        assert input_size_for(path) == DEFAULT_IMAGE_SIZE
    write_onnx_metadata(path, {IMAGE_SIZE_KEY: "48", "other": "kept"})
    write_onnx_metadata(path, {IMAGE_SIZE_KEY: "96"})  # replaces, keeps the other entry
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props == {"other": "kept", IMAGE_SIZE_KEY: "96"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert input_size_for(path) == 96
    assert input_size_for(path, 64) == 64  # an explicit size still wins
