"""The reference trainer: the training loop and nothing else.

A plain PyTorch step (autocast, ``zero_grad``, the gradient scaler, optional clipping);
:meth:`Trainer.fit` runs epochs of steps, validates, steps the LR schedule and tracks the
best validation mIoU. Files, progress and policies are callbacks
(:mod:`suimseg.engine.callbacks`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from suimseg.classes import IGNORE_INDEX
from suimseg.engine import distributed as dist_utils
from suimseg.engine.callbacks import Callback, NonFiniteLoss, _positive_int
from suimseg.engine.checkpoint import (
    _restore_training_state,
    _training_state,
    atomic_save,
    load_checkpoint,
)
from suimseg.engine.history import EpochRecord, stored_records
from suimseg.engine.utils import (
    check_trainer_args,
    group_lrs,
    model_num_classes,
    not_float_error,
    skipped_sample_count,
    training_device,
    unpack_batch,
    wrap_model,
)
from suimseg.errors import ConfigError
from suimseg.metrics import ConfusionMatrix, SegmentationMetrics

__all__ = ["AmpMode", "BatchTransform", "TrainStats", "Trainer"]

logger = logging.getLogger("suimseg")

AmpMode = Literal["bf16", "fp16"]
LossFn = Callable[[Tensor, Tensor], Tensor]
#: A device-side batch transform: ``(images, targets) -> (images, targets)``.
BatchTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class TrainStats:
    """Result of :meth:`Trainer.train_one_epoch` (summed over all processes under DDP).

    Attributes:
        loss: Mean loss over the images of the steps taken.
        images: Images used for steps taken.
        skipped_steps: Steps skipped because of a non-finite loss.
        seconds: Wall-clock time of the epoch's training.
        skipped_samples: Corrupt samples the dataset skipped (:func:`skipped_sample_count`).
    """

    loss: float
    images: int
    skipped_steps: int
    seconds: float
    skipped_samples: int = 0


def _epoch_record(
    epoch: int,
    stats: TrainStats,
    metrics: SegmentationMetrics | None,
    val_loss: float | None,
    lrs: dict[str, float],
    elapsed: float,
    is_best: bool,
) -> EpochRecord:
    val: dict[str, Any] = {}
    if metrics is not None:
        iou = zip(metrics.class_names, metrics.iou.tolist(), strict=True)
        val = {
            "val_miou": metrics.miou,
            "val_pixel_accuracy": metrics.pixel_accuracy,
            "val_mean_f1": metrics.mean_f1,
            "val_iou": {name: (None if math.isnan(v) else v) for name, v in iou},
        }
    return EpochRecord(
        epoch=epoch,
        train_loss=stats.loss,
        val_loss=val_loss,
        **val,
        lrs=lrs,
        epoch_time_s=elapsed,
        images_per_s=stats.images / stats.seconds if stats.seconds > 0 else 0.0,
        skipped_steps=stats.skipped_steps,
        skipped_samples=stats.skipped_samples,
        is_best=is_best,
    )


class Trainer:
    """Train and evaluate a segmentation model: AMP, gradient clipping, LR schedule, DDP.

    Everything else is a callback (:func:`~suimseg.engine.default_callbacks` builds the
    usual set). Under an active process group (the caller initialises it and shards the
    loaders) the model is wrapped in DistributedDataParallel.

    Args:
        model: The model; logits ``(N, C, H, W)`` out. Convert BatchNorm to SyncBatchNorm
            yourself if wanted (``nn.SyncBatchNorm.convert_sync_batchnorm``).
        loss_fn: Any callable ``(logits, target) -> scalar Tensor``.
        optimizer: Any optimizer over ``model``'s parameters. Groups with a ``"name"`` key
            (:func:`suimseg.optim.param_groups`) are logged as ``lr/<name>``.
        scheduler: An LR scheduler. A ``ReduceLROnPlateau`` is stepped with the validation
            mIoU after each epoch (see :func:`reduce_on_plateau`); any other is stepped
            each epoch, or each step with ``scheduler_interval="step"``.
        scheduler_interval: ``"epoch"`` (default) or ``"step"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a :class:`torch.device`.
            Under DDP with CUDA, ``"cuda"`` means ``cuda:LOCAL_RANK``.
        amp: ``"bf16"`` (CPU or GPU), ``"fp16"`` (CUDA only, with a gradient scaler) or
            ``None`` for float32.
        grad_clip: Maximum global gradient norm, or ``None`` for no clipping.
        channels_last: Use the channels-last memory format for the model and batches.
        compile: Wrap the model with :func:`torch.compile` (checkpoints hold plain weights).
        class_names: One name per class, for metrics and history columns (default: the
            SUIM names for 8 classes, else ``class_<i>``). Metrics ignore label 255.
        callbacks: :class:`~suimseg.engine.Callback` objects, called in this order (the
            teardown hooks in reverse); ``NonFiniteLoss()`` is added if none is given.

    Shape:
        - Batches: images ``(N, 3, H, W)`` float, targets ``(N, H, W)`` integer.
        - Model output: logits ``(N, C, H, W)``.

    Raises:
        ConfigError: For invalid arguments (unknown AMP mode, fp16 without CUDA, CUDA
            requested without CUDA, a callback that is not a ``Callback``, ...).

    Example:
        >>> from suimseg.engine import default_callbacks, reduce_on_plateau
        >>> from suimseg.models import UNetResAttnV3
        >>> model = UNetResAttnV3(encoder="resnet18")
        >>> opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        >>> trainer = Trainer(model, torch.nn.CrossEntropyLoss(ignore_index=255), opt,
        ...                   scheduler=reduce_on_plateau(opt),
        ...                   callbacks=default_callbacks("runs/exp1"))
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
        class_names: Sequence[str] | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        check_trainer_args(
            model, loss_fn, optimizer, scheduler, scheduler_interval, amp, grad_clip, callbacks
        )
        self.device = training_device(device, amp)
        self.distributed = dist_utils.is_distributed()
        model.to(self.device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self._train_module, self._eval_module = wrap_model(model, self.device, compile=compile)
        self.loss_fn, self.optimizer, self.scheduler = loss_fn, optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self.amp = amp
        self._amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.channels_last = channels_last
        self.ignore_index = IGNORE_INDEX
        self.num_classes = model_num_classes(model, class_names)
        self.class_names = None if class_names is None else tuple(class_names)
        if self.num_classes is not None:  # validate the names now, not after an epoch
            self.class_names = self._new_confusion(self.num_classes).class_names
        self.callbacks = list(callbacks)
        if not any(isinstance(cb, NonFiniteLoss) for cb in self.callbacks):
            self.callbacks.insert(0, NonFiniteLoss())
        # Training state (saved by state_dict) and the state of the current fit.
        self.epoch = 0  # completed epochs
        self.global_step = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.epochs_without_improvement = 0
        self.skipped_steps = 0
        self.history: list[EpochRecord] = []
        self.should_stop = self.interrupted = False
        self.resumed: dict[str, Any] | None = None  # the checkpoint fit resumed from
        self.resumed_from: Path | None = None  # and its path
        self.train_loader: Iterable[Any] | None = None
        self.val_loader: Iterable[Any] | None = None
        self.max_epochs = 0
        self.current_epoch = 0  # the epoch being trained (1-based)
        self.num_batches: int | None = None  # of the loader being iterated, when known

    @property
    def is_main_process(self) -> bool:
        """Whether this process writes files and prints (rank 0, or not distributed)."""
        return dist_utils.is_main_process()

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _teardown(self, hook: str, *args: Any) -> list[str]:
        """Call ``hook`` on every callback in reverse order; re-raise the first error last."""
        error: BaseException | None = None
        notes: list[str] = []
        for cb in reversed(self.callbacks):
            try:
                note = getattr(cb, hook)(self, *args)
            except BaseException as exc:
                error = error or exc
            else:
                notes.extend([note] if isinstance(note, str) else [])
        if error is not None:
            raise error
        return notes

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)

    def _to_device(self, batch: Any, *, train: bool) -> tuple[Tensor, Tensor]:
        images, targets = unpack_batch(batch)
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        for cb in self.callbacks:
            images, targets = cb.on_after_batch_transfer(self, images, targets, train)
        if not images.is_floating_point():  # a dtype check: free, no device sync
            raise not_float_error(images, train)
        if self.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        if not targets.is_floating_point() and targets.dtype != torch.int64:
            targets = targets.long()
        return images, targets

    def train_one_epoch(self, loader: Iterable[Any], epoch: int) -> TrainStats:
        """Run one epoch of training steps over ``loader`` (1-based ``epoch``).

        ``loader`` yields ``(images, targets)`` or dicts with ``"image"`` and ``"mask"``.
        """
        dist_utils.require_sharded(loader, "train_loader")
        set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)  # DistributedSampler: a different, reproducible order per epoch
        self.model.train()
        self.current_epoch = epoch
        self.num_batches = len(loader) if isinstance(loader, Sized) else None
        start = time.perf_counter()
        samples_skipped_before = skipped_sample_count(loader)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        images_seen = skipped = 0
        for step, batch in enumerate(loader, start=1):
            images, targets = self._to_device(batch, train=True)
            with self._autocast():
                loss = self.loss_fn(self._train_module(images), targets)
            votes = [cb.on_before_backward(self, step, loss) for cb in self.callbacks]
            if False in votes:  # every callback sees the loss; one may skip the step
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
            self._call("on_train_batch_end", step, loss)
        self._call("on_train_epoch_end", epoch)
        samples_skipped = skipped_sample_count(loader) - samples_skipped_before
        counts = torch.tensor(
            [images_seen, skipped, samples_skipped], dtype=torch.float64, device=self.device
        )
        dist_utils.all_reduce_sum(loss_sum)
        dist_utils.all_reduce_sum(counts)
        images_total, skipped_total = int(counts[0]), int(counts[1])
        self.skipped_steps += skipped_total
        mean_loss = float(loss_sum) / images_total if images_total else math.nan
        seconds = time.perf_counter() - start
        return TrainStats(mean_loss, images_total, skipped_total, seconds, int(counts[2]))

    def evaluate(self, loader: Iterable[Any]) -> SegmentationMetrics:
        """Compute dataset-level metrics (mIoU, per-class IoU, F1, accuracy) on ``loader``.

        Under DDP pass ``shard_loader(loader, train=False)``: the result equals a
        single-process evaluation. Raises :class:`~suimseg.errors.ConfigError` for an
        empty or (under DDP) unsharded loader.
        """
        return self._evaluate(loader)[0]

    @torch.no_grad()
    def _evaluate(self, loader: Iterable[Any]) -> tuple[SegmentationMetrics, float]:
        dist_utils.require_sharded(loader, "val_loader")
        dist_utils.broadcast_buffers(self.model)  # BatchNorm statistics drift under DDP
        was_training = self.model.training
        self.model.eval()
        self.num_batches = len(loader) if isinstance(loader, Sized) else None
        cm = None if self.num_classes is None else self._new_confusion(self.num_classes)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        try:
            for step, batch in enumerate(loader, start=1):
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
                self._call("on_validation_batch_end", step)
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
        self.class_names = self.class_names or metrics.class_names
        self._call("on_validation_end", metrics)
        return metrics, float(loss_sum) / float(count)

    def _new_confusion(self, num_classes: int) -> ConfusionMatrix:
        return ConfusionMatrix(
            num_classes, ignore_index=self.ignore_index, class_names=self.class_names,
            device=self.device,
        )  # fmt: skip

    def fit(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None = None,
        epochs: int = 1,
        *,
        resume_from: PathLike | None = None,
    ) -> list[EpochRecord]:
        """Train until ``epochs`` epochs are completed (counting resumed ones).

        Ctrl-C calls ``on_interrupt`` (``Checkpoint`` saves ``last.pt``) and returns, with
        ``interrupted = True``; any other error calls ``on_exception`` and is re-raised.

        Args:
            train_loader: Training batches; for an exact resume, a ``DataLoader(shuffle=True)``
                (its order follows the restored torch RNG) or a sampler with ``set_epoch``.
            val_loader: Validation batches, or ``None`` (no best mIoU, no plateau schedule).
            epochs: Total number of epochs, including those done before ``resume_from``.
            resume_from: A checkpoint to continue from (``trainer.resumed``/``resumed_from``).

        Returns:
            The records of the epochs run by this call.

        Raises:
            ConfigError: For invalid arguments.
            CheckpointError: If ``resume_from`` cannot be used.
        """
        _positive_int("epochs", epochs)
        if val_loader is None and isinstance(self.scheduler, ReduceLROnPlateau):
            raise ConfigError(
                "val_loader: ReduceLROnPlateau is stepped on validation mIoU, so a "
                "validation loader is required; pass one or use another scheduler"
            )
        self.train_loader, self.val_loader, self.max_epochs = train_loader, val_loader, epochs
        self.should_stop = self.interrupted = False
        self.resumed, self.resumed_from = None, None
        records: list[EpochRecord] = []
        try:
            if resume_from is not None:
                self.resumed = self.load_checkpoint(resume_from)
                self.resumed_from = Path(resume_from)
                logger.info("resumed from %s after epoch %d", resume_from, self.epoch)
            self._call("on_fit_start")
            for epoch in range(self.epoch + 1, epochs + 1):
                records.append(self._run_epoch(epoch, train_loader, val_loader))
                if self.should_stop:
                    break
        except KeyboardInterrupt:
            self.interrupted = True
            notes = self._teardown("on_interrupt")
            if self.is_main_process:
                logger.warning("training interrupted %s%s", _progress_phrase(self),
                               "".join(f"; {note}" for note in notes))  # fmt: skip
        except BaseException as exc:
            with contextlib.suppress(BaseException):  # the first error is the one to report
                self._teardown("on_exception", exc)
            raise
        self._teardown("on_fit_end", records)
        return records

    def _run_epoch(
        self, epoch: int, train_loader: Iterable[Any], val_loader: Iterable[Any] | None
    ) -> EpochRecord:
        self._call("on_epoch_start", epoch)
        lrs = group_lrs(self.optimizer)
        start = time.perf_counter()
        stats = self.train_one_epoch(train_loader, epoch)
        metrics, val_loss = self._evaluate(val_loader) if val_loader is not None else (None, None)
        miou = None if metrics is None else metrics.miou
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            if isinstance(self.scheduler, ReduceLROnPlateau):
                self.scheduler.step(math.nan if miou is None else miou)
            else:
                self.scheduler.step()
        improved = miou is not None and math.isfinite(miou)
        improved = improved and (self.best_metric is None or cast(float, miou) > self.best_metric)
        if improved:
            self.best_metric, self.best_epoch = miou, epoch
            self.epochs_without_improvement = 0
        elif metrics is not None:
            self.epochs_without_improvement += 1
        self.epoch = epoch
        elapsed = time.perf_counter() - start
        record = _epoch_record(epoch, stats, metrics, val_loss, lrs, elapsed, improved)
        self.history.append(record)
        self._call("on_epoch_end", record)
        return record

    def state_dict(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The training state as a checkpoint dict, ``extra`` merged into its ``"extra"``."""
        own = {
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
            "skipped_steps": self.skipped_steps,
            "amp": self.amp,
            # The run's source of truth: history files are regenerated from it on resume.
            "history": [record.to_dict() for record in self.history],
        }
        return _training_state(
            self.model, self.optimizer, self.scheduler,
            self.scaler if self.scaler.is_enabled() else None,
            epoch=self.epoch, global_step=self.global_step, best_metric=self.best_metric,
            class_names=self.class_names, extra={**own, **dict(extra or {})},
        )  # fmt: skip

    def load_state_dict(
        self, state: Mapping[str, Any], *, restore_rng: bool = True, source: str = "checkpoint"
    ) -> None:
        """Restore a :meth:`state_dict`; ``restore_rng`` also the random states (exact resume).

        Raises:
            CheckpointError: If it was written for another architecture, or its optimizer
                state does not match this optimizer.
        """
        extra = state.get("extra") or {}
        history = stored_records(extra.get("history"), source)  # checked before any change
        scaler = self.scaler if self.scaler.is_enabled() else None
        _restore_training_state(
            state, self.model, self.optimizer, self.scheduler, scaler,
            restore_rng=restore_rng, source=source,
        )  # fmt: skip
        self.epoch = int(state["epoch"])
        self.global_step = int(state.get("global_step", 0))
        self.best_metric = state.get("best_metric")
        self.best_epoch = extra.get("best_epoch")
        self.epochs_without_improvement = int(extra.get("epochs_without_improvement", 0))
        self.skipped_steps = int(extra.get("skipped_steps", 0))
        self.history = self.history if history is None else history
        if self.class_names is None and state.get("class_names"):
            self.class_names = tuple(state["class_names"])

    def save_checkpoint(self, path: PathLike, *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write :meth:`state_dict` to ``path`` atomically; the previous file survives errors.

        Example:
            >>> trainer.save_checkpoint("runs/exp1/epoch10.pt")  # doctest: +SKIP
        """
        return atomic_save(self.state_dict(extra), path)

    def load_checkpoint(self, path: PathLike, *, restore_rng: bool = True) -> dict[str, Any]:
        """Load ``path`` (``weights_only=True``) into the trainer; return the checkpoint dict.

        Raises:
            CheckpointError: If the file is invalid or does not fit this model/optimizer.
        """
        ckpt = load_checkpoint(path, map_location=self.device)
        self.load_state_dict(ckpt, restore_rng=restore_rng, source=f"checkpoint {path}")
        return ckpt


def _progress_phrase(trainer: Trainer) -> str:
    """Where training stands, for messages: ``"during epoch 3"``, ``"after epoch 4 of 4"``."""
    if trainer.current_epoch > trainer.epoch:  # set when an epoch's training starts
        return f"during epoch {trainer.current_epoch}"
    if trainer.epoch == 0:
        return "before epoch 1 finished"
    return f"after epoch {trainer.epoch} of {trainer.max_epochs} finished"
