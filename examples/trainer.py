"""Train with the reference Trainer: checkpoints, history, resume, test evaluation.

Small settings (the default) write a synthetic SUIM-format dataset and train a CPU-sized
model (resnet18 encoder with random init, narrow decoder, 96x96) for 6 epochs in about a
minute on two CPU cores; the test mIoU is printed next to the majority-class baseline
(predicting the most frequent training class everywhere), which the model clearly beats:

    python examples/trainer.py

Everything goes to one folder (``--out``, default ``./suimseg-examples/trainer``):
``last.pt``, ``best.pt``, ``history.csv`` and ``history.jsonl``. The synthetic data lives
in a temporary folder that is removed at the end (it is regenerated identically from its
seed). Continue the same run to twelve epochs (``--epochs`` is the total):

    python examples/trainer.py --epochs 12 --resume suimseg-examples/trainer/last.pt

Full scale, on a GPU with the real dataset (the V3 recipe: ImageNet ResNet-50 encoder,
384x384, batch 6, 50 epochs, bf16 autocast, channels_last):

    python examples/trainer.py --data SUIM --full --device cuda --out runs/v3

(``suimseg train --data SUIM`` runs the same recipe from the command line.)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from suimseg import (
    CLASS_NAMES,
    DiceFocalLoss,
    SUIMDataset,
    Trainer,
    UNetResAttnV3,
    class_weights,
    load_model,
    make_synthetic_suim,
    param_groups,
)
from suimseg.engine import default_callbacks, read_history, reduce_on_plateau
from suimseg.metrics import SegmentationMetrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train UNetResAttnV3 with suimseg's reference Trainer.",
        epilog="Full scale: --data SUIM --full --device cuda --out runs/v3",
    )
    parser.add_argument("--data", type=Path, help="SUIM root (default: synthetic data)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("suimseg-examples/trainer"),
        help="output folder (default: ./suimseg-examples/trainer)",
    )
    parser.add_argument("--full", action="store_true", help="the V3 recipe's sizes")
    parser.add_argument("--epochs", type=int, help="total epochs; default 6 (50 with --full)")
    parser.add_argument("--image-size", type=int, help="default 96 (384 with --full)")
    parser.add_argument("--batch-size", type=int, help="default 8 (6 with --full)")
    parser.add_argument(
        "--n-images", type=int, default=120, help="synthetic train_val images (default: 120)"
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--resume", type=Path, help="a last.pt to continue from")
    parser.add_argument(
        "--overwrite", action="store_true", help="start a new run over an earlier one in --out"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    full = args.full
    epochs = args.epochs or (50 if full else 6)
    size = args.image_size or (384 if full else 96)
    batch_size = args.batch_size or (6 if full else 8)
    out = args.out.resolve()
    print(f"output folder: {out}")
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="suimseg-") as scratch:
        root = args.data or make_synthetic_suim(
            Path(scratch) / "suim-synth", n_train_val=args.n_images, n_test=10, size=(160, 120)
        )
        train_set = SUIMDataset(root, "train", image_size=size)
        val_set = SUIMDataset(root, "val", image_size=size)
        test_set = SUIMDataset(root, "test", image_size=size)
        loader_args = {"batch_size": batch_size, "num_workers": args.workers}
        train_loader = DataLoader(train_set, shuffle=True, drop_last=True, **loader_args)
        val_loader = DataLoader(val_set, **loader_args)

        if full:
            model = UNetResAttnV3(encoder_weights="imagenet")
            lr, enc_lr_mult = 1e-4, 0.1
        else:  # the CPU-sized model of `suimseg demo`
            model = UNetResAttnV3(
                encoder="resnet18", decoder_channels=(64, 32, 16, 16), bridge_channels=64
            )
            lr, enc_lr_mult = 1e-3, 1.0  # random init: train the encoder at the full rate

        # Focal alpha from the training split's class frequencies (rare classes weigh more).
        alpha = class_weights(train_set.class_pixel_counts(), method="inverse_sqrt")
        loss_fn = DiceFocalLoss(gamma=2.0, alpha=alpha)
        optimizer = torch.optim.AdamW(param_groups(model, enc_lr_mult, lr=lr, weight_decay=1e-4))
        on_gpu = str(args.device).startswith("cuda")
        trainer = Trainer(
            model,
            loss_fn,
            optimizer,
            # x0.5 after a few epochs without a better mIoU:
            scheduler=reduce_on_plateau(optimizer, patience=5 if full else 2),
            device=args.device,
            amp="bf16" if on_gpu else None,
            grad_clip=1.0,
            channels_last=on_gpu,
            # last.pt/best.pt, history.csv/.jsonl, the run lock, the summary line per epoch:
            callbacks=default_callbacks(out, overwrite=args.overwrite, progress=False),
        )
        trainer.fit(train_loader, val_loader, epochs=epochs, resume_from=args.resume)

        rows = read_history(out)  # one dict per epoch, from history.jsonl
        best = 100 * (trainer.best_metric or 0)
        print(f"history: {len(rows)} epochs, best val mIoU {best:.2f}%")

        trainer.load_checkpoint(out / "best.pt", restore_rng=False)  # the best epoch's weights
        metrics = trainer.evaluate(DataLoader(test_set, **loader_args))
        print("test set, best checkpoint (dataset-level, 8 classes):")
        print(metrics.format_table())
        k, base = SegmentationMetrics.majority_baseline(
            train_set.class_pixel_counts(), test_set.class_pixel_counts()
        )
        name, baseline = CLASS_NAMES[k], base.miou
        print(
            f"test mIoU {100 * metrics.miou:.2f}% vs majority-class baseline "
            f"{100 * baseline:.2f}% ({name!r} everywhere)"
        )

    # For inference: rebuilt from the file alone, in eval mode.
    best_model = load_model(out / "best.pt")
    print(f"load_model({str(out / 'best.pt')!r}) -> {type(best_model).__name__}")
    print(f"output folder: {out}")


if __name__ == "__main__":
    main()
