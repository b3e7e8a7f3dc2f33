"""save_pretrained / from_pretrained: the Hub folder layout, no pickle, validated configs."""

from __future__ import annotations

import builtins
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from suimseg.errors import (
    CheckpointError,
    MissingDependencyError,
    WeightsUnavailableError,
)
from suimseg.models import DeepLabV3ResNet50, UNetResAttnV3
from suimseg.models.hub import CONFIG_NAME, WEIGHTS_NAME

pytest.importorskip("safetensors")

TINY: dict[str, Any] = {
    "encoder": "resnet18",
    "decoder_channels": (32, 16, 8, 8),
    "bridge_channels": 32,
    "num_classes": 5,
}


def _tiny() -> UNetResAttnV3:
    torch.manual_seed(0)
    model = UNetResAttnV3(**TINY)
    # Non-default buffers too: running stats must survive the round trip bit for bit.
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    return model


def _assert_bit_exact(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


def test_unet_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model = _tiny()
    folder = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config == {**TINY, "decoder_channels": [32, 16, 8, 8]} | {
        k: v for k, v in model.config.items() if k not in TINY
    }
    loaded = UNetResAttnV3.from_pretrained(folder)
    assert type(loaded) is UNetResAttnV3
    assert loaded.config == model.config
    _assert_bit_exact(model, loaded)
    model.eval()
    loaded.eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))


def test_folder_is_huggingface_hub_layout(tmp_path: Path) -> None:
    """huggingface_hub's PyTorchModelHubMixin reads config.json as the constructor kwargs."""
    model = _tiny()
    folder = model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as fh:
        assert fh.metadata()["format"] == "pt"
    rebuilt = UNetResAttnV3(**json.loads((folder / CONFIG_NAME).read_text()))
    assert rebuilt.config == model.config


def test_deeplab_round_trip_is_bit_exact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DeepLabV3ResNet50(num_classes=4, aux_loss=True)
    loaded = DeepLabV3ResNet50.from_pretrained(model.save_pretrained(tmp_path))
    assert loaded.config == {"num_classes": 4, "aux_loss": True}
    _assert_bit_exact(model, loaded)


def test_pickle_only_folder_is_refused_naming_the_file(tmp_path: Path) -> None:
    model = _tiny()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / CONFIG_NAME).write_text(json.dumps(model.config))
    loads: list[object] = []
    real_load = torch.load
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
        with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*never unpickles"):
            UNetResAttnV3.from_pretrained(tmp_path)
    assert loads == []  # not even opened with weights_only=True


def test_missing_weights_and_missing_config(tmp_path: Path) -> None:
    folder = _tiny().save_pretrained(tmp_path / "m")
    (folder / CONFIG_NAME).unlink()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        UNetResAttnV3.from_pretrained(folder)
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=r"no model\.safetensors"):
        UNetResAttnV3.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="no folder"):
        UNetResAttnV3.from_pretrained(tmp_path / "does-not-exist")
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a file"):
        UNetResAttnV3.from_pretrained(tmp_path / "weights.pt")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"dropout": 0.1}, r"config\.json: unknown field\(s\) \['dropout'\]"),
        ({"bridge_channels": "32"}, r"config\.json: field 'bridge_channels' must be int"),
        ({"attention": 1}, r"config\.json: field 'attention' must be bool"),
        ({"decoder_channels": [32, 16, 8, 8.5]}, "field 'decoder_channels' must be a list"),
        ({"encoder": "resnet999"}, r"config\.json: field 'encoder' = 'resnet999' is not one of"),
    ],
)
def test_invalid_config_names_file_and_field(
    tmp_path: Path, edit: dict[str, Any], match: str
) -> None:
    folder = _tiny().save_pretrained(tmp_path)
    config = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps(config | edit))
    with pytest.raises(CheckpointError, match=match):
        UNetResAttnV3.from_pretrained(folder)


def test_config_that_is_not_an_object_or_not_json(tmp_path: Path) -> None:
    folder = _tiny().save_pretrained(tmp_path)
    (folder / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        UNetResAttnV3.from_pretrained(folder)
    (folder / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        UNetResAttnV3.from_pretrained(folder)


def test_encoder_weights_in_config_is_never_followed(tmp_path: Path) -> None:
    model = _tiny()
    folder = model.save_pretrained(tmp_path)
    config = json.loads((folder / CONFIG_NAME).read_text())
    # A path that would be read (and fail) or "imagenet" that would be downloaded.
    for source in ("imagenet", str(tmp_path / "evil.pt")):
        (folder / CONFIG_NAME).write_text(json.dumps({**config, "encoder_weights": source}))
        _assert_bit_exact(model, UNetResAttnV3.from_pretrained(folder))


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    folder = _tiny().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="unknown field"):
        DeepLabV3ResNet50.from_pretrained(folder)


def test_mismatched_weights_are_a_checkpoint_error(tmp_path: Path) -> None:
    folder = _tiny().save_pretrained(tmp_path)
    config = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**config, "bridge_channels": 64}))
    with pytest.raises(CheckpointError, match="do not fit"):
        UNetResAttnV3.from_pretrained(folder)


def test_corrupt_weights_are_a_checkpoint_error(tmp_path: Path) -> None:
    folder = _tiny().save_pretrained(tmp_path)
    (folder / WEIGHTS_NAME).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"not a readable \.safetensors"):
        UNetResAttnV3.from_pretrained(folder)


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in names:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for mod in list(sys.modules):
        if mod.split(".")[0] in names:
            monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_safetensors_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _tiny()
    _hide(monkeypatch, "safetensors")
    with pytest.raises(MissingDependencyError, match=r"suimseg\[hub\]"):
        model.save_pretrained(tmp_path)
    with pytest.raises(MissingDependencyError, match=r"suimseg\[hub\]"):
        UNetResAttnV3.from_pretrained(tmp_path)


def test_repo_id_without_huggingface_hub_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _hide(monkeypatch, "huggingface_hub")
    with pytest.raises(MissingDependencyError, match=r"huggingface_hub.*suimseg\[hub\]") as info:
        UNetResAttnV3.from_pretrained("someone/suim-unet")
    assert "no local folder" in str(info.value)


def test_repo_id_downloads_with_snapshot_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = pytest.importorskip("huggingface_hub")
    model = _tiny()
    repo = model.save_pretrained(tmp_path / "repo")
    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(**kwargs: Any) -> str:
        calls.append(kwargs)
        cache = tmp_path / "cache" / kwargs["repo_id"].replace("/", "--")
        shutil.copytree(repo, cache, dirs_exist_ok=True)
        return str(cache)

    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.chdir(tmp_path)  # no local folder called someone/suim-unet
    loaded = UNetResAttnV3.from_pretrained(
        "someone/suim-unet", revision="v1", cache_dir=tmp_path / "cache", local_files_only=True
    )
    _assert_bit_exact(model, loaded)
    assert calls == [
        {
            "repo_id": "someone/suim-unet",
            "revision": "v1",
            "cache_dir": str(tmp_path / "cache"),
            "local_files_only": True,
            "allow_patterns": [CONFIG_NAME, WEIGHTS_NAME],  # never a pickle
        }
    ]


def test_repo_id_download_failure_is_weights_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = pytest.importorskip("huggingface_hub")

    def offline(**kwargs: Any) -> str:
        raise OSError("no network")

    monkeypatch.setattr(hub, "snapshot_download", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsUnavailableError, match=r"someone/suim-unet.*no network"):
        UNetResAttnV3.from_pretrained("someone/suim-unet")


def test_repo_without_safetensors_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = pytest.importorskip("huggingface_hub")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / CONFIG_NAME).write_text(json.dumps(_tiny().config))
    monkeypatch.setattr(hub, "snapshot_download", lambda **kwargs: str(snapshot))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"Hub repo 'someone/old-unet' has no model\.safe"):
        UNetResAttnV3.from_pretrained("someone/old-unet")


def test_local_folder_wins_over_repo_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny()
    model.save_pretrained(tmp_path / "someone" / "suim-unet")
    monkeypatch.chdir(tmp_path)
    _hide(monkeypatch, "huggingface_hub")  # would raise if the Hub path were taken
    _assert_bit_exact(model, UNetResAttnV3.from_pretrained("someone/suim-unet"))
