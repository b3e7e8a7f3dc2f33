"""Train UNet-ResAttn-V3 with PyTorch Lightning: SUIMSegModule + SUIMDataModule.

Needs the ``lightning`` extra: ``pip install 'suimseg[lightning]'``.

Small settings (the default) write a tiny synthetic SUIM-format dataset and train a narrow
model for one epoch on the CPU in a few seconds (it shows the wiring, not learning). The
run (checkpoints, CSV logs, the ``save_pretrained`` folder) goes to one output folder,
printed at the start and the end; the synthetic data to a temporary folder, removed at the
end:

    python examples/lightning_train.py --out runs/lightning

Full scale, on GPUs with the real SUIM dataset (ImageNet ResNet-50 encoder, 384x384,
batch 6 per GPU, 50 epochs, bf16; add ``--devices 4`` for DDP on four GPUs):

    python examples/lightning_train.py --data SUIM --full --accelerator gpu --out runs/pl
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train UNetResAttnV3 with Lightning (SUIMSegModule, SUIMDataModule).",
        epilog="Full scale: --data SUIM --full --accelerator gpu --out runs/pl",
    )
    parser.add_argument("--data", type=Path, help="SUIM root (default: synthetic data)")
    parser.add_argument("--out", type=Path, default=Path("suimseg-examples/lightning_train"),
                        help="output folder (default: %(default)s)")  # fmt: skip
    parser.add_argument("--full", action="store_true", help="the V3 recipe's sizes")
    parser.add_argument("--epochs", type=int, help="default 1 (50 with --full)")
    parser.add_argument("--accelerator", default="cpu", help="cpu, gpu, auto")
    parser.add_argument("--devices", default="1", help="number of devices (DDP if > 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Imported after parsing, so --help works without the extra.
    import lightning.pytorch as pl

    from suimseg.data import make_synthetic_suim
    from suimseg.lightning import SUIMDataModule, SUIMSegModule
    from suimseg.models import UNetResAttnV3

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"output folder: {out}")
    # Synthetic data lives in a temporary folder, removed at the end; the run in `out`.
    with tempfile.TemporaryDirectory(prefix="suimseg-lightning-") as scratch:
        if args.full:
            model_config: dict[str, object] = {"encoder": "resnet50", "encoder_weights": "imagenet"}
            image_size, batch_size, epochs, precision = 384, 6, 50, "bf16-mixed"
        else:
            model_config = {"encoder": "resnet18", "decoder_channels": [32, 16, 8, 8],
                            "bridge_channels": 32}  # fmt: skip
            image_size, batch_size, epochs, precision = 32, 4, 1, "32-true"
        root = args.data or make_synthetic_suim(
            Path(scratch) / "data", n_train_val=12, n_test=4, size=(64, 48)
        )

        pl.seed_everything(0, workers=True)
        module = SUIMSegModule(model_config, lr=1e-4)
        data = SUIMDataModule(root, image_size=image_size, batch_size=batch_size)
        trainer = pl.Trainer(
            max_epochs=args.epochs or epochs,
            accelerator=args.accelerator,
            devices=int(args.devices),
            precision=precision,  # type: ignore[arg-type]
            default_root_dir=out,
            logger=pl.loggers.CSVLogger(out, name="logs"),
            callbacks=[pl.callbacks.ModelCheckpoint(monitor="val_miou", mode="max")],
            enable_progress_bar=False,
            log_every_n_steps=1,
        )
        trainer.fit(module, datamodule=data)
        best = trainer.checkpoint_callback.best_model_path  # type: ignore[union-attr]
        val_miou = 100 * float(trainer.callback_metrics["val_miou"])
        print(f"val mIoU {val_miou:.2f}%; best checkpoint {best}")

        [result] = trainer.test(ckpt_path="best", datamodule=data, verbose=False)
        print(f"test mIoU {100 * result['test_miou']:.2f}%")

        if trainer.is_global_zero:  # share the weights without Lightning: config.json + safetensors
            best_module = SUIMSegModule.load_from_checkpoint(best, map_location="cpu")
            folder = best_module.model.save_pretrained(out / "pretrained")
            again = UNetResAttnV3.from_pretrained(folder)
            print(f"saved {sorted(p.name for p in folder.iterdir())} to {folder}; "
                  f"reloaded a {type(again).__name__}")  # fmt: skip

    print(f"output folder: {out}")


if __name__ == "__main__":
    main()
