"""A custom training loop without the Trainer: UNetResAttnV3, DiceFocalLoss, SUIMDataset,
param_groups and plain PyTorch.

Small settings (the default) write a tiny synthetic SUIM-format dataset and train a narrow
model for two epochs on the CPU in a few seconds:

    python examples/custom_training_loop.py

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

from suimseg import DiceFocalLoss, SUIMDataset, UNetResAttnV3, make_synthetic_suim, param_groups

NUM_CLASSES = 8
IGNORE_INDEX = 255


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train UNetResAttnV3 with a hand-written loop (no Trainer).",
        epilog="Full scale: --data SUIM --full --device cuda --amp bf16",
    )
    parser.add_argument("--data", type=Path, help="SUIM root (default: synthetic data)")
    parser.add_argument("--full", action="store_true", help="the V3 recipe's sizes")
    parser.add_argument("--epochs", type=int, help="default 2 (50 with --full)")
    parser.add_argument("--image-size", type=int, help="default 64 (384 with --full)")
    parser.add_argument("--batch-size", type=int, help="default 4 (6 with --full)")
    parser.add_argument("--lr", type=float, help="default 1e-3 (1e-4 with --full)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--amp", choices=["none", "bf16"], default="none")
    parser.add_argument("--out", type=Path, help="where best.pt goes (default: a temp dir)")
    return parser.parse_args(argv)


@torch.inference_mode()
def validate(
    model: torch.nn.Module, loader: DataLoader[tuple[torch.Tensor, torch.Tensor]], device: str
) -> float:
    """Dataset-level mIoU: one confusion matrix over every validation pixel."""
    was_training = model.training
    model.eval()
    cm = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64, device=device)
    for images, masks in loader:
        pred = model(images.to(device)).argmax(1)
        masks = masks.to(device)
        valid = masks != IGNORE_INDEX
        cm += torch.bincount(
            masks[valid] * NUM_CLASSES + pred[valid], minlength=NUM_CLASSES**2
        ).view(NUM_CLASSES, NUM_CLASSES)
    model.train(was_training)
    tp = cm.diag().double()
    union = cm.sum(0).double() + cm.sum(1).double() - tp
    iou = tp / union  # NaN for a class absent from labels and predictions
    return float(iou[~iou.isnan()].mean())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    full = args.full
    epochs = args.epochs or (50 if full else 2)
    size = args.image_size or (384 if full else 64)
    batch_size = args.batch_size or (6 if full else 4)
    lr = args.lr or (1e-4 if full else 1e-3)
    torch.manual_seed(0)

    root = args.data
    if root is None:
        root = make_synthetic_suim(
            Path(tempfile.mkdtemp()) / "suim-synth", n_train_val=12, n_test=4, size=(96, 72)
        )
    train_set = SUIMDataset(root, "train", image_size=size)  # augmented
    val_set = SUIMDataset(root, "val", image_size=size)  # same seed -> disjoint
    train_loader = DataLoader(
        train_set, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=args.workers
    )
    val_loader = DataLoader(val_set, batch_size=batch_size, num_workers=args.workers)
    print(f"data: {root} ({len(train_set)} train / {len(val_set)} val images at {size}px)")

    if full:
        model = UNetResAttnV3(encoder_weights="imagenet")  # downloads ResNet-50 weights once
        enc_lr_mult = 0.1
    else:
        # Random init: no pre-trained encoder, so it learns at the full learning rate.
        model = UNetResAttnV3(
            encoder="resnet18", decoder_channels=(16, 16, 8, 8), bridge_channels=16
        )
        enc_lr_mult = 1.0
    model = model.to(args.device)

    loss_fn = DiceFocalLoss(gamma=2.0, lambda_dice=0.5, lambda_focal=0.5)
    # Encoder at enc_lr_mult x lr; no weight decay on norms and biases.
    optimizer = torch.optim.AdamW(param_groups(model, enc_lr_mult, lr=lr, weight_decay=1e-4))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.5, patience=5
    )
    amp_dtype = torch.bfloat16 if args.amp == "bf16" else None

    out = args.out or Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
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
        miou = validate(model, val_loader, args.device)
        scheduler.step(miou)
        if miou > best:
            best = miou
            torch.save(model.state_dict(), out / "best.pt")
        lrs = ", ".join(f"{g['name']}={g['lr']:.1e}" for g in optimizer.param_groups)
        print(
            f"epoch {epoch}/{epochs}  loss {total / max(steps, 1):.4f}  val mIoU {100 * miou:.2f}%"
            f"  lr {lrs}  {time.perf_counter() - start:.1f}s"
        )
    print(f"best val mIoU {100 * best:.2f}%; weights in {out / 'best.pt'}")


if __name__ == "__main__":
    main()
