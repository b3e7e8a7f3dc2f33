"""Checkpoint files: atomic writes, safe loading and rebuilding a model from a file alone.

A checkpoint is a plain ``dict`` of tensors and plain data (built by
:func:`make_checkpoint`; its keys are listed in the Training guide's *Checkpoints* table),
saved with :func:`torch.save` and always loaded with ``torch.load(..., weights_only=True)``.
Every field read from a file is then checked against a bounded schema before use (a
stored model config by :func:`~suimseg.models.registry.check_stored_config`, which never
takes ``encoder_weights`` from a file).
Writes are atomic (temporary file, fsync, rename): a crash or full disk mid-write leaves
the previous file intact.

:func:`save_safetensors` writes only the weights as ``.safetensors`` (no pickle at all:
the format to share), with string metadata ``format`` (``"suimseg-weights"``),
``format_version``, ``suimseg_version``, ``model`` (JSON ``{"name", "config"}``),
``class_names`` (JSON list) and, when the source checkpoint has one, ``run_config``;
:func:`load_model` rebuilds the model from either kind of file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import re
import reprlib
import shutil
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, cast

import numpy as np
import torch
from torch import nn

from suimseg._atomic import atomic_write, fsync_dir, temporary_path, write_error
from suimseg._version import __version__
from suimseg.errors import CheckpointError, ConfigError, MissingDependencyError
from suimseg.models import MODEL_NAMES, build_model, model_spec
from suimseg.models.registry import check_stored_config, model_class

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "SAFETENSORS_FORMAT",
    "atomic_link",
    "atomic_save",
    "capture_rng_state",
    "convert_checkpoint",
    "load_checkpoint",
    "load_model",
    "load_training_state",
    "make_checkpoint",
    "read_run_config",
    "restore_rng_state",
    "save_safetensors",
    "save_training_state",
]

logger = logging.getLogger("suimseg")

#: Value of the ``"format"`` key of every suimseg checkpoint.
CHECKPOINT_FORMAT = "suimseg-checkpoint"
#: The checkpoint layout written by this version (readers refuse newer ones).
FORMAT_VERSION = 1
#: Value of the ``"format"`` metadata of a suimseg ``.safetensors`` weights file.
SAFETENSORS_FORMAT = "suimseg-weights"

PathLike = str | os.PathLike[str]

#: Bounds of the plain data read from a checkpoint (``extra``, ``run_config``, metadata).
_MAX_DEPTH, _MAX_JSON_BYTES = 8, 64 * 1024
#: Counters read from a checkpoint: (field, types, min, max); ``extra.`` ones in ``extra``.
_COUNTERS: tuple[tuple[str, tuple[type, ...], float, float], ...] = (
    ("epoch", (int,), 0, 10**6),
    ("global_step", (int,), 0, 10**12),
    ("best_metric", (float, int, type(None)), -1e6, 1e6),
    ("extra.best_epoch", (int, type(None)), 0, 10**6),
    ("extra.epochs_without_improvement", (int,), 0, 10**6),
    ("extra.skipped_steps", (int,), 0, 10**12),
)
_DAMAGED = "the file is damaged or not from suimseg"
#: The key that marks a Lightning ``.ckpt`` (with ``state_dict`` and ``hyper_parameters``).
_LIGHTNING_VERSION = "pytorch-lightning_version"
#: The attribute of :class:`~suimseg.lightning.SUIMSegModule` that holds the model.
_LIGHTNING_PREFIX = "model."
#: Bounds of ``extra["history"]`` (one record per completed epoch; not in the 64 KiB of extra).
_MAX_HISTORY_ROWS, _MAX_HISTORY_ROW_BYTES = 10**6, 64 * 1024


# ----------------------------------------------------------------------------- atomic I/O


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    try:
        atomic_write(path, write, what="checkpoint")
    except OSError as exc:
        if exc.filename == str(path):  # a failed write, already worded by write_error
            raise
        raise write_error(path, exc, what="checkpoint") from exc  # e.g. reading a source


def atomic_save(obj: Any, path: PathLike) -> Path:
    """Save ``obj`` with :func:`torch.save` atomically (temporary file, fsync, rename).

    Args:
        obj: Anything :func:`torch.save` accepts.
        path: Destination file; its folder is created if needed.

    Returns:
        The destination path.

    Raises:
        OSError: If the file cannot be written; names the path (the previous file stays).

    Example:
        >>> import tempfile, torch
        >>> p = atomic_save({"x": torch.ones(2)}, tempfile.mkdtemp() + "/a.pt")
        >>> torch.load(p, weights_only=True)["x"].tolist()
        [1.0, 1.0]
    """
    dest = Path(path)
    _atomic_write(dest, lambda fh: torch.save(obj, fh))
    return dest


def atomic_link(src: PathLike, dst: PathLike) -> Path:
    """Make ``dst`` a hard link to ``src`` atomically; an atomic copy where links fail.

    Used for ``best.pt``: ``last.pt`` is only ever replaced by a rename, so the link keeps
    the old content when ``last.pt`` is rewritten, and the 0.9 GB are not written twice.

    Raises:
        OSError: As :func:`atomic_save` (only from the fallback copy).
    """
    dest = Path(dst)
    tmp = temporary_path(dest, "link")
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dest)
        tmp.unlink(missing_ok=True)  # rename(2) does nothing when both are the same file
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)

        def copy(fh: IO[bytes]) -> None:
            with open(src, "rb") as fin:
                shutil.copyfileobj(fin, fh, length=16 * 1024 * 1024)

        _atomic_write(dest, copy)
        return dest
    fsync_dir(dest.parent)
    return dest


# ----------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """Return the torch (CPU, CUDA), numpy and Python ``random`` states as plain data.

    Only tensors, ints, floats, strs and ``None``, so it loads with ``weights_only=True``.

    Example:
        >>> state = capture_rng_state()
        >>> a = torch.rand(1); restore_rng_state(state); bool(torch.rand(1) == a)
        True
    """
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))  # noqa: NPY002
    name, keys, pos, has_gauss, cached_gaussian = np_state
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "bit_generator": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore random states captured by :func:`capture_rng_state`.

    CUDA states are restored only where the device count matches (e.g. not on a CPU box).

    Raises:
        CheckpointError: If ``state`` lacks the expected entries.
    """
    try:
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
        cuda_states = list(state.get("cuda") or [])
        if cuda_states and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda_states])
        npy = state["numpy"]
        keys = npy["keys"].cpu().numpy().astype(np.uint32)
        gauss = (int(npy["has_gauss"]), float(npy["cached_gaussian"]))
        np.random.set_state((npy["bit_generator"], keys, int(npy["pos"]), *gauss))  # noqa: NPY002
        py = state["python"]
        internal = tuple(int(v) for v in py["state"].tolist())
        random.setstate((int(py["version"]), internal, py["gauss_next"]))
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"rng state: expected the dict written by capture_rng_state(), got an invalid "
            f"entry ({exc}); resume without restoring RNG or use a checkpoint written by "
            "suimseg"
        ) from exc


# ----------------------------------------------------------------------------- checkpoints


def make_checkpoint(
    model: nn.Module,
    *,
    model_spec: Mapping[str, Any] | None,
    optimizer_state: Mapping[str, Any] | None = None,
    scheduler_state: Mapping[str, Any] | None = None,
    scaler_state: Mapping[str, Any] | None = None,
    epoch: int = 0,
    global_step: int = 0,
    best_metric: float | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    rng: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a checkpoint dict (keys: the Training guide's *Checkpoints* table).

    Args:
        model: The (unwrapped) model whose ``state_dict`` is stored.
        model_spec: ``{"name", "config"}`` to rebuild it, or ``None`` for a custom model.
        optimizer_state: ``optimizer.state_dict()``.
        scheduler_state: ``scheduler.state_dict()``.
        scaler_state: ``GradScaler.state_dict()``.
        epoch: Completed epochs.
        global_step: Optimizer steps taken.
        best_metric: Best validation mIoU so far.
        class_names: One name per output class.
        rng: :func:`capture_rng_state` output (captured now when ``None``).
        extra: Further JSON-like data.

    Returns:
        The checkpoint dict, ready for :func:`atomic_save`.

    Example:
        >>> ckpt = make_checkpoint(torch.nn.Linear(2, 2), model_spec=None)
        >>> ckpt["format_version"]
        1
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "suimseg_version": __version__,
        "torch_version": str(torch.__version__),
        "model": None if model_spec is None else dict(model_spec),
        "model_state": model.state_dict(),
        "optimizer_state": None if optimizer_state is None else dict(optimizer_state),
        "scheduler_state": None if scheduler_state is None else dict(scheduler_state),
        "scaler_state": None if scaler_state is None else dict(scaler_state),
        "epoch": int(epoch),
        "global_step": int(global_step),
        "best_metric": None if best_metric is None else float(best_metric),
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "rng": dict(rng) if rng is not None else capture_rng_state(),
        "extra": dict(extra or {}),
    }


def load_checkpoint(
    path: PathLike, *, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Load and validate a suimseg checkpoint with ``torch.load(..., weights_only=True)``.

    Args:
        path: A file written by the :class:`~suimseg.engine.Trainer` or :func:`atomic_save`
            of a :func:`make_checkpoint` dict.
        map_location: Where to put the tensors (default CPU).
        mmap: Memory-map the file (tensors read only when used; legacy non-zip files are
            read whole).

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointError: If the file is empty, truncated, corrupt, text or other non-PyTorch
            data, holds pickled Python code (refused by ``weights_only=True``), is not a
            suimseg checkpoint, was written by a newer format version, or has a field
            outside its bounded schema (counters, model config, nesting and size of
            ``extra``; see docs/reliability.md); the message names the file and the field.

    Example:
        >>> import tempfile
        >>> p = atomic_save(make_checkpoint(torch.nn.Linear(2, 2), model_spec=None),
        ...                 tempfile.mkdtemp() + "/last.pt")
        >>> load_checkpoint(p)["epoch"]
        0
    """
    file = Path(path)
    if file.suffix.lower() == ".safetensors" and file.is_file():
        raise CheckpointError(
            f"checkpoint {file}: a .safetensors file holds only model weights, not a "
            "training state; rebuild the model with suimseg.load_model(path), or resume "
            "from a last.pt"
        )
    return _checked_suimseg(_torch_load(file, map_location, mmap=mmap), file)


def _checked_suimseg(ckpt: Any, file: Path) -> dict[str, Any]:
    """``ckpt`` (loaded from ``file``) if it is a valid suimseg checkpoint, else an error."""
    if not _is_suimseg(ckpt):
        if _is_lightning(ckpt) or _is_state_dict(ckpt):
            hint = (
                "it holds model weights, not a suimseg training state: rebuild the model "
                "with suimseg.load_model(path)"
                + (", or convert it with suimseg.engine.convert_checkpoint(path, "
                   "'best.pt')" if _is_lightning(ckpt) else "")
            )  # fmt: skip
        else:
            hint = "pass a last.pt/best.pt written by suimseg"
        raise CheckpointError(
            f"checkpoint {file}: expected a suimseg checkpoint (a dict with "
            f"format={CHECKPOINT_FORMAT!r}), found {_describe(ckpt)}; {hint}"
        )
    _check_version(ckpt, f"checkpoint {file}", "checkpoint format")
    _check_fields(ckpt, f"checkpoint {file}")
    return cast(dict[str, Any], ckpt)


def _torch_load(file: Path, map_location: str | torch.device, *, mmap: bool = False) -> Any:
    """``torch.load(file, weights_only=True)``; a missing or unreadable file is named."""
    if not file.is_file():
        raise FileNotFoundError(
            errno.ENOENT,
            f"checkpoint file {file} does not exist; pass the path of a last.pt/best.pt "
            "written by the trainer (or a Lightning .ckpt)",
            str(file),
        )
    use_mmap = mmap and zipfile.is_zipfile(file)
    try:
        return torch.load(file, map_location=map_location, weights_only=True, mmap=use_mmap)
    except Exception as exc:  # RuntimeError, EOFError, KeyError, BadZipFile... on bad bytes
        raise _unreadable(file, exc) from exc


def _is_suimseg(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def _is_lightning(obj: Any) -> bool:
    return isinstance(obj, dict) and "state_dict" in obj and _LIGHTNING_VERSION in obj


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _describe(obj: Any) -> str:
    """What a loaded file holds, in words, for error messages."""
    if _is_lightning(obj):
        return "a Lightning checkpoint"
    if _is_state_dict(obj):
        return f"a plain state_dict with {len(obj)} tensors (no model config)"
    if isinstance(obj, dict):
        keys = ", ".join(repr(k) for k in list(obj)[:6]) + (", ..." if len(obj) > 6 else "")
        return f"a dict with keys [{keys}] and no suimseg or Lightning marker"
    return f"a {type(obj).__name__}"


def _unreadable(file: Path, exc: Exception) -> CheckpointError:
    """The error for a file ``torch.load(weights_only=True)`` refused: what the file looks like."""
    code = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if code:  # a real pickle naming a function or class: what torch calls "unsupported global"
        return CheckpointError(
            f"checkpoint {file}: refused: it holds pickled Python code ({code[1]}), which "
            "would run on loading. suimseg loads only tensors and plain data; suimseg's own "
            "checkpoints never hold code, so this file was made or changed by someone else."
        )
    with file.open("rb") as fh:
        head = fh.read(4096)
    if not head:
        what = "is empty (0 bytes): its write never finished"
    elif head.startswith((b"PK\x03\x04", b"\x80\x02\x8a\x0a")):  # torch.save: zip, legacy
        what = "is truncated or corrupt (a PyTorch file cut short or damaged)"
    elif all(b >= 32 or b in b"\t\n\r" for b in head):
        what = "is a text file, not a PyTorch checkpoint"
    else:
        what = "is not a checkpoint (binary data that torch.save did not write)"
    return CheckpointError(
        f"checkpoint {file}: the file {what}; pass a last.pt/best.pt written by suimseg "
        "(for a damaged one use another, e.g. best.pt instead of last.pt, or retrain)"
    )


def _depth_ok(value: Any, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` dicts/lists (walks no deeper than that)."""
    items = value.values() if isinstance(value, dict) else value
    if not isinstance(items, (list, tuple)) and not isinstance(value, dict):
        return True
    return limit > 0 and all(_depth_ok(v, limit - 1) for v in items)


def _check_bounded(value: Any, where: str, field: str, *, sized: bool = True) -> None:
    """Refuse plain data nested deeper than ``_MAX_DEPTH`` or above ``_MAX_JSON_BYTES``."""
    if not _depth_ok(value, _MAX_DEPTH):
        problem = f"nested deeper than {_MAX_DEPTH} levels"
    elif sized and (size := len(json.dumps(value, default=str, skipkeys=True))) > _MAX_JSON_BYTES:
        problem = f"{size} bytes of JSON, above the limit {_MAX_JSON_BYTES}"
    else:
        return
    raise CheckpointError(f"{where}: field {field!r} is {problem}; {_DAMAGED}")


def _check_fields(ckpt: dict[str, Any], where: str) -> None:
    """Validate every field read from a checkpoint before any use (the model spec in place)."""
    state = ckpt.get("model_state")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{where}: field 'model_state' is missing or not a dict of "
                              f"tensors; {_DAMAGED}")  # fmt: skip
    for field in ("model", "optimizer_state", "scheduler_state", "scaler_state", "rng", "extra"):
        value = ckpt.get(field)
        if value is not None and not isinstance(value, dict):
            raise CheckpointError(f"{where}: field {field!r} must be a dict, got "
                                  f"{type(value).__name__}; {_DAMAGED}")  # fmt: skip
        if field == "extra" and value is not None and "history" in value:
            _check_history(value["history"], where)
            value = {k: v for k, v in value.items() if k != "history"}
        _check_bounded(value, where, field, sized=field in ("model", "extra"))
    extra = ckpt.get("extra") or {}
    for field, types, low, high in _COUNTERS:
        holder, key = (extra, field[6:]) if field.startswith("extra.") else (ckpt, field)
        number: Any = holder.get(key)
        if key not in holder and field != "epoch":
            continue
        typed = isinstance(number, types) and not isinstance(number, bool)
        if not typed or (number is not None and not low <= number <= high):
            shown = reprlib.repr(number) if key in holder else "(missing)"
            kinds = " or ".join(t.__name__ for t in types).replace("NoneType", "None")
            raise CheckpointError(f"{where}: field {field!r} = {shown} is not {kinds} in "
                                  f"[{low}, {high}]; {_DAMAGED}")  # fmt: skip
    names = ckpt.get("class_names")
    if names is not None and not (
        isinstance(names, list)
        and len(names) <= 1024
        and all(isinstance(c, str) and len(c) <= 256 for c in names)
    ):
        raise CheckpointError(f"{where}: field 'class_names' must be a list of at most 1024 "
                              f"names, got {reprlib.repr(names)}; {_DAMAGED}")  # fmt: skip
    ckpt["model"] = _stored_spec(ckpt.get("model"), where)


def _check_history(rows: Any, where: str) -> None:
    """Refuse an ``extra["history"]`` that is not a bounded list of shallow dicts."""
    if not isinstance(rows, list) or len(rows) > _MAX_HISTORY_ROWS:
        raise CheckpointError(f"{where}: field 'extra.history' must be a list of at most "
                              f"{_MAX_HISTORY_ROWS} epoch records, got "
                              f"{reprlib.repr(rows)}; {_DAMAGED}")  # fmt: skip
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise CheckpointError(f"{where}: field 'extra.history' row {i} must be a dict, "
                                  f"got {type(row).__name__}; {_DAMAGED}")  # fmt: skip
        if not _depth_ok(row, 2):
            raise CheckpointError(f"{where}: field 'extra.history' row {i} is nested deeper "
                                  f"than an epoch record (2 levels); {_DAMAGED}")  # fmt: skip
        size = len(json.dumps(row, default=str, skipkeys=True))
        if size > _MAX_HISTORY_ROW_BYTES:
            raise CheckpointError(f"{where}: field 'extra.history' row {i} is {size} bytes of "
                                  f"JSON, above the limit {_MAX_HISTORY_ROW_BYTES}; "
                                  f"{_DAMAGED}")  # fmt: skip


def _stored_spec(spec: Any, where: str, field: str = "model") -> dict[str, Any] | None:
    """Validate a stored ``{"name", "config"}`` model spec (``None``: a custom model).

    ``field`` is the name of the field that held the model's name, for the message.
    """
    if spec is None:
        return None
    name = spec.get("name") if isinstance(spec, dict) else None
    if name not in MODEL_NAMES:
        raise CheckpointError(f"{where}: field {field!r} names the model {reprlib.repr(name)}, "
                              f"not one of {', '.join(MODEL_NAMES)}; {_DAMAGED}")  # fmt: skip
    config = check_stored_config(model_class(name), spec.get("config"), f"{where}: model config")
    return {"name": name, "config": config}


def _check_version(info: Mapping[str, Any], where: str, kind: str) -> None:
    """Refuse a missing, non-integer or newer ``info["format_version"]``."""
    version = info.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where}: expected an integer format_version >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: written with {kind} {version} by suimseg "
            f"{info.get('suimseg_version', '?')}, but this suimseg ({__version__}) reads "
            f"format <= {FORMAT_VERSION}; upgrade suimseg (pip install -U suimseg)"
        )


def _spec_or_none(model: nn.Module) -> dict[str, Any] | None:
    try:
        return model_spec(model)
    except ConfigError:
        return None


# ----------------------------------------------------------------------------- training state


def _training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    *,
    epoch: int = 0,
    global_step: int = 0,
    best_metric: float | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`make_checkpoint` from live objects (with the model spec of a suimseg model)."""
    return make_checkpoint(
        model,
        model_spec=_spec_or_none(model),
        optimizer_state=None if optimizer is None else optimizer.state_dict(),
        scheduler_state=None if scheduler is None else scheduler.state_dict(),
        scaler_state=None if scaler is None else scaler.state_dict(),
        epoch=epoch,
        global_step=global_step,
        best_metric=best_metric,
        class_names=class_names,
        extra=extra,
    )


def _restore_training_state(
    state: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    *,
    restore_rng: bool = True,
    source: str = "checkpoint",
) -> None:
    """Load a :func:`_training_state` dict into live objects (errors name ``source``)."""
    own_spec = _spec_or_none(model)
    saved_spec = state.get("model")
    if own_spec is not None and saved_spec is not None and own_spec != saved_spec:
        raise CheckpointError(
            f"{source}: written for model {saved_spec}, but the trainer's model "
            f"is {own_spec}; build the model with the checkpoint's config "
            "(or use suimseg.load_model)"
        )
    for field, live in (("optimizer_state", optimizer), ("scheduler_state", scheduler),
                        ("scaler_state", scaler)):  # fmt: skip
        if state.get(field) is not None and live is not None:
            _check_like(state[field], live.state_dict(), field, source)
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: the weights do not fit this model: {exc}") from exc
    if state.get("optimizer_state") is not None and optimizer is not None:
        try:
            optimizer.load_state_dict(state["optimizer_state"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{source}: the optimizer state does not match this optimizer "
                f"({exc}); build the optimizer with the same parameter groups"
            ) from exc
    if state.get("scheduler_state") is not None:
        if scheduler is None:
            logger.warning("%s holds a scheduler state but the trainer has none", source)
        else:
            scheduler.load_state_dict(state["scheduler_state"])
    if state.get("scaler_state") is not None and scaler is not None:
        scaler.load_state_dict(state["scaler_state"])
    if restore_rng and state.get("rng") is not None:
        restore_rng_state(state["rng"])


def _check_like(saved: Any, live: Any, field: str, source: str) -> None:
    """Refuse a stored optimizer/scheduler/scaler state whose values' types or list lengths
    differ from those of the live object's ``state_dict()`` (keys only one side has pass)."""
    if isinstance(saved, dict) and isinstance(live, dict):
        for key in saved.keys() & live.keys():
            _check_like(saved[key], live[key], f"{field}.{key}", source)
        return
    if isinstance(saved, (list, tuple)) and isinstance(live, (list, tuple)):
        if len(saved) == len(live):
            for i, (s, v) in enumerate(zip(saved, live, strict=True)):
                _check_like(s, v, f"{field}[{i}]", source)
            return
    elif live is None or (isinstance(saved, bool) == isinstance(live, bool) and (
        isinstance(saved, type(live)) or {type(saved), type(live)} <= {int, float}
    )):  # fmt: skip
        return
    kind = re.split(r"[.\[]", field)[0].replace("_", " ")
    got, want = ((f"a list of {len(v)}" if isinstance(v, (list, tuple)) else reprlib.repr(v))
                 for v in (saved, live))  # fmt: skip
    raise CheckpointError(
        f"{source}: the {kind} does not match this trainer's: {field} = {got}, expected like "
        f"{want}; the file is damaged, or build the {kind.split()[0]} as in the run that wrote it"
    )


def save_training_state(path: PathLike, **kwargs: Any) -> Path:
    """Write the checkpoint of a custom training loop's live objects to ``path`` atomically.

    Args:
        path: Destination file.
        **kwargs: ``model`` (required), ``optimizer``, ``scheduler``, ``scaler`` (an enabled
            fp16 ``GradScaler``), ``epoch``, ``global_step``, ``best_metric``,
            ``class_names`` and ``extra``, stored as by :func:`make_checkpoint`.

    Returns:
        The destination path.

    Example:
        >>> import tempfile
        >>> model = torch.nn.Linear(2, 2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> p = save_training_state(tempfile.mkdtemp() + "/last.pt", model=model,
        ...                         optimizer=opt, epoch=1)
        >>> load_training_state(p, model, opt)["epoch"]
        1
    """
    return atomic_save(_training_state(**kwargs), path)


def load_training_state(
    path: PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    *,
    restore_rng: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a checkpoint file into live objects; return its dict (with the counters).

    Args:
        path: A checkpoint file.
        model: Gets the weights.
        optimizer: Gets the optimizer state, when both are present.
        scheduler: Gets the scheduler state, when both are present.
        scaler: Gets the fp16 scaler state, when both are present.
        restore_rng: Also restore the random states (needed for an exact resume).
        map_location: Where to put the tensors.

    Raises:
        CheckpointError: If the file is invalid, was written for another architecture, or
            does not fit the objects (also an optimizer/scheduler/scaler state whose value
            types or list lengths differ from the live object's; checked before loading).
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    _restore_training_state(
        ckpt, model, optimizer, scheduler, scaler,
        restore_rng=restore_rng, source=f"checkpoint {path}",
    )  # fmt: skip
    return ckpt


def read_run_config(source: PathLike | Mapping[str, Any]) -> dict[str, Any] | None:
    """The run settings stored in a checkpoint (``extra["run_config"]``), if any.

    For ``suimseg train`` that is the whole ``TrainConfig`` (e.g. the training
    ``image_size``). For a Lightning ``.ckpt`` of :class:`~suimseg.lightning.SUIMSegModule`
    it is ``{"image_size": N}``, the size recorded in its ``hyper_parameters``. A file is
    memory-mapped, so only the metadata is read.

    Args:
        source: A checkpoint file, a Lightning ``.ckpt``, a ``.safetensors`` export, or an
            already loaded checkpoint dict.

    Returns:
        A copy of the stored settings, or ``None`` for checkpoints written without them
        (older files, a trainer given no ``run_config``, a ``.ckpt`` that records no
        ``image_size``).

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointError: If the file is neither a valid suimseg checkpoint nor a Lightning
            ``.ckpt``, or a ``.ckpt``'s ``image_size`` is not a positive int.

    Example:
        >>> import tempfile
        >>> ckpt = make_checkpoint(torch.nn.Linear(2, 2), model_spec=None,
        ...                        extra={"run_config": {"image_size": 320}})
        >>> read_run_config(atomic_save(ckpt, tempfile.mkdtemp() + "/last.pt"))
        {'image_size': 320}
    """
    if isinstance(source, Mapping):
        if _is_lightning(source):
            return _lightning_run_config(dict(source), "the Lightning checkpoint")
        stored = (source.get("extra") or {}).get("run_config")
    elif Path(source).suffix.lower() == ".safetensors":
        metadata = _read_safetensors(Path(source), tensors=False)[0]
        stored = _json_metadata(metadata, "run_config", f"weights file {source}")
    else:
        file = Path(source)
        raw = _torch_load(file, "cpu", mmap=True)
        if _is_lightning(raw):
            return _lightning_run_config(raw, f"checkpoint {file}")
        stored = (_checked_suimseg(raw, file).get("extra") or {}).get("run_config")
    return dict(stored) if isinstance(stored, dict) else None


#: Largest image size accepted from a ``.ckpt`` (as ``TrainConfig.image_size``).
_MAX_IMAGE_SIZE = 8192


def _lightning_run_config(raw: dict[str, Any], where: str) -> dict[str, Any] | None:
    """``{"image_size": N}`` from a Lightning ``.ckpt``'s ``hyper_parameters``, if recorded.

    :class:`~suimseg.lightning.SUIMSegModule` records the size it was trained at there
    (given, or taken from the datamodule); older files and other modules have none.
    """
    hp = raw.get("hyper_parameters")
    size = hp.get("image_size") if isinstance(hp, dict) else None
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= _MAX_IMAGE_SIZE:
        raise CheckpointError(
            f"{where}: field 'hyper_parameters.image_size' = {reprlib.repr(size)} is not an "
            f"int in [1, {_MAX_IMAGE_SIZE}]; {_DAMAGED}"
        )
    return {"image_size": size}


def load_model(
    path: PathLike,
    *,
    model: nn.Module | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild a model from a checkpoint, Lightning ``.ckpt`` or ``.safetensors`` file alone.

    Every file is read with ``torch.load(..., weights_only=True)`` (or as safetensors, no
    pickle at all) and its model config is checked against a bounded schema before anything
    is built; nothing is downloaded. Accepted files:

    - a suimseg checkpoint (``best.pt``/``last.pt`` written by the trainer);
    - a suimseg ``.safetensors`` export (:func:`save_safetensors`);
    - a Lightning ``.ckpt`` of :class:`~suimseg.lightning.SUIMSegModule` (the model config
      from its ``hyper_parameters``, the weights under the module's ``model.`` prefix;
      reading it does not need Lightning installed);
    - with ``model`` given, also a plain ``state_dict`` file, a ``.safetensors`` file
      without suimseg metadata, or a Lightning ``.ckpt`` of any module holding the model's
      weights under one attribute prefix.

    Keys prefixed by :func:`torch.compile` (``_orig_mod.``) load wherever the prefix occurs.

    Args:
        path: The file.
        model: The model to load the weights into instead of rebuilding one from the file's
            model config (needed for custom models and files without a config). It is
            loaded strictly, moved to ``map_location`` and set to eval mode.
        map_location: Device for the weights and the returned model (default CPU).

    Returns:
        The model in eval mode, on ``map_location``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointError: If the file is unreadable or holds something else, has no model
            config and no ``model`` was given, has a config outside the bounded schema, or
            its weights do not fit the model; the message names the file, what it holds
            (e.g. "a plain state_dict with 122 tensors") and what to do.
        MissingDependencyError: For a ``.safetensors`` file without the ``safetensors``
            package.

    Example:
        >>> model = load_model("runs/exp1/best.pt")  # doctest: +SKIP
        >>> model = load_model("checkpoints/epoch=9-step=900.ckpt")  # doctest: +SKIP
        >>> model = load_model("weights.pt", model=build_model("unet_resattn_v3"))  # doctest: +SKIP
    """
    parts = _read_parts(Path(path), map_location)
    where = f"checkpoint {path}"
    if model is None:
        net = _model_from(parts, where)
    else:
        _load_into(model, parts, where, built=False)
        net = model
    net.to(map_location)
    net.eval()
    return net


class _Parts(NamedTuple):
    """What :func:`_read_parts` found in a weights file."""

    what: str  # in words, for messages: "a Lightning checkpoint", ...
    spec: dict[str, Any] | None  # validated; None: no suimseg model config
    state: dict[str, torch.Tensor]  # as stored (prefixes not yet resolved)
    lightning: bool
    ckpt: dict[str, Any] | None  # the validated suimseg checkpoint, when it is one
    epoch: int = 0
    global_step: int = 0
    run_config: dict[str, Any] | None = None  # as read_run_config reads it


def _read_parts(file: Path, map_location: str | torch.device) -> _Parts:
    """Read and validate any weights file :func:`load_model` accepts."""
    where = f"checkpoint {file}"
    if file.suffix.lower() == ".safetensors":
        metadata = _read_safetensors(file, tensors=False)[0]
        if metadata.get("format") != SAFETENSORS_FORMAT:
            state = _read_safetensors(file)[1]
            what = f"a .safetensors file with {len(state)} tensors and no suimseg metadata"
            return _Parts(what, None, state, False, None)
        spec, state = _load_safetensors_model_parts(file)
        run_config = _json_metadata(metadata, "run_config", where)
        return _Parts(
            "a suimseg .safetensors file", spec, state, False, None,
            run_config=dict(run_config) if isinstance(run_config, dict) else None,
        )  # fmt: skip
    raw = _torch_load(file, map_location)
    if _is_suimseg(raw):
        _check_version(raw, where, "checkpoint format")
        _check_fields(raw, where)
        what = "a suimseg checkpoint" + (
            " of a custom model (no suimseg model spec)" if raw["model"] is None else ""
        )
        counters = (raw["epoch"], raw.get("global_step", 0))
        return _Parts(what, raw["model"], raw["model_state"], False, raw, *counters,
                      run_config=read_run_config(raw))  # fmt: skip
    if _is_lightning(raw):
        return _lightning_parts(raw, where)
    if _is_state_dict(raw):
        return _Parts(_describe(raw), None, cast(dict[str, torch.Tensor], raw), False, None)
    raise CheckpointError(
        f"{where}: found {_describe(raw)}; expected a suimseg checkpoint, a Lightning .ckpt, "
        "a .safetensors file or a state_dict of tensors. Pass a best.pt written by suimseg "
        "or a checkpoint of one of those kinds."
    )


def _lightning_parts(raw: dict[str, Any], where: str) -> _Parts:
    """The validated model spec and weights of a Lightning ``.ckpt`` dict."""
    state: dict[str, torch.Tensor] = raw.get("state_dict", {})
    if not _is_state_dict(state):
        raise CheckpointError(f"{where}: a Lightning checkpoint whose 'state_dict' is not a "
                              f"non-empty dict of tensors; {_DAMAGED}")  # fmt: skip
    counters = []
    for field, high in (("epoch", 10**6), ("global_step", 10**12)):
        number = raw.get(field, 0)
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= high:
            raise CheckpointError(f"{where}: field {field!r} = {reprlib.repr(number)} is not "
                                  f"int in [0, {high}]; {_DAMAGED}")  # fmt: skip
        counters.append(number)
    epoch, global_step = counters
    hp = raw.get("hyper_parameters")
    if not (isinstance(hp, dict) and "model" in hp and "model_name" in hp):
        what = (
            "a Lightning checkpoint without suimseg hyperparameters (no 'model' and "
            "'model_name' in its hyper_parameters: a SUIMSegModule given an nn.Module, or "
            "another LightningModule)"
        )
        return _Parts(what, None, state, True, None, epoch, global_step)
    _check_bounded(hp["model"], where, "hyper_parameters.model")
    spec = _stored_spec(
        {"name": hp["model_name"], "config": hp["model"]},
        f"{where}: hyper_parameters",
        "model_name",
    )
    return _Parts("a Lightning checkpoint", spec, state, True, None, epoch, global_step,
                  _lightning_run_config(raw, where))  # fmt: skip


def _model_from(parts: _Parts, where: str) -> nn.Module:
    """Build the model of ``parts.spec`` (validated) and load the weights into it."""
    spec = parts.spec
    if spec is None:
        fixes = "build the model as in training and pass it: suimseg.load_model(path, model=net)"
        if parts.lightning:
            fixes += ", or SUIMSegModule.load_from_checkpoint(path, model=net)"
        elif parts.ckpt is None:
            fixes += ", or net.load_state_dict(torch.load(path, weights_only=True))"
        raise CheckpointError(
            f"{where}: found {parts.what}, so the architecture is unknown and the model "
            f"cannot be rebuilt from the file alone; {fixes}"
        )
    try:
        model = build_model(spec["name"], **dict(spec.get("config") or {}))
    except ConfigError as exc:
        raise CheckpointError(f"{where}: cannot rebuild the model: {exc}") from exc
    _load_into(model, parts, where, built=True)
    return model


def _strip_compiled(key: str) -> str:
    """``key`` without the ``_orig_mod`` parts :func:`torch.compile` adds."""
    return ".".join(p for p in key.split(".") if p != "_orig_mod") if "_orig_mod" in key else key


def _fit_keys(
    state: Mapping[str, torch.Tensor], expected: set[str]
) -> dict[str, torch.Tensor] | None:
    """``state`` keyed like ``expected``: ``_orig_mod.`` parts dropped, and the one prefix
    (``model.``, ``module.``, ...) under which exactly the expected keys are found
    removed; ``None`` when no prefix gives exactly ``expected``."""
    plain = {_strip_compiled(k): v for k, v in state.items()}
    if set(plain) == expected or not expected:
        return plain
    anchor = min(expected)
    prefixes = {k[: len(k) - len(anchor)] for k in plain if k.endswith("." + anchor)}
    for prefix in sorted(prefixes, key=len):
        sub = {k[len(prefix) :]: v for k, v in plain.items() if k.startswith(prefix)}
        if set(sub) == expected:
            return sub
    return None


def _load_into(model: nn.Module, parts: _Parts, where: str, *, built: bool) -> None:
    """Load ``parts.state`` strictly into ``model`` (prefixes resolved)."""
    name = (parts.spec or {}).get("name") if built else type(model).__name__
    fitted = _fit_keys(parts.state, set(model.state_dict()))
    if fitted is None and parts.lightning:
        tops = sorted({k.split(".")[0] + "." for k in parts.state})
        shown = ", ".join(repr(t) for t in tops[:8]) + (", ..." if len(tops) > 8 else "")
        raise CheckpointError(
            f"{where}: found {parts.what} whose state_dict holds no complete set of the "
            f"{name} model's weights under one prefix (expected e.g. {_LIGHTNING_PREFIX!r}; "
            f"its keys start with {shown}); "
            + ("the file is damaged or its weights belong to another model"
               if built else "pass the model the module was trained with")
        )  # fmt: skip
    if fitted is None:  # load as stored, for torch's list of missing/unexpected keys
        fitted = {_strip_compiled(k): v for k, v in parts.state.items()}
    try:
        model.load_state_dict(fitted)
    except RuntimeError as exc:
        source = " built from the stored config" if built else " given as model="
        raise CheckpointError(
            f"{where}: the stored weights do not fit the {name} model{source}: {exc}"
        ) from exc


# ----------------------------------------------------------------------------- conversion

ConvertFormat = Literal["suimseg", "lightning", "safetensors"]
_SUFFIX_FORMATS: dict[str, ConvertFormat] = {
    ".ckpt": "lightning", ".safetensors": "safetensors", ".pt": "suimseg", ".pth": "suimseg",
}  # fmt: skip


def _lightning_version() -> str:
    """The installed Lightning's version, else ``2.0.0`` (Lightning migrates nothing then)."""
    from importlib import metadata

    for dist in ("lightning", "pytorch-lightning"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
    return "2.0.0"


def convert_checkpoint(
    source: PathLike, dest: PathLike, *, to: ConvertFormat | None = None
) -> Path:
    """Convert a model file to another format in one call, atomically.

    The source is anything :func:`load_model` rebuilds from the file alone (a suimseg
    checkpoint, a Lightning ``.ckpt`` of :class:`~suimseg.lightning.SUIMSegModule`, a
    suimseg ``.safetensors``; ``_orig_mod.`` prefixes are dropped); the weights are
    loaded into the rebuilt model (so they are known to fit) and written unchanged:

    - ``"suimseg"``: a suimseg checkpoint (model spec, weights, the source's ``epoch`` and
      ``global_step``, and its class names and run config when it has them, e.g. a
      ``.ckpt``'s ``image_size`` as ``{"image_size": N}``; no optimizer state), for
      ``load_model``, ``suimseg predict``/``evaluate``/``export``;
    - ``"lightning"``: a Lightning ``.ckpt`` that
      ``SUIMSegModule.load_from_checkpoint(path)`` loads (``hyper_parameters`` ``model``,
      ``model_name`` and, when the source records its training size, ``image_size``; the
      weights under ``model.``; the other module arguments take their defaults; not a
      training state to resume with ``ckpt_path``). Lightning need not be installed to
      write it;
    - ``"safetensors"``: as :func:`save_safetensors`.

    Args:
        source: The file to convert.
        dest: The file to write (its folder is created if needed).
        to: The output format; by default from ``dest``'s suffix (``.ckpt``: Lightning,
            ``.safetensors``, ``.pt``/``.pth``: suimseg).

    Returns:
        The destination path.

    Raises:
        ConfigError: If ``to`` is not a known format, or is ``None`` and ``dest`` has
            another suffix.
        CheckpointError: If ``source`` cannot be rebuilt from the file alone (see
            :func:`load_model`).
        OSError: If ``dest`` cannot be written (the previous file stays).

    Example:
        >>> convert_checkpoint("epoch=9-step=900.ckpt", "best.pt")  # doctest: +SKIP
        >>> convert_checkpoint("runs/exp1/best.pt", "exp1.ckpt")  # doctest: +SKIP
    """
    fmt = to if to is not None else _SUFFIX_FORMATS.get(Path(dest).suffix.lower())
    if fmt not in ("suimseg", "lightning", "safetensors"):
        got = f"to={to!r}" if to is not None else f"dest {str(dest)!r}"
        raise ConfigError(
            f"to: expected 'suimseg', 'lightning' or 'safetensors' (or a dest ending in .pt, "
            f".pth, .ckpt or .safetensors), got {got}; give dest one of those suffixes or "
            "pass to='suimseg', 'lightning' or 'safetensors' (suimseg convert --to)"
        )
    parts = _read_parts(Path(source), "cpu")
    model = _model_from(parts, f"checkpoint {source}")
    spec = cast(dict[str, Any], parts.spec)
    ckpt = parts.ckpt or {}
    run_config = parts.run_config
    if fmt == "safetensors":
        return save_safetensors(source, dest)
    if fmt == "lightning":
        hparams: dict[str, Any] = {"model": dict(spec["config"]), "model_name": spec["name"]}
        size = (run_config or {}).get("image_size")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            hparams["image_size"] = size
        out: dict[str, Any] = {
            "epoch": parts.epoch,
            "global_step": parts.global_step,
            _LIGHTNING_VERSION: _lightning_version(),
            "state_dict": {_LIGHTNING_PREFIX + k: v for k, v in model.state_dict().items()},
            "hparams_name": "kwargs",
            "hyper_parameters": hparams,
        }
    else:
        out = make_checkpoint(
            model,
            model_spec=spec,
            epoch=parts.epoch,
            global_step=parts.global_step,
            class_names=ckpt.get("class_names"),
            rng={},
            extra=None if run_config is None else {"run_config": run_config},
        )
        out["rng"] = None  # no random state to restore: it was not saved with the weights
    return atomic_save(out, dest)


# ----------------------------------------------------------------------------- safetensors


def _safetensors_torch() -> Any:
    try:
        import safetensors.torch as st
    except ImportError:
        raise MissingDependencyError(
            "safetensors", "safetensors", "Reading or writing .safetensors weights"
        ) from None
    return st


def save_safetensors(
    source: nn.Module | PathLike,
    path: PathLike,
    *,
    class_names: tuple[str, ...] | list[str] | None = None,
) -> Path:
    """Write a model's weights atomically to a ``.safetensors`` file, its spec as metadata.

    Args:
        source: A suimseg model, or the path of a file :func:`load_model` rebuilds a
            model from (a suimseg checkpoint such as ``best.pt``, a Lightning ``.ckpt``).
        path: Destination, normally ending in ``.safetensors``.
        class_names: One name per class (taken from the checkpoint when ``source`` is one).

    Returns:
        The destination path.

    Raises:
        CheckpointError: If ``source`` is a custom model or checkpoint without a suimseg
            model spec (it could not be rebuilt from the file).
        MissingDependencyError: If ``safetensors`` is not installed.
        OSError: If the file cannot be written (the message names it).

    Example:
        >>> save_safetensors("runs/exp1/best.pt", "model.safetensors")  # doctest: +SKIP
        >>> model = load_model("model.safetensors")  # doctest: +SKIP
    """
    st = _safetensors_torch()
    if isinstance(source, nn.Module):
        try:
            spec: Any = model_spec(source)
        except ConfigError as exc:
            raise CheckpointError(
                f"save_safetensors: the model has no suimseg spec ({exc}); only models built "
                "by suimseg can be rebuilt from a weights file"
            ) from exc
        state = source.state_dict()
        run_config = None
    else:
        parts = _read_parts(Path(source), "cpu")
        ckpt = parts.ckpt or {}
        run_config = parts.run_config
        if class_names is None and ckpt.get("class_names"):
            class_names = list(ckpt["class_names"])
        spec = parts.spec
        if ckpt and spec is not None:  # a suimseg checkpoint: its weights as stored
            state = parts.state
        else:  # the weights fitted to the model (a Lightning prefix, _orig_mod. removed)
            state = _model_from(parts, f"checkpoint {source}").state_dict()
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    metadata = {
        "format": SAFETENSORS_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "suimseg_version": __version__,
        "model": json.dumps(spec),
        "class_names": json.dumps(None if class_names is None else [str(c) for c in class_names]),
    }
    if run_config is not None:
        metadata["run_config"] = json.dumps(run_config)
    data: bytes = st.save(tensors, metadata=metadata)
    dest = Path(path)

    def write(fh: IO[bytes]) -> None:
        fh.write(data)

    _atomic_write(dest, write)
    return dest


def _read_safetensors(file: Path, *, tensors: bool = True) -> tuple[dict[str, str], Any]:
    """The metadata and (with ``tensors``) the tensors of a ``.safetensors`` file (no pickle)."""
    st = _safetensors_torch()
    if not file.is_file():
        raise FileNotFoundError(
            errno.ENOENT, f"weights file {file} does not exist; check the path", str(file)
        )
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as fh:
            metadata = fh.metadata() or {}
        return metadata, st.load_file(str(file)) if tensors else None
    except Exception as exc:  # SafetensorError, OSError, ValueError from a bad header
        raise CheckpointError(
            f"weights file {file}: not a readable .safetensors file (truncated or corrupt: "
            f"{exc}); get the file again"
        ) from exc


def _load_safetensors_model_parts(file: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """The model spec and the tensors of a suimseg ``.safetensors`` file."""
    metadata = _read_safetensors(file, tensors=False)[0]
    if metadata.get("format") != SAFETENSORS_FORMAT:
        raise CheckpointError(
            f"weights file {file}: expected suimseg metadata (format={SAFETENSORS_FORMAT!r}), "
            f"got {metadata.get('format')!r}; without the model spec the architecture is "
            "unknown. Build the model yourself and load_state_dict(safetensors.torch."
            "load_file(path))."
        )
    raw = metadata.get("format_version")
    version = int(raw) if isinstance(raw, str) and raw.isdigit() else raw
    where = f"weights file {file}"
    _check_version({**metadata, "format_version": version}, where, "format")
    spec = _stored_spec(_json_metadata(metadata, "model", where), where)
    return spec, _read_safetensors(file)[1]


def _json_metadata(metadata: Mapping[str, str], key: str, where: str) -> Any:
    """The bounded JSON value of a ``.safetensors`` metadata entry (``None`` if absent)."""
    text = metadata.get(key)
    if text is None:
        return None
    _check_bounded(text, where, key)  # its length, before parsing
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(
            f"{where}: the {key!r} metadata is not JSON or nested too deeply; {_DAMAGED}"
        ) from exc
    _check_bounded(value, where, key)
    return value
