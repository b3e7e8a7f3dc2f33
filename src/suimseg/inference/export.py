"""Export a segmentation model to TorchScript or ONNX, with a parity check.

The exported graph is the bare model: input an ImageNet-normalised float32 batch
``(N, 3, H, W)``, output logits ``(N, C, H, W)``; batch size, height and width are
dynamic. Preprocessing (resize, normalisation) and post-processing (softmax/argmax,
TTA) stay in the caller, as in :class:`~suimseg.inference.Predictor`.

ONNX export needs the ``onnx`` extra (``pip install 'suimseg[onnx]'``: onnx, onnxscript
for the exporter and onnxruntime for the parity check).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from suimseg._atomic import atomic_write, named_write_errors
from suimseg.errors import ConfigError, MissingDependencyError
from suimseg.inference.predictor import _eval_mode

__all__ = ["export_onnx", "export_torchscript", "verify_onnx"]

#: The odd-sized batch each export is checked on (different from the example shape).
_CHECK_SHAPE = (2, 3, 45, 77)


def _check_example(example_shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    shape = tuple(example_shape)
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ConfigError(
            f"example_shape: expected (N, C, H, W) positive ints, got {example_shape!r}"
        )
    return shape


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _max_diff(a: Tensor, b: Tensor) -> float:
    """``max |a - b|`` relative to ``max |b|`` when above 1 (float32 rounding grows with it)."""
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_shape: tuple[int, int, int, int] = (1, 3, 64, 64),
    atol: float = 1e-4,
    verify: bool = True,
) -> Path:
    """Trace ``model`` (in eval mode, restored after) to TorchScript and save it atomically.

    With ``verify`` the traced model is compared with the eager one on a batch of another
    size, so an export that baked in the example's shape is caught.

    Args:
        model: The model (e.g. from :func:`~suimseg.engine.checkpoint.load_model`).
        path: Output ``.pt`` file; load it with ``torch.jit.load(path)``.
        example_shape: ``(N, 3, H, W)`` of the tracing input.
        atol: Largest accepted logit difference (relative to ``max |logit|`` when above 1).
        verify: Run the parity check.

    Raises:
        ConfigError: For a bad ``example_shape``, or if the traced model disagrees with
            the eager one (then nothing is written).

    Example:
        >>> export_torchscript(load_model("best.pt"), "model.ts.pt")  # doctest: +SKIP
        >>> torch.jit.load("model.ts.pt")(torch.rand(1, 3, 384, 512)).shape  # doctest: +SKIP
    """
    shape = _check_example(example_shape)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = _device(model)
    with _eval_mode([model]), torch.no_grad():
        example = torch.randn(shape, device=device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # trace's deprecation and tracer warnings
            traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                model, example, check_trace=False
            )
        if verify:
            x = torch.randn((_CHECK_SHAPE[0], shape[1], *_CHECK_SHAPE[2:]), device=device)
            diff = _max_diff(traced(x), model(x))
            if diff > atol:
                raise ConfigError(
                    f"export_torchscript: the traced model differs from the eager model by "
                    f"{diff:.3g} (> atol={atol}) on an input of shape {tuple(x.shape)}; the "
                    "model has shape-dependent Python control flow that tracing cannot keep"
                )

    def write(fh: IO[bytes]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit.save's deprecation notice
            torch.jit.save(traced, fh)

    return atomic_write(out, write)


def _require(module: str, feature: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(module, "onnx", feature)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_shape: tuple[int, int, int, int] = (1, 3, 64, 64),
    opset: int | None = None,
    atol: float = 1e-4,
    verify: bool = True,
) -> Path:
    """Export ``model`` to ONNX (input ``image``, output ``logits``; dynamic N, H, W).

    Uses the ``torch.export``-based exporter. With ``verify`` the file is run with
    onnxruntime on a batch of another size and compared with PyTorch (:func:`verify_onnx`).

    Args:
        model: The model.
        path: Output ``.onnx`` file.
        example_shape: ``(N, 3, H, W)`` of the example input used for export.
        opset: ONNX opset version (``None``: the exporter's default).
        atol: Largest accepted logit difference (relative to ``max |logit|`` when above 1).
        verify: Run the onnxruntime parity check (needs onnxruntime).

    Raises:
        MissingDependencyError: If onnx, onnxscript (or, with ``verify``, onnxruntime)
            is not installed.
        ConfigError: If the parity check fails (the file is then removed).

    Example:
        >>> export_onnx(load_model("best.pt"), "model.onnx")  # doctest: +SKIP
    """
    _require("onnx", "ONNX export")
    _require("onnxscript", "ONNX export")
    if verify:
        _require("onnxruntime", "checking an ONNX export")
    shape = _check_example(example_shape)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = _device(model)
    batch = torch.export.Dim("batch", min=1)
    height = torch.export.Dim("height", min=8)
    width = torch.export.Dim("width", min=8)
    tmp = _tmp_for(out)
    try:
        with _eval_mode([model]), torch.no_grad():
            example = torch.randn(shape, device=device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    model,
                    (example,),
                    input_names=["image"],
                    output_names=["logits"],
                    opset_version=opset,
                    dynamic_shapes=({0: batch, 2: height, 3: width},),
                    dynamo=True,
                    verbose=False,
                )
            if program is None:  # pragma: no cover - dynamo=True always returns a program
                raise ConfigError("export_onnx: the exporter returned no program")
            with named_write_errors(out):
                program.save(str(tmp))
                _fsync_replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    if verify:
        x = torch.randn((_CHECK_SHAPE[0], shape[1], *_CHECK_SHAPE[2:]))
        diff = verify_onnx(model, out, x)
        if diff > atol:
            out.unlink()
            raise ConfigError(
                f"export_onnx: onnxruntime's output differs from PyTorch's by {diff:.3g} "
                f"(> atol={atol}) on an input of shape {tuple(x.shape)}; the file was removed"
            )
    return out


def verify_onnx(model: nn.Module, path: str | os.PathLike[str], x: Tensor) -> float:
    """Largest difference between onnxruntime's and PyTorch's outputs on ``x``.

    Returns:
        ``max |onnx(x) - model(x)|``, divided by ``max |model(x)|`` when that exceeds 1.

    Raises:
        MissingDependencyError: If onnxruntime is not installed.
    """
    _require("onnxruntime", "checking an ONNX export")
    # Imported by name: onnxruntime ships without type information.
    onnxruntime: Any = importlib.import_module("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])
    with _eval_mode([model]), torch.no_grad():
        want = model(x.to(_device(model))).cpu()
    return _max_diff(got, want)
