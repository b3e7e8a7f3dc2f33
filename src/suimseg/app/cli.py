"""The ``suimseg`` command-line interface.

The CLI only parses arguments into typed values (a frozen :class:`~suimseg.app.config.TrainConfig`
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
import difflib
import logging
import os
import platform
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
import torchvision

from suimseg import errors
from suimseg._version import __version__
from suimseg.app.config import TrainConfig
from suimseg.classes import format_class_table
from suimseg.errors import ConfigError, SUIMSegError

__all__ = ["build_parser", "main"]


class _HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option once (no underscore aliases) and its default."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = getattr(action, "_suimseg_aliases", ())
        if not hidden:
            return super()._format_action_invocation(action)
        shown = [o for o in action.option_strings if o not in hidden]
        clone = argparse.Action(
            shown, action.dest, nargs=action.nargs, metavar=action.metavar, choices=action.choices
        )
        return super()._format_action_invocation(clone)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = getattr(action, "_suimseg_default", action.default)  # train: TrainConfig()
        if (
            "default" not in text
            and default not in (None, [], argparse.SUPPRESS)
            and default is not False
            and action.option_strings
            and not action.required
            and action.nargs != 0
        ):
            if isinstance(default, tuple):  # --decoder-channels 512,256,128,64; --size 160x120
                sep = "," if action.dest == "decoder_channels" else "x"
                default = sep.join(map(str, default))
            shown = f"{default:g}" if isinstance(default, float) else default
            text += f" (default: {shown})"
        return text


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are three short lines, not the whole usage."""

    def error(self, message: str) -> NoReturn:
        for action in self._actions:  # name options by their shown spelling only
            hidden = getattr(action, "_suimseg_aliases", ())
            if hidden:
                shown = [o for o in action.option_strings if o not in hidden]
                message = message.replace("/".join(action.option_strings), "/".join(shown))
        self.exit(2, f"{self.format_usage()}{self.prog}: error: {message}\n"
                     f"(see '{self.prog} --help')\n")  # fmt: skip


def _add(parser: argparse.ArgumentParser, flag: str, *more: str, **kwargs: Any) -> None:
    """Add an option under its dashed name and, when different, a hidden underscore alias.

    The alias (``--batch_size`` for ``--batch-size``) keeps the design's original command
    line working; help and usage show only the dashed spelling.
    """
    names = [flag, *more]
    alias = "--" + flag[2:].replace("-", "_") if flag.startswith("--") else flag
    hidden: list[str] = []
    if alias != flag:
        names.append(alias)
        hidden.append(alias)
        if kwargs.get("action") is argparse.BooleanOptionalAction:
            hidden.append("--no-" + alias[2:])
    action = parser.add_argument(*names, **kwargs)
    action._suimseg_aliases = tuple(hidden)  # type: ignore[attr-defined]


def _ints(text: str, sep: str, count: int, expected: str) -> tuple[int, ...]:
    """``count`` positive ints separated by ``sep``, else an argparse error (exit 2)."""
    try:
        values = tuple(int(v) for v in text.lower().split(sep))
    except ValueError:
        values = ()
    if len(values) != count or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return values


def _parse_size(text: str) -> tuple[int, int]:
    w, h = _ints(text, "x", 2, "WIDTHxHEIGHT of positive sizes such as 160x120")
    return w, h


def _cache_mode(text: str) -> str:
    if text != "shared":
        raise argparse.ArgumentTypeError(
            f"expected nothing (--cache) or 'shared' (--cache shared), got {text!r}"
        )
    return text


def _channels(text: str) -> tuple[int, ...]:
    return _ints(text, ",", 4, "4 comma-separated positive integers such as 512,256,128,64")


def _positive_int(text: str) -> int:
    return _ints(text, ",", 1, "a positive integer")[0]


# --------------------------------------------------------------------------- commands


def _require_file(path: str | None, flag: str, what: str) -> None:
    """Fail early, in the user's terms, when a file option names nothing usable."""
    if path is None:
        return
    file = Path(path).expanduser()
    if file.is_file():
        return
    found = "is a folder" if file.is_dir() else "does not exist"
    raise FileNotFoundError(f"{flag} {path}: {found}; give the path of {what}")


_CHECKPOINT = (
    "a checkpoint written by 'suimseg train' (e.g. runs/v3/best.pt), a .safetensors export "
    "or a Lightning .ckpt of SUIMSegModule"
)


def _require_checkpoints(args: argparse.Namespace) -> None:
    _require_file(args.checkpoint, "--checkpoint", _CHECKPOINT)
    for path in args.ensemble:
        _require_file(path, "--ensemble", _CHECKPOINT)


def _check_train_inputs(config: TrainConfig, resume: str | None) -> None:
    """The cheap checks of ``suimseg train``, before any download or model build."""
    from suimseg.data.dataset import check_layout

    check_layout(config.data_root, "train")
    _require_file(resume, "--resume", "a last.pt written by an earlier 'suimseg train'")
    weights = config.encoder_weights
    if weights.lower() not in ("imagenet", "none"):
        _require_file(weights, "--encoder-weights", "a local state-dict file, or imagenet/none")
    out = Path(config.out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {config.out_dir}: is a file; give a folder for the run")


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
    """Build the :class:`~suimseg.app.config.TrainConfig` that ``suimseg train`` runs.

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
    from suimseg.app.recipe import train
    from suimseg.engine import destroy_distributed

    try:
        config = train_config_from_args(args)
    except ConfigError as exc:  # a bad value given on the command line: a usage error (2)
        field, sep, rest = str(exc).partition(": ")
        flag = _FLAG_OF_FIELD.get(field)
        args.parser.error(f"{flag}: {rest}" if sep and flag else str(exc))
    _check_train_inputs(config, args.resume)
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

    root_dir = Path(args.root).expanduser()
    existing = [p for p in root_dir.glob("*/*/*") if p.is_file()] if root_dir.is_dir() else []
    if existing and not args.overwrite:
        raise FileExistsError(
            f"{args.root} already holds {len(existing)} file(s) (e.g. {existing[0]}); add "
            "--overwrite to replace an earlier synthetic dataset, or choose an empty folder"
        )
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
    from suimseg.app.demo import run_demo

    print(f"suimseg demo: synthetic SUIM data, CPU-sized UNetResAttnV3, {args.epochs} epochs "
          f"-> {args.out}")  # fmt: skip
    result = run_demo(
        args.out, epochs=args.epochs, seed=args.seed, keep_checkpoints=args.keep_checkpoints
    )
    print()
    print("Test metrics (synthetic TEST split):")
    print(result.metrics.format_table())
    print()
    summary = [
        ("mIoU of the trained model:", result.metrics.miou),
        (f"mIoU of predicting '{result.majority_class}' everywhere:", result.majority_metrics.miou),
    ]
    width = max(len(label) for label, _ in summary)
    for label, miou in summary:
        print(f"{label:<{width}} {100 * miou:6.2f}%")
    out = result.out_dir
    print()
    weights = "last.pt and best.pt" if args.keep_checkpoints else "best.pt (the weights)"
    print(f"wrote in {result.seconds:.0f} s:")
    for path, what in [
        (out / "metrics.json", "test metrics of the model and of the baseline"),
        (out / "data", "the synthetic dataset (SUIM layout)"),
        (out / "run", f"config.json, history.csv/.jsonl, {weights}"),
        (out / "figures", "image | ground truth | prediction"),
        (out / "overlays", "predictions blended with the images"),
    ]:
        print(f"  {path!s:<{len(str(out)) + 14}} {what}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from suimseg.app.evaluate import evaluate_checkpoint
    from suimseg.data.dataset import check_layout

    _require_checkpoints(args)
    check_layout(args.data, args.split)
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
        backend=args.backend,
        batch_size=args.batch_size,
        image_size=args.image_size,
        out=args.out,
    )
    print(report.text)
    print()
    print("wrote " + ", ".join(str(p) for p in report.paths))
    return 0


def _predictor_from_args(args: argparse.Namespace) -> Any:
    from suimseg.app.evaluate import input_size_for
    from suimseg.engine import resolve_device
    from suimseg.inference import Predictor
    from suimseg.inference.backends import load_inference_model

    _require_checkpoints(args)
    device = resolve_device(args.device)
    models = [
        load_inference_model(p, backend=args.backend, device=device)
        for p in [args.checkpoint, *args.ensemble]
    ]
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
    with warnings.catch_warnings():
        # One summary line below instead of a warning per input with outputs already.
        warnings.filterwarnings("ignore", r".*: outputs exist already", UserWarning)
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
        shown = ", ".join(p.name for p in result.skipped[:3])
        more = f" and {len(result.skipped) - 3} more" if len(result.skipped) > 3 else ""
        print(f"; kept the existing outputs of {len(result.skipped)} input(s) ({shown}{more}); "
              "--overwrite replaces them")  # fmt: skip
    else:
        print()
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from suimseg.engine import load_model
    from suimseg.inference.backends import declared_in_channels

    if not (args.onnx or args.torchscript or args.safetensors):
        print("suimseg export: error: give at least one of --onnx, --torchscript, --safetensors",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.int8 and not args.onnx:
        print("suimseg export: error: --int8 quantizes the ONNX export; add --onnx FILE or "
              "drop --int8", file=sys.stderr)  # fmt: skip
        return 2
    _require_file(args.checkpoint, "--checkpoint", _CHECKPOINT)
    calibration = _calibration_dir(args) if args.int8 else None
    if args.int8 and calibration is None:
        print("suimseg export: error: --int8 needs training images to calibrate on: add "
              "--calibration-dir DIR (e.g. SUIM/train_val/images); the checkpoint names no "
              "dataset whose train_val/images exists", file=sys.stderr)  # fmt: skip
        return 2
    model = load_model(args.checkpoint)
    channels = declared_in_channels(model) or 3  # e.g. a 4-channel model exports as such
    shape = (1, channels, args.example_size, args.example_size)
    if args.torchscript:
        from suimseg.inference import export_torchscript

        print(f"wrote {export_torchscript(model, args.torchscript, example_shape=shape)}")
    if args.onnx:
        from suimseg.app.evaluate import _training_size, input_size_for
        from suimseg.inference import export_onnx
        from suimseg.inference.backends import IMAGE_SIZE_KEY, write_onnx_metadata

        trained_at = _training_size(args.checkpoint)
        if calibration is None:
            path = export_onnx(model, args.onnx, example_shape=shape)
        else:
            size = input_size_for(args.checkpoint)
            print(f"calibrating int8 on up to {args.calibration_images} images from {calibration} "
                  f"at {size}x{size}")  # fmt: skip
            path = export_onnx(model, args.onnx, example_shape=shape, int8=True,
                               calibration=calibration, calibration_size=size,
                               calibration_images=args.calibration_images)  # fmt: skip
        if trained_at is not None:  # predict/evaluate on the .onnx then run at this size
            write_onnx_metadata(path, {IMAGE_SIZE_KEY: str(trained_at)})
        print(f"wrote {path}")
    if args.safetensors:
        from suimseg.engine.checkpoint import save_safetensors

        print(f"wrote {save_safetensors(args.checkpoint, args.safetensors)}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from suimseg.engine import convert_checkpoint

    _require_file(args.source, "SOURCE", _CHECKPOINT)
    print(f"wrote {convert_checkpoint(args.source, args.dest, to=args.to)}")
    return 0


def _calibration_dir(args: argparse.Namespace) -> Path | None:
    """``--calibration-dir``, else the run's ``<data_root>/train_val/images`` if it exists."""
    if args.calibration_dir is not None:
        folder = Path(args.calibration_dir).expanduser()
        if not folder.is_dir():
            found = "is a file" if folder.exists() else "does not exist"
            raise FileNotFoundError(
                f"--calibration-dir {args.calibration_dir}: {found}; give a folder of "
                "training images (e.g. SUIM/train_val/images)"
            )
        return folder
    from suimseg.app.evaluate import run_config_for

    run = run_config_for(args.checkpoint)
    if run is None:
        return None
    folder = Path(run.data_root).expanduser() / "train_val" / "images"
    return folder if folder.is_dir() else None


def _cmd_plot(args: argparse.Namespace) -> int:
    from suimseg.inference import plot_history

    print(f"wrote {plot_history(args.history, args.out)}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from suimseg.inference import compare_results

    print(compare_results(args.results))
    return 0


# --------------------------------------------------------------------------- parser


def _subparser(sub: Any, name: str, usage: str, help: str, description: str) -> _Parser:
    parser: _Parser = sub.add_parser(
        name,
        prog=f"suimseg {name}",
        help=help,
        description=description,
        usage=f"%(prog)s {usage}",
        formatter_class=_HelpFormatter,
    )
    return parser


_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
#: TrainConfig field -> the train option that sets it, for error messages.
_FLAG_OF_FIELD: dict[str, str] = {}


def _train_parser(sub: Any) -> None:
    p = _subparser(
        sub,
        "train",
        "--data ROOT [--out DIR] [--epochs N] [options]",
        "train UNetResAttnV3 (or the DeepLabV3 baseline) on SUIM with the V3 recipe",
        "Train with the V3 recipe. Defaults are the design's: 384x384, batch 6, 50 epochs, "
        "AdamW lr 1e-4 (encoder x0.1), DiceFocalLoss (gamma 2), ReduceLROnPlateau on "
        "validation mIoU. Options not given come from --config, else from those defaults "
        "(shown below). Every option also accepts the underscore spelling (--batch_size).",
    )
    _add(p, "--data", dest="data_root", metavar="ROOT", required=True,
         help="SUIM root folder (holding train_val/ and TEST/)")  # fmt: skip
    _add(p, "--out", dest="out_dir", metavar="DIR", help="output folder")
    _add(p, "--config", metavar="JSON", help="start from a saved config.json")
    _add(p, "--model", choices=["v3", "deeplabv3"], help="the V3 U-Net or the DeepLabV3 baseline")
    _add(p, "--encoder", choices=[f"resnet{d}" for d in (18, 34, 50, 101)], help="V3 encoder")
    _add(p, "--encoder-weights", metavar="imagenet|none|PATH",
         help="ImageNet weights (downloaded once), none, or a local state-dict file")  # fmt: skip
    _add(p, "--decoder-channels", type=_channels, metavar="C4,C3,C2,C1", help="V3 decoder widths")
    _add(p, "--bridge-channels", type=_positive_int, metavar="N", help="V3 bridge width")
    _add(p, "--image-size", type=_positive_int, metavar="PX", help="square training input size")
    _add(p, "--batch-size", type=_positive_int, metavar="N", help="training batch size")
    _add(p, "--val-batch-size", type=_positive_int, metavar="N",
         help="validation batch size (default: --batch-size)")  # fmt: skip
    _add(p, "--epochs", type=_positive_int, metavar="N", help="number of epochs")
    _add(p, "--lr", type=float, help="decoder learning rate")
    _add(p, "--enc-lr-mult", type=float, metavar="M", help="encoder learning rate = lr x M")
    _add(p, "--weight-decay", type=float, metavar="WD",
         help="AdamW weight decay of weights (never of norms and biases)")  # fmt: skip
    _add(p, "--grad-clip", type=float, metavar="NORM", help="gradient-norm clip, 0 disables")
    _add(p, "--use-focal", dest="loss", action="store_const", const="dice_focal",
         help="DiceFocalLoss (the default)")  # fmt: skip
    _add(p, "--no-focal", dest="loss", action="store_const", const="ce",
         help="class-weighted cross-entropy instead of DiceFocalLoss")  # fmt: skip
    _add(p, "--focal-gamma", type=float, metavar="G", help="focal loss gamma")
    _add(p, "--lambda-dice", type=float, metavar="W", help="weight of the Dice term")
    _add(p, "--lambda-focal", type=float, metavar="W", help="weight of the focal term")
    _add(p, "--class-weights", dest="class_weight_method",
         choices=["inverse_sqrt", "inverse", "median_frequency", "enet", "none"],
         help="per-class loss weights from the training labels' pixel counts")  # fmt: skip
    _add(p, "--plateau-factor", type=float, metavar="F", help="on a plateau, lr x F")
    _add(p, "--plateau-patience", type=int, metavar="N",
         help="epochs without a better validation mIoU before lr x F")  # fmt: skip
    _add(p, "--min-lr", type=float, help="lowest decoder lr")
    _add(p, "--early-stopping", dest="early_stopping_patience", type=_positive_int,
         metavar="PATIENCE", help="stop after PATIENCE epochs without a better validation mIoU "
         "(default: never)")  # fmt: skip
    _add(p, "--no-augment", dest="augment", action="store_const", const=False, help="no augmenting")
    _add(p, "--augment-on", choices=["loader", "device"],
         help="augment and normalise in the DataLoader workers or batched on the training "
         "device (uint8 batches from the workers)")  # fmt: skip
    _add(p, "--val-fraction", type=float, metavar="F", help="share of train_val for validation")
    _add(p, "--seed", type=int, help="random seed of the split, init and shuffling")
    _add(p, "--workers", type=int, metavar="N", help="DataLoader processes, <= usable CPUs")
    _add(p, "--device", choices=["auto", "cpu", "cuda"], help="auto = CUDA when available")
    _add(p, "--amp", choices=["auto", "bf16", "fp16", "none"],
         help="mixed precision; auto = bf16 on CUDA, none on the CPU")  # fmt: skip
    _add(p, "--channels-last", action=argparse.BooleanOptionalAction, default=None,
         help="channels-last memory format (default: on for CUDA)")  # fmt: skip
    _add(p, "--compile", action="store_const", const=True, help="torch.compile the model")
    _add(p, "--cache", nargs="?", const=True, type=_cache_mode, metavar="shared",
         help="cache decoded images in memory (one cache per loader process); "
         "--cache shared: one cache in shared memory for all workers")  # fmt: skip
    _add(p, "--async-checkpoint", action=argparse.BooleanOptionalAction, default=None,
         help="write checkpoints in a background thread (default: on for CUDA)")  # fmt: skip
    _add(p, "--lenient", dest="on_corrupt", action="store_const", const="skip",
         help="skip unreadable samples with a warning (counted in the history)")  # fmt: skip
    _add(p, "--max-pixels", type=_positive_int, metavar="N",
         help="refuse images above N pixels (default: 100 million)")  # fmt: skip
    _add(p, "--resume", metavar="PATH", help="continue from a last.pt checkpoint")
    _add(p, "--overwrite", action="store_true",
         help="start a new run in an --out folder that holds another run")  # fmt: skip
    _add(p, "--no-progress", action="store_true", help="no per-step progress output")
    p.set_defaults(func=_cmd_train, parser=p)
    defaults = TrainConfig()  # options default to None (= not given); --help shows these
    for action in p._actions:
        if action.option_strings and action.dest in _TRAIN_FIELDS:
            _FLAG_OF_FIELD.setdefault(action.dest, action.option_strings[0])
            action._suimseg_default = getattr(defaults, action.dest)  # type: ignore[attr-defined]


def _inference_options(p: _Parser, *, batch_default: int = 8) -> None:
    _add(p, "--device", choices=["auto", "cpu", "cuda"], default="auto",
         help="auto = CUDA when available")  # fmt: skip
    _add(p, "--amp", choices=["auto", "bf16", "fp16", "none"], default="auto",
         help="mixed-precision inference (torch backend); auto = bf16 only on a CPU with "
         "native bf16 whose labels match float32's on the first batch, else float32")  # fmt: skip
    _add(p, "--backend", choices=["torch", "onnxruntime"], default="torch",
         help="inference engine; onnxruntime needs pip install 'suimseg[onnx]' and exports "
         "each checkpoint once to <stem>.onnx beside it (or takes .onnx files)")  # fmt: skip
    _add(p, "--batch-size", type=_positive_int, default=batch_default, metavar="N",
         help="images per forward pass")  # fmt: skip
    _add(p, "--image-size", type=_positive_int, metavar="PX",
         help="model input size (default: the training size stored in the checkpoint or "
         ".onnx export, or in its run's config.json, else 384)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """Build the ``suimseg`` argument parser (one sub-command per task)."""
    parser = _Parser(
        prog="suimseg",
        description="Semantic segmentation of underwater imagery (SUIM).",
        usage="%(prog)s [--version] [--debug] COMMAND [options]",
        epilog="Run 'suimseg COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"suimseg {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks for runtime errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p_info = _subparser(sub, "info", "", "print versions, CUDA availability and the class table",
                        "Print the installed versions, whether CUDA is available, and the "
                        "SUIM class table.")  # fmt: skip
    p_info.set_defaults(func=_cmd_info)

    _train_parser(sub)

    p_eval = _subparser(
        sub,
        "evaluate",
        "--checkpoint PATH --data ROOT [--tta] [--ensemble CKPT ...] [options]",
        "IoU/F1 of a checkpoint at the labels' native resolution (+ TTA / ensemble gain)",
        "Evaluate a checkpoint on a SUIM split. Default protocol: 8-class IoU from one "
        "confusion matrix over the whole split at each label's native resolution. "
        "--protocol suim-paper scores the SUIM paper's way (not comparable with 8-class mIoU).",
    )
    _add(p_eval, "--checkpoint", metavar="PATH", required=True,
         help="a checkpoint written by suimseg train (last.pt or best.pt), a .safetensors "
              "export, a Lightning .ckpt, or an .onnx file with --backend onnxruntime")  # fmt: skip
    _add(p_eval, "--data", metavar="ROOT", required=True, help="SUIM root folder")
    _add(p_eval, "--split", choices=["test", "val", "train", "train_val"], default="test",
         help="the split to score")  # fmt: skip
    _add(p_eval, "--protocol", choices=["dataset-8class", "suim-paper"], default="dataset-8class",
         help="how to score")  # fmt: skip
    _add(p_eval, "--tta", action="store_true", help="also evaluate with flip + multi-scale TTA")
    _add(p_eval, "--ensemble", nargs="+", metavar="CKPT", default=[],
         help="more checkpoints averaged with --checkpoint (e.g. a DeepLabV3 run)")  # fmt: skip
    _add(p_eval, "--weights", nargs="+", type=float, metavar="W",
         help="ensemble weights, --checkpoint first (default: equal)")  # fmt: skip
    _add(p_eval, "--out", metavar="JSON",
         help="result file (default: eval_<split>.json beside the checkpoint)")  # fmt: skip
    _inference_options(p_eval)
    p_eval.set_defaults(func=_cmd_evaluate)

    p_pred = _subparser(
        sub,
        "predict",
        "--checkpoint PATH --out DIR [options] INPUT [INPUT ...]",
        "write SUIM-palette masks (and overlays) for image files or folders",
        "Predict a mask for every image file given (folders are searched for images) and "
        "write it in the SUIM palette, at the image's own size.",
    )
    _add(p_pred, "--checkpoint", metavar="PATH", required=True,
         help="a checkpoint written by suimseg train, a .safetensors export, a Lightning "
              ".ckpt, or an .onnx file with --backend onnxruntime")  # fmt: skip
    p_pred.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    _add(p_pred, "--out", metavar="DIR", required=True, help="output folder")
    _add(p_pred, "--format", choices=["bmp", "png"], default="bmp", help="mask file format")
    _add(p_pred, "--overlay", action="store_true", help="also write image+mask overlays")
    _add(p_pred, "--tta", action="store_true", help="flip + multi-scale test-time augmentation")
    _add(p_pred, "--tiled", action="store_true",
         help="sliding-window inference at native resolution (large images)")  # fmt: skip
    _add(p_pred, "--ensemble", nargs="+", metavar="CKPT", default=[],
         help="more checkpoints averaged with --checkpoint")  # fmt: skip
    _add(p_pred, "--overwrite", action="store_true", help="replace existing outputs")
    _inference_options(p_pred)
    p_pred.set_defaults(func=_cmd_predict)

    p_exp = _subparser(
        sub,
        "export",
        "--checkpoint PATH [--onnx FILE] [--torchscript FILE] [--safetensors FILE]",
        "export a checkpoint to ONNX (float32 or int8), TorchScript or safetensors",
        "Export a trained model for deployment. Give at least one output. With --int8 the "
        "ONNX file is statically quantized (int8 weights and activations; fastest on CPUs with "
        "VNNI or AMX), calibrated on training images at the run's training size.",
    )
    _add(p_exp, "--checkpoint", metavar="PATH", required=True,
         help="a checkpoint written by suimseg train, a .safetensors export or a "
              "Lightning .ckpt")  # fmt: skip
    _add(p_exp, "--onnx", metavar="FILE",
         help="ONNX file (needs the [onnx] extra); records the training image size, which "
         "predict and evaluate use for it")  # fmt: skip
    _add(p_exp, "--torchscript", metavar="FILE", help="TorchScript file")
    _add(p_exp, "--safetensors", metavar="FILE",
         help="weights + model config, no pickle (needs the [safetensors] extra)")  # fmt: skip
    _add(p_exp, "--example-size", type=_positive_int, default=64, metavar="PX",
         help="side of the example input used to trace/export")  # fmt: skip
    _add(p_exp, "--int8", action="store_true",
         help="write the ONNX file quantized to int8 (static, calibrated)")  # fmt: skip
    _add(p_exp, "--calibration-dir", metavar="DIR",
         help="training images to calibrate --int8 on (default: the run's "
         "<data root>/train_val/images, if it exists)")  # fmt: skip
    _add(p_exp, "--calibration-images", type=_positive_int, default=16, metavar="N",
         help="calibration images used, spread over the folder's sorted names")  # fmt: skip
    p_exp.set_defaults(func=_cmd_export)

    p_conv = _subparser(
        sub,
        "convert",
        "SOURCE DEST [--to {suimseg,lightning,safetensors}]",
        "convert a model file between suimseg, Lightning .ckpt and safetensors",
        "Convert a model file: a suimseg checkpoint, a Lightning .ckpt of SUIMSegModule or a "
        ".safetensors export, to another of these formats (weights unchanged; no optimizer "
        "state). The format is taken from DEST's suffix (.pt/.pth, .ckpt, .safetensors) "
        "unless --to is given.",
    )
    p_conv.add_argument("source", metavar="SOURCE", help="the file to convert")
    p_conv.add_argument("dest", metavar="DEST", help="the file to write")
    _add(p_conv, "--to", choices=["suimseg", "lightning", "safetensors"],
         help="output format (default: from DEST's suffix)")  # fmt: skip
    p_conv.set_defaults(func=_cmd_convert)

    p_plot = _subparser(sub, "plot", "HISTORY --out IMAGE",
                        "training curves from a run's history (needs the [plot] extra)",
                        "Plot loss, mIoU and learning rates from history.csv/.jsonl.")  # fmt: skip
    p_plot.add_argument("history", metavar="HISTORY", help="history.csv/.jsonl or a run folder")
    _add(p_plot, "--out", metavar="IMAGE", required=True, help="image file to write (e.g. .png)")
    p_plot.set_defaults(func=_cmd_plot)

    p_cmp = _subparser(sub, "compare", "RESULT.json [RESULT.json ...]",
                       "markdown table of several evaluation results",
                       "Compare evaluation results written by suimseg evaluate.")  # fmt: skip
    p_cmp.add_argument("results", nargs="+", metavar="RESULT.json",
                       help="files written by suimseg evaluate")  # fmt: skip
    p_cmp.set_defaults(func=_cmd_compare)

    p_synth = _subparser(sub, "synth", "ROOT [--n-train-val N] [--n-test N] [options]",
                         "write a synthetic dataset in the SUIM layout",
                         "Write a small synthetic dataset in the official SUIM folder layout "
                         "(train_val/ and TEST/, JPEG images, BMP palette masks).")  # fmt: skip
    p_synth.add_argument("root", metavar="ROOT", help="folder to write")
    _add(p_synth, "--n-train-val", type=_positive_int, default=40, metavar="N",
         help="train_val pairs")  # fmt: skip
    _add(p_synth, "--n-test", type=_positive_int, default=10, metavar="N", help="TEST pairs")
    _add(p_synth, "--size", type=_parse_size, default=(160, 120), metavar="WxH",
         help="image size")  # fmt: skip
    _add(p_synth, "--seed", type=int, default=0, help="random seed")
    _add(p_synth, "--noisy-masks", type=int, default=0, metavar="N",
         help="write N train_val masks with noisy (non 0/255) colours")  # fmt: skip
    _add(p_synth, "--size-mismatch", type=int, default=0, metavar="N",
         help="write N train_val masks whose size differs from their image")  # fmt: skip
    _add(p_synth, "--orphan-images", type=int, default=0, metavar="N",
         help="write N train_val images without a mask")  # fmt: skip
    _add(p_synth, "--overwrite", action="store_true", help="replace an earlier synthetic dataset")
    p_synth.set_defaults(func=_cmd_synth)

    p_demo = _subparser(sub, "demo", "[--out DIR] [--epochs N] [--seed SEED] [--keep-checkpoints]",
                        "synthetic data -> train a CPU-sized model -> evaluate -> pictures",
                        "Write a synthetic SUIM-format dataset, train a CPU-sized "
                        "UNetResAttnV3 on it, evaluate it on the synthetic TEST split against "
                        "the majority-class baseline, and write metrics and pictures.")  # fmt: skip
    _add(p_demo, "--out", metavar="DIR", default="suimseg-demo", help="output folder")
    _add(p_demo, "--epochs", type=_positive_int, default=6, metavar="N", help="training epochs")
    _add(p_demo, "--seed", type=int, default=0, help="random seed")
    _add(p_demo, "--keep-checkpoints", action="store_true",
         help="keep last.pt and the optimizer state (to resume); default: the best weights "
         "only")  # fmt: skip
    p_demo.set_defaults(func=_cmd_demo)
    return parser


def _unrecognized(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  extras: list[str]) -> NoReturn:  # fmt: skip
    """Report unknown arguments with the sub-command's usage and a close match."""
    target = parser
    choices: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            choices = dict(action.choices)
    command = getattr(args, "command", None)
    if command in choices:
        target = choices[command]
    message = "unrecognized arguments: " + " ".join(extras)
    known = [o for a in target._actions for o in a.option_strings]
    for extra in extras:
        if extra.startswith("-"):
            close = difflib.get_close_matches(extra.split("=")[0], known, n=1, cutoff=0.6)
            if close:
                message += f" (did you mean {close[0]}?)"
                break
    target.error(message)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:  # fmt: skip
    """Warnings as one plain line for a CLI user (no source path, no code line)."""
    print(f"suimseg: warning: {message}", file=sys.stderr)


#: How torch re-raises an error of a DataLoader worker (or the pin-memory thread): the
#: original type, with a message that holds the worker's whole formatted traceback.
_WRAPPED = re.compile(r"Caught (\w+) in [^\n]*\.\nOriginal Traceback \(most recent call last\)")


def _unwrapped(exc: BaseException) -> str | None:
    """The original message of an error torch re-raised from a DataLoader worker, else None.

    torch passes a worker's error to the main process as ``type(exc)(text)``, ``text``
    being "Caught X in DataLoader worker process N. Original Traceback ..." and the whole
    worker traceback; the user needs only its last part, the message the library wrote
    (the one a ``num_workers=0`` loader shows). A suimseg error whose constructor takes
    other arguments arrives as a ``RuntimeError`` with the same text.
    """
    text = str(exc)
    wrapped = _WRAPPED.match(text)
    if wrapped is None:
        return None
    kind: type[BaseException] = type(exc)
    original = getattr(errors, wrapped.group(1), None)
    if isinstance(original, type) and issubclass(original, SUIMSegError):
        kind = original
    elif isinstance(exc, RuntimeError) and not isinstance(exc, SUIMSegError):
        return None  # torch's own or a user's RuntimeError: keep its traceback
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__}.{name}"
    start = text.rfind(f"\n{name}: ")
    return None if start < 0 else text[start + len(name) + 3 :].strip()


def _message(exc: BaseException) -> str:
    """An error as one line in user terms: ``path: meaning`` for file-system errors.

    An error raised in a DataLoader worker shows the worker's original message, not the
    traceback torch wraps around it.
    """
    original = _unwrapped(exc)
    if original is not None:
        return original
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        name = str(exc.filename)
        return exc.strerror if name in exc.strerror else f"{name}: {exc.strerror}"
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``suimseg`` console script; returns the exit status."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unrecognized(parser, args, extras)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_usage(sys.stderr)
        print("suimseg: error: a command is required (try 'suimseg info')", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        with warnings.catch_warnings():
            if not args.debug:
                # The library's warnings are messages for the user here: shown once each,
                # as one plain line, whatever filters the caller set for library use.
                warnings.filterwarnings("default", category=UserWarning, module="suimseg")
                warnings.showwarning = _show_warning
            return func(args)
    except KeyboardInterrupt:
        print("suimseg: interrupted", file=sys.stderr)
        return 130
    except (SUIMSegError, OSError) as exc:
        if args.debug:
            raise
        print(f"suimseg: error: {_message(exc)}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a worker's suimseg error torch could not rebuild
        original = _unwrapped(exc)
        if args.debug or original is None:
            raise
        print(f"suimseg: error: {original}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
