"""Test-time augmentation and ensembles with suimseg.inference.Predictor.

Scores one model plain, with TTA, an ensemble of models, and the ensemble with TTA on the
TEST split with the 8-class dataset-level protocol (one confusion matrix over every pixel,
at the labels' native resolution), then the ensemble with the SUIM paper's protocol.

Small settings (the default) train two tiny models for one epoch each on a synthetic
SUIM-format dataset (CPU, a few seconds), then evaluate them:

    python examples/tta_ensemble.py

Full scale, on a GPU, with trained checkpoints (e.g. two seeds of ``suimseg train``) and
the real TEST split; ``--full-tta`` uses 3 scales x 3 flips = 9 views per model:

    python examples/tta_ensemble.py --data SUIM --checkpoints runs/v3/best.pt \
        runs/v3-seed1/best.pt --image-size 384 --full-tta --device cuda --amp bf16
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from suimseg import (
    DiceFocalLoss,
    SUIMDataset,
    Trainer,
    UNetResAttnV3,
    load_model,
    make_synthetic_suim,
    param_groups,
)
from suimseg.engine import default_callbacks
from suimseg.inference import (
    TTA,
    EvaluationResult,
    Predictor,
    evaluate_predictor,
    evaluate_suim_paper,
    format_comparison,
    save_result,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare plain, TTA, ensemble and ensemble+TTA predictions.",
        epilog="Full scale: --data SUIM --checkpoints a/best.pt b/best.pt --image-size 384 "
        "--full-tta --device cuda --amp bf16",
    )
    parser.add_argument("--data", type=Path, help="SUIM root (default: synthetic data)")
    parser.add_argument(
        "--checkpoints",
        type=Path,
        nargs="+",
        help="trained suimseg checkpoints (default: train two tiny models on the data)",
    )
    parser.add_argument("--image-size", type=int, default=64, help="model input (384 on SUIM)")
    parser.add_argument("--full-tta", action="store_true", help="TTA.standard(): 9 views")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast dtype")
    parser.add_argument("--out", type=Path, help="where result JSON files go (default: temp)")
    return parser.parse_args(argv)


def train_tiny(root: Path, size: int, seed: int, out: Path) -> nn.Module:
    """A stand-in for a trained checkpoint: one epoch of a narrow model."""
    torch.manual_seed(seed)
    model = UNetResAttnV3(encoder="resnet18", decoder_channels=(16, 16, 8, 8), bridge_channels=16)
    optimizer = torch.optim.AdamW(param_groups(model, 1.0, lr=1e-3, weight_decay=1e-4))
    trainer = Trainer(
        model,
        DiceFocalLoss(),
        optimizer,
        device="cpu",
        callbacks=default_callbacks(out, progress=False, verbose=False),
    )
    loader = DataLoader(
        SUIMDataset(root, "train", image_size=size), batch_size=4, shuffle=True, drop_last=True
    )
    trainer.fit(loader, DataLoader(SUIMDataset(root, "val", image_size=size)), epochs=1)
    return load_model(out / "best.pt")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp())
    root = args.data or make_synthetic_suim(
        out / "suim-synth", n_train_val=12, n_test=4, size=(96, 72), overwrite=True
    )
    if args.checkpoints:
        models = [load_model(p, map_location=args.device) for p in args.checkpoints]
    else:
        models = [train_tiny(root, args.image_size, s, out / f"model{s}") for s in (0, 1)]

    tta = TTA.standard() if args.full_tta else TTA(hflip=True, vflip=True)
    common = {"image_size": args.image_size, "device": args.device, "amp": args.amp}
    predictors = {
        "plain": Predictor(models[0], **common),
        f"TTA ({tta.num_views} views)": Predictor(models[0], tta=tta, **common),
        f"ensemble of {len(models)}": Predictor(models, **common),
        "ensemble + TTA": Predictor(models, tta=tta, **common),
    }

    # The TEST split, read at native resolution (images and masks as stored).
    test_set = SUIMDataset(root, "test", image_size=None)
    results = []
    for name, predictor in predictors.items():
        metrics = evaluate_predictor(predictor, test_set)
        result = EvaluationResult.from_metrics(metrics, name=name, meta={"data": str(root)})
        save_result(out / f"{name.split()[0].lower()}.json", result)
        results.append(result)
    print(format_comparison(results, baseline=0))

    paper = evaluate_suim_paper(predictors["ensemble + TTA"], test_set)
    print()
    print("ensemble + TTA, SUIM paper protocol (not comparable with the table above):")
    print(paper.format_table())


if __name__ == "__main__":
    main()
