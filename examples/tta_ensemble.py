"""Test-time augmentation and ensembles with suimseg.inference.Predictor.

Scores one model plain, with TTA, an ensemble of models, and the ensemble with TTA on the
TEST split with the 8-class dataset-level protocol (one confusion matrix over every pixel,
at the labels' native resolution), next to the majority-class baseline (predicting the
most frequent training class everywhere), then the ensemble with the SUIM paper's
protocol.

Small settings (the default) train two CPU-sized models (resnet18 encoder with random init,
narrow decoder, 96x96; seeds 0 and 1) on a synthetic SUIM-format dataset, a minute or two
on two CPU cores, then evaluate them:

    python examples/tta_ensemble.py

TTA and ensembles are not guaranteed to help. They average several predictions of each
image, which helps when the views or the models make different mistakes; on small models
trained for a minute on synthetic scenes the gain can be zero or negative, and the script
prints the gain of each variant and says so when there is none rather than hiding it.
Measure on your own checkpoints and data.

It writes to ``--out`` (default ``./suimseg-examples/tta_ensemble``): one JSON result per
column of the table (``plain.json``, ``tta.json``, ``ensemble.json``, ``ensemble_tta.json``)
and, when it trains them, the two models' weights (``model0.pt``, ``model1.pt``, loadable
with ``suimseg.load_model``). The synthetic data and the training runs' scratch files live
in a temporary folder that is removed at the end.

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
from suimseg.engine import default_callbacks, reduce_on_plateau, save_training_state
from suimseg.inference import (
    TTA,
    EvaluationResult,
    Predictor,
    evaluate_predictor,
    evaluate_suim_paper,
    format_comparison,
    save_result,
)
from suimseg.metrics import SegmentationMetrics


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
        help="trained suimseg checkpoints (default: train two small models on the data)",
    )
    parser.add_argument("--image-size", type=int, default=96, help="model input (384 on SUIM)")
    parser.add_argument(
        "--epochs", type=int, default=6, help="epochs per trained model (default: 6)"
    )
    parser.add_argument(
        "--n-images", type=int, default=120, help="synthetic train_val images (default: 120)"
    )
    parser.add_argument("--full-tta", action="store_true", help="TTA.standard(): 9 views")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast dtype")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("suimseg-examples/tta_ensemble"),
        help="output folder (default: ./suimseg-examples/tta_ensemble)",
    )
    return parser.parse_args(argv)


def train_small(root: Path, size: int, epochs: int, seed: int, scratch: Path) -> nn.Module:
    """A stand-in for a trained checkpoint: the CPU-sized model of `suimseg demo`."""
    torch.manual_seed(seed)
    model = UNetResAttnV3(encoder="resnet18", decoder_channels=(64, 32, 16, 16), bridge_channels=64)
    train_set = SUIMDataset(root, "train", image_size=size)
    alpha = class_weights(train_set.class_pixel_counts(), method="inverse_sqrt")
    optimizer = torch.optim.AdamW(param_groups(model, 1.0, lr=1e-3, weight_decay=1e-4))
    trainer = Trainer(
        model,
        DiceFocalLoss(gamma=2.0, alpha=alpha),
        optimizer,
        scheduler=reduce_on_plateau(optimizer, patience=2),
        device="cpu",
        grad_clip=1.0,
        callbacks=default_callbacks(scratch / f"run{seed}", progress=False, seed=seed),
    )
    trainer.fit(
        DataLoader(train_set, batch_size=8, shuffle=True, drop_last=True),
        DataLoader(SUIMDataset(root, "val", image_size=size), batch_size=8),
        epochs=epochs,
    )
    return load_model(scratch / f"run{seed}" / "best.pt")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"output folder: {out}")

    with tempfile.TemporaryDirectory(prefix="suimseg-") as tmp:
        scratch = Path(tmp)
        root = args.data or make_synthetic_suim(
            scratch / "suim-synth", n_train_val=args.n_images, n_test=10, size=(160, 120)
        )
        if args.checkpoints:
            models = [load_model(p, map_location=args.device) for p in args.checkpoints]
        else:
            models = []
            for seed in (0, 1):
                model = train_small(root, args.image_size, args.epochs, seed, scratch)
                save_training_state(out / f"model{seed}.pt", model=model)  # weights only
                models.append(model.to(args.device))

        tta = TTA.standard() if args.full_tta else TTA(hflip=True, vflip=True)
        common = {"image_size": args.image_size, "device": args.device, "amp": args.amp}
        predictors = {
            "plain": Predictor(models[0], **common),
            f"TTA ({tta.num_views} views)": Predictor(models[0], tta=tta, **common),
            f"ensemble of {len(models)}": Predictor(models, **common),
            "ensemble + TTA": Predictor(models, tta=tta, **common),
        }
        files = ["plain.json", "tta.json", "ensemble.json", "ensemble_tta.json"]

        # The TEST split, read at native resolution (images and masks as stored).
        test_set = SUIMDataset(root, "test", image_size=None)
        results = []
        for (name, predictor), file in zip(predictors.items(), files, strict=True):
            metrics = evaluate_predictor(predictor, test_set)
            result = EvaluationResult.from_metrics(metrics, name=name, meta={"data": str(root)})
            save_result(out / file, result)
            results.append(result)
        print(format_comparison(results, baseline=0))

        k, base = SegmentationMetrics.majority_baseline(
            SUIMDataset(root, "train").class_pixel_counts(), test_set.class_pixel_counts()
        )
        majority, baseline = CLASS_NAMES[k], base.miou
        mious = {r.name: r.metrics["miou"] for r in results}
        print(
            f"\ntest mIoU {100 * mious['plain']:.2f}% (plain) vs majority-class baseline "
            f"{100 * baseline:.2f}% ({majority!r} everywhere)"
        )
        no_gain = []
        for name, miou in list(mious.items())[1:]:
            gain = 100 * (miou - mious["plain"])
            print(f"{name}: {gain:+.2f} points of mIoU over plain")
            if gain <= 0:
                no_gain.append(name)
        if no_gain:
            print(
                f"Here {', '.join(no_gain)} did not beat the plain model. TTA and ensembles "
                "average predictions; they help when the views or models make different "
                "mistakes, which small models trained for a minute on synthetic scenes need "
                "not do. Measure on your own checkpoints and data."
            )

        paper = evaluate_suim_paper(predictors["ensemble + TTA"], test_set)
        print()
        print("ensemble + TTA, SUIM paper protocol (not comparable with the table above):")
        print(paper.format_table())
    print(f"output folder: {out}")


if __name__ == "__main__":
    main()
