"""A custom training loop without the Trainer, composed from suimseg's parts.

``UNetResAttnV3``, ``SUIMDataset``, ``class_weights`` and ``DiceFocalLoss``,
``param_groups`` (encoder/decoder learning rates, no weight decay on norms and biases),
``ConfusionMatrix`` (dataset-level mIoU) and ``save_training_state``/``load_training_state``
(checkpoints that ``load_model`` can rebuild), around a plain PyTorch loop.

Small settings (the default) write a synthetic SUIM-format dataset and train a CPU-sized
model (resnet18 encoder with random init, narrow decoder, 96x96) for 6 epochs in about a
minute on two CPU cores, then print the test mIoU next to the majority-class baseline
(predicting the most frequent training class everywhere):

    python examples/custom_training_loop.py

It writes only ``best.pt`` (weights of the best validation epoch) to ``--out`` (default
``./suimseg-examples/custom_training_loop``); the synthetic data lives in a temporary
folder that is removed at the end.

Full scale, on a GPU with the real dataset (SUIM/train_val and SUIM/TEST), this is the V3
recipe (384x384, batch 6, 50 epochs, AdamW 1e-4 with the encoder at 0.1x, DiceFocalLoss
gamma 2, ReduceLROnPlateau on validation mIoU, bf16 autocast):

    python examples/custom_training_loop.py --data SUIM --full --device cuda --amp bf16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from suimseg import (
    CLASS_NAMES,
    NUM_CLASSES,
    ConfusionMatrix,
    DiceFocalLoss,
    SUIMDataset,
    UNetResAttnV3,
    class_weights,
    make_synthetic_suim,
    param_groups,
)
from suimseg.engine import load_training_state, save_training_state
from suimseg.metrics import SegmentationMetrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train UNetResAttnV3 with a hand-written loop (no Trainer).",
        epilog="Full scale: --data SUIM --full --device cuda --amp bf16",
    )
    parser.add_argument("--data", type=Path, help="SUIM root (default: synthetic data)")
    parser.add_argument("--full", action="store_true", help="the V3 recipe's sizes")
    parser.add_argument("--epochs", type=int, help="default 6 (50 with --full)")
    parser.add_argument("--image-size", type=int, help="default 96 (384 with --full)")
    parser.add_argument("--batch-size", type=int, help="default 8 (6 with --full)")
    parser.add_argument("--lr", type=float, help="default 1e-3 (1e-4 with --full)")
    parser.add_argument(
        "--n-images", type=int, default=120, help="synthetic train_val images (default: 120)"
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--amp", choices=["none", "bf16"], default="none")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("suimseg-examples/custom_training_loop"),
        help="where best.pt goes (default: ./suimseg-examples/custom_training_loop)",
    )
    return parser.parse_args(argv)


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]],
    cm: ConfusionMatrix,
    device: str,
) -> SegmentationMetrics:
    """Dataset-level metrics: one confusion matrix over every pixel of the loader."""
    was_training = model.training
    model.eval()
    cm.reset()
    for images, masks in loader:
        cm.update(model(images.to(device)), masks.to(device))  # logits: argmax inside
    model.train(was_training)
    return cm.compute()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    full = args.full
    epochs = args.epochs or (50 if full else 6)
    size = args.image_size or (384 if full else 96)
    batch_size = args.batch_size or (6 if full else 8)
    lr = args.lr or (1e-4 if full else 1e-3)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"output folder: {out}")
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="suimseg-") as scratch:
        root = args.data or make_synthetic_suim(
            Path(scratch) / "suim-synth", n_train_val=args.n_images, n_test=10, size=(160, 120)
        )
        train_set = SUIMDataset(root, "train", image_size=size)  # augmented
        val_set = SUIMDataset(root, "val", image_size=size)  # same seed -> disjoint
        test_set = SUIMDataset(root, "test", image_size=size)
        loader_args = {"batch_size": batch_size, "num_workers": args.workers}
        train_loader = DataLoader(train_set, shuffle=True, drop_last=True, **loader_args)
        val_loader = DataLoader(val_set, **loader_args)
        print(f"data: {len(train_set)} train / {len(val_set)} val images at {size}px")

        if full:
            model = UNetResAttnV3(encoder_weights="imagenet")  # downloads ResNet-50 weights once
            enc_lr_mult = 0.1
        else:
            # Random init: no pre-trained encoder, so it learns at the full learning rate.
            model = UNetResAttnV3(
                encoder="resnet18", decoder_channels=(64, 32, 16, 16), bridge_channels=64
            )
            enc_lr_mult = 1.0
        model = model.to(args.device)

        # Focal alpha from the training split's class frequencies (rare classes weigh more).
        alpha = class_weights(train_set.class_pixel_counts(), method="inverse_sqrt")
        loss_fn = DiceFocalLoss(gamma=2.0, alpha=alpha, lambda_dice=0.5, lambda_focal=0.5)
        loss_fn = loss_fn.to(args.device)
        # Encoder at enc_lr_mult x lr; no weight decay on norms and biases.
        optimizer = torch.optim.AdamW(param_groups(model, enc_lr_mult, lr=lr, weight_decay=1e-4))
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=5 if full else 2
        )
        amp_dtype = torch.bfloat16 if args.amp == "bf16" else None
        cm = ConfusionMatrix(NUM_CLASSES).to(args.device)  # an nn.Module with buffers

        best = -1.0
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            model.train()
            total, steps = 0.0, 0
            for images, masks in train_loader:
                images, masks = images.to(args.device), masks.to(args.device)
                with torch.autocast(
                    torch.device(args.device).type, dtype=amp_dtype, enabled=amp_dtype is not None
                ):
                    logits = model(images)
                loss = loss_fn(logits.float(), masks)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
                optimizer.step()
                total += loss.item()
                steps += 1
            miou = evaluate(model, val_loader, cm, args.device).miou
            scheduler.step(miou)
            if miou > best:
                best = miou
                # Weights + the model's spec: suimseg.load_model rebuilds it from the file.
                save_training_state(
                    out / "best.pt", model=model, epoch=epoch, best_metric=miou,
                    class_names=CLASS_NAMES,
                )  # fmt: skip
            lrs = ", ".join(f"{g['name']}={g['lr']:.1e}" for g in optimizer.param_groups)
            print(
                f"epoch {epoch}/{epochs}  loss {total / max(steps, 1):.4f}  "
                f"val mIoU {100 * miou:.2f}%  lr {lrs}  {time.perf_counter() - start:.1f}s"
            )
        print(f"best val mIoU {100 * best:.2f}%; weights in {out / 'best.pt'}")

        # The best epoch's weights, scored on the test split.
        state = load_training_state(out / "best.pt", model, restore_rng=False)
        metrics = evaluate(model, DataLoader(test_set, **loader_args), cm, args.device)
        k, base = SegmentationMetrics.majority_baseline(
            train_set.class_pixel_counts(), test_set.class_pixel_counts()
        )
        name, baseline = CLASS_NAMES[k], base.miou
        print(f"test set, best checkpoint (epoch {state['epoch']}):")
        print(metrics.format_table())
        print(
            f"test mIoU {100 * metrics.miou:.2f}% vs majority-class baseline "
            f"{100 * baseline:.2f}% ({name!r} everywhere)"
        )
    print(f"output folder: {out}")


if __name__ == "__main__":
    main()
