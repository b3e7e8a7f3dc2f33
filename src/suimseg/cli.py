"""The ``suimseg`` command-line interface.

The CLI only parses arguments into typed values (a frozen :class:`~suimseg.config.TrainConfig`
for training) and calls the library; library code never sees an ``argparse.Namespace``.
Every option with a dash also accepts the underscore spelling (``--batch-size`` and
``--batch_size``), so the design's original command line works unchanged.

Exit status: 0 on success, 2 for bad or missing arguments (one usage line, no traceback),
1 for runtime failures (the library's message, no traceback unless ``--debug``), 130 on
Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torchvision

from suimseg._version import __version__
from suimseg.classes import format_class_table
from suimseg.config import TrainConfig
from suimseg.errors import SUIMSegError

__all__ = ["build_parser", "main"]


def _add(parser: argparse.ArgumentParser, flag: str, *more: str, **kwargs: Any) -> None:
    """Add an option under its dashed name and, when different, its underscore alias."""
    names = [flag, *more]
    alias = flag.replace("-", "_")
    alias = "--" + alias[2:] if flag.startswith("--") else alias
    if flag.startswith("--") and alias != flag:
        names.append(alias)
    parser.add_argument(*names, **kwargs)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 160x120, got {text!r}"
        ) from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return w, h


def _cache_mode(text: str) -> str:
    if text != "shared":
        raise argparse.ArgumentTypeError(
            f"expected nothing (--cache) or 'shared' (--cache shared), got {text!r}"
        )
    return text


def _channels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 4 comma-separated integers such as 512,256,128,64, got {text!r}"
        ) from None
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected 4 comma-separated positive integers such as 512,256,128,64, got {text!r}"
        )
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# --------------------------------------------------------------------------- commands


def _cmd_info(_: argparse.Namespace) -> int:
    cuda = torch.cuda.is_available()
    print(f"suimseg      {__version__}")
    print(f"python       {platform.python_version()}")
    print(f"torch        {torch.__version__}")
    print(f"torchvision  {torchvision.__version__}")
    if cuda:
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        print(f"CUDA         available ({torch.version.cuda}; {names})")
    else:
        print("CUDA         not available (CPU only)")
    print()
    print("SUIM classes:")
    print(format_class_table())
    return 0


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build the :class:`~suimseg.config.TrainConfig` that ``suimseg train`` runs.

    Every ``train`` option stores into the config field of the same name with a default of
    ``None`` (= not given), so options override ``--config`` (or the recipe's defaults)
    only where the user passed them.
    """
    base = TrainConfig.from_json(args.config) if args.config else TrainConfig()
    changes = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    return base.replace(**changes)


def _cmd_train(args: argparse.Namespace) -> int:
    from suimseg.engine import destroy_distributed
    from suimseg.recipe import train

    config = train_config_from_args(args)
    result = train(
        config, resume_from=args.resume, progress=not args.no_progress, overwrite=args.overwrite
    )
    if int(os.environ.get("RANK", "0")) == 0:  # one summary line under torchrun
        best = "n/a" if result.best_miou is None else f"{100 * result.best_miou:.2f}%"
        print(f"best validation mIoU {best}; checkpoints and history in {result.out_dir}")
    destroy_distributed()  # under torchrun: a clean shutdown of the process group
    return 130 if result.interrupted else 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from suimseg.data import make_synthetic_suim

    root = make_synthetic_suim(
        args.root,
        n_train_val=args.n_train_val,
        n_test=args.n_test,
        size=args.size,
        seed=args.seed,
        noisy_masks=args.noisy_masks,
        size_mismatch=args.size_mismatch,
        orphan_images=args.orphan_images,
        overwrite=args.overwrite,
    )
    w, h = args.size
    print(f"wrote a synthetic SUIM dataset to {root} "
          f"({args.n_train_val} train_val + {args.n_test} TEST pairs, {w}x{h})")  # fmt: skip
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from suimseg.demo import run_demo

    print(f"suimseg demo: synthetic SUIM data, CPU-sized UNetResAttnV3, {args.epochs} epochs "
          f"-> {args.out}")  # fmt: skip
    result = run_demo(args.out, epochs=args.epochs, seed=args.seed, progress=False)
    print()
    print("Test metrics (synthetic TEST split):")
    print(result.metrics.format_table())
    print()
    print(f"mIoU of the trained model:            {100 * result.metrics.miou:6.2f}%")
    print(f"mIoU of predicting '{result.majority_class}' everywhere: "
          f"{100 * result.majority_metrics.miou:6.2f}%")  # fmt: skip
    out = result.out_dir
    print(f"wrote {out / 'metrics.json'}, {out / 'run' / 'history.csv'}, "
          f"{out / 'run' / 'best.pt'} and overlays in {out / 'overlays'} "
          f"({result.seconds:.0f} s)")  # fmt: skip
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from suimseg.evaluate import evaluate_checkpoint

    amp = None if args.amp == "none" else args.amp
    report = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        split=args.split,
        protocol=args.protocol,
        tta=args.tta,
        ensemble=args.ensemble or (),
        ensemble_weights=args.weights,
        device=args.device,
        amp=amp,
        batch_size=args.batch_size,
        image_size=args.image_size,
        out=args.out,
    )
    print(report.text)
    print()
    print("wrote " + ", ".join(str(p) for p in report.paths))
    return 0


def _predictor_from_args(args: argparse.Namespace) -> Any:
    from suimseg.engine import load_model, resolve_device
    from suimseg.evaluate import input_size_for
    from suimseg.inference import Predictor

    device = resolve_device(args.device)
    models = [load_model(p, map_location=device) for p in [args.checkpoint, *args.ensemble]]
    size = input_size_for(args.checkpoint, args.image_size)
    return Predictor(
        models,
        device=device,
        image_size=size,
        tta=args.tta,
        tiling=args.tiled,
        batch_size=args.batch_size,
        amp=None if args.amp == "none" else args.amp,
    )


def _cmd_predict(args: argparse.Namespace) -> int:
    from suimseg.inference import predict_files

    predictor = _predictor_from_args(args)
    result = predict_files(
        predictor,
        args.inputs,
        args.out,
        fmt=args.format,
        overlay=args.overlay,
        overwrite=args.overwrite,
    )
    print(f"wrote {len(result.written)} file(s) to {args.out}", end="")
    if result.skipped:
        print(f"; kept existing outputs of {len(result.skipped)} input(s) (use --overwrite)")
    else:
        print()
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from suimseg.engine import load_model

    if not (args.onnx or args.torchscript or args.safetensors):
        print("suimseg export: error: give at least one of --onnx, --torchscript, --safetensors",
              file=sys.stderr)  # fmt: skip
        return 2
    model = load_model(args.checkpoint)
    shape = (1, 3, args.example_size, args.example_size)
    if args.torchscript:
        from suimseg.inference import export_torchscript

        print(f"wrote {export_torchscript(model, args.torchscript, example_shape=shape)}")
    if args.onnx:
        from suimseg.inference import export_onnx

        print(f"wrote {export_onnx(model, args.onnx, example_shape=shape)}")
    if args.safetensors:
        from suimseg.engine.checkpoint import save_safetensors

        print(f"wrote {save_safetensors(args.checkpoint, args.safetensors)}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from suimseg.inference import plot_history

    print(f"wrote {plot_history(args.history, args.out)}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from suimseg.inference import compare_results

    print(compare_results(args.results))
    return 0


# --------------------------------------------------------------------------- parser


def _train_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "train",
        help="train UNetResAttnV3 (or the DeepLabV3 baseline) on SUIM with the V3 recipe",
        description="Train with the V3 recipe. Defaults are the design's: 384x384, batch 6, "
        "50 epochs, AdamW lr 1e-4 (encoder x0.1), DiceFocalLoss (gamma 2), ReduceLROnPlateau "
        "on validation mIoU. Unspecified options come from --config or those defaults.",
    )
    _add(p, "--data", dest="data_root", metavar="ROOT", required=True,
         help="SUIM root folder (holding train_val/ and TEST/)")  # fmt: skip
    _add(p, "--out", dest="out_dir", metavar="DIR", help="output folder (default runs/v3)")
    _add(p, "--config", metavar="JSON", help="start from a saved config.json")
    _add(p, "--model", choices=["v3", "deeplabv3"])
    _add(p, "--encoder", choices=["resnet18", "resnet34", "resnet50", "resnet101"])
    _add(p, "--encoder-weights", metavar="imagenet|none|PATH",
         help="ImageNet weights (default; downloaded once), none, or a local file")  # fmt: skip
    _add(p, "--decoder-channels", type=_channels, metavar="C4,C3,C2,C1",
         help="V3 decoder widths, deepest first (default 512,256,128,64)")  # fmt: skip
    _add(p, "--bridge-channels", type=_positive_int, help="V3 bridge width (default 1024)")
    _add(p, "--image-size", type=_positive_int)
    _add(p, "--batch-size", type=_positive_int)
    _add(p, "--val-batch-size", type=_positive_int, help="validation batch (default: --batch-size)")
    _add(p, "--epochs", type=_positive_int)
    _add(p, "--lr", type=float, help="decoder learning rate (default 1e-4)")
    _add(p, "--enc-lr-mult", type=float, help="encoder LR multiplier (default 0.1)")
    _add(p, "--weight-decay", type=float)
    _add(p, "--grad-clip", type=float, help="gradient-norm clip (0 disables; default 1.0)")
    _add(p, "--use-focal", dest="loss", action="store_const", const="dice_focal",
         help="DiceFocalLoss (the default)")  # fmt: skip
    _add(p, "--no-focal", dest="loss", action="store_const", const="ce",
         help="class-weighted cross-entropy instead of DiceFocalLoss")  # fmt: skip
    _add(p, "--focal-gamma", type=float)
    _add(p, "--lambda-dice", type=float)
    _add(p, "--lambda-focal", type=float)
    _add(p, "--class-weights", dest="class_weight_method",
         choices=["inverse_sqrt", "inverse", "median_frequency", "enet", "none"])  # fmt: skip
    _add(p, "--plateau-factor", type=float)
    _add(p, "--plateau-patience", type=int)
    _add(p, "--min-lr", type=float)
    _add(p, "--early-stopping", dest="early_stopping_patience", type=_positive_int,
         metavar="PATIENCE")  # fmt: skip
    _add(p, "--no-augment", dest="augment", action="store_const", const=False)
    _add(p, "--augment-on", choices=["loader", "device"],
         help="augment and normalise in the DataLoader workers (default) or batched on the "
         "training device (uint8 batches from the workers)")  # fmt: skip
    _add(p, "--val-fraction", type=float)
    _add(p, "--seed", type=int)
    _add(p, "--workers", type=int)
    _add(p, "--device", choices=["auto", "cpu", "cuda"])
    _add(p, "--amp", choices=["auto", "bf16", "fp16", "none"])
    _add(p, "--channels-last", action=argparse.BooleanOptionalAction, default=None)
    _add(p, "--compile", action="store_const", const=True)
    _add(p, "--cache", nargs="?", const=True, type=_cache_mode, metavar="shared",
         help="cache decoded images in memory (one cache per loader process); "
         "--cache shared: one cache in shared memory for all workers")  # fmt: skip
    _add(p, "--async-checkpoint", action=argparse.BooleanOptionalAction, default=None,
         help="write checkpoints in a background thread (default: on for CUDA)")  # fmt: skip
    _add(p, "--lenient", dest="on_corrupt", action="store_const", const="skip",
         help="skip unreadable samples with a warning (counted in the history)")  # fmt: skip
    _add(p, "--max-pixels", type=_positive_int, metavar="N",
         help="refuse images above N pixels (default 100 million)")  # fmt: skip
    _add(p, "--resume", metavar="PATH", help="continue from a last.pt checkpoint")
    _add(p, "--overwrite", action="store_true",
         help="start a new run in an --out folder that holds another run")  # fmt: skip
    _add(p, "--no-progress", action="store_true", help="no per-step progress output")
    p.set_defaults(func=_cmd_train)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``suimseg`` argument parser (one sub-command per task)."""
    parser = argparse.ArgumentParser(
        prog="suimseg",
        description="Semantic segmentation of underwater imagery (SUIM).",
    )
    parser.add_argument("--version", action="version", version=f"suimseg {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks for runtime errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_info = sub.add_parser("info", help="print versions, CUDA availability and the class table")
    p_info.set_defaults(func=_cmd_info)

    _train_parser(sub)

    p_eval = sub.add_parser(
        "evaluate",
        help="IoU/F1 of a checkpoint at the labels' native resolution (+ TTA / ensemble gain)",
        description="Evaluate a checkpoint on a SUIM split. Default protocol: 8-class IoU "
        "from one confusion matrix over the whole split at each label's native resolution. "
        "--protocol suim-paper scores the SUIM paper's way (not comparable with 8-class mIoU).",
    )
    _add(p_eval, "--checkpoint", metavar="PATH", required=True)
    _add(p_eval, "--data", metavar="ROOT", required=True, help="SUIM root folder")
    _add(p_eval, "--split", choices=["test", "val", "train", "train_val"], default="test")
    _add(p_eval, "--protocol", choices=["dataset-8class", "suim-paper"], default="dataset-8class")
    _add(p_eval, "--tta", action="store_true", help="also evaluate with flip + multi-scale TTA")
    _add(p_eval, "--ensemble", nargs="+", metavar="CKPT", default=[],
         help="more checkpoints averaged with --checkpoint (e.g. a DeepLabV3 run)")  # fmt: skip
    _add(p_eval, "--weights", nargs="+", type=float, metavar="W",
         help="ensemble weights, --checkpoint first")  # fmt: skip
    _add(p_eval, "--out", metavar="JSON",
         help="result file (default: eval_<split>.json beside the checkpoint)")  # fmt: skip
    _add(p_eval, "--device", choices=["auto", "cpu", "cuda"], default="auto")
    _add(p_eval, "--amp", choices=["bf16", "fp16", "none"], default="none")
    _add(p_eval, "--batch-size", type=_positive_int, default=8)
    _add(p_eval, "--image-size", type=_positive_int,
         help="model input size (default: the run's config.json, else 384)")  # fmt: skip
    p_eval.set_defaults(func=_cmd_evaluate)

    p_pred = sub.add_parser(
        "predict", help="write SUIM-palette masks (and overlays) for image files or folders"
    )
    _add(p_pred, "--checkpoint", metavar="PATH", required=True)
    p_pred.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    _add(p_pred, "--out", metavar="DIR", required=True)
    _add(p_pred, "--format", choices=["bmp", "png"], default="bmp", help="mask file format")
    _add(p_pred, "--overlay", action="store_true", help="also write image+mask overlays")
    _add(p_pred, "--tta", action="store_true", help="flip + multi-scale test-time augmentation")
    _add(p_pred, "--tiled", action="store_true",
         help="sliding-window inference at native resolution (large images)")  # fmt: skip
    _add(p_pred, "--ensemble", nargs="+", metavar="CKPT", default=[])
    _add(p_pred, "--overwrite", action="store_true", help="replace existing outputs")
    _add(p_pred, "--device", choices=["auto", "cpu", "cuda"], default="auto")
    _add(p_pred, "--amp", choices=["bf16", "fp16", "none"], default="none")
    _add(p_pred, "--batch-size", type=_positive_int, default=8)
    _add(p_pred, "--image-size", type=_positive_int)
    p_pred.set_defaults(func=_cmd_predict)

    p_exp = sub.add_parser("export", help="export a checkpoint to ONNX, TorchScript or safetensors")
    _add(p_exp, "--checkpoint", metavar="PATH", required=True)
    _add(p_exp, "--onnx", metavar="FILE", help="ONNX file (needs the [onnx] extra)")
    _add(p_exp, "--torchscript", metavar="FILE", help="TorchScript file")
    _add(p_exp, "--safetensors", metavar="FILE",
         help="weights + model config, no pickle (needs the [safetensors] extra)")  # fmt: skip
    _add(p_exp, "--example-size", type=_positive_int, default=64,
         help="side of the example input used to trace/export (default 64)")  # fmt: skip
    p_exp.set_defaults(func=_cmd_export)

    p_plot = sub.add_parser("plot", help="training curves from history.csv (needs [plot])")
    p_plot.add_argument("history", metavar="HISTORY", help="history.csv/.jsonl or a run folder")
    _add(p_plot, "--out", metavar="IMAGE", required=True)
    p_plot.set_defaults(func=_cmd_plot)

    p_cmp = sub.add_parser("compare", help="markdown table of several evaluation results")
    p_cmp.add_argument("results", nargs="+", metavar="RESULT.json")
    p_cmp.set_defaults(func=_cmd_compare)

    p_synth = sub.add_parser("synth", help="write a synthetic dataset in the SUIM layout")
    p_synth.add_argument("root", metavar="ROOT")
    _add(p_synth, "--n-train-val", type=_positive_int, default=40)
    _add(p_synth, "--n-test", type=_positive_int, default=10)
    _add(p_synth, "--size", type=_parse_size, default=(160, 120), metavar="WxH")
    _add(p_synth, "--seed", type=int, default=0)
    _add(p_synth, "--noisy-masks", type=int, default=0, metavar="N",
         help="write N train_val masks with noisy (non 0/255) colours")  # fmt: skip
    _add(p_synth, "--size-mismatch", type=int, default=0, metavar="N",
         help="write N train_val masks whose size differs from their image")  # fmt: skip
    _add(p_synth, "--orphan-images", type=int, default=0, metavar="N",
         help="write N train_val images without a mask")  # fmt: skip
    _add(p_synth, "--overwrite", action="store_true", help="replace an earlier synthetic dataset")
    p_synth.set_defaults(func=_cmd_synth)

    p_demo = sub.add_parser(
        "demo", help="synthetic data -> train a CPU-sized model -> evaluate -> pictures"
    )
    _add(p_demo, "--out", metavar="DIR", default="suimseg-demo")
    _add(p_demo, "--epochs", type=_positive_int, default=6)
    _add(p_demo, "--seed", type=int, default=0)
    p_demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``suimseg`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_usage(sys.stderr)
        print("suimseg: error: a command is required (try 'suimseg info')", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return func(args)
    except KeyboardInterrupt:
        print("suimseg: interrupted", file=sys.stderr)
        return 130
    except (SUIMSegError, OSError) as exc:
        if args.debug:
            raise
        print(f"suimseg: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
