"""Inference backends: eager PyTorch (``"torch"``) and ONNX Runtime (``"onnxruntime"``).

An ONNX Runtime session is wrapped as a parameter-free :class:`torch.nn.Module`
(:class:`OnnxRuntimeModel`), so :class:`~suimseg.inference.Predictor`'s TTA, ensembles
(also mixed with PyTorch models) and tiling work with it unchanged. From a checkpoint,
:func:`cached_onnx_export` exports once to ``<checkpoint stem>.onnx`` beside it, keyed by
the checkpoint's SHA-256 stored in the ONNX metadata (re-exported when the checkpoint
changes); an ``.onnx`` file is used as it is. The backend needs the ``onnx`` extra
(``pip install 'suimseg[onnx]'``).

:func:`native_bf16_cpu` tells whether this CPU has native bf16 instructions (AVX512-BF16
or AMX; ``bf16`` on Arm), which decides the Predictor's ``amp="auto"`` on the CPU.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from suimseg._atomic import atomic_write_bytes
from suimseg.errors import (
    CheckpointError,
    ConfigError,
    InputNotFoundError,
    MissingDependencyError,
)

logger = logging.getLogger("suimseg")

__all__ = [
    "Backend",
    "OnnxRuntimeModel",
    "cached_onnx_export",
    "load_inference_model",
    "native_bf16_cpu",
    "read_onnx_metadata",
    "write_onnx_metadata",
]

Backend = Literal["torch", "onnxruntime"]

#: ONNX metadata key holding the SHA-256 of the checkpoint an export was made from.
SOURCE_KEY = "suimseg_checkpoint_sha256"
#: ONNX metadata key holding the model's training input size (``suimseg export --onnx``),
#: which ``suimseg predict`` / ``evaluate`` use for an ``.onnx`` file.
IMAGE_SIZE_KEY = "suimseg_image_size"

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def check_backend(backend: object) -> Backend:
    """``backend`` if it is one of :data:`Backend`'s values, else a :class:`ConfigError`."""
    if backend not in get_args(Backend):
        raise ConfigError(
            f"backend: expected one of {list(get_args(Backend))}, got {backend!r}; "
            "'onnxruntime' needs pip install 'suimseg[onnx]'"
        )
    return backend  # type: ignore[return-value]


# --------------------------------------------------------------------------- bf16 probe


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = [ln for ln in f if ln.startswith(("flags", "Features"))]
    except OSError:  # not Linux
        return set()
    return set(lines[0].split(":", 1)[1].split()) if lines else set()


def native_bf16_cpu() -> bool:
    """Whether this CPU executes bf16 natively (AVX512-BF16 or AMX; ``bf16`` on Arm).

    Asks torch's CPU probes (``torch.cpu._is_avx512_bf16_supported``,
    ``torch.cpu._is_amx_tile_supported``) and falls back to the ``/proc/cpuinfo`` flags
    where torch has no probe. Without native bf16, autocast emulates it and is several
    times slower than float32.

    Example:
        >>> isinstance(native_bf16_cpu(), bool)
        True
    """
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        if fn is not None:
            try:
                if bool(fn()):
                    return True
            except Exception:  # a probe that fails means "unknown": try the next
                continue
    flags = _cpuinfo_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


# --------------------------------------------------------------------------- onnxruntime


def _onnxruntime(feature: str) -> Any:
    """The ``onnxruntime`` module, or a :class:`MissingDependencyError` naming the extra."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise MissingDependencyError("onnxruntime", "onnx", feature)
    # Imported by name: onnxruntime ships without type information.
    return importlib.import_module("onnxruntime")


class OnnxRuntimeModel(nn.Module):
    """An ONNX Runtime session as a parameter-free module: ``(N, 3, H, W)`` -> logits.

    The input goes to the session as float32 NumPy (copied to the CPU if needed); the
    logits come back on the input's device. Works with every
    :class:`~suimseg.inference.Predictor` option except ``amp`` (autocast is PyTorch's).

    Args:
        path: An ``.onnx`` file (e.g. from :func:`~suimseg.inference.export_onnx`).
        providers: ONNX Runtime execution providers (default ``["CPUExecutionProvider"]``).
        threads: Intra-op threads (default: ``torch.get_num_threads()``, as PyTorch uses).

    Raises:
        MissingDependencyError: If onnxruntime is not installed.
        InputNotFoundError: If ``path`` does not exist.

    Example:
        >>> model = OnnxRuntimeModel("best.onnx")  # doctest: +SKIP
        >>> Predictor(model, image_size=384, tta=True).predict("a.jpg")  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        ort = _onnxruntime("the onnxruntime backend")
        self.path = Path(path)
        if not self.path.is_file():
            raise InputNotFoundError(f"ONNX model: no file at {self.path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads if threads is not None else torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=self.providers
        )
        self.input_name: str = self.session.get_inputs()[0].name

    @property
    def metadata(self) -> dict[str, str]:
        """The model's custom ONNX metadata (e.g. the source checkpoint's SHA-256)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def forward(self, x: Tensor) -> Tensor:
        """Run the session on ``x``; the logits are returned on ``x``'s device."""
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run(None, {self.input_name: arr})[0]
        return torch.from_numpy(out).to(x.device)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, providers={self.providers}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stored_source(path: Path) -> str | None:
    """The checkpoint digest in an export's metadata (``None`` if absent or unreadable)."""
    onnx: Any = importlib.import_module("onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # a truncated or foreign file: export again
        return None
    return next((p.value for p in proto.metadata_props if p.key == SOURCE_KEY), None)


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The custom metadata of an ``.onnx`` file (``{}`` without onnx or for a bad file).

    Args:
        path: The ``.onnx`` file (its weights are not read).

    Example:
        >>> read_onnx_metadata("model.onnx").get(IMAGE_SIZE_KEY)  # doctest: +SKIP
        '384'
    """
    try:
        onnx: Any = importlib.import_module("onnx")
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # onnx missing, a truncated or foreign file: no metadata
        return {}
    return {p.key: p.value for p in proto.metadata_props}


def write_onnx_metadata(path: str | os.PathLike[str], entries: Mapping[str, str]) -> Path:
    """Set custom metadata entries of an ``.onnx`` file in place (rewritten atomically).

    Args:
        path: The ``.onnx`` file (a single file, under protobuf's 2 GB limit).
        entries: Keys and values to set; other entries are kept, these replaced.

    Returns:
        ``path``.

    Raises:
        MissingDependencyError: If onnx is not installed.
        OSError: If the file cannot be rewritten (it stays as it was).
    """
    if importlib.util.find_spec("onnx") is None:
        raise MissingDependencyError("onnx", "onnx", "writing ONNX metadata")
    onnx: Any = importlib.import_module("onnx")
    proto = onnx.load(str(path))
    return atomic_write_bytes(path, _with_metadata(proto, entries).SerializeToString())


def _with_metadata(proto: Any, entries: Mapping[str, str]) -> Any:
    """``proto`` (an ``onnx.ModelProto``) with ``entries`` set in its custom metadata."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        proto.metadata_props.add(key=key, value=value)
    return proto


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def user_cache_dir() -> Path:
    """Where exports of checkpoints in read-only folders go: ``$XDG_CACHE_HOME/suimseg/onnx``
    (default ``~/.cache/suimseg/onnx``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "suimseg" / "onnx"


def declared_in_channels(model: nn.Module) -> int | None:
    """The input channels a model declares in its ``config`` (suimseg models), else None."""
    config = getattr(model, "config", None)
    channels = config.get("in_channels") if isinstance(config, Mapping) else None
    return channels if isinstance(channels, int) and not isinstance(channels, bool) else None


def require_rgb(model: nn.Module, source: str | os.PathLike[str]) -> nn.Module:
    """``model``, if it reads RGB images; else a :class:`CheckpointError` naming ``source``."""
    channels = declared_in_channels(model)
    if isinstance(model, OnnxRuntimeModel):
        dim = model.session.get_inputs()[0].shape[1]
        channels = dim if isinstance(dim, int) else None
    if channels is not None and channels != 3:
        raise CheckpointError(
            f"checkpoint {source}: its model expects {channels} input channels, but images "
            "are read as RGB (3 channels); use a checkpoint of a model trained on RGB images "
            "(in_channels=3)"
        )
    return model


def cached_onnx_export(checkpoint: str | os.PathLike[str], *, example_size: int = 64) -> Path:
    """The ONNX export of ``checkpoint``, made once and reused while the checkpoint is unchanged.

    The export is ``<stem>.onnx`` beside the checkpoint (``best.pt`` -> ``best.onnx``);
    in a read-only folder it goes to :func:`user_cache_dir` as
    ``<stem>-<digest>.onnx`` (said once, with a warning). The checkpoint's SHA-256 is stored
    in the export's metadata; an export whose digest differs is replaced (atomically).
    Every new export passes :func:`~suimseg.inference.export_onnx`'s onnxruntime parity
    check.

    Args:
        checkpoint: A suimseg checkpoint (``best.pt``) or ``.safetensors`` export.
        example_size: Side of the example input used to export (N, H, W stay dynamic).

    Returns:
        The path of the up-to-date ``.onnx`` file.

    Raises:
        InputNotFoundError: If ``checkpoint`` does not exist.
        MissingDependencyError: If onnx, onnxscript or onnxruntime is not installed.
        CheckpointError: If the checkpoint cannot be loaded.

    Example:
        >>> cached_onnx_export("runs/exp1/best.pt")  # doctest: +SKIP
        PosixPath('runs/exp1/best.onnx')
    """
    from suimseg.engine import load_model
    from suimseg.inference.export import _require, export_onnx

    for module in ("onnx", "onnxscript", "onnxruntime"):
        _require(module, "the onnxruntime backend from a checkpoint")
    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise InputNotFoundError(f"checkpoint: no file at {ckpt}")
    digest = _sha256(ckpt)
    target = ckpt.with_suffix(".onnx")
    if not _writable(ckpt.parent) and not (target.is_file() and _writable(target)):
        fallback = user_cache_dir() / f"{ckpt.stem}-{digest[:16]}.onnx"
        _warn_once(
            str(ckpt.parent),
            f"{ckpt.parent} is not writable: the ONNX export of {ckpt.name} is cached in "
            f"{fallback.parent}",
        )
        target = fallback
    if target.is_file() and _stored_source(target) == digest:
        return target
    onnx: Any = importlib.import_module("onnx")
    model = require_rgb(load_model(ckpt), checkpoint)
    logger.info(
        "exporting %s to %s for onnxruntime (once: reused while the checkpoint is unchanged)",
        ckpt,
        target,
    )
    with tempfile.TemporaryDirectory(prefix="suimseg-onnx-") as tmp:
        exported = export_onnx(
            model, Path(tmp) / "model.onnx", example_shape=(1, 3, example_size, example_size)
        )
        proto = onnx.load(str(exported))
    entries = {SOURCE_KEY: digest, "suimseg_checkpoint": ckpt.name}
    return atomic_write_bytes(target, _with_metadata(proto, entries).SerializeToString())


def load_inference_model(
    source: str | os.PathLike[str],
    *,
    backend: Backend = "torch",
    device: torch.device | str = "cpu",
    threads: int | None = None,
) -> nn.Module:
    """A model for :class:`~suimseg.inference.Predictor` from a checkpoint or ``.onnx`` file.

    Args:
        source: A suimseg checkpoint (``best.pt``), a ``.safetensors`` export, or (with
            ``backend="onnxruntime"``) an ``.onnx`` file.
        backend: ``"torch"`` (eager PyTorch, :func:`~suimseg.engine.load_model`) or
            ``"onnxruntime"`` (an :class:`OnnxRuntimeModel`; from a checkpoint through
            :func:`cached_onnx_export`).
        device: Where the model runs. ``"onnxruntime"`` on CUDA needs onnxruntime's
            ``CUDAExecutionProvider`` (the ``onnxruntime-gpu`` package).
        threads: onnxruntime intra-op threads (default ``torch.get_num_threads()``).

    Raises:
        ConfigError: For an unknown backend, an ``.onnx`` file with ``backend="torch"``,
            or ``"onnxruntime"`` on a CUDA device without the CUDA provider.
        MissingDependencyError: For ``"onnxruntime"`` without the ``onnx`` extra.
        CheckpointError: If the file cannot be loaded, or its model expects other than 3
            input channels (images are read as RGB).

    Example:
        >>> model = load_inference_model("best.pt", backend="onnxruntime")  # doctest: +SKIP
    """
    backend = check_backend(backend)
    dev = torch.device(device)
    is_onnx = Path(source).suffix.lower() == ".onnx"
    if backend == "torch":
        if is_onnx:
            raise ConfigError(
                f"backend: {source} is an ONNX file, which runs with backend='onnxruntime' "
                "(--backend onnxruntime), not 'torch'"
            )
        from suimseg.engine import load_model

        return require_rgb(load_model(source, map_location=dev), source)
    ort = _onnxruntime("the onnxruntime backend")
    providers = ["CPUExecutionProvider"]
    if dev.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError(
                f"backend: 'onnxruntime' on device {dev} needs onnxruntime's "
                "CUDAExecutionProvider (pip install onnxruntime-gpu), which is not available; "
                "use device='cpu' (--device cpu) or backend='torch'"
            )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif dev.type != "cpu":
        raise ConfigError(
            f"backend: 'onnxruntime' runs on 'cpu' or 'cuda', got device {dev}; "
            "use backend='torch' on this device"
        )
    path = Path(source) if is_onnx else cached_onnx_export(source)
    return require_rgb(OnnxRuntimeModel(path, providers=providers, threads=threads), source)
