"""Checkpoint interop without Lightning installed: Lightning-layout ``.ckpt`` dicts,
``torch.compile`` prefixes, plain state dicts, ``model=`` and ``convert_checkpoint``.

(A real Lightning fit is in ``tests/lightning/test_checkpoints.py``; a ``.ckpt`` is only a
dict, so reading one here needs no Lightning.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from suimseg.engine import (
    atomic_save,
    convert_checkpoint,
    load_checkpoint,
    load_model,
    make_checkpoint,
)
from suimseg.errors import CheckpointError, ConfigError
from suimseg.models import model_spec


@pytest.fixture
def unet(tiny_unet: Callable[..., nn.Module]) -> nn.Module:
    model = tiny_unet()
    with torch.no_grad():  # weights no freshly built model has
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model.eval()


def _lightning(model: nn.Module, *, prefix: str = "model.", hparams: bool = True) -> dict[str, Any]:
    """The dict Lightning saves for a ``SUIMSegModule`` holding ``model`` as ``prefix``."""
    spec = model_spec(model)
    hp: dict[str, Any] = {"lr": 1e-3, "class_weights": None}
    if hparams:
        hp |= {"model": spec["config"], "model_name": spec["name"]}
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": {prefix + k: v for k, v in model.state_dict().items()},
        "loops": {},
        "optimizer_states": [],
        "hparams_name": "kwargs",
        "hyper_parameters": hp,
    }


def _same(got: nn.Module, want: nn.Module) -> None:
    a, b = got.state_dict(), want.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lightning_ckpt_loads_without_lightning(unet: nn.Module, tmp_path: Path) -> None:
    path = atomic_save(_lightning(unet), tmp_path / "epoch=3-step=120.ckpt")
    model = load_model(path)
    assert type(model) is type(unet)
    assert model.config == unet.config  # type: ignore[attr-defined]
    assert not model.training
    _same(model, unet)
    # Any one attribute prefix works (a LightningModule that calls its model `net`).
    _same(load_model(atomic_save(_lightning(unet, prefix="net."), tmp_path / "n.ckpt")), unet)


def test_compiled_prefixes_load_wherever_they_occur(unet: nn.Module, tmp_path: Path) -> None:
    ckpt = make_checkpoint(unet, model_spec=model_spec(unet))
    ckpt["model_state"] = {"_orig_mod." + k: v for k, v in ckpt["model_state"].items()}
    _same(load_model(atomic_save(ckpt, tmp_path / "best.pt")), unet)
    _same(load_model(atomic_save(_lightning(unet, prefix="model._orig_mod."),
                                 tmp_path / "c.ckpt")), unet)  # fmt: skip
    plain = {"_orig_mod." + k: v for k, v in unet.state_dict().items()}
    path = atomic_save(plain, tmp_path / "plain.pt")
    other = type(unet)(**unet.config)  # type: ignore[attr-defined]
    assert load_model(path, model=other) is other
    _same(other, unet)


def test_plain_state_dict_is_refused_with_the_way_to_load_it(
    unet: nn.Module, tmp_path: Path
) -> None:
    path = atomic_save(unet.state_dict(), tmp_path / "weights.pt")
    n = len(unet.state_dict())
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    text = str(info.value)
    assert f"weights.pt: found a plain state_dict with {n} tensors (no model config)" in text
    assert "load_model(path, model=net)" in text
    assert "load_state_dict(torch.load(path, weights_only=True))" in text
    # The same file loads into the model given (a `module.` prefix from DDP too).
    atomic_save({"module." + k: v for k, v in unet.state_dict().items()}, path)
    _same(load_model(path, model=type(unet)(**unet.config)), unet)  # type: ignore[attr-defined]


def test_lightning_ckpt_without_suimseg_hparams_is_refused(unet: nn.Module, tmp_path: Path) -> None:
    path = atomic_save(_lightning(unet, hparams=False), tmp_path / "custom.ckpt")
    with pytest.raises(
        CheckpointError,
        match=r"custom\.ckpt: found a Lightning checkpoint without suimseg hyperparameters.*"
        r"load_model\(path, model=net\), or SUIMSegModule\.load_from_checkpoint",
    ):
        load_model(path)
    with pytest.raises(CheckpointError, match="without suimseg hyperparameters"):
        convert_checkpoint(path, tmp_path / "best.pt")
    _same(load_model(path, model=type(unet)(**unet.config)), unet)  # type: ignore[attr-defined]


def test_lightning_ckpt_with_an_unknown_model_name_names_that_field(
    unet: nn.Module, tmp_path: Path
) -> None:
    raw = _lightning(unet)
    raw["hyper_parameters"]["model_name"] = "os.system"
    path = atomic_save(raw, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match=r"hyper_parameters: field 'model_name' names"):
        load_model(path)


def test_lightning_ckpt_whose_prefix_matches_nothing_is_refused(
    unet: nn.Module, tmp_path: Path
) -> None:
    raw = _lightning(unet)
    raw["state_dict"].pop(next(iter(raw["state_dict"])))  # one tensor short
    raw["state_dict"]["criterion.alpha"] = torch.ones(8)
    path = atomic_save(raw, tmp_path / "short.ckpt")
    with pytest.raises(
        CheckpointError,
        match=r"short\.ckpt: found a Lightning checkpoint whose state_dict holds no complete "
        r"set of the unet_resattn_v3 model's weights under one prefix \(expected e\.g\. "
        r"'model\.'; its keys start with 'criterion\.', 'model\.'\)",
    ):
        load_model(path)


def test_lightning_ckpt_counters_and_state_dict_are_checked(
    unet: nn.Module, tmp_path: Path
) -> None:
    raw = _lightning(unet) | {"global_step": -1}
    with pytest.raises(CheckpointError, match=r"field 'global_step' = -1 is not int"):
        load_model(atomic_save(raw, tmp_path / "a.ckpt"))
    raw = _lightning(unet) | {"state_dict": {"w": "not a tensor"}}
    with pytest.raises(CheckpointError, match=r"'state_dict' is not a non-empty dict of tens"):
        load_model(atomic_save(raw, tmp_path / "b.ckpt"))


def test_load_checkpoint_says_how_to_use_a_lightning_ckpt(unet: nn.Module, tmp_path: Path) -> None:
    path = atomic_save(_lightning(unet), tmp_path / "x.ckpt")
    with pytest.raises(
        CheckpointError, match=r"x\.ckpt: expected a suimseg checkpoint .* found a Lightning "
        r"checkpoint; .*suimseg\.load_model\(path\).*convert_checkpoint\(path, 'best\.pt'\)",
    ):  # fmt: skip
        load_checkpoint(path)


def test_convert_both_ways_bit_exactly(unet: nn.Module, tmp_path: Path) -> None:
    source = atomic_save(
        make_checkpoint(unet, model_spec=model_spec(unet), epoch=7, global_step=70,
                        class_names=list("abc"), extra={"run_config": {"image_size": 48}}),
        tmp_path / "best.pt",
    )  # fmt: skip
    ckpt_path = convert_checkpoint(source, tmp_path / "to.ckpt")
    raw = torch.load(ckpt_path, weights_only=True)
    assert raw["hyper_parameters"] == {  # the training size travels as SUIMSegModule's
        "model": unet.config, "model_name": "unet_resattn_v3", "image_size": 48,  # type: ignore[attr-defined]
    }  # fmt: skip
    assert set(raw["state_dict"]) == {"model." + k for k in unet.state_dict()}
    assert (raw["epoch"], raw["global_step"]) == (7, 70)
    back = convert_checkpoint(ckpt_path, tmp_path / "back.pt")
    ckpt = load_checkpoint(back)
    assert (ckpt["epoch"], ckpt["global_step"]) == (7, 70)
    assert ckpt["rng"] is None
    assert ckpt["optimizer_state"] is None
    assert ckpt["extra"] == {"run_config": {"image_size": 48}}  # back from the .ckpt
    _same(load_model(back), unet)
    # suimseg -> suimseg keeps class names and run config (e.g. dropping _orig_mod.).
    again = load_checkpoint(convert_checkpoint(source, tmp_path / "copy.pth"))
    assert again["class_names"] == ["a", "b", "c"]
    assert again["extra"] == {"run_config": {"image_size": 48}}


def test_convert_needs_a_known_format(unet: nn.Module, tmp_path: Path) -> None:
    source = atomic_save(make_checkpoint(unet, model_spec=model_spec(unet)), tmp_path / "a.pt")
    with pytest.raises(ConfigError, match=r"to: expected 'suimseg', .*out\.bin"):
        convert_checkpoint(source, tmp_path / "out.bin")
    with pytest.raises(ConfigError, match=r"got to='onnx'"):
        convert_checkpoint(source, tmp_path / "out.pt", to="onnx")  # type: ignore[arg-type]
    assert convert_checkpoint(source, tmp_path / "out.bin", to="lightning").is_file()
    assert not (tmp_path / "out.pt").exists()
