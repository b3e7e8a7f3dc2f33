"""Predict files and folders and write SUIM-palette masks (and overlays) to a folder.

Layout of ``out_dir``::

    out_dir/
      masks/<relative path>.<bmp|png>      24-bit RGB masks in the SUIM palette
      overlays/<relative path>.png         image + mask blend with a class legend (optional)

For a folder input, ``<relative path>`` is the image's path inside that folder (so
sub-folders are mirrored); for a file input it is the file's name. Inputs are never
overwritten, nothing is written outside ``out_dir``, and existing outputs are kept unless
``overwrite=True``.
"""

from __future__ import annotations

import itertools
import os
import threading
import warnings
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from suimseg.classes import index_to_rgb
from suimseg.data._io import atomic_save_image
from suimseg.data.dataset import IMAGE_EXTENSIONS
from suimseg.data.visualize import overlay as overlay_image
from suimseg.errors import ConfigError, InputNotFoundError
from suimseg.inference._images import load_image
from suimseg.inference.predictor import Predictor

__all__ = ["MaskFormat", "PredictFilesResult", "collect_inputs", "predict_files"]

MaskFormat = Literal["bmp", "png"]

_PIL_FORMATS: dict[str, str] = {"bmp": "BMP", "png": "PNG"}


@dataclass(frozen=True)
class PredictFilesResult:
    """What :func:`predict_files` did.

    Attributes:
        written: Output files written (masks and overlays), in input order.
        skipped: Inputs whose outputs all existed already (kept, ``overwrite=False``).
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    exclude: str | os.PathLike[str] | None = None,
) -> list[tuple[Path, Path]]:
    """Expand files and folders into ``(image path, relative output path)`` pairs.

    Folders are searched recursively for images (hidden files and anything under
    ``exclude``, the output folder, are skipped) and keep their sub-folders; a file given
    directly keeps only its name. Pairs are sorted per folder, in the order of ``inputs``.

    Raises:
        InputNotFoundError: If an input does not exist (a ``FileNotFoundError``).
        ConfigError: If no image is found, or two inputs would write the same output.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    skip = Path(exclude).resolve() if exclude is not None else None
    pairs: list[tuple[Path, Path]] = []
    for raw in inputs:
        src = Path(raw)
        if src.is_dir():
            root = src.resolve()
            for f in sorted(src.rglob("*")):
                rel = f.relative_to(src)
                if (
                    not f.is_file()
                    or f.suffix.lower() not in IMAGE_EXTENSIONS
                    or any(part.startswith(".") for part in rel.parts)
                    or (skip is not None and f.resolve().is_relative_to(skip))
                    or not f.resolve().is_relative_to(root)
                ):
                    continue
                pairs.append((f, rel))
        elif src.is_file():
            pairs.append((src, Path(src.name)))
        else:
            raise InputNotFoundError(f"input {src} does not exist; pass image files or folders")
    if not pairs:
        raise ConfigError(
            f"inputs: no images found in {[str(p) for p in inputs]} (folders are searched "
            f"recursively for {', '.join(IMAGE_EXTENSIONS)})"
        )
    seen: dict[Path, Path] = {}
    for src, rel in pairs:
        key = rel.with_suffix("")
        if key in seen:
            raise ConfigError(
                f"inputs: {seen[key]} and {src} would write the same output {key}.*; predict "
                "them into different --out folders or rename one"
            )
        seen[key] = src
    return pairs


def predict_files(
    predictor: Predictor,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    fmt: MaskFormat = "bmp",
    overlay: bool = False,
    alpha: float = 0.5,
    overwrite: bool = False,
    workers: int | None = None,
) -> PredictFilesResult:
    """Predict image files/folders and write colour-coded masks (and overlays).

    Masks are 24-bit RGB in the SUIM palette at each image's size (they decode back with
    :func:`~suimseg.classes.rgb_to_index`); overlays carry a legend of the classes present.
    Files are written atomically. With ``workers > 0`` the next images are decoded and
    resized in background threads while the model runs, and outputs are encoded and
    written in another thread; the model still sees one image per forward pass, so the
    files are byte-identical to ``workers=0`` (the plain loop), and errors are the same:
    the outputs of the inputs before a failing one are written, none after it.

    Args:
        predictor: The predictor to use.
        inputs: Image files and/or folders (searched recursively).
        out_dir: Output folder (``masks/``, ``overlays/``; created if needed).
        fmt: Mask file format, ``"bmp"`` (like SUIM) or ``"png"``.
        overlay: Also write ``overlays/<relative path>.png``.
        alpha: Overlay opacity in ``[0, 1]``.
        overwrite: Replace existing outputs; otherwise an input whose outputs all exist is
            skipped with a warning (missing outputs of an input are still written).
        workers: Threads decoding ahead (``0``: decode, predict and write one image after
            the other, in the calling thread). ``None`` (default): 2 when the predictor
            runs on an accelerator, 0 on the CPU, where the model already keeps every core
            busy (with the design's V3 on a quiet 2-core CPU the pipeline measured 0.95x
            the plain loop, see docs/benchmarks.md).

    Raises:
        ConfigError: For a bad ``fmt``/``alpha``/``workers``, no images, colliding
            outputs, or an output that would replace an input file.
        InputNotFoundError: If an input does not exist (a ``FileNotFoundError``).
        DatasetError: If an input cannot be decoded (the inputs before it are written).
        OSError: If an output cannot be written (naming it; nothing after it is written).

    Example:
        >>> res = predict_files(predictor, ["dive/"], "preds", overlay=True)  # doctest: +SKIP
        >>> res.written[0]  # doctest: +SKIP
        PosixPath('preds/masks/img_001.bmp')
    """
    if fmt not in _PIL_FORMATS:
        raise ConfigError(f"fmt: expected one of {list(get_args(MaskFormat))}, got {fmt!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha: expected a value in [0, 1], got {alpha!r}")
    if workers is None:
        workers = 0 if predictor.device.type == "cpu" else 2
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(
            f"workers: expected an int >= 0 (0 = no background threads), got {workers!r}"
        )
    out_root = Path(out_dir)
    pairs = collect_inputs(inputs, exclude=out_root)
    out_resolved = out_root.resolve()
    input_files = {src.resolve() for src, _ in pairs}
    plans: list[tuple[Path, Path, Path | None]] = []
    for src, rel in pairs:
        mask_path = out_root / "masks" / rel.with_suffix(f".{fmt}")
        over_path = out_root / "overlays" / rel.with_suffix(".png") if overlay else None
        for dst in (mask_path, over_path):
            if dst is None:
                continue
            resolved = dst.resolve()
            if not resolved.is_relative_to(out_resolved):
                raise ConfigError(f"output {dst} would be written outside out_dir {out_root}")
            if resolved in input_files:
                raise ConfigError(
                    f"output {dst} would overwrite the input image {src}; choose another out_dir"
                )
        plans.append((src, mask_path, over_path))

    result = PredictFilesResult()
    jobs: list[_Job] = []
    for src, mask_path, over_path in plans:
        wanted = [p for p in (mask_path, over_path) if p is not None]
        todo = wanted if overwrite else [p for p in wanted if not p.exists()]
        if not todo:
            warnings.warn(
                f"{src}: outputs exist already ({', '.join(str(p) for p in wanted)}); kept "
                "them (pass overwrite=True / --overwrite to replace)",
                UserWarning,
                stacklevel=2,
            )
            result.skipped.append(src)
            continue
        jobs.append(_Job(src, mask_path, todo, fmt, alpha))
    if workers == 0:
        for job in jobs:
            # The path, not a decoded image: the predictor reads it with the dataset's
            # decode-and-resize rule (reduced-scale JPEG decode, uint8 resize).
            with predictor.eval_context():
                prepared = predictor._model_input(job.src)
                labels = predictor._predict_prepared([prepared], labels_dtype=None)[0].labels
            result.written.extend(job.write(labels))
    else:
        result.written.extend(_pipelined(predictor, jobs, workers))
    return result


def _mask_image(labels: Tensor) -> Image.Image:
    """The RGB palette image of ``labels`` (as :func:`index_to_rgb`).

    A uint8 map goes through a palette image: no ``(H, W, 3)`` array beside Pillow's
    RGB copy (at 48 megapixels 137 MiB less at the peak).
    """
    if labels.dtype != torch.uint8:
        return Image.fromarray(index_to_rgb(labels))
    image = Image.fromarray(labels.numpy())
    image.putpalette(_PALETTE_256)
    return image.convert("RGB")


#: index_to_rgb's colours as a 256-entry Pillow palette (ids >= 8: the ignore colour).
_PALETTE_256 = index_to_rgb(np.arange(256, dtype=np.uint8)[None]).tobytes()


@dataclass(frozen=True)
class _Job:
    """One input to predict and the outputs to write for it."""

    src: Path
    mask_path: Path
    todo: list[Path]
    fmt: MaskFormat
    alpha: float

    def write(self, labels: Tensor) -> list[Path]:
        """Encode and write the outputs of ``labels`` (atomically); returns their paths."""
        for dst in self.todo:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst == self.mask_path:
                atomic_save_image(_mask_image(labels), dst, format=_PIL_FORMATS[self.fmt])
            else:
                picture = overlay_image(
                    load_image(self.src), labels.numpy(), self.alpha, show_legend=True
                )
                atomic_save_image(picture, dst, format="PNG")
        return list(self.todo)


def _pipelined(predictor: Predictor, jobs: list[_Job], workers: int) -> list[Path]:
    """Run ``jobs`` in order: decoding ahead in ``workers`` threads, writing in another.

    The model runs in the calling thread, one image per forward pass as in the sequential
    loop (so the outputs are byte-identical). At most ``workers + 1`` decoded inputs and
    ``workers + 1`` unwritten outputs are held. A failure (a corrupt input, an unwritable
    output) stops the run like the sequential loop would: the outputs of the inputs before
    the failing one are written, nothing after it, and the same exception is raised. On an
    interrupt (``KeyboardInterrupt``) queued reads and writes are dropped and the ones in
    progress finish (writes are atomic) before it propagates.
    """
    written: list[Path] = []
    failed = threading.Event()
    ahead = workers + 1
    readers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="suimseg-read")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="suimseg-write")
    reads: deque[Future[tuple[Tensor, tuple[int, int]]]] = deque()
    writes: deque[Future[list[Path]]] = deque()

    def write(job: _Job, labels: Tensor) -> list[Path]:
        if failed.is_set():  # an earlier output failed: write nothing after it
            return []
        try:
            return job.write(labels)
        except BaseException:
            failed.set()
            raise

    def settle(limit: int) -> None:
        """Wait for the oldest writes until at most ``limit`` are pending (raises theirs)."""
        while len(writes) > limit:
            written.extend(writes.popleft().result())

    try:
        queued = iter(jobs)
        for job in itertools.islice(queued, ahead):
            reads.append(readers.submit(predictor._model_input, job.src))
        with predictor.eval_context():
            for job in jobs:
                try:
                    prepared = reads.popleft().result()
                    nxt = next(queued, None)
                    if nxt is not None:
                        reads.append(readers.submit(predictor._model_input, nxt.src))
                    labels = predictor._predict_prepared([prepared], labels_dtype=None)[0].labels
                except Exception:
                    # As in the plain loop: the earlier inputs' outputs are written first
                    # (or their write error, which would have come first, is raised).
                    settle(0)
                    raise
                if failed.is_set():
                    settle(0)
                writes.append(writer.submit(write, job, labels))
                settle(ahead)
        settle(0)
    except BaseException:
        failed.set()  # queued writes do nothing; the one in progress finishes
        raise
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)
    return written
