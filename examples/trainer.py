"""Train with the reference Trainer: checkpoints, history, resume, test evaluation.

Small settings (the default) write a tiny synthetic SUIM-format dataset and train a narrow
model for two epochs on the CPU in a few seconds:

    python examples/trainer.py --out runs/example

Continue the same run to four epochs (``--epochs`` is the total):

    python examples/trainer.py --out runs/example --epochs 4 --resume runs/example/last.pt

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train UNetResAttnV3 with suimseg's reference Trainer.",
        epilog="Full scale: --data SUIM --full --device cuda --out runs/v3",
    )
    parser.add_argument("--data", type=Path, help="SUIM root (default: synthetic data)")
    parser.add_argument("--out", type=Path, help="checkpoint folder (default: a temp dir)")
    parser.add_argument("--full", action="store_true", help="the V3 recipe's sizes")
    parser.add_argument("--epochs", type=int, help="total epochs; default 2 (50 with --full)")
    parser.add_argument("--image-size", type=int, help="default 64 (384 with --full)")
    parser.add_argument("--batch-size", type=int, help="default 4 (6 with --full)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--resume", type=Path, help="a last.pt to continue from")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    full = args.full
    epochs = args.epochs or (50 if full else 2)
    size = args.image_size or (384 if full else 64)
    batch_size = args.batch_size or (6 if full else 4)
    torch.manual_seed(0)

    root = args.data or make_synthetic_suim(
        Path(tempfile.mkdtemp()) / "suim-synth", n_train_val=12, n_test=4, size=(96, 72)
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
    else:
        model = UNetResAttnV3(
            encoder="resnet18", decoder_channels=(16, 16, 8, 8), bridge_channels=16
        )
        lr, enc_lr_mult = 1e-3, 1.0  # random init: train the encoder at the full rate

    # Focal alpha from the training split's class frequencies (rare classes weigh more).
    alpha = class_weights(train_set.class_pixel_counts(), method="inverse_sqrt")
    loss_fn = DiceFocalLoss(gamma=2.0, alpha=alpha)
    optimizer = torch.optim.AdamW(param_groups(model, enc_lr_mult, lr=lr, weight_decay=1e-4))
    out = args.out or Path(tempfile.mkdtemp()) / "run"
    on_gpu = str(args.device).startswith("cuda")
    trainer = Trainer(
        model,
        loss_fn,
        optimizer,
        scheduler=reduce_on_plateau(optimizer),  # x0.5 after 5 epochs without a better mIoU
        device=args.device,
        amp="bf16" if on_gpu else None,
        grad_clip=1.0,
        channels_last=on_gpu,
        # last.pt/best.pt, history.csv/.jsonl, the run lock, the summary line per epoch:
        callbacks=default_callbacks(out, progress=False),
    )
    trainer.fit(train_loader, val_loader, epochs=epochs, resume_from=args.resume)

    rows = read_history(out)  # one dict per epoch, from history.jsonl
    print(f"history: {len(rows)} epochs, best val mIoU {100 * (trainer.best_metric or 0):.2f}%")

    trainer.load_checkpoint(out / "best.pt", restore_rng=False)  # the best epoch's weights
    metrics = trainer.evaluate(DataLoader(test_set, **loader_args))
    print("test set, best checkpoint (dataset-level, 8 classes):")
    print(metrics.format_table())

    best_model = load_model(
        out / "best.pt"
    )  # for inference: rebuilt from the file alone, eval mode
    print(f"load_model({str(out / 'best.pt')!r}) -> {type(best_model).__name__}")


if __name__ == "__main__":
    main()
