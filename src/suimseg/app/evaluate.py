"""Evaluate checkpoints on a SUIM split: plain, with TTA, and as an ensemble.

This is what ``suimseg evaluate`` runs; see :mod:`suimseg.inference.evaluation` for the
two protocols (never mixed in one table).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from suimseg.app.config import TrainConfig
from suimseg.data import SUIMDataset
from suimseg.data.dataset import Split
from suimseg.engine import resolve_device
from suimseg.engine.checkpoint import read_run_config
from suimseg.errors import CheckpointError, ConfigError
from suimseg.inference import (
    EvaluationResult,
    Predictor,
    evaluate_predictor,
    evaluate_suim_paper,
    format_comparison,
    format_gain_report,
    save_result,
)
from suimseg.inference.backends import (
    IMAGE_SIZE_KEY,
    Backend,
    check_backend,
    load_inference_model,
    read_onnx_metadata,
)
from suimseg.inference.predictor import AmpMode

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "EvaluateReport",
    "ProtocolName",
    "evaluate_checkpoint",
    "input_size_for",
    "run_config_for",
]

#: Model input size assumed when neither the caller, the checkpoint nor the run's
#: config.json gives one.
DEFAULT_IMAGE_SIZE = 384

ProtocolName = Literal["dataset-8class", "suim-paper"]
_PROTOCOLS: tuple[str, ...] = ("dataset-8class", "suim-paper")


@dataclass(frozen=True)
class EvaluateReport:
    """What :func:`evaluate_checkpoint` produced.

    Attributes:
        results: The plain model first, then TTA / ensemble variants that were asked for.
        paths: The JSON file written for each result (same order).
        text: A printable report (a table, plus the gain over the plain model when there
            are several results).
    """

    results: list[EvaluationResult]
    paths: list[Path]
    text: str


def _stored_run_config(
    checkpoint: str | os.PathLike[str], checkpoint_data: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The run settings stored in the checkpoint itself (``None`` if absent or unreadable)."""
    try:
        return read_run_config(checkpoint if checkpoint_data is None else checkpoint_data)
    except (OSError, CheckpointError):  # a missing or bad file fails clearly when loaded
        return None


def _config_json_for(checkpoint: str | os.PathLike[str]) -> TrainConfig | None:
    path = Path(checkpoint).parent / "config.json"
    if not path.is_file():
        return None
    try:
        return TrainConfig.from_json(path)
    except (ConfigError, OSError, TypeError):
        return None


def run_config_for(
    checkpoint: str | os.PathLike[str], *, checkpoint_data: Mapping[str, Any] | None = None
) -> TrainConfig | None:
    """The training configuration of the run that wrote ``checkpoint``, or ``None``.

    Read from the ``run_config`` stored in the checkpoint (metadata only, memory-mapped),
    else from the ``config.json`` beside it.

    Args:
        checkpoint: A checkpoint file (``best.pt``, ``last.pt``) or ``.safetensors`` export.
        checkpoint_data: The checkpoint dict when it is already loaded.

    Example:
        >>> run = run_config_for("runs/exp1/best.pt")  # doctest: +SKIP
        >>> run.image_size  # doctest: +SKIP
        384
    """
    stored = _stored_run_config(checkpoint, checkpoint_data)
    if stored is not None:
        try:
            return TrainConfig.from_dict(stored)
        except (ConfigError, TypeError):
            pass  # settings of another shape (a custom run_config): try config.json
    return _config_json_for(checkpoint)


def _training_size(
    checkpoint: str | os.PathLike[str], *, checkpoint_data: Mapping[str, Any] | None = None
) -> int | None:
    """The training input size recorded for ``checkpoint``, or ``None`` if none is.

    Read from the checkpoint's ``run_config`` (a Lightning ``.ckpt``: its
    ``hyper_parameters``), the metadata of an ``.onnx`` file written by ``suimseg
    export``, or the ``config.json`` beside the file.
    """
    stored = _stored_run_config(checkpoint, checkpoint_data)
    size: Any = None if stored is None else stored.get("image_size")
    if size is None and Path(checkpoint).suffix.lower() == ".onnx":
        text = read_onnx_metadata(checkpoint).get(IMAGE_SIZE_KEY, "")
        size = int(text) if text.isdigit() else None
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    run = _config_json_for(checkpoint)
    return None if run is None else run.image_size


def input_size_for(
    checkpoint: str | os.PathLike[str],
    image_size: int | None = None,
    *,
    checkpoint_data: Mapping[str, Any] | None = None,
) -> int:
    """The model input size to predict with: ``image_size``, else the run's training size.

    The training size comes from the checkpoint's ``run_config`` (for a Lightning ``.ckpt``,
    the ``image_size`` :class:`~suimseg.lightning.SUIMSegModule` records in its
    ``hyper_parameters``; for an ``.onnx`` file written by ``suimseg export``, its
    ``suimseg_image_size`` metadata), else the ``config.json`` beside it, else
    :data:`DEFAULT_IMAGE_SIZE` with a warning (a model scored at another scale than it was
    trained at does worse).

    Example:
        >>> input_size_for("runs/exp1/best.pt")  # doctest: +SKIP
        384
    """
    if image_size is not None:
        return image_size
    size = _training_size(checkpoint, checkpoint_data=checkpoint_data)
    if size is not None:
        return size
    warnings.warn(
        f"no run config in {checkpoint} and no config.json beside it, and no image size "
        f"given: predicting at {DEFAULT_IMAGE_SIZE}x{DEFAULT_IMAGE_SIZE}; pass the training "
        "size (image_size=..., --image-size) if it differs",
        stacklevel=2,
    )
    return DEFAULT_IMAGE_SIZE


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    *,
    split: Split = "test",
    protocol: ProtocolName = "dataset-8class",
    tta: bool = False,
    ensemble: Sequence[str | os.PathLike[str]] = (),
    ensemble_weights: Sequence[float] | None = None,
    device: str = "auto",
    amp: AmpMode | None = "auto",
    backend: Backend = "torch",
    batch_size: int = 8,
    image_size: int | None = None,
    out: str | os.PathLike[str] | None = None,
) -> EvaluateReport:
    """Evaluate a checkpoint (optionally with TTA and/or an ensemble) on a split.

    Args:
        checkpoint: A suimseg checkpoint (``best.pt``) or ``.safetensors`` export.
        data_root: SUIM root folder.
        split: ``"test"`` (default), ``"val"``, ``"train"`` or ``"train_val"``; ``val`` and
            ``train`` use the run's ``val_fraction`` and ``seed`` from its ``config.json``.
        protocol: ``"dataset-8class"`` (suimseg's) or ``"suim-paper"``.
        tta: Also evaluate with flip + multi-scale test-time augmentation.
        ensemble: More checkpoints averaged with ``checkpoint`` in probability space.
        ensemble_weights: One weight per model (``checkpoint`` first); equal by default.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        amp: Autocast dtype for inference (``"bf16"``, ``"fp16"``), ``None`` or ``"auto"``
            (bf16 only on a CPU with native bf16 that passes a parity check; see
            :class:`~suimseg.inference.Predictor`). Torch backend only.
        backend: ``"torch"`` or ``"onnxruntime"`` (needs ``pip install 'suimseg[onnx]'``;
            checkpoints are exported once to ``<stem>.onnx`` beside them, see
            :func:`~suimseg.inference.backends.cached_onnx_export`). Recorded in each
            result's ``meta``.
        batch_size: Images per forward pass.
        image_size: Model input size; default: the run's training size stored in the
            checkpoint, else from ``config.json`` beside it, else 384 with a warning
            (:func:`input_size_for`).
        out: JSON path of the plain result (default ``<checkpoint dir>/eval_<split>.json``);
            variants are written beside it with suffixes ``_tta``, ``_ensemble``,
            ``_ensemble_tta``.

    Raises:
        ConfigError: For invalid arguments.
        CheckpointError: If a checkpoint cannot be used.
        DatasetNotFoundError: If the split is missing (the message shows the layout).
    """
    if protocol not in _PROTOCOLS:
        raise ConfigError(f"protocol: expected one of {', '.join(_PROTOCOLS)}, got {protocol!r}")
    if ensemble_weights is not None and len(ensemble_weights) != 1 + len(ensemble):
        raise ConfigError(
            f"ensemble_weights: expected {1 + len(ensemble)} weights (the checkpoint and "
            f"{len(ensemble)} ensemble member(s)), got {len(ensemble_weights)}"
        )
    backend = check_backend(backend)
    dev = resolve_device(device)
    # The checkpoint's metadata is read once here (memory-mapped) and its weights once,
    # by load_model below.
    header = {"extra": {"run_config": _stored_run_config(checkpoint, None)}}
    run = run_config_for(checkpoint, checkpoint_data=header)
    size = input_size_for(checkpoint, image_size, checkpoint_data=header)
    split_kw: dict[str, Any] = {}
    if run is not None:
        split_kw = {"val_fraction": run.val_fraction, "seed": run.seed}
    dataset = SUIMDataset(Path(data_root), split, image_size=None, **split_kw)

    model = load_inference_model(checkpoint, backend=backend, device=dev)
    members = [load_inference_model(p, backend=backend, device=dev) for p in ensemble]
    score = evaluate_predictor if protocol == "dataset-8class" else evaluate_suim_paper
    meta_base = {"checkpoint": str(checkpoint), "data_root": str(data_root), "split": split}
    common: dict[str, Any] = {"device": dev, "image_size": size, "amp": amp}
    common["batch_size"] = batch_size
    variants: list[tuple[str, str, Predictor, dict[str, Any]]] = [
        ("plain", "", Predictor(model, **common), {})
    ]
    if tta:
        variants.append(("TTA", "_tta", Predictor(model, tta=True, **common), {"tta": "standard"}))
    if members:
        names = [str(checkpoint), *(str(p) for p in ensemble)]
        meta = {"ensemble": names, "weights": list(ensemble_weights or [])}
        common["weights"] = ensemble_weights
        variants.append(("ensemble", "_ensemble", Predictor([model, *members], **common), meta))
        if tta:
            predictor = Predictor([model, *members], tta=True, **common)
            variants.append(
                ("ensemble + TTA", "_ensemble_tta", predictor, {**meta, "tta": "standard"})
            )

    base = Path(out) if out is not None else Path(checkpoint).parent / f"eval_{split}.json"
    results: list[EvaluationResult] = []
    paths: list[Path] = []
    computed = []
    for label, suffix, predictor, meta in variants:
        metrics = score(predictor, dataset)
        computed.append(metrics)
        name = Path(checkpoint).stem if label == "plain" else f"{Path(checkpoint).stem} {label}"
        meta = {**meta_base, "image_size": size, "backend": backend, "amp": predictor.amp, **meta}
        result = EvaluationResult.from_metrics(metrics, name=name, meta=meta)
        results.append(result)
        paths.append(save_result(base.with_name(base.stem + suffix + base.suffix), result))

    if len(results) == 1:
        text = format_comparison(results, baseline=None)
    else:
        headlines = [
            format_gain_report(computed[0], m, improved_name=v[0]).partition("\n")[0]
            for m, v in zip(computed[1:], variants[1:], strict=True)
        ]
        text = "\n".join(headlines) + "\n\n" + format_comparison(results, baseline=0)
    return EvaluateReport(results=results, paths=paths, text=text)
