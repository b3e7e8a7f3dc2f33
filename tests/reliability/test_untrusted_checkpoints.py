"""Untrusted checkpoints and weights: no code runs, every bad file is a clear error.

The pickle payload below would create a marker file when unpickled. Each loader
(``load_checkpoint``, ``load_model``, ``Trainer.fit(resume_from=...)``, the encoder-weights
loader behind ``--encoder-weights PATH``) must refuse it with a clear error, and the marker
must not exist afterwards.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from suimseg.engine import (
    FORMAT_VERSION,
    atomic_save,
    load_checkpoint,
    load_model,
    make_checkpoint,
    save_safetensors,
)
from suimseg.errors import CheckpointError, MissingDependencyError
from suimseg.models import build_model
from suimseg.models.encoders import load_state_dict_file

GOLDEN_V1 = Path(__file__).parent / "data" / "checkpoint_v1.pt"
TINY_UNET = {
    "encoder": "resnet18",
    "decoder_channels": (16, 16, 8, 8),
    "bridge_channels": 16,
    "num_classes": 8,
}


class Payload:
    """Unpickling this calls ``open(marker, "w")``: code execution hidden in a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _evil_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    nested = make_checkpoint(nn.Linear(2, 2), model_spec=None)
    nested["extra"]["x"] = Payload(marker)
    files = {
        "nested": tmp_path / "nested.pt",
        "top-level": tmp_path / "toplevel.pt",
        "in-state-dict": tmp_path / "statedict.pt",
    }
    torch.save(nested, files["nested"])
    torch.save(Payload(marker), files["top-level"])
    torch.save({"weight": Payload(marker)}, files["in-state-dict"])
    return files


def test_the_payload_is_live_when_loaded_unsafely(tmp_path: Path) -> None:
    # Proof that the payload really runs code, so the refusals below mean something.
    marker = tmp_path / "PWNED"
    path = _evil_files(tmp_path, marker)["top-level"]
    handle = torch.load(path, weights_only=False)
    handle.close()
    assert marker.exists()


@pytest.mark.parametrize("which", ["nested", "top-level", "in-state-dict"])
def test_every_loader_refuses_a_pickle_payload(
    tmp_path: Path, which: str, make_trainer: Any, make_loader: Any
) -> None:
    marker = tmp_path / "PWNED"
    path = _evil_files(tmp_path, marker)[which]
    name = path.name.replace(".", r"\.")
    with pytest.raises(
        CheckpointError, match=rf"{name}: refused: it holds pickled Python code \(\w+\.open\)"
    ):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=rf"{name}: refused"):
        load_model(path)
    with pytest.raises(CheckpointError, match=rf"{name}: refused"):
        make_trainer(tmp_path / "run").fit(make_loader(), epochs=1, resume_from=path)
    with pytest.raises(CheckpointError, match=rf"{name}.*refused for safety"):
        load_state_dict_file(path, what="encoder_weights")
    assert not marker.exists()


# ----------------------------------------------------------------------------- bad files


def test_not_a_checkpoint_truncated_newer_and_unversioned(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save(nn.Linear(2, 2).state_dict(), plain)
    with pytest.raises(CheckpointError, match=r"plain\.pt: expected a suimseg checkpoint"):
        load_checkpoint(plain)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(
        CheckpointError, match=r"notes\.pt: the file is a text file, not a PyTorch checkpoint"
    ):
        load_checkpoint(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: the file is empty \(0 bytes\)"):
        load_model(empty)
    good = atomic_save(make_checkpoint(nn.Linear(2, 2), model_spec=None), tmp_path / "g.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    with pytest.raises(CheckpointError, match=r"cut\.pt: the file is truncated or corrupt"):
        load_checkpoint(cut)
    newer = make_checkpoint(nn.Linear(2, 2), model_spec=None)
    newer["format_version"] = FORMAT_VERSION + 1
    atomic_save(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match=r"newer\.pt: written with checkpoint format 2"):
        load_checkpoint(tmp_path / "newer.pt")
    del newer["format_version"]
    atomic_save(newer, tmp_path / "nover.pt")
    with pytest.raises(CheckpointError, match=r"nover\.pt: expected an integer format_version"):
        load_checkpoint(tmp_path / "nover.pt")


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"epoch: 3\nlr: 0.1\n", r"is a text file, not a PyTorch checkpoint"),  # was "(101)"
        (b'{"model": "unet"}', r"is a text file, not a PyTorch checkpoint"),
        (bytes(range(256)) * 16, r"is not a checkpoint \(binary data that torch\.save did not"),
        (b"\x80" + bytes(range(256)) * 4, r"is not a checkpoint"),
        (b"", r"is empty \(0 bytes\)"),
    ],
)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch's own
def test_unreadable_file_says_what_it_looks_like(tmp_path: Path, content: bytes, what: str) -> None:
    path = tmp_path / "best.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"best\.pt: the file " + what) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "pickled" not in message
    assert "weights_only" not in message
    assert not re.search(r"\(\d+\)|pop from|operand", message)  # no internal codes
    assert "pass a last.pt/best.pt written by suimseg" in message


def test_pickle_refusal_is_short_and_in_suimseg_words(tmp_path: Path) -> None:
    path = _evil_files(tmp_path, tmp_path / "PWNED")["nested"]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.count("\n") <= 1
    assert len(message) < 400
    assert "weights_only=False" not in message
    assert "add_safe_globals" not in message
    assert "pickled Python code (" in message
    assert "would run on loading" in message


def test_golden_v1_checkpoint_still_loads() -> None:
    # Written by suimseg 0.x with format 1 (see the script in docs/reliability.md); every
    # later version must keep reading it.
    ckpt = load_checkpoint(GOLDEN_V1)
    assert ckpt["format_version"] == 1
    assert ckpt["epoch"] == 3
    assert ckpt["global_step"] == 12
    assert ckpt["class_names"] == ["a", "b"]
    assert ckpt["model_state"]["weight"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    model = nn.Linear(2, 2)
    model.load_state_dict(ckpt["model_state"])


@pytest.mark.parametrize("version", range(1, FORMAT_VERSION + 1))
def test_every_supported_format_version_loads(tmp_path: Path, version: int) -> None:
    ckpt = make_checkpoint(nn.Linear(2, 2), model_spec=None, epoch=2)
    ckpt["format_version"] = version
    path = atomic_save(ckpt, tmp_path / f"v{version}.pt")
    assert load_checkpoint(path)["epoch"] == 2


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("unet_resattn_v3", **TINY_UNET)
    from suimseg.models import model_spec

    ckpt = make_checkpoint(model, model_spec=model_spec(model), class_names=list("abcdefgh"))
    return atomic_save(ckpt, tmp_path_factory.mktemp("unet") / "best.pt")


def test_config_that_does_not_match_the_weights_is_refused(unet_ckpt: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(unet_ckpt)
    ckpt["model"]["config"]["num_classes"] = 5
    path = atomic_save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match=r"mismatch\.pt: the stored weights do not fit"):
        load_model(path)
    ckpt["model"]["config"]["no_such_option"] = 1
    atomic_save(ckpt, path)
    with pytest.raises(
        CheckpointError,
        match=r"mismatch\.pt: model config: unknown field\(s\) \['no_such_option'\]",
    ):
        load_model(path)


# ----------------------------------------------------------------------------- safetensors


def test_safetensors_round_trip_from_model_and_checkpoint(unet_ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    from safetensors import safe_open

    reference = load_model(unet_ckpt)
    want = reference.state_dict()
    for source in (unet_ckpt, reference):
        out = save_safetensors(source, tmp_path / "model.safetensors")
        with safe_open(str(out), framework="pt") as fh:
            meta = fh.metadata()
        assert meta["format"] == "suimseg-weights"
        assert json.loads(meta["model"]) == {
            "name": "unet_resattn_v3",
            "config": load_checkpoint(unet_ckpt)["model"]["config"],
        }
        if source is unet_ckpt:
            assert json.loads(meta["class_names"]) == list("abcdefgh")
        model = load_model(out)
        assert type(model) is type(reference)
        assert not model.training
        got = model.state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_safetensors_bad_files(unet_ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    import safetensors.torch as st

    out = save_safetensors(unet_ckpt, tmp_path / "m.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(out.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: not a readable"):
        load_model(cut)
    bare = tmp_path / "bare.safetensors"
    st.save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(
        CheckpointError,
        match=r"bare\.safetensors: found a \.safetensors file with 1 tensors and no suimseg meta",
    ):
        load_model(bare)
    newer = tmp_path / "newer.safetensors"
    st.save_file(
        {"w": torch.zeros(2)},
        str(newer),
        metadata={"format": "suimseg-weights", "format_version": str(FORMAT_VERSION + 1)},
    )
    with pytest.raises(CheckpointError, match=r"newer\.safetensors: written with format 2"):
        load_model(newer)
    with pytest.raises(CheckpointError, match=r"m\.safetensors: a \.safetensors file holds only"):
        load_checkpoint(out)
    with pytest.raises(CheckpointError, match="custom model"):
        save_safetensors(nn.Linear(2, 2), tmp_path / "x.safetensors")


def test_safetensors_missing_dependency_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'suimseg\[safetensors\]'"):
        load_model(tmp_path / "m.safetensors")
