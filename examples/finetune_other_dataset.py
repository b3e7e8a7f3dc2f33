"""Fine-tune a SUIM-trained UNetResAttnV3 on another dataset with its own palette and
number of classes.

The new dataset here has 4 classes in a colour palette of its own (RGB PNG masks, exact
colours; any other colour is ignored). Everything is transferred from the SUIM model
except the 1x1 head, which is re-initialised for the new class count; the pre-trained
encoder then learns at 0.1x the decoder's rate.

Small settings (the default): a tiny stand-in "SUIM model" is trained for one epoch on
synthetic SUIM data, then fine-tuned for two epochs on a synthetic 4-class dataset (CPU,
a few seconds):

    python examples/finetune_other_dataset.py

Full scale, on a GPU, from a real SUIM checkpoint and your own dataset laid out as
``ROOT/{train,val}/images/*.jpg`` and ``ROOT/{train,val}/masks/*.png`` (edit PALETTE and
CLASS_NAMES below to match it):

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


def make_other_dataset(root: Path, n_train: int = 12, n_val: int = 4) -> Path:
    """A synthetic stand-in: SUIM-like scenes relabelled into the 4 new classes."""
    # SUIM ids -> new ids: reefs -> coral, sea-floor -> sand, fish -> fish, rest -> water.
    to_new = np.zeros(256, np.uint8)
    to_new[5], to_new[7], to_new[6] = 1, 2, 3
    rng = np.random.default_rng(42)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, suim_labels = render_scene(rng, (96, 72), force_class=(5, 6, 7)[i % 3])
            colours = np.array(PALETTE, np.uint8)[to_new[suim_labels]]
            image.save(root / split / "images" / f"img{i:03d}.jpg", quality=90)
            Image.fromarray(colours).save(root / split / "masks" / f"img{i:03d}.png")
    return root


def pretrained_stand_in(work: Path, size: int) -> Path:
    """One epoch of a tiny model on synthetic SUIM data; returns its best.pt."""
    suim = make_synthetic_suim(work / "suim-synth", n_train_val=12, n_test=1, size=(96, 72))
    torch.manual_seed(0)
    model = UNetResAttnV3(encoder="resnet18", decoder_channels=(16, 16, 8, 8), bridge_channels=16)
    optimizer = torch.optim.AdamW(param_groups(model, 1.0, lr=1e-3, weight_decay=1e-4))
    trainer = Trainer(
        model,
        DiceFocalLoss(),
        optimizer,
        device="cpu",
        callbacks=default_callbacks(work / "suim-run", progress=False, verbose=False),
    )
    loader = DataLoader(SUIMDataset(suim, "train", image_size=size), batch_size=4, shuffle=True)
    trainer.fit(loader, DataLoader(SUIMDataset(suim, "val", image_size=size)), epochs=1)
    return work / "suim-run" / "best.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fine-tune a SUIM model on a dataset with another palette and class count.",
        epilog="Full scale: --checkpoint runs/v3/best.pt --data /data/my-reefs --image-size 384 "
        "--epochs 30 --batch-size 6 --device cuda",
    )
    parser.add_argument("--checkpoint", type=Path, help="a SUIM-trained suimseg checkpoint")
    parser.add_argument("--data", type=Path, help="the new dataset (default: synthetic)")
    parser.add_argument("--out", type=Path, help="checkpoint folder (default: a temp dir)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="decoder/head learning rate")
    parser.add_argument("--enc-lr-mult", type=float, default=0.1, help="encoder LR multiplier")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp())
    checkpoint = args.checkpoint or pretrained_stand_in(work, args.image_size)
    root = args.data or make_other_dataset(work / "other-dataset")

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
        scheduler=reduce_on_plateau(optimizer),
        device=args.device,
        class_names=CLASS_NAMES,
        callbacks=default_callbacks(args.out or work / "finetune-run", progress=False),
    )
    trainer.fit(
        DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True),
        DataLoader(val_set, batch_size=args.batch_size),
        epochs=args.epochs,
    )
    print(trainer.evaluate(DataLoader(val_set, batch_size=args.batch_size)).format_table())


if __name__ == "__main__":
    main()
