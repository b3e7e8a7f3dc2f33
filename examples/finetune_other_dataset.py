"""Fine-tune a SUIM-trained UNetResAttnV3 on another dataset with its own palette and
number of classes.

The new dataset here has 4 classes in a colour palette of its own (RGB PNG masks, exact
colours; any other colour is ignored). Everything is transferred from the SUIM model
except the 1x1 head, which is re-initialised for the new class count; the pre-trained
encoder then learns at 0.1x the decoder's rate.

Small settings (the default): a CPU-sized stand-in "SUIM model" (resnet18 encoder with
random init, narrow decoder, 96x96) is trained for a few epochs on synthetic SUIM data,
then fine-tuned on a synthetic 4-class dataset, a minute or two on two CPU cores; the
test mIoU is printed next to the majority-class baseline (predicting the most frequent
training class everywhere):

    python examples/finetune_other_dataset.py

The fine-tuning run (``last.pt``, ``best.pt``, ``history.csv``, ``history.jsonl``) goes
to ``--out`` (default ``./suimseg-examples/finetune_other_dataset``); the synthetic
datasets and the stand-in's run live in a temporary folder that is removed at the end.

Full scale, on a GPU, from a real SUIM checkpoint and your own dataset laid out as
``ROOT/{train,val}/images/*.jpg`` and ``ROOT/{train,val}/masks/*.png``, plus ``ROOT/test``
if you have a test split (edit PALETTE and CLASS_NAMES below to match it):

    python examples/finetune_other_dataset.py --checkpoint runs/v3/best.pt \
        --data /data/my-reefs --image-size 384 --epochs 30 --batch-size 6 --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from suimseg import (
    DiceFocalLoss,
    SUIMDataset,
    Trainer,
    UNetResAttnV3,
    load_model,
    make_synthetic_suim,
    param_groups,
)
from suimseg.data import eval_transforms, render_scene, train_transforms
from suimseg.engine import default_callbacks, reduce_on_plateau
from suimseg.metrics import SegmentationMetrics
from suimseg.models import build_model

# The new dataset's classes and their mask colours (RGB).
CLASS_NAMES = ("open water", "coral", "sand", "fish")
PALETTE = ((0, 64, 128), (255, 127, 80), (194, 178, 128), (255, 215, 0))
IGNORE_INDEX = 255


def decode_mask(rgb: np.ndarray) -> np.ndarray:
    """Exact palette look-up: ``(H, W, 3)`` uint8 colours -> ``(H, W)`` uint8 labels."""
    labels = np.full(rgb.shape[:2], IGNORE_INDEX, np.uint8)
    for index, colour in enumerate(PALETTE):
        labels[(rgb == np.array(colour, np.uint8)).all(axis=-1)] = index
    return labels


class PaletteDataset(Dataset[tuple[Tensor, Tensor]]):
    """``root/split/images/<stem>.jpg`` with ``root/split/masks/<stem>.png``, paired by stem."""

    def __init__(self, root: Path, split: str, transform: object) -> None:
        folder = Path(root) / split
        masks = {p.stem: p for p in (folder / "masks").glob("*.png")}
        self.pairs = [
            (p, masks[p.stem]) for p in sorted((folder / "images").glob("*.jpg")) if p.stem in masks
        ]
        if not self.pairs:
            raise FileNotFoundError(f"no image/mask pairs under {folder}/images and masks/")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.pairs[index]
        image = np.asarray(Image.open(image_path).convert("RGB"))
        labels = decode_mask(np.asarray(Image.open(mask_path).convert("RGB")))
        # suimseg's joint transforms take a uint8 image and a uint8 label map.
        return self.transform(image, labels)  # type: ignore[operator,no-any-return]


def make_other_dataset(root: Path, n_train: int = 96, n_val: int = 12, n_test: int = 10) -> Path:
    """A synthetic stand-in: SUIM-like scenes relabelled into the 4 new classes."""
    # SUIM ids -> new ids: reefs -> coral, sea-floor -> sand, fish -> fish, rest -> water.
    to_new = np.zeros(256, np.uint8)
    to_new[5], to_new[7], to_new[6] = 1, 2, 3
    rng = np.random.default_rng(42)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, suim_labels = render_scene(rng, (160, 120), force_class=(5, 6, 7)[i % 3])
            colours = np.array(PALETTE, np.uint8)[to_new[suim_labels]]
            image.save(root / split / "images" / f"img{i:03d}.jpg", quality=90)
            Image.fromarray(colours).save(root / split / "masks" / f"img{i:03d}.png")
    return root


def pixel_counts(dataset: PaletteDataset) -> np.ndarray:
    """Label pixels per class over a split (the masks at their native size)."""
    counts = np.zeros(len(CLASS_NAMES), np.int64)
    for _, mask_path in dataset.pairs:
        labels = decode_mask(np.asarray(Image.open(mask_path).convert("RGB")))
        counts += np.bincount(labels[labels != IGNORE_INDEX], minlength=len(CLASS_NAMES))
    return counts


def pretrained_stand_in(work: Path, size: int, epochs: int, n_images: int) -> Path:
    """A short run of the CPU-sized model on synthetic SUIM data; returns its best.pt."""
    suim = make_synthetic_suim(work / "suim-synth", n_train_val=n_images, n_test=1, size=(160, 120))
    torch.manual_seed(0)
    model = UNetResAttnV3(encoder="resnet18", decoder_channels=(64, 32, 16, 16), bridge_channels=64)
    optimizer = torch.optim.AdamW(param_groups(model, 1.0, lr=1e-3, weight_decay=1e-4))
    trainer = Trainer(
        model,
        DiceFocalLoss(),
        optimizer,
        device="cpu",
        callbacks=default_callbacks(work / "suim-run", progress=False, verbose=False),
    )
    loader = DataLoader(
        SUIMDataset(suim, "train", image_size=size), batch_size=8, shuffle=True, drop_last=True
    )
    val_loader = DataLoader(SUIMDataset(suim, "val", image_size=size), batch_size=8)
    trainer.fit(loader, val_loader, epochs=epochs)
    return work / "suim-run" / "best.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fine-tune a SUIM model on a dataset with another palette and class count.",
        epilog="Full scale: --checkpoint runs/v3/best.pt --data /data/my-reefs --image-size 384 "
        "--epochs 30 --batch-size 6 --device cuda",
    )
    parser.add_argument("--checkpoint", type=Path, help="a SUIM-trained suimseg checkpoint")
    parser.add_argument("--data", type=Path, help="the new dataset (default: synthetic)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("suimseg-examples/finetune_other_dataset"),
        help="output folder (default: ./suimseg-examples/finetune_other_dataset)",
    )
    parser.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs")
    parser.add_argument(
        "--pretrain-epochs", type=int, default=4, help="epochs of the stand-in SUIM model"
    )
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument(
        "--n-images",
        type=int,
        default=96,
        help="synthetic training images of each stand-in dataset (default: 96)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3, help="decoder/head learning rate")
    parser.add_argument("--enc-lr-mult", type=float, default=0.1, help="encoder LR multiplier")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument(
        "--overwrite", action="store_true", help="start a new run over an earlier one in --out"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = args.out.resolve()
    print(f"output folder: {out}")
    with tempfile.TemporaryDirectory(prefix="suimseg-") as tmp:
        work = Path(tmp)
        checkpoint = args.checkpoint or pretrained_stand_in(
            work, args.image_size, args.pretrain_epochs, args.n_images
        )
        root = args.data or make_other_dataset(work / "other-dataset", n_train=args.n_images)
        finetune(args, checkpoint, root, out)
    print(f"output folder: {out}")


def finetune(args: argparse.Namespace, checkpoint: Path, root: Path, out: Path) -> None:
    """Transfer ``checkpoint`` to the new classes, train on ``root`` into ``out``, score."""
    # 1. Rebuild the SUIM model, then the same architecture with a new head.
    suim_model = load_model(checkpoint)
    config = {**suim_model.config, "num_classes": len(CLASS_NAMES)}  # type: ignore[dict-item]
    model = build_model(suim_model.model_name, **config)  # type: ignore[arg-type]

    # 2. Copy every weight whose shape still fits (all but the head).
    source = suim_model.state_dict()
    target = model.state_dict()
    transferred = {k: v for k, v in source.items() if k in target and v.shape == target[k].shape}
    model.load_state_dict(transferred, strict=False)
    fresh = sorted(set(target) - set(transferred))
    print(f"transferred {len(transferred)}/{len(target)} tensors; re-initialised: {fresh}")

    # 3. The new data, with suimseg's joint augmentations (any class count works).
    size = args.image_size
    train_set = PaletteDataset(root, "train", train_transforms(size))
    val_set = PaletteDataset(root, "val", eval_transforms(size))

    # 4. Train: pre-trained encoder at enc_lr_mult x lr, new classes in the metrics.
    optimizer = torch.optim.AdamW(
        param_groups(model, args.enc_lr_mult, lr=args.lr, weight_decay=1e-4)
    )
    trainer = Trainer(
        model,
        DiceFocalLoss(gamma=2.0),
        optimizer,
        scheduler=reduce_on_plateau(optimizer, patience=2),
        device=args.device,
        class_names=CLASS_NAMES,
        callbacks=default_callbacks(out, overwrite=args.overwrite, progress=False),
    )
    trainer.fit(
        DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True),
        DataLoader(val_set, batch_size=args.batch_size),
        epochs=args.epochs,
    )

    # 5. The best epoch on the test split, next to predicting the majority class everywhere.
    trainer.load_checkpoint(out / "best.pt", restore_rng=False)
    if (root / "test").is_dir():
        test_set = PaletteDataset(root, "test", eval_transforms(size))
        metrics = trainer.evaluate(DataLoader(test_set, batch_size=args.batch_size))
        print("test set, best checkpoint:")
        print(metrics.format_table())
        k, base = SegmentationMetrics.majority_baseline(
            pixel_counts(train_set), pixel_counts(test_set)
        )
        name, baseline = CLASS_NAMES[k], base.miou
        print(
            f"test mIoU {100 * metrics.miou:.2f}% vs majority-class baseline "
            f"{100 * baseline:.2f}% ({name!r} everywhere)"
        )
    else:
        print("validation set, best checkpoint (no test/ split):")
        print(trainer.evaluate(DataLoader(val_set, batch_size=args.batch_size)).format_table())


if __name__ == "__main__":
    main()
