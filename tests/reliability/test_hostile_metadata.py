"""Checkpoint metadata is untrusted input: well-formed files with hostile or damaged fields.

A ``torch.load(weights_only=True)`` dict, a ``.safetensors`` file or a hub folder can parse
and still ask for a 70 GB model, a download, a local file, a deeply nested or huge
``run_config``, or counters of the wrong type. Each is refused with a ``CheckpointError``
naming the file and the field before anything is built, downloaded or read (the tests make
module construction, torchvision's weight lookup and the weights-file loader fail if
called), or, for weight sources, ignored.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from suimseg.engine import (
    atomic_save,
    convert_checkpoint,
    load_checkpoint,
    load_model,
    load_training_state,
    make_checkpoint,
    read_run_config,
    save_safetensors,
)
from suimseg.errors import CheckpointError
from suimseg.models import UNetResAttnV3, build_model, model_spec

TINY = {"encoder": "resnet18", "decoder_channels": [16, 16, 8, 8], "bridge_channels": 16}
DAMAGED = "the file is damaged or not from suimseg"


@pytest.fixture(scope="module")
def tiny_ckpt() -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model("unet_resattn_v3", **TINY)
    return make_checkpoint(model, model_spec=model_spec(model), class_names=list("abcdefgh"))


def _save(ckpt: dict[str, Any], path: Path, **edits: Any) -> Path:
    """Save a copy of ``ckpt`` with ``edits`` (``"a.b"`` keys edit nested dicts)."""
    ckpt = {**ckpt, "model": json.loads(json.dumps(ckpt["model"])), "extra": {}}
    for key, value in edits.items():
        *parents, last = key.split(".")
        holder = ckpt
        for parent in parents:
            holder = holder[parent]
        if value is KeyError:
            del holder[last]
        else:
            holder[last] = value
    return atomic_save(ckpt, path)


def _to_safetensors(ckpt_path: Path, out: Path, spec: dict[str, Any]) -> Path:
    """A suimseg .safetensors file whose 'model' metadata is ``spec``."""
    import safetensors.torch as st

    good = save_safetensors(ckpt_path, out)
    tensors = st.load_file(str(good))
    with __import__("safetensors").safe_open(str(good), framework="pt") as fh:
        meta = fh.metadata()
    st.save_file(tensors, str(out), metadata={**meta, "model": json.dumps(spec)})
    return out


# ----------------------------------------------------------------------------- model config

OVERSIZED = [
    ("bridge_channels", 4_000_000, r"field 'bridge_channels' = 4000000 is above the limit 16384"),
    ("decoder_channels", [16, 4_000_000, 8, 8], r"field 'decoder_channels' = .* the limit 16384"),
    ("num_classes", 100_000, r"field 'num_classes' = 100000 is above the limit 1024"),
    ("in_channels", 10**9, r"field 'in_channels' = 1000000000 is above the limit 16384"),
    ("bridge_channels", 0, r"field 'bridge_channels' = 0 is below the minimum 1"),
    ("bridge_channels", "16", r"field 'bridge_channels' must be int, got '16'"),
    ("encoder", "resnet999", r"field 'encoder' = 'resnet999' is not one of resnet18"),
    ("unknown_option", 1, r"unknown field\(s\) \['unknown_option'\]"),
]


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid save_pretrained folder of the tiny model (copy it before changing it)."""
    pytest.importorskip("safetensors")
    return UNetResAttnV3(**TINY).save_pretrained(tmp_path_factory.mktemp("hub") / "hub")


@pytest.mark.parametrize(("field", "value", "match"), OVERSIZED)
def test_bad_model_config_is_refused_before_anything_is_built(
    tiny_ckpt: dict[str, Any],
    hub_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    value: Any,
    match: str,
) -> None:
    pytest.importorskip("safetensors")
    path = _save(tiny_ckpt, tmp_path / "best.pt", **{f"model.config.{field}": value})
    spec = {"name": "unet_resattn_v3", "config": {**TINY, field: value}}
    weights = _to_safetensors(
        _save(tiny_ckpt, tmp_path / "ok.pt"), tmp_path / "w.safetensors", spec
    )
    folder = Path(shutil.copytree(hub_folder, tmp_path / "hub"))
    (folder / "config.json").write_text(json.dumps(spec["config"]))
    lightning = atomic_save(_lightning_ckpt(tiny_ckpt, spec), tmp_path / "pl.ckpt")
    monkeypatch.setattr(nn.Module, "__init__", _fail_build)
    for load, name in [
        (load_checkpoint, r"best\.pt: model config: "),
        (load_model, r"best\.pt: model config: "),
        (lambda _: load_model(weights), r"w\.safetensors: model config: "),
        (lambda _: UNetResAttnV3.from_pretrained(folder), r"config\.json: "),
        (lambda _: load_model(lightning), r"pl\.ckpt: hyper_parameters: model config: "),
        (lambda _: convert_checkpoint(lightning, tmp_path / "o.pt"), r"pl\.ckpt: hyper.*: "),
    ]:
        with pytest.raises(CheckpointError, match=name + match) as info:
            load(path)
        assert DAMAGED in str(info.value) or "another model class" in str(info.value)


def _lightning_ckpt(ckpt: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A Lightning ``.ckpt`` dict of a ``SUIMSegModule`` with the model spec ``spec``."""
    return {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": {"model." + k: v for k, v in ckpt["model_state"].items()},
        "hyper_parameters": {"model": spec["config"], "model_name": spec["name"]},
    }


def _fail_build(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a module was built from a hostile config (a big allocation)")


@pytest.mark.parametrize("source", ["imagenet", "LOCAL_FILE"])
def test_weight_sources_in_metadata_are_never_followed(
    tiny_ckpt: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    pytest.importorskip("safetensors")
    from suimseg.models import encoders

    local = tmp_path / "elsewhere.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, local)
    source = str(local) if source == "LOCAL_FILE" else source
    monkeypatch.setattr(torchvision.models, "get_model_weights", _fail_fetch)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _fail_fetch)
    monkeypatch.setattr(encoders, "load_state_dict_file", _fail_fetch)
    path = _save(tiny_ckpt, tmp_path / "best.pt", **{"model.config.encoder_weights": source})
    spec = {"name": "unet_resattn_v3", "config": {**TINY, "encoder_weights": source}}
    weights = _to_safetensors(
        _save(tiny_ckpt, tmp_path / "ok.pt"), tmp_path / "w.safetensors", spec
    )
    lightning = atomic_save(_lightning_ckpt(tiny_ckpt, spec), tmp_path / "pl.ckpt")
    want = tiny_ckpt["model_state"]
    for model in (load_model(path), load_model(weights), load_model(lightning)):
        got = model.state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want)
    assert load_checkpoint(path)["model"]["config"]["encoder_weights"] is None


def _fail_fetch(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a weight source named by a checkpoint was followed")


def test_unknown_model_name_and_non_dict_config(tiny_ckpt: dict[str, Any], tmp_path: Path) -> None:
    path = _save(tiny_ckpt, tmp_path / "best.pt", **{"model.name": "os.system"})
    with pytest.raises(CheckpointError, match=r"best\.pt: field 'model' names the model 'os\.sys"):
        load_checkpoint(path)
    _save(tiny_ckpt, path, **{"model.config": [1, 2]})
    with pytest.raises(CheckpointError, match=r"model config: expected a dict of UNetResAttnV3"):
        load_model(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (json.dumps(TINY) + " " * 70_000, r"config\.json: \d+ bytes, above the limit 65536"),
        ("[" * 30_000 + "]" * 30_000, r"config\.json: not valid JSON"),  # too deep to parse
    ],
)
def test_huge_or_deep_config_json_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, match: str
) -> None:
    pytest.importorskip("safetensors")
    folder = UNetResAttnV3(**TINY).save_pretrained(tmp_path)
    (folder / "config.json").write_text(text)
    monkeypatch.setattr(nn.Module, "__init__", _fail_build)
    with pytest.raises(CheckpointError, match=match):
        UNetResAttnV3.from_pretrained(folder)


# ----------------------------------------------------------------------------- plain data


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("run_config", "match"),
    [
        (_nested(50), r"field 'extra' is nested deeper than 8 levels"),
        ({"notes": "x" * 100_000}, r"field 'extra' is \d+ bytes of JSON, above the limit 65536"),
    ],
)
def test_deep_or_huge_run_config_is_refused(
    tiny_ckpt: dict[str, Any], tmp_path: Path, run_config: Any, match: str
) -> None:
    path = _save(tiny_ckpt, tmp_path / "last.pt", extra={"run_config": run_config})
    for load in (load_checkpoint, read_run_config, load_model):
        with pytest.raises(CheckpointError, match=r"last\.pt: " + match):
            load(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[" * 100_000 + "]" * 100_000, r"'run_config' is 200002 bytes of JSON, above the limit"),
        (
            "[" * 30_000 + "]" * 30_000,
            r"the 'run_config' metadata is not JSON or nested too deeply",
        ),  # recursion
        (json.dumps(_nested(9)), r"field 'run_config' is nested deeper than 8 levels"),
    ],
)
def test_safetensors_run_config_is_bounded(
    tiny_ckpt: dict[str, Any], tmp_path: Path, text: str, match: str
) -> None:
    pytest.importorskip("safetensors")
    import safetensors.torch as st

    good = save_safetensors(_save(tiny_ckpt, tmp_path / "ok.pt"), tmp_path / "w.safetensors")
    with __import__("safetensors").safe_open(str(good), framework="pt") as fh:
        meta = fh.metadata()
    st.save_file(st.load_file(str(good)), str(good), metadata={**meta, "run_config": text})
    with pytest.raises(CheckpointError, match=r"w\.safetensors: .*" + match):
        read_run_config(good)


BAD_FIELDS = [
    ({"epoch": KeyError}, r"field 'epoch' = \(missing\) is not int in \[0, 1000000\]"),
    ({"epoch": "3"}, r"field 'epoch' = '3' is not int"),
    ({"epoch": 3.5}, r"field 'epoch' = 3\.5 is not int"),
    ({"epoch": True}, r"field 'epoch' = True is not int"),
    ({"epoch": -1}, r"field 'epoch' = -1 is not int in \[0, 1000000\]"),
    ({"global_step": 10**15}, r"field 'global_step' = 1000000000000000 is not int"),
    ({"best_metric": "high"}, r"field 'best_metric' = 'high' is not float or int or None"),
    ({"best_metric": float("nan")}, r"field 'best_metric' = nan is not float"),
    ({"extra": {"skipped_steps": "x"}}, r"field 'extra\.skipped_steps' = 'x' is not int"),
    ({"extra": {"best_epoch": [1]}}, r"field 'extra\.best_epoch' = \[1\] is not int or None"),
    ({"extra": [1, 2]}, r"field 'extra' must be a dict, got list"),
    ({"scheduler_state": "x"}, r"field 'scheduler_state' must be a dict, got str"),
    ({"class_names": "abcdefgh"}, r"field 'class_names' must be a list of at most 1024 names"),
    ({"class_names": ["c"] * 5000}, r"field 'class_names' must be a list of at most 1024"),
    ({"model_state": {"w": "x"}}, r"field 'model_state' is missing or not a dict of tensors"),
]


@pytest.mark.parametrize(("edits", "match"), BAD_FIELDS)
def test_mistyped_missing_or_out_of_range_fields_are_refused(
    tiny_ckpt: dict[str, Any],
    tmp_path: Path,
    make_trainer: Any,
    edits: dict[str, Any],
    match: str,
) -> None:
    path = _save(tiny_ckpt, tmp_path / "last.pt", **edits)
    with pytest.raises(CheckpointError, match=r"last\.pt: " + match + ".*" + DAMAGED):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"last\.pt: " + match):
        make_trainer(None).load_checkpoint(path)


# ----------------------------------------------------------------------------- training state


def _trainer_with_scheduler(make_trainer: Any) -> Any:
    trainer = make_trainer(None)
    trainer.scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, step_size=2)
    return trainer


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"last_epoch": "ten"}, r"scheduler state does not match .*last_epoch = 'ten'"),
        (
            {"base_lrs": [0.1, 0.1, 0.1]},
            r"scheduler state does not match .*base_lrs = a list of 3, expected like a list of 1;",
        ),
        ({"gamma": None}, r"scheduler state does not match .*\.gamma = None, expected like 0\.1;"),
    ],
)
def test_bad_scheduler_state_is_refused_on_resume(
    tmp_path: Path, make_trainer: Any, edit: dict[str, Any], match: str
) -> None:
    source = _trainer_with_scheduler(make_trainer)
    path = source.save_checkpoint(tmp_path / "last.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["scheduler_state"].update(edit)
    atomic_save(ckpt, path)
    target = _trainer_with_scheduler(make_trainer)
    before = {k: v.clone() for k, v in target.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"last\.pt: the " + match):
        target.load_checkpoint(path)
    after = target.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # refused before loading
    with pytest.raises(CheckpointError, match=r"last\.pt: the " + match):
        load_training_state(path, target.model, target.optimizer, target.scheduler)


def test_bad_optimizer_value_is_refused(tmp_path: Path, make_trainer: Any) -> None:
    path = make_trainer(None).save_checkpoint(tmp_path / "last.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["optimizer_state"]["param_groups"][0]["lr"] = "0.1; rm -rf /"
    atomic_save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"optimizer state does not match .*\[0\]\.lr"):
        make_trainer(None).load_checkpoint(path)
