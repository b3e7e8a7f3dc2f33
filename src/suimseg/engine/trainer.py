"""The reference trainer: a short, readable loop with checkpoints, history and DDP.

The training step is the plain PyTorch one::

    with autocast:                       # bf16 / fp16 mixed precision, or nothing
        loss = loss_fn(model(images), targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()        # the scaler is a pass-through unless fp16
    scaler.unscale_(optimizer)
    clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()

Everything else (validation, the LR schedule, checkpoints, history files, early stopping,
callbacks) happens once per epoch in :meth:`Trainer.fit`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader

from suimseg._atomic import remove_stale_temporaries
from suimseg.classes import IGNORE_INDEX
from suimseg.engine import distributed as dist_utils
from suimseg.engine.checkpoint import (
    atomic_link,
    atomic_save,
    load_checkpoint,
    make_checkpoint,
    restore_rng_state,
)
from suimseg.engine.history import EpochRecord, HistoryWriter
from suimseg.engine.lock import RunLock
from suimseg.errors import CheckpointError, ConfigError, NonFiniteLossError, RunLockError
from suimseg.metrics import ConfusionMatrix, SegmentationMetrics
from suimseg.models import model_spec
from suimseg.optim import group_min_lrs

__all__ = [
    "AmpMode",
    "BatchTransform",
    "Callback",
    "NonFinitePolicy",
    "TrainStats",
    "Trainer",
    "reduce_on_plateau",
    "skipped_sample_count",
]

logger = logging.getLogger("suimseg")

AmpMode = Literal["bf16", "fp16"]
NonFinitePolicy = Literal["raise", "skip"]
LossFn = Callable[[Tensor, Tensor], Tensor]
#: A device-side batch transform: ``(images, targets) -> (images, targets)``.
BatchTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
PathLike = str | os.PathLike[str]

_NO_STEP = 2**62  # "no bad step seen" sentinel of the deferred non-finite check


class Callback:
    """Hooks called by :meth:`Trainer.fit`; subclass and override what you need.

    A callback may set ``trainer.should_stop = True`` to end training after the epoch.

    Example:
        >>> class PrintBest(Callback):
        ...     def on_epoch_end(self, trainer, record):
        ...         if record.is_best:
        ...             print(f"new best mIoU {record.val_miou:.3f}")
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once before the first epoch (after resuming)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Called before each epoch's training (``epoch`` is 1-based)."""

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        """Called after each epoch's validation, checkpoint and history line."""

    def on_fit_end(self, trainer: Trainer, history: list[EpochRecord]) -> None:
        """Called once when training ends (also after early stopping or Ctrl-C)."""


@dataclass(frozen=True)
class TrainStats:
    """Result of :meth:`Trainer.train_one_epoch` (summed over all processes under DDP).

    Attributes:
        loss: Mean loss over the images of the steps taken.
        images: Images used for steps taken.
        skipped_steps: Steps skipped because of a non-finite loss.
        seconds: Wall-clock time of the epoch's training.
        skipped_samples: Corrupt samples the dataset skipped and replaced (its
            ``on_corrupt="skip"`` mode; see :func:`skipped_sample_count`).
    """

    loss: float
    images: int
    skipped_steps: int
    seconds: float
    skipped_samples: int = 0


def reduce_on_plateau(
    optimizer: Optimizer, *, factor: float = 0.5, patience: int = 5, min_lr: float = 1e-6
) -> ReduceLROnPlateau:
    """The design's schedule: halve the LR when validation mIoU stalls for 5 epochs.

    The trainer steps a :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau` with the
    validation mIoU (``mode="max"``) after every epoch. The ``min_lr`` floor is scaled by
    each group's ``"lr_mult"`` (set by :func:`suimseg.optim.param_groups`), so the
    encoder/decoder learning-rate ratio survives the floor.

    Args:
        optimizer: The optimizer whose learning rates are reduced.
        factor: Multiplier applied to the LR on a plateau.
        patience: Epochs without improvement before reducing.
        min_lr: Lower bound of the base LR (groups without ``"lr_mult"`` get exactly this).

    Returns:
        The scheduler, to pass as ``Trainer(..., scheduler=...)``.

    Example:
        >>> opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-4)
        >>> reduce_on_plateau(opt).mode
        'max'
    """
    return ReduceLROnPlateau(
        optimizer,
        mode="max",
        factor=factor,
        patience=patience,
        min_lr=group_min_lrs(optimizer.param_groups, min_lr),
    )


def skipped_sample_count(loader: Any) -> int:
    """Total corrupt samples skipped so far by the dataset(s) behind ``loader``.

    Reads the ``skipped_samples`` attribute of ``loader.dataset`` (looking through
    :class:`~torch.utils.data.Subset` and :class:`~torch.utils.data.ConcatDataset`).
    :class:`~suimseg.data.SUIMDataset` keeps it in shared memory, so skips made inside
    DataLoader worker processes are counted too. Datasets without it count 0.

    Args:
        loader: A DataLoader (or anything with a ``dataset`` attribute).

    Returns:
        The cumulative count (the trainer records the per-epoch difference).

    Example:
        >>> skipped_sample_count([])
        0
    """
    total = 0
    stack = [getattr(loader, "dataset", None)]
    while stack:
        ds = stack.pop()
        if ds is None:
            continue
        count = getattr(ds, "skipped_samples", None)
        if isinstance(count, int) and not isinstance(count, bool):
            total += count
            continue
        stack.extend(getattr(ds, "datasets", ()) or ())
        inner = getattr(ds, "dataset", None)
        if inner is not None and inner is not ds:
            stack.append(inner)
    return total


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a device into a device.

    ``"auto"`` picks CUDA when available. Asking for CUDA on a machine without it raises a
    clear error instead of failing later inside PyTorch.

    Raises:
        ConfigError: For an unknown device name, or CUDA requested without CUDA.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {str(device)!r} was requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}). Use "
            "device 'cpu' or 'auto' (--device cpu), or a CUDA build of PyTorch on a GPU machine."
        )
    return resolved


def _unpack_batch(batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(batch, Mapping):
        image = batch.get("image")
        target = next((batch[k] for k in ("mask", "target", "label") if k in batch), None)
    elif isinstance(batch, Sequence) and len(batch) >= 2:
        image, target = batch[0], batch[1]
    else:
        image = target = None
    if not isinstance(image, Tensor) or not isinstance(target, Tensor):
        raise ConfigError(
            "batch: expected (images, targets) tensors or a dict with 'image' and 'mask' "
            f"tensors, got {type(batch).__name__}; make the dataset return (image, mask)"
        )
    return image, target


def _json_run_config(run_config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Validate ``run_config`` and return a plain-JSON copy of it (tuples become lists)."""
    if run_config is None:
        return None
    if not isinstance(run_config, Mapping):
        raise ConfigError(
            f"run_config: expected a mapping of JSON-like settings (e.g. "
            f"TrainConfig.to_dict()) or None, got {type(run_config).__name__}"
        )
    try:
        copy = json.loads(json.dumps(dict(run_config), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"run_config: expected JSON-serialisable values (str, int, float, bool, None, "
            f"lists and dicts with str keys), got one that is not ({exc}); convert it "
            "(e.g. str(path), list(tuple)) before passing it"
        ) from None
    if not isinstance(copy, dict):  # pragma: no cover - a mapping always dumps to an object
        raise ConfigError("run_config: expected a JSON object")
    return copy


def _snapshot(obj: Any, pin: bool) -> Any:
    """Copy every tensor in a nested dict/list/tuple to fresh CPU memory.

    With ``pin`` (CUDA), device tensors go to pinned memory with non-blocking copies; the
    caller synchronises once afterwards. CPU tensors are cloned, since training goes on
    changing the originals in place.
    """
    if isinstance(obj, Tensor):
        t = obj.detach()
        if pin and t.device.type == "cuda":
            out = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
            return out.copy_(t, non_blocking=True)
        return t.to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _snapshot(v, pin) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_snapshot(v, pin) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_snapshot(v, pin) for v in obj)
    return obj


def _write_last_and_best(ckpt: Mapping[str, Any], last: Path, best: Path | None) -> None:
    """Write ``last`` atomically, then make ``best`` (when given) a hard link to it.

    ``last`` is only ever replaced by a rename, so ``best`` keeps its content when the
    next epoch rewrites ``last``; without hard links ``best`` is an atomic copy.
    """
    atomic_save(ckpt, last)
    if best is not None:
        atomic_link(last, best)


class _BackgroundWriter:
    """Runs at most one checkpoint write at a time in a background thread.

    :meth:`submit` waits for the previous write first; an error raised by a write is kept
    and re-raised in the caller's thread by the next :meth:`wait` (or :meth:`submit`).
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def pending(self) -> bool:
        return self._thread is not None

    def submit(self, write: Callable[[], object]) -> None:
        self.wait()

        def run() -> None:
            try:
                write()
            except BaseException as exc:  # re-raised in the training thread by wait()
                self._error = exc

        self._thread = threading.Thread(target=run, name="suimseg-checkpoint-writer")
        self._thread.start()

    def wait(self) -> None:
        """Block until the pending write is done; re-raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error


class Trainer:
    """Train and evaluate a segmentation model: AMP, checkpoints, history, resume, DDP.

    Args:
        model: The model; logits ``(N, C, H, W)`` out. suimseg models are saved with their
            constructor config so :func:`suimseg.load_model` can rebuild them.
        loss_fn: Any callable ``(logits, target) -> scalar Tensor`` (e.g. a suimseg loss or
            ``nn.CrossEntropyLoss(ignore_index=255)``).
        optimizer: Any optimizer over ``model``'s parameters.
        scheduler: An LR scheduler. A ``ReduceLROnPlateau`` is stepped with the validation
            mIoU after each epoch (build it with :func:`reduce_on_plateau`); any other is
            stepped without arguments each epoch, or each step with
            ``scheduler_interval="step"``.
        scheduler_interval: ``"epoch"`` (default) or ``"step"``.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
            :class:`torch.device`. Under torchrun with CUDA each process uses
            ``cuda:LOCAL_RANK``.
        amp: Mixed precision: ``"bf16"`` (CPU or GPU), ``"fp16"`` (CUDA only, with a
            gradient scaler) or ``None`` for float32.
        grad_clip: Maximum global gradient norm, or ``None`` for no clipping.
        channels_last: Use the channels-last memory format (faster convolutions on GPUs).
        compile: Wrap the model with :func:`torch.compile`.
        checkpoint_dir: Folder for ``last.pt``, ``best.pt``, ``history.csv`` and
            ``history.jsonl``; ``None`` writes nothing. While :meth:`fit` runs, the folder is
            locked (``.suimseg.lock``, see :class:`~suimseg.engine.RunLock`) so a second run
            pointed at it refuses to start.
        overwrite: Start a new run in a ``checkpoint_dir`` that already holds a previous
            run's ``last.pt`` (its checkpoints and history are replaced), or take over a
            lock held by another process. Without it, :meth:`fit` refuses such a folder
            unless it resumes (``resume_from``).
        early_stopping_patience: Stop after this many epochs without a better validation
            mIoU; ``None`` never stops early.
        callbacks: :class:`Callback` objects.
        num_classes: Number of classes (read from the model's config when omitted).
        class_names: One name per class, for metrics and history columns (defaults to the
            SUIM names for 8 classes).
        ignore_index: Label excluded from the metrics (the loss handles its own).
        nonfinite: On a NaN/inf loss, ``"raise"`` a :class:`~suimseg.errors.NonFiniteLossError` (a
            ``FloatingPointError``) naming the
            epoch and step, or ``"skip"`` the step (counted in the history).
        nonfinite_check_interval: Check for non-finite losses every this many steps. The
            default checks every step on CPU and in ``"skip"`` mode, and every 50 steps on
            CUDA in ``"raise"`` mode to avoid a GPU sync per step (the error still names
            the first bad step).
        sync_batchnorm: Convert BatchNorm layers to SyncBatchNorm under DDP (CUDA only).
        seed: Seed of the DistributedSampler shuffle under DDP, and of each rank's random
            streams there (:func:`~suimseg.engine.seed_rank_epoch`, called
            at every epoch start so that ranks do not draw the same augmentations).
        progress: Show a tqdm bar per epoch when tqdm is installed (else log lines every
            ``log_interval`` steps at INFO level).
        log_interval: Steps between progress updates.
        verbose: Print a summary line per epoch (rank 0 only).
        batch_transform: A callable ``(images, targets) -> (images, targets)`` applied on
            the device to every training batch, right after it is moved there (before the
            channels-last conversion, outside autocast): GPU-side augmentation and
            normalisation of a loader that yields uint8 images
            (``train_transforms(size, output="uint8")``). An ``nn.Module`` is moved to the
            trainer's device.
        eval_batch_transform: The same for evaluation batches (typically only the
            normalisation).
        async_checkpoint: Write ``last.pt``/``best.pt`` in a background thread while the
            next epoch trains. Each epoch's checkpoint is first copied to CPU memory (pinned
            on CUDA); at most one write is in flight, a failed write is re-raised at the next
            save or when :meth:`fit` ends, and :meth:`fit` always waits for the pending write
            (and holds the run lock until then), so a finished run leaves whole files.
        run_config: JSON-like settings of the run (e.g. ``TrainConfig.to_dict()``), stored
            in every checkpoint under ``extra["run_config"]`` so that evaluation and
            prediction know the training image size even when the checkpoint was moved
            away from its ``config.json``.

    Shape:
        - Batches: images ``(N, 3, H, W)`` float (or uint8 with a ``batch_transform`` /
          ``eval_batch_transform`` that converts them), targets ``(N, H, W)`` integer.
        - Model output: logits ``(N, C, H, W)``.

    Raises:
        ConfigError: For invalid arguments (unknown AMP mode, fp16 without CUDA, CUDA
            requested without CUDA, a batch transform that is not callable, a
            ``run_config`` that is not JSON-serialisable, ...).

    Example:
        >>> from suimseg.models import UNetResAttnV3
        >>> model = UNetResAttnV3(encoder="resnet18")
        >>> opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        >>> trainer = Trainer(model, torch.nn.CrossEntropyLoss(ignore_index=255), opt,
        ...                   scheduler=reduce_on_plateau(opt), checkpoint_dir="runs/exp1")
        >>> history = trainer.fit(train_loader, val_loader, epochs=50)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        optimizer: Optimizer,
        *,
        scheduler: Any | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        device: str | torch.device = "auto",
        amp: AmpMode | None = None,
        grad_clip: float | None = 1.0,
        channels_last: bool = False,
        compile: bool = False,
        checkpoint_dir: PathLike | None = None,
        overwrite: bool = False,
        early_stopping_patience: int | None = None,
        callbacks: Sequence[Callback] = (),
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
        nonfinite: NonFinitePolicy = "raise",
        nonfinite_check_interval: int | None = None,
        sync_batchnorm: bool = False,
        seed: int = 0,
        progress: bool = True,
        log_interval: int = 50,
        verbose: bool = True,
        batch_transform: BatchTransform | None = None,
        eval_batch_transform: BatchTransform | None = None,
        async_checkpoint: bool = False,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model: expected an nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ConfigError(f"loss_fn: expected a callable, got {type(loss_fn).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(
                f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if scheduler_interval not in ("epoch", "step"):
            raise ConfigError(
                f"scheduler_interval: expected 'epoch' or 'step', got {scheduler_interval!r}"
            )
        if isinstance(scheduler, ReduceLROnPlateau) and scheduler_interval == "step":
            raise ConfigError(
                "scheduler_interval: ReduceLROnPlateau is stepped with the validation mIoU "
                "once per epoch; use scheduler_interval='epoch'"
            )
        if amp not in (None, "bf16", "fp16"):
            raise ConfigError(f"amp: expected 'bf16', 'fp16' or None, got {amp!r}")
        if grad_clip is not None and not (isinstance(grad_clip, (int, float)) and grad_clip > 0):
            raise ConfigError(f"grad_clip: expected a positive number or None, got {grad_clip!r}")
        if early_stopping_patience is not None and (
            isinstance(early_stopping_patience, bool)
            or not isinstance(early_stopping_patience, int)
            or early_stopping_patience < 1
        ):
            raise ConfigError(
                f"early_stopping_patience: expected a positive int or None, got "
                f"{early_stopping_patience!r}"
            )
        if nonfinite not in ("raise", "skip"):
            raise ConfigError(f"nonfinite: expected 'raise' or 'skip', got {nonfinite!r}")
        for name, value in (
            ("log_interval", log_interval),
            ("nonfinite_check_interval", nonfinite_check_interval),
            ("num_classes", num_classes),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{name}: expected a positive int, got {value!r}")
            if value is not None and value < 1:
                raise ConfigError(f"{name}: expected a positive int, got {value!r}")
        for name, transform in (
            ("batch_transform", batch_transform),
            ("eval_batch_transform", eval_batch_transform),
        ):
            if transform is not None and not callable(transform):
                raise ConfigError(
                    f"{name}: expected a callable (images, targets) -> (images, targets) "
                    f"such as an nn.Module, or None, got {type(transform).__name__}"
                )
        if not isinstance(async_checkpoint, bool):
            raise ConfigError(f"async_checkpoint: expected True or False, got {async_checkpoint!r}")
        stored_run_config = _json_run_config(run_config)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise ConfigError(
                    f"callbacks: expected suimseg.engine.Callback instances, got "
                    f"{type(cb).__name__}; subclass Callback"
                )

        self.device = resolve_device(device)
        self.distributed = dist_utils.init_distributed(self.device.type)
        if self.distributed and str(self.device) == "cuda":  # no index given: use LOCAL_RANK
            self.device = dist_utils.cuda_device_for_this_process()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if amp == "fp16" and self.device.type != "cuda":
            raise ConfigError(
                f"amp: 'fp16' needs a CUDA device, got device {self.device}; use amp='bf16' "
                "or None on the CPU"
            )
        if sync_batchnorm and (not self.distributed or self.device.type != "cuda"):
            raise ConfigError(
                "sync_batchnorm: SyncBatchNorm needs DDP on CUDA devices (launch with torchrun "
                f"on GPUs), got device {self.device} with distributed={self.distributed}"
            )

        if sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
        model.to(self.device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        eval_module: nn.Module = model
        train_module: nn.Module = model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            train_module = DistributedDataParallel(model, device_ids=ids)
        if compile:
            eval_module = cast(nn.Module, torch.compile(model))
            train_module = (
                cast(nn.Module, torch.compile(train_module)) if self.distributed else eval_module
            )
        self._train_module = train_module
        self._eval_module = eval_module

        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.amp = amp
        self._amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.channels_last = channels_last
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.overwrite = bool(overwrite)
        self.early_stopping_patience = early_stopping_patience
        self.callbacks = list(callbacks)
        config = getattr(model, "config", None)
        if num_classes is None and isinstance(config, dict):
            found = config.get("num_classes")
            num_classes = found if isinstance(found, int) else None
        if num_classes is None and class_names is not None:
            num_classes = len(class_names)
        self.num_classes = num_classes
        self.class_names = None if class_names is None else tuple(class_names)
        if self.num_classes is not None:
            # Validate the names now rather than after the first epoch.
            self.class_names = ConfusionMatrix(
                self.num_classes, ignore_index=ignore_index, class_names=self.class_names
            ).class_names
        self.ignore_index = ignore_index
        self.nonfinite = nonfinite
        if nonfinite_check_interval is None:
            lazy = self.device.type == "cuda" and nonfinite == "raise"
            nonfinite_check_interval = 50 if lazy else 1
        if nonfinite == "skip" and nonfinite_check_interval != 1:
            raise ConfigError(
                "nonfinite_check_interval: skipping non-finite steps needs a check every step "
                f"(1), got {nonfinite_check_interval}"
            )
        self.nonfinite_check_interval = nonfinite_check_interval
        self.seed = seed
        self.progress = progress
        self.log_interval = log_interval
        self.verbose = verbose
        for transform in (batch_transform, eval_batch_transform):
            if isinstance(transform, nn.Module):
                transform.to(self.device)
        self.batch_transform = batch_transform
        self.eval_batch_transform = eval_batch_transform
        self.async_checkpoint = async_checkpoint
        self.run_config = stored_run_config
        self._writer = _BackgroundWriter()

        # Training state (saved in checkpoints).
        self.epoch = 0  # completed epochs
        self.global_step = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.epochs_without_improvement = 0
        self.skipped_steps = 0
        self.history: list[EpochRecord] = []
        self.should_stop = False
        self.interrupted = False
        self._bar: Any = None  # the current tqdm bar, if any

    # ------------------------------------------------------------------ small helpers

    @property
    def is_main_process(self) -> bool:
        """Whether this process writes files and prints (rank 0, or not distributed)."""
        return dist_utils.is_main_process()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)

    def _to_device(self, batch: Any, *, train: bool) -> tuple[Tensor, Tensor]:
        images, targets = _unpack_batch(batch)
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        name = "batch_transform" if train else "eval_batch_transform"
        transform = self.batch_transform if train else self.eval_batch_transform
        if transform is not None:
            out = transform(images, targets)
            if (
                not isinstance(out, tuple)
                or len(out) != 2
                or not isinstance(out[0], Tensor)
                or not isinstance(out[1], Tensor)
            ):
                raise ConfigError(
                    f"{name}: expected it to return an (images, targets) tuple of tensors, "
                    f"got {type(out).__name__}"
                )
            images, targets = out
        if not images.is_floating_point():  # a dtype check: free, no device sync
            fix = (
                f"make {name} return float images"
                if transform is not None
                else f"pass {name}= a module that normalises them on the device (e.g. "
                "suimseg's DeviceNormalize), or build the loader's transforms with "
                "output='float'"
            )
            raise ConfigError(
                f"{'training' if train else 'evaluation'} batch: expected float images for "
                f"the model, got {images.dtype} (a loader built with output='uint8' yields "
                f"unnormalised uint8 images); {fix}"
            )
        if self.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        if not targets.is_floating_point() and targets.dtype != torch.int64:
            targets = targets.long()
        return images, targets

    def _progress(self, iterable: Iterable[Any], desc: str) -> Iterator[Any]:
        total = len(iterable) if isinstance(iterable, Sized) else None
        if self.progress and self.is_main_process:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                bar = tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)
                self._bar = bar
                try:
                    yield from bar
                finally:
                    bar.close()
                    self._bar = None
                return
        self._bar = None
        yield from iterable

    def _report_step(self, desc: str, step: int, total: int | None, loss: Tensor) -> None:
        if step % self.log_interval != 0 or not self.is_main_process:
            return
        value = float(loss.detach())  # one sync every log_interval steps
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{value:.4f}")
        elif self.progress:
            logger.info("%s step %d/%s loss %.4f", desc, step, total or "?", value)

    def _current_lrs(self) -> tuple[float, ...]:
        return tuple(float(group["lr"]) for group in self.optimizer.param_groups)

    # ------------------------------------------------------------------ non-finite losses

    def _nonfinite_error(self, epoch: int, step: int) -> NonFiniteLossError:
        return NonFiniteLossError(
            f"non-finite training loss (NaN or inf) at epoch {epoch}, step {step}; common "
            "causes are a too-high learning rate, fp16 overflow (try amp='bf16') or labels "
            "outside [0, num_classes) other than ignore_index."
            + (" The last good epoch is in last.pt." if self.checkpoint_dir else "")
            + " Pass nonfinite='skip' to skip such steps instead."
        )

    def _loss_ok(self, loss: Tensor, epoch: int, step: int, first_bad: Tensor) -> bool:
        """Return ``False`` to skip this step; raise on a non-finite loss in raise mode."""
        bad = ~torch.isfinite(loss.detach())
        if self.nonfinite_check_interval > 1:  # deferred check: no GPU sync this step
            torch.minimum(first_bad, torch.where(bad, step, _NO_STEP), out=first_bad)
            if step % self.nonfinite_check_interval == 0:
                self._check_deferred(first_bad, epoch)
            return True
        flag = bad.to(torch.int32)
        dist_utils.all_reduce_sum(flag)  # every process takes the same decision
        if int(flag) == 0:
            return True
        if self.nonfinite == "skip":
            logger.warning("non-finite loss at epoch %d, step %d: step skipped", epoch, step)
            return False
        raise self._nonfinite_error(epoch, step)

    def _check_deferred(self, first_bad: Tensor, epoch: int) -> None:
        worst = dist_utils.all_reduce_min(first_bad.clone())
        if int(worst) != _NO_STEP:
            raise self._nonfinite_error(epoch, int(worst))

    # ------------------------------------------------------------------ train / evaluate

    def train_one_epoch(self, loader: Iterable[Any], epoch: int) -> TrainStats:
        """Run one epoch of training steps.

        Args:
            loader: Yields ``(images, targets)`` batches (images ``(N, 3, H, W)`` float,
                targets ``(N, H, W)`` int64) or dicts with ``"image"`` and ``"mask"``.
            epoch: 1-based epoch number (for the sampler's ``set_epoch`` and messages).

        Returns:
            The epoch's :class:`TrainStats`.

        Raises:
            NonFiniteLossError: On a non-finite loss with ``nonfinite="raise"``.
        """
        set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)  # DistributedSampler: a different, reproducible order per epoch
        self.model.train()
        start = time.perf_counter()
        samples_skipped_before = skipped_sample_count(loader)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        first_bad = torch.full((), _NO_STEP, dtype=torch.int64, device=self.device)
        images_seen = 0
        skipped = 0
        desc = f"epoch {epoch}"
        total = len(loader) if isinstance(loader, Sized) else None
        step = 0
        for step, batch in enumerate(self._progress(loader, desc), start=1):
            images, targets = self._to_device(batch, train=True)
            with self._autocast():
                logits = self._train_module(images)
                loss = self.loss_fn(logits, targets)
            if not self._loss_ok(loss, epoch, step, first_bad):
                skipped += 1
                continue
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None and self.scheduler_interval == "step":
                self.scheduler.step()
            self.global_step += 1
            loss_sum += loss.detach().double() * images.shape[0]
            images_seen += images.shape[0]
            self._report_step(desc, step, total, loss)
        if self.nonfinite_check_interval > 1 and step > 0:
            self._check_deferred(first_bad, epoch)
        samples_skipped = skipped_sample_count(loader) - samples_skipped_before
        counts = torch.tensor(
            [images_seen, skipped, samples_skipped], dtype=torch.float64, device=self.device
        )
        dist_utils.all_reduce_sum(loss_sum)
        dist_utils.all_reduce_sum(counts)
        images_total, skipped_total = int(counts[0]), int(counts[1])
        self.skipped_steps += skipped_total
        mean_loss = float(loss_sum) / images_total if images_total else math.nan
        return TrainStats(
            mean_loss,
            images_total,
            skipped_total,
            time.perf_counter() - start,
            skipped_samples=int(counts[2]),
        )

    def evaluate(self, loader: Iterable[Any]) -> SegmentationMetrics:
        """Compute dataset-level metrics (mIoU, per-class IoU, F1, accuracy) on ``loader``.

        Under DDP a DataLoader is re-built with a :class:`~suimseg.engine.ShardSampler`
        (each sample on one process, no padding) and the confusion matrices are summed, so
        the result equals a single-process evaluation. The model's train/eval mode is
        restored afterwards.

        Args:
            loader: Yields ``(images, targets)`` batches like :meth:`train_one_epoch`.

        Returns:
            The :class:`~suimseg.metrics.SegmentationMetrics`.

        Raises:
            ConfigError: If the loader yields no batch at all.

        Example:
            >>> metrics = trainer.evaluate(val_loader)  # doctest: +SKIP
            >>> print(metrics.format_table())  # doctest: +SKIP
        """
        if self.distributed and isinstance(loader, DataLoader):
            loader = dist_utils.shard_loader(loader, train=False)
        return self._evaluate(loader)[0]

    @torch.no_grad()
    def _evaluate(self, loader: Iterable[Any]) -> tuple[SegmentationMetrics, float]:
        dist_utils.broadcast_buffers(self.model)  # BatchNorm statistics drift under DDP
        was_training = self.model.training
        self.model.eval()
        cm: ConfusionMatrix | None = None
        if self.num_classes is not None:
            cm = self._new_confusion(self.num_classes)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        try:
            for batch in self._progress(loader, "eval"):
                images, targets = self._to_device(batch, train=False)
                with self._autocast():
                    logits = self._eval_module(images)
                    loss = self.loss_fn(logits, targets)
                if cm is None:
                    self.num_classes = int(logits.shape[1])
                    cm = self._new_confusion(self.num_classes)
                cm.update(logits.detach(), targets)
                loss_sum += loss.detach().double() * images.shape[0]
                count += images.shape[0]
        finally:
            self.model.train(was_training)
        dist_utils.all_reduce_sum(loss_sum)
        dist_utils.all_reduce_sum(count)
        if cm is None or int(count) == 0:
            raise ConfigError(
                "evaluation loader: expected at least one batch, got none; check the "
                "validation dataset is not empty"
            )
        cm.all_reduce()
        metrics = cm.compute()
        if self.class_names is None:
            self.class_names = metrics.class_names
        return metrics, float(loss_sum) / float(count)

    def _new_confusion(self, num_classes: int) -> ConfusionMatrix:
        return ConfusionMatrix(
            num_classes,
            ignore_index=self.ignore_index,
            class_names=self.class_names,
            device=self.device,
        )

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        train_loader: DataLoader[Any],
        val_loader: DataLoader[Any] | None = None,
        epochs: int = 1,
        *,
        resume_from: PathLike | None = None,
    ) -> list[EpochRecord]:
        """Train until ``epochs`` epochs are completed (counting resumed ones).

        After each epoch: validation, the scheduler step, ``last.pt`` (and ``best.pt`` when
        the validation mIoU improved), one line in ``history.csv``/``history.jsonl``, the
        summary line, callbacks and the early-stopping check. Ctrl-C saves ``last.pt`` (with
        the completed-epoch count; the interrupted epoch is repeated on resume) and returns
        normally with ``trainer.interrupted = True``.

        Args:
            train_loader: Training batches. For an exact resume, shuffle with a
                ``DataLoader(shuffle=True)`` (its order derives from the torch RNG, which
                checkpoints restore) or a sampler with ``set_epoch``. Under DDP the loader
                is re-built with a DistributedSampler.
            val_loader: Validation batches, or ``None`` (then no ``best.pt``, no plateau
                scheduler and no early stopping).
            epochs: Total number of epochs, including those done before ``resume_from``.
            resume_from: A checkpoint to continue from (model, optimizer, scheduler,
                scaler, counters and RNG states).

        Returns:
            The records of the epochs run by this call.

        Raises:
            ConfigError: For invalid arguments.
            NonFiniteLossError: On a non-finite loss with ``nonfinite="raise"``.
            CheckpointError: If ``resume_from`` cannot be used.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs: expected a positive int, got {epochs!r}")
        if val_loader is None:
            if isinstance(self.scheduler, ReduceLROnPlateau):
                raise ConfigError(
                    "val_loader: ReduceLROnPlateau is stepped on validation mIoU, so a "
                    "validation loader is required; pass one or use another scheduler"
                )
            if self.early_stopping_patience is not None:
                raise ConfigError(
                    "val_loader: early stopping watches validation mIoU, so a validation "
                    "loader is required; pass one or set early_stopping_patience=None"
                )
        lock: RunLock | None = None
        if self.checkpoint_dir is not None and self.is_main_process:
            lock = RunLock(self.checkpoint_dir, overwrite=self.overwrite).acquire()
        try:
            return self._fit_locked(train_loader, val_loader, epochs, resume_from)
        finally:
            if lock is not None:
                lock.release()

    def _check_fresh_folder(self) -> None:
        """Refuse to start a new run over a folder that holds another run's ``last.pt``."""
        if self.checkpoint_dir is None or self.overwrite or self.epoch > 0:
            return  # no folder, asked to overwrite, or continuing this trainer's own run
        last = self.checkpoint_dir / "last.pt"
        if last.exists():
            raise RunLockError(
                f"output folder {self.checkpoint_dir} already holds a training run ({last}); "
                "starting a new run there would overwrite it. Resume it "
                f"(resume_from={str(last)!r}, `suimseg train --resume`), choose another "
                "output folder, or pass overwrite=True (--overwrite) to replace it."
            )

    def _remove_stale_temporaries(self) -> None:
        """Delete temporary files that a killed run left in ``checkpoint_dir``.

        Atomic writes go through ``.<name>.tmp-<pid>`` (and ``best.pt`` through a
        ``.best.pt.link-<pid>`` hard link); a SIGKILL leaves them behind, and a link keeps
        a whole old checkpoint on disk. This process holds the folder's run lock, so no
        other run is writing there and every such file is stale.
        """
        if self.checkpoint_dir is None or not self.is_main_process:
            return
        removed = remove_stale_temporaries(self.checkpoint_dir)
        if removed:
            logger.info(
                "removed %d temporary file(s) left by an interrupted run in %s",
                len(removed),
                self.checkpoint_dir,
            )

    def _fit_locked(
        self,
        train_loader: DataLoader[Any],
        val_loader: DataLoader[Any] | None,
        epochs: int,
        resume_from: PathLike | None,
    ) -> list[EpochRecord]:
        last_record: Mapping[str, Any] | None = None
        self._remove_stale_temporaries()
        if resume_from is not None:
            ckpt = self.load_checkpoint(resume_from)
            last_record = (ckpt.get("extra") or {}).get("last_record")
            logger.info("resumed from %s after epoch %d", resume_from, self.epoch)
        else:
            self._check_fresh_folder()
        if self.distributed:
            train_loader = dist_utils.shard_loader(train_loader, train=True, seed=self.seed)
            if val_loader is not None:
                val_loader = dist_utils.shard_loader(val_loader, train=False)
        writer = HistoryWriter(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        if writer is not None and self.is_main_process:
            if resume_from is not None:
                # A kill between last.pt and the history line (or after a line of an epoch
                # that last.pt does not hold) leaves them out of step: make them agree.
                writer.sync_to_epoch(self.epoch, last_record)
            elif self.epoch == 0:
                writer.clear()  # a fresh (or overwritten) run starts an empty history
        records: list[EpochRecord] = []
        self.should_stop = False
        self.interrupted = False
        for cb in self.callbacks:
            cb.on_fit_start(self)
        try:
            for epoch in range(self.epoch + 1, epochs + 1):
                record = self._run_epoch(epoch, epochs, train_loader, val_loader, writer)
                records.append(record)
                if self.should_stop:
                    break
        except KeyboardInterrupt:
            self.interrupted = True
            # _save_last waits for a pending background write (re-raising its error).
            saved = self._save_last() if self.checkpoint_dir is not None else None
            if self.is_main_process:
                where = f"; saved {saved}" if saved else ""
                logger.warning("training interrupted during epoch %d%s", self.epoch + 1, where)
        except BaseException:
            self._finish_writes(raise_error=False)  # the first error is the one to report
            raise
        self._finish_writes(raise_error=True)  # whole files before fit returns
        for cb in self.callbacks:
            cb.on_fit_end(self, records)
        return records

    def _run_epoch(
        self,
        epoch: int,
        epochs: int,
        train_loader: DataLoader[Any],
        val_loader: DataLoader[Any] | None,
        writer: HistoryWriter | None,
    ) -> EpochRecord:
        if self.distributed:  # a different augmentation stream per rank (see the function)
            dist_utils.seed_rank_epoch(self.seed, epoch, dist_utils.get_rank())
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch)
        lrs = self._current_lrs()
        start = time.perf_counter()
        stats = self.train_one_epoch(train_loader, epoch)
        metrics: SegmentationMetrics | None = None
        val_loss: float | None = None
        if val_loader is not None:
            metrics, val_loss = self._evaluate(val_loader)
        miou = metrics.miou if metrics is not None else None

        if self.scheduler is not None and self.scheduler_interval == "epoch":
            if isinstance(self.scheduler, ReduceLROnPlateau):
                self.scheduler.step(math.nan if miou is None else miou)
            else:
                self.scheduler.step()
        improved = (
            miou is not None
            and math.isfinite(miou)
            and (self.best_metric is None or miou > self.best_metric)
        )
        if improved:
            self.best_metric, self.best_epoch = miou, epoch
            self.epochs_without_improvement = 0
        elif metrics is not None:
            self.epochs_without_improvement += 1
        self.epoch = epoch

        elapsed = time.perf_counter() - start
        record = EpochRecord(
            epoch=epoch,
            train_loss=stats.loss,
            val_loss=val_loss,
            val_miou=miou,
            val_pixel_accuracy=None if metrics is None else metrics.pixel_accuracy,
            val_mean_f1=None if metrics is None else metrics.mean_f1,
            val_iou={}
            if metrics is None
            else {
                name: (None if math.isnan(v) else v)
                for name, v in zip(metrics.class_names, metrics.iou.tolist(), strict=True)
            },
            lrs=lrs,
            epoch_time_s=elapsed,
            images_per_s=stats.images / stats.seconds if stats.seconds > 0 else 0.0,
            skipped_steps=stats.skipped_steps,
            skipped_samples=stats.skipped_samples,
            is_best=improved,
        )
        self.history.append(record)
        if self.checkpoint_dir is not None:
            self._save_last(record, best=improved)
        if writer is not None and self.is_main_process:
            writer.append(record)
        if self.is_main_process:
            line = self._summary(record, epochs)
            if self.verbose:
                print(line, flush=True)
            else:
                logger.info(line)
        for cb in self.callbacks:
            cb.on_epoch_end(self, record)
        patience = self.early_stopping_patience
        if patience is not None and self.epochs_without_improvement >= patience:
            self.should_stop = True
            if self.is_main_process:
                logger.info(
                    "early stopping after epoch %d: no mIoU improvement for %d epochs "
                    "(best %.4f at epoch %s)",
                    epoch,
                    patience,
                    self.best_metric if self.best_metric is not None else math.nan,
                    self.best_epoch,
                )
        return record

    @staticmethod
    def _summary(record: EpochRecord, epochs: int) -> str:
        parts = [f"epoch {record.epoch}/{epochs}", f"train_loss {record.train_loss:.4f}"]
        if record.val_loss is not None:
            parts.append(f"val_loss {record.val_loss:.4f}")
        if record.val_miou is not None:
            parts.append(f"mIoU {100 * record.val_miou:.2f}%")
        parts.append("lr " + ",".join(f"{lr:.2e}" for lr in record.lrs))
        parts.append(f"{record.epoch_time_s:.1f}s")
        parts.append(f"{record.images_per_s:.1f} img/s")
        if record.skipped_steps:
            parts.append(f"skipped {record.skipped_steps}")
        if record.skipped_samples:
            parts.append(f"corrupt samples skipped {record.skipped_samples}")
        if record.is_best:
            parts.append("*best*")
        return "  ".join(parts)

    # ------------------------------------------------------------------ checkpoints

    def _save_last(self, record: EpochRecord | None = None, *, best: bool = False) -> Path | None:
        """Write ``last.pt`` (then link it as ``best.pt`` when ``best``).

        With ``async_checkpoint`` and a ``record`` (an epoch end), the writes run in the
        background on a CPU snapshot; the interrupt save (no record) is synchronous. Either
        way a pending background write is waited for first (its error is raised here).
        """
        if self.checkpoint_dir is None or not self.is_main_process:
            return None
        self._writer.wait()
        extra: dict[str, Any] = {"interrupted": record is None}
        if record is not None:
            extra["last_record"] = record.to_dict()
        last = self.checkpoint_dir / "last.pt"
        best_path = self.checkpoint_dir / "best.pt" if best else None
        ckpt = self._checkpoint_dict(extra)
        if self.async_checkpoint and record is not None:
            pin = self.device.type == "cuda" and torch.cuda.is_available()
            snapshot = _snapshot(ckpt, pin)
            del ckpt
            if pin:
                torch.cuda.synchronize(self.device)  # the non-blocking copies have landed
            self._writer.submit(lambda: _write_last_and_best(snapshot, last, best_path))
        else:
            _write_last_and_best(ckpt, last, best_path)
        return last

    def _finish_writes(self, *, raise_error: bool) -> None:
        """Wait for a pending background checkpoint write; raise or log its error."""
        try:
            self._writer.wait()
        except Exception as exc:
            if raise_error:
                raise
            logger.error("background checkpoint write failed: %s", exc)

    def _checkpoint_dict(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        try:
            spec: dict[str, Any] | None = model_spec(self.model)
        except ConfigError:
            spec = None
        return make_checkpoint(
            self.model,
            model_spec=spec,
            optimizer_state=self.optimizer.state_dict(),
            scheduler_state=None if self.scheduler is None else self.scheduler.state_dict(),
            scaler_state=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            epoch=self.epoch,
            global_step=self.global_step,
            best_metric=self.best_metric,
            class_names=self.class_names,
            extra={
                "best_epoch": self.best_epoch,
                "epochs_without_improvement": self.epochs_without_improvement,
                "skipped_steps": self.skipped_steps,
                "amp": self.amp,
                **({} if self.run_config is None else {"run_config": self.run_config}),
                **dict(extra or {}),
            },
        )

    def save_checkpoint(self, path: PathLike, *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the full training state to ``path`` atomically (in the calling thread).

        Holds the model (with its constructor config when it is a suimseg model),
        optimizer, scheduler, scaler, counters, best metric, RNG states, class names,
        library version and the ``run_config`` given to the trainer (under
        ``extra["run_config"]``). Only call it on one process under DDP (``fit`` saves on
        rank 0).

        Args:
            path: Destination file.
            extra: More JSON-like data stored under ``"extra"``.

        Returns:
            The path written.

        Raises:
            OSError: If the file cannot be written; the previous file stays loadable.

        Example:
            >>> trainer.save_checkpoint("runs/exp1/epoch10.pt")  # doctest: +SKIP
        """
        return atomic_save(self._checkpoint_dict(extra), path)

    def load_checkpoint(self, path: PathLike, *, restore_rng: bool = True) -> dict[str, Any]:
        """Restore the training state saved by :meth:`save_checkpoint`.

        Args:
            path: The checkpoint file.
            restore_rng: Also restore the torch/numpy/Python random states (needed for an
                exact resume).

        Returns:
            The loaded checkpoint dict.

        Raises:
            CheckpointError: If the file is invalid, was written for another architecture,
                or its optimizer state does not match this optimizer.
        """
        ckpt = load_checkpoint(path, map_location=self.device)
        try:
            own_spec: dict[str, Any] | None = model_spec(self.model)
        except ConfigError:
            own_spec = None
        saved_spec = ckpt.get("model")
        if own_spec is not None and saved_spec is not None and own_spec != saved_spec:
            raise CheckpointError(
                f"checkpoint {path}: written for model {saved_spec}, but the trainer's model "
                f"is {own_spec}; build the model with the checkpoint's config "
                "(or use suimseg.load_model)"
            )
        try:
            self.model.load_state_dict(ckpt["model_state"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint {path}: the weights do not fit this model: {exc}"
            ) from exc
        if ckpt.get("optimizer_state") is not None:
            try:
                self.optimizer.load_state_dict(ckpt["optimizer_state"])
            except (ValueError, KeyError) as exc:
                raise CheckpointError(
                    f"checkpoint {path}: the optimizer state does not match this optimizer "
                    f"({exc}); build the optimizer with the same parameter groups"
                ) from exc
        if ckpt.get("scheduler_state") is not None:
            if self.scheduler is None:
                logger.warning("%s holds a scheduler state but the trainer has none", path)
            else:
                self.scheduler.load_state_dict(ckpt["scheduler_state"])
        if ckpt.get("scaler_state") is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler_state"])
        extra = ckpt.get("extra") or {}
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt.get("global_step", 0))
        self.best_metric = ckpt.get("best_metric")
        self.best_epoch = extra.get("best_epoch")
        self.epochs_without_improvement = int(extra.get("epochs_without_improvement", 0))
        self.skipped_steps = int(extra.get("skipped_steps", 0))
        if self.class_names is None and ckpt.get("class_names"):
            self.class_names = tuple(ckpt["class_names"])
        if restore_rng and ckpt.get("rng") is not None:
            restore_rng_state(ckpt["rng"])
        return ckpt
