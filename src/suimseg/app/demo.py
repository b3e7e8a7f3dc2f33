"""``suimseg demo``: the whole recipe, CPU-sized, on built-in synthetic SUIM-format data.

Synthetic data, a narrow UNetResAttnV3 (resnet18, no download) trained with the V3
recipe, evaluated against the majority-class baseline, with metrics and overlays written.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from suimseg._atomic import atomic_write_text
from suimseg.app.config import TrainConfig
from suimseg.app.recipe import train
from suimseg.classes import CLASS_NAMES
from suimseg.data import SUIMDataset, make_synthetic_suim, overlay, side_by_side
from suimseg.data._io import atomic_save_image
from suimseg.engine import atomic_save, load_checkpoint, load_model
from suimseg.errors import ConfigError
from suimseg.inference import Predictor, evaluate_predictor
from suimseg.metrics import SegmentationMetrics

__all__ = ["DemoResult", "demo_config", "run_demo"]

logger = logging.getLogger("suimseg")


def demo_config(
    data_root: str | Path, out_dir: str | Path, *, epochs: int = 6, seed: int = 0
) -> TrainConfig:
    """The CPU-sized training config of the demo.

    The recipe's structure is kept (DiceFocalLoss with inverse-sqrt alpha, AdamW, gradient
    clipping, ReduceLROnPlateau on validation mIoU); sizes shrink to run in minutes on two
    CPU cores: a resnet18 encoder with narrow decoder widths at 96x96. Without ImageNet
    weights the encoder is trained at the full learning rate (``enc_lr_mult=1``) and the
    learning rate is 1e-3.
    """
    return TrainConfig(
        data_root=str(data_root),
        out_dir=str(out_dir),
        model="v3",
        encoder="resnet18",
        encoder_weights="none",
        decoder_channels=(64, 32, 16, 16),
        bridge_channels=64,
        image_size=96,
        batch_size=8,
        epochs=epochs,
        lr=1e-3,
        enc_lr_mult=1.0,
        plateau_patience=2,
        workers=0,
        device="cpu",
        amp="none",
        seed=seed,
    )


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` produced."""

    out_dir: Path
    metrics: SegmentationMetrics
    majority_metrics: SegmentationMetrics
    majority_class: str
    seconds: float


def _keep_only_best_weights(run: Path) -> None:
    """Replace the run's checkpoints by ``best.pt`` without optimizer/scheduler state."""
    best = load_checkpoint(run / "best.pt")
    for key in ("optimizer_state", "scheduler_state", "scaler_state"):
        best[key] = None
    atomic_save(best, run / "best.pt")  # a new file: the hard link to last.pt is broken
    (run / "last.pt").unlink(missing_ok=True)


def run_demo(
    out_dir: str | Path = "suimseg-demo",
    *,
    epochs: int = 6,
    n_train_val: int = 120,
    n_test: int = 20,
    size: tuple[int, int] = (160, 120),
    seed: int = 0,
    n_overlays: int = 4,
    progress: bool = False,
    keep_checkpoints: bool = False,
) -> DemoResult:
    """Generate synthetic data, train, evaluate and write metrics, history and overlays.

    Args:
        out_dir: Output folder: ``data/`` (the synthetic SUIM dataset), ``run/``
            (``best.pt``, ``history.csv``, ``history.jsonl``, ``config.json``),
            ``metrics.json``, ``figures/`` and ``overlays/``.
        epochs: Training epochs.
        n_train_val: Synthetic ``train_val`` pairs (20% held out for validation).
        n_test: Synthetic ``TEST`` pairs used for the final evaluation.
        size: ``(width, height)`` of the synthetic images.
        seed: Seed of the data, the split and the training.
        n_overlays: Number of TEST images drawn as overlays and as ``figures/`` (image |
            ground truth | prediction).
        progress: Show progress inside each epoch.
        keep_checkpoints: Keep the training checkpoints (``last.pt``, ``best.pt`` with the
            optimizer state, to resume); by default only the best weights are kept, as a
            ``best.pt`` without optimizer state (about a third of the size).

    Returns:
        A :class:`DemoResult` with the model's and the majority-class baseline's metrics.
    """
    if isinstance(n_overlays, bool) or not isinstance(n_overlays, int) or n_overlays < 0:
        raise ConfigError(f"n_overlays: expected an int >= 0, got {n_overlays!r}")
    start = time.perf_counter()
    out = Path(out_dir)
    data_root = make_synthetic_suim(
        out / "data", n_train_val=n_train_val, n_test=n_test, size=size, seed=seed, overwrite=True
    )
    config = demo_config(data_root, out / "run", epochs=epochs, seed=seed)
    train(config, progress=progress, overwrite=True)  # the demo replaces its own earlier run

    model = load_model(out / "run" / "best.pt")
    predictor = Predictor(model, image_size=config.image_size, batch_size=config.batch_size)
    test_ds = SUIMDataset(data_root, "test", image_size=None)
    metrics = evaluate_predictor(predictor, test_ds)
    train_ds = SUIMDataset(data_root, "train", val_fraction=config.val_fraction, seed=seed)
    majority, baseline = SegmentationMetrics.majority_baseline(
        train_ds.class_pixel_counts(), test_ds.class_pixel_counts(), CLASS_NAMES
    )

    count = min(n_overlays, len(test_ds))
    pairs = [test_ds.get_raw(i) for i in range(count)]
    preds = predictor.predict([image for image, _ in pairs]) if pairs else []
    for i, ((image, truth), pred) in enumerate(zip(pairs, preds, strict=True)):
        name = f"{test_ds.stems[i]}.png"
        labels = pred.labels.numpy()
        picture = overlay(image, labels, alpha=0.5, show_legend=True)
        atomic_save_image(picture, out / "overlays" / name, format="PNG")
        atomic_save_image(side_by_side(image, truth, labels), out / "figures" / name, format="PNG")
    if not keep_checkpoints:
        _keep_only_best_weights(out / "run")

    seconds = time.perf_counter() - start
    report = {
        "split": "test",
        "note": "8-class IoU from one confusion matrix over the synthetic TEST split, at the "
        f"labels' native resolution (model input {config.image_size}x{config.image_size})",
        "model": metrics.to_dict(),
        "majority_baseline": {"class": CLASS_NAMES[majority], **baseline.to_dict()},
        "seconds": round(seconds, 1),
    }
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    return DemoResult(out, metrics, baseline, CLASS_NAMES[majority], seconds)
