"""Hub-style sharing: ``save_pretrained`` / ``from_pretrained`` for suimseg models.

A model saved with :meth:`HubMixin.save_pretrained` is a folder holding two files at its
root, the layout of ``huggingface_hub``'s ``PyTorchModelHubMixin``:

- ``config.json``: the model's constructor keyword arguments (``model.config``), so
  ``type(model)(**json.load(open("config.json")))`` rebuilds the architecture;
- ``model.safetensors``: every parameter and persistent buffer, in the
  `safetensors <https://huggingface.co/docs/safetensors>`_ format (no pickle).

Upload such a folder to the Hugging Face Hub as it is (``huggingface_hub.upload_folder``)
and :meth:`HubMixin.from_pretrained` loads it from the folder or from its repo id.

Loading never unpickles anything and never reads or downloads a file named inside
``config.json``: a folder that holds only ``pytorch_model.bin`` / ``*.pt`` weights is
refused, and an ``encoder_weights`` entry in the config is replaced by ``None`` (the
trained weights come from ``model.safetensors``).

Needs ``safetensors`` (``pip install 'suimseg[hub]'``); loading by repo id also needs
``huggingface_hub`` (same extra). A local folder needs no network and no ``huggingface_hub``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from typing_extensions import Self

from suimseg._atomic import atomic_write_bytes, atomic_write_text
from suimseg._version import __version__
from suimseg.errors import (
    CheckpointError,
    ConfigError,
    MissingDependencyError,
    WeightsUnavailableError,
)
from suimseg.models.registry import check_stored_config

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "HubMixin"]

#: Name of the constructor-config file at the root of a saved folder.
CONFIG_NAME = "config.json"
#: Name of the weights file at the root of a saved folder.
WEIGHTS_NAME = "model.safetensors"

#: Weight files that need unpickling to read; refused by :meth:`HubMixin.from_pretrained`.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: ``owner/name`` as the Hugging Face Hub spells a repo id.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Largest ``config.json`` read (a model config is a few hundred bytes).
_MAX_CONFIG_BYTES = 64 * 1024


def _safetensors_torch() -> Any:
    try:
        import safetensors.torch as st
    except ImportError:
        raise MissingDependencyError(
            "safetensors",
            "hub",
            "Saving or loading a model folder (save_pretrained / from_pretrained)",
        ) from None
    return st


class HubMixin:
    """Add ``save_pretrained`` / ``from_pretrained`` to a suimseg model.

    The model class must be an ``nn.Module`` whose ``config`` attribute holds its
    constructor keyword arguments (JSON-able) and whose ``model_name`` names it; every
    suimseg model does. The folder layout (``config.json`` + ``model.safetensors``) is that
    of ``huggingface_hub.PyTorchModelHubMixin``, so the folders upload to and download from
    the Hugging Face Hub unchanged.

    Example:
        >>> import tempfile
        >>> from suimseg.models import UNetResAttnV3
        >>> model = UNetResAttnV3(encoder="resnet18", decoder_channels=(32, 16, 8, 8),
        ...                       bridge_channels=32)
        >>> folder = model.save_pretrained(tempfile.mkdtemp())
        >>> sorted(p.name for p in folder.iterdir())
        ['config.json', 'model.safetensors']
        >>> again = UNetResAttnV3.from_pretrained(folder)
        >>> again.config == model.config
        True
    """

    model_name: ClassVar[str]
    config: dict[str, Any]

    def _hub_module(self) -> nn.Module:
        if not isinstance(self, nn.Module):
            raise ConfigError(
                f"{type(self).__name__}: HubMixin needs an nn.Module subclass, got "
                f"{type(self).__mro__}"
            )
        return self

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``save_directory``.

        The folder is created if needed; other files in it are left alone, and the two
        files are each written atomically (a crash never leaves a truncated one).

        Args:
            save_directory: The destination folder.

        Returns:
            The folder.

        Raises:
            MissingDependencyError: If ``safetensors`` is not installed.
            ConfigError: If the model's ``config`` is not JSON-able.
        """
        module = self._hub_module()
        st = _safetensors_torch()
        folder = Path(save_directory)
        config = dict(self.config)
        try:
            config_text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"save_pretrained: {type(self).__name__}.config must be JSON-able (numbers, "
                f"strings, bools, lists), got {config!r} ({exc})"
            ) from exc
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        metadata = {
            "format": "pt",  # what huggingface_hub and transformers expect
            "suimseg_model": type(self).model_name,
            "suimseg_version": __version__,
        }
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / WEIGHTS_NAME, st.save(tensors, metadata=metadata))
        atomic_write_text(folder / CONFIG_NAME, config_text)
        return folder

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | os.PathLike[str],
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        map_location: str | torch.device = "cpu",
    ) -> Self:
        """Build the model from a saved folder or a Hugging Face Hub repo id.

        Args:
            pretrained: A local folder written by :meth:`save_pretrained`, or a Hub repo
                id ``"owner/name"`` (used only when no local folder of that name exists).
            revision: Hub branch, tag or commit (repo ids only).
            cache_dir: Hub cache folder (repo ids only; default: huggingface_hub's).
            local_files_only: Use only the Hub cache, never the network (repo ids only).
            map_location: Device the weights are loaded to.

        Returns:
            The model with the saved weights, in training mode (call ``.eval()`` for
            inference), like any freshly built ``nn.Module``.

        Raises:
            FileNotFoundError: If ``pretrained`` is neither a folder nor a repo id.
            CheckpointError: For a folder without ``config.json`` / ``model.safetensors``
                (one holding only pickled weights such as ``pytorch_model.bin`` is refused),
                an invalid ``config.json`` (over 64 KiB, unknown keys, wrong types, values
                outside :data:`~suimseg.models.registry.CONFIG_LIMITS`: checked before the
                model is built), or weights that do not fit the architecture.
            MissingDependencyError: If ``safetensors`` (or, for a repo id,
                ``huggingface_hub``) is not installed.
            WeightsUnavailableError: If a repo id cannot be downloaded (offline, unknown
                repo, no access).
        """
        st = _safetensors_torch()
        folder = _resolve(pretrained, revision, cache_dir, local_files_only)
        config_file = folder / CONFIG_NAME
        weights_file = folder / WEIGHTS_NAME
        _check_files(folder, config_file, weights_file, pretrained)
        kwargs = _read_config(cls, config_file)
        try:
            model = cls(**kwargs)
        except ConfigError as exc:
            raise CheckpointError(f"{config_file}: invalid model config: {exc}") from exc
        module = model._hub_module()
        try:
            from safetensors import safe_open

            with safe_open(str(weights_file), framework="pt") as fh:
                metadata = fh.metadata() or {}
            state: dict[str, torch.Tensor] = st.load_file(
                str(weights_file), device=str(map_location)
            )
        except Exception as exc:  # SafetensorError, OSError, ValueError from a bad header
            raise CheckpointError(
                f"{weights_file}: not a readable .safetensors file (truncated or corrupt: "
                f"{exc}); get the file again"
            ) from exc
        saved_as = metadata.get("suimseg_model")
        if saved_as is not None and saved_as != cls.model_name:
            raise CheckpointError(
                f"{weights_file}: holds the weights of a {saved_as!r} model, not "
                f"{cls.model_name!r}; load it with that model's class"
            )
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{weights_file}: the weights do not fit the {cls.__name__} built from "
                f"{config_file} (missing, unexpected or mis-shaped tensors): {exc}"
            ) from exc
        return module.to(map_location)  # type: ignore[return-value]


def _resolve(
    pretrained: str | os.PathLike[str],
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
) -> Path:
    """The local folder of ``pretrained``, downloading a Hub repo id if needed."""
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ConfigError(
            f"pretrained: expected a folder path or a Hub repo id 'owner/name', got {pretrained!r}"
        )
    path = Path(pretrained)
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(
            f"pretrained: {path} is a file; expected the folder holding {CONFIG_NAME} and "
            f"{WEIGHTS_NAME} (written by save_pretrained). For a single .safetensors or .pt "
            "file use suimseg.engine.load_model."
        )
    text = os.fspath(pretrained)
    if not isinstance(pretrained, str) or not _REPO_ID.match(text):
        raise FileNotFoundError(
            2,
            f"pretrained: no folder {text!r} (and it is not a Hub repo id 'owner/name'); "
            "check the path",
            text,
        )
    try:
        import huggingface_hub
    except ImportError:
        raise MissingDependencyError(
            "huggingface_hub",
            "hub",
            f"Loading {text!r} from the Hugging Face Hub (there is no local folder of that name)",
        ) from None
    try:
        local = huggingface_hub.snapshot_download(
            repo_id=text,
            revision=revision,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            local_files_only=local_files_only,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME],
        )
    except Exception as exc:  # offline, unknown repo, gated repo, HTTP errors...
        raise WeightsUnavailableError(
            f"pretrained: could not download the Hub repo {text!r} (revision={revision!r}): "
            f"{type(exc).__name__}: {exc}. Check the repo id and your connection, or pass "
            "a local folder."
        ) from exc
    return Path(local)


def _check_files(
    folder: Path, config_file: Path, weights_file: Path, source: str | os.PathLike[str]
) -> None:
    if not weights_file.is_file():
        pickles = sorted(
            p.name for p in folder.iterdir() if p.is_file() and p.suffix in _PICKLE_SUFFIXES
        )
        if pickles:
            raise CheckpointError(
                f"{folder}: holds {', '.join(pickles)} but no {WEIGHTS_NAME}. suimseg never "
                "unpickles downloaded or shared weights (a pickle can run arbitrary code). "
                f"If you trust the file, convert it once: load it yourself with torch.load("
                f"..., weights_only=True) into the model, then model.save_pretrained(...) "
                f"writes {WEIGHTS_NAME}."
            )
        if not Path(os.fspath(source)).is_dir():  # a Hub repo id, downloaded to `folder`
            raise CheckpointError(
                f"Hub repo {source!r} has no {WEIGHTS_NAME} at its root (only {CONFIG_NAME} "
                f"and {WEIGHTS_NAME} are downloaded; pickled weights such as "
                "pytorch_model.bin are never loaded). Ask its owner for a safetensors "
                "upload (save_pretrained writes one)."
            )
        raise CheckpointError(
            f"{folder}: no {WEIGHTS_NAME} (source {source!r}); expected a folder written by "
            "save_pretrained, holding config.json and model.safetensors"
        )
    if not config_file.is_file():
        raise CheckpointError(
            f"{folder}: no {CONFIG_NAME} beside {WEIGHTS_NAME} (source {source!r}); the "
            "architecture is unknown without it. Save the folder again with save_pretrained."
        )


def _read_config(cls: type[HubMixin], config_file: Path) -> dict[str, Any]:
    """Read ``config.json`` and validate it with the stored-config schema of ``cls``."""
    size = config_file.stat().st_size
    if size > _MAX_CONFIG_BYTES:
        raise CheckpointError(
            f"{config_file}: {size} bytes, above the limit {_MAX_CONFIG_BYTES} for a model "
            "config; the file is damaged or not from save_pretrained"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{config_file}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{config_file}: expected a JSON object of {cls.__name__} arguments, got "
            f"{type(config).__name__}"
        )
    return check_stored_config(cls, config, str(config_file))
