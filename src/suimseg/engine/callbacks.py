"""Callbacks: everything around the training loop, one small object per concern.

:class:`~suimseg.engine.Trainer` calls the hooks of :class:`Callback` in list order; the
teardown hooks (``on_interrupt``, ``on_exception``, ``on_fit_end``) run in reverse order,
like nested ``with`` blocks, and each callback's teardown runs even if an earlier one
raised, so ``[RunDirLock, Checkpoint, History, ...]`` takes the lock first and releases it
last. Teardown hooks must tolerate a fit that failed before their ``on_fit_start`` ran.
:func:`default_callbacks` builds the usual set in the right order.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import Tensor, nn

from suimseg._atomic import remove_stale_temporaries
from suimseg.engine import distributed as dist_utils
from suimseg.engine.checkpoint import atomic_link, atomic_save
from suimseg.engine.history import EpochRecord, HistoryWriter, read_history
from suimseg.engine.lock import RunLock as _FolderLock
from suimseg.errors import ConfigError, NonFiniteLossError, RunLockError

if TYPE_CHECKING:
    import os

    from suimseg.engine.trainer import BatchTransform, Trainer
    from suimseg.metrics import SegmentationMetrics

    PathLike = str | os.PathLike[str]

__all__ = [
    "Callback",
    "Checkpoint",
    "DeviceTransform",
    "EarlyStopping",
    "History",
    "NonFiniteLoss",
    "NonFinitePolicy",
    "Progress",
    "RankSeed",
    "RunDirLock",
    "default_callbacks",
    "json_run_config",
    "summary_line",
]

logger = logging.getLogger("suimseg")

NonFinitePolicy = Literal["raise", "skip"]
_NO_STEP = 2**62  # "no bad step seen" sentinel of the deferred non-finite check


class Callback:
    """Base class of the trainer's hooks; subclass and override what you need.

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

    def on_after_batch_transfer(
        self, trainer: Trainer, images: Tensor, targets: Tensor, training: bool
    ) -> tuple[Tensor, Tensor]:
        """Transform a batch on the device (before channels-last, outside autocast)."""
        return images, targets

    def on_before_backward(self, trainer: Trainer, step: int, loss: Tensor) -> bool | None:
        """Called with each training loss; return ``False`` to skip the step."""
        return None

    def on_train_batch_end(self, trainer: Trainer, step: int, loss: Tensor) -> None:
        """Called after each optimizer step (``step`` is 1-based within the epoch)."""

    def on_train_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        """Called after the epoch's last training step, before validation."""

    def on_validation_batch_end(self, trainer: Trainer, step: int) -> None:
        """Called after each evaluation batch."""

    def on_validation_end(self, trainer: Trainer, metrics: SegmentationMetrics) -> None:
        """Called with the metrics of each evaluation (all processes agree on them)."""

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        """Called after each epoch's validation, scheduler step and best-mIoU update."""

    def on_interrupt(self, trainer: Trainer) -> str | None:
        """Called on Ctrl-C (teardown order); a returned note joins the warning line."""
        return None

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        """Called when ``fit`` fails with ``error`` (teardown order), before it propagates."""

    def on_fit_end(self, trainer: Trainer, history: list[EpochRecord]) -> None:
        """Called once when ``fit`` returns (also after early stopping or Ctrl-C)."""


def _positive_int(name: str, value: Any, what: str = "a positive int") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: expected {what}, got {value!r}")


def json_run_config(run_config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Validate ``run_config`` and return a plain-JSON copy of it (tuples become lists).

    Raises:
        ConfigError: If it is not a mapping of JSON-serialisable values.

    Example:
        >>> json_run_config({"image_size": (32, 32)})
        {'image_size': [32, 32]}
    """
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
    return cast(dict[str, Any], copy)


# ----------------------------------------------------------------------------- run lock


class RunDirLock(Callback):
    """Hold the output folder's :class:`~suimseg.engine.RunLock` while ``fit`` runs (rank 0).

    With the lock taken, ``on_fit_start`` deletes the temporary files a killed run left
    (``.<name>.tmp-<pid>``, ``.best.pt.link-<pid>``). Put it first in the callback list.

    Args:
        directory: The run's output folder.
    """

    def __init__(self, directory: PathLike) -> None:
        self.directory = Path(directory)
        self._lock: _FolderLock | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main_process:
            return
        self._lock = _FolderLock(self.directory).acquire()
        removed = remove_stale_temporaries(self.directory)
        if removed:
            logger.info(
                "removed %d temporary file(s) left by an interrupted run in %s",
                len(removed),
                self.directory,
            )

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        self._release()

    def on_fit_end(self, trainer: Trainer, history: list[EpochRecord]) -> None:
        self._release()


# ----------------------------------------------------------------------------- checkpoints


def _snapshot(obj: Any, pin: bool) -> Any:
    """Copy every tensor in nested containers to fresh (with ``pin`` on CUDA: pinned) CPU memory."""
    if isinstance(obj, Tensor):
        t = obj.detach()
        if pin and t.device.type == "cuda":  # non-blocking: the caller synchronises once
            out = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
            return out.copy_(t, non_blocking=True)
        return t.to("cpu", copy=True)  # training goes on changing the original in place
    if isinstance(obj, dict):
        return {k: _snapshot(v, pin) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        copied = [_snapshot(v, pin) for v in obj]
        return copied if isinstance(obj, list) else tuple(copied)
    return obj


def _resumed_elsewhere(trainer: Trainer, directory: Path) -> Path | None:
    """The folder of the checkpoint ``trainer`` resumed from, when it is not ``directory``."""
    source = trainer.resumed_from
    if trainer.resumed is None or source is None:
        return None
    folder = source.parent
    try:
        if folder.samefile(directory):
            return None
    except OSError:  # directory does not exist yet: another folder
        pass
    return folder


def _write_last_and_best(ckpt: Mapping[str, Any], last: Path, best: Path | None) -> None:
    # The commit order of one save: last.pt first, then the best.pt link. A kill between
    # them leaves best.pt holding the previous best and last.pt holding the new best
    # epoch, from which a resume relinks it; the previous best is never lost.
    atomic_save(ckpt, last)
    if best is not None:
        atomic_link(last, best)  # last.pt is only replaced by a rename: best.pt keeps it


def _stored_position(path: Path) -> tuple[Any, Any] | None:
    """A checkpoint file's ``(epoch, global_step)`` (memory-mapped: no weights read)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # missing, torn or foreign: not the weights we are looking for
        return None
    return (ckpt.get("epoch"), ckpt.get("global_step")) if isinstance(ckpt, dict) else None


class Checkpoint(Callback):
    """Write ``last.pt`` after every epoch and ``best.pt`` when validation mIoU improves.

    Each is :meth:`Trainer.state_dict <suimseg.engine.Trainer.state_dict>` written
    atomically by rank 0; ``best.pt`` is a hard link to that ``last.pt``, made after it.
    ``last.pt`` is the run's single source of truth: it holds every epoch's record
    (``extra["history"]``), the best epoch and its score; ``extra`` also holds the epoch's
    record (``"last_record"``), whether the save was Ctrl-C's, and ``run_config``. On
    resume, a ``best.pt`` whose link never committed (last.pt is the best epoch, best.pt
    an older one) is relinked. A new run refuses a folder that holds another run's
    ``last.pt`` unless ``overwrite`` (which also removes the old run's ``best.pt``), and so
    does a run resumed from a checkpoint in another folder; resuming the folder's own
    ``last.pt`` (or ``best.pt``) is always allowed.

    Args:
        directory: Folder for ``last.pt`` and ``best.pt``.
        overwrite: Start a new run over another run's checkpoints.
        async_write: Write from a CPU snapshot (pinned on CUDA) in a background thread
            while the next epoch trains; one write at a time, its error re-raised at the
            next save or when ``fit`` ends, which waits for it.
        run_config: JSON-like run settings (e.g. ``TrainConfig.to_dict()``), stored under
            ``extra["run_config"]``, where evaluation and prediction find the image size.

    Raises:
        ConfigError: If ``async_write`` is not a bool or ``run_config`` is not JSON-like.
    """

    def __init__(
        self,
        directory: PathLike,
        *,
        overwrite: bool = False,
        async_write: bool = False,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(async_write, bool):
            raise ConfigError(f"async_checkpoint: expected True or False, got {async_write!r}")
        self.directory = Path(directory)
        self.overwrite = bool(overwrite)
        self.async_write = async_write
        self.run_config = json_run_config(run_config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._committed: int | None = None  # epoch whose last.pt and best.pt link are written

    @property
    def last_path(self) -> Path:
        """``directory / "last.pt"``."""
        return self.directory / "last.pt"

    @property
    def best_path(self) -> Path:
        """``directory / "best.pt"``."""
        return self.directory / "best.pt"

    def _wait(self) -> None:
        """Block until the pending background write is done; re-raise its error, if any."""
        if self._thread is not None:
            self._thread.join()  # a Ctrl-C here leaves it pending for the next _wait
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _write(self, ckpt: Mapping[str, Any], best: bool, epoch: int) -> None:
        _write_last_and_best(ckpt, self.last_path, self.best_path if best else None)
        self._committed = epoch

    def _write_in_background(self, *args: Any) -> None:
        try:
            self._write(*args)
        except BaseException as exc:  # re-raised in the training thread by _wait()
            self._error = exc

    def _repair_best(self, trainer: Trainer) -> None:
        """On resume: make ``best.pt`` the best epoch's weights, or say truly why not."""
        best_epoch, epoch = trainer.best_epoch, trainer.epoch
        if best_epoch is None:
            return
        if _stored_position(self.last_path) != (epoch, trainer.global_step):
            return  # resumed from another folder's checkpoint: this folder has no best yet
        position = _stored_position(self.best_path)
        stored = None if position is None else position[0]
        if stored == best_epoch:
            return
        found = "is missing" if stored is None else f"holds epoch {stored}"
        if best_epoch == epoch:  # the save of the best epoch stopped before its link
            atomic_link(self.last_path, self.best_path)
            logger.warning(
                "%s %s, not the best epoch %d; relinked to %s (epoch %d): the save of "
                "epoch %d was interrupted before its best.pt link",
                self.best_path, found, best_epoch, self.last_path, epoch, epoch,
            )  # fmt: skip
            return
        logger.warning(
            "%s %s, not the best epoch %d (mIoU %s): this folder no longer holds those "
            "weights (the file was removed or replaced outside suimseg); best.pt will be "
            "written at the next improvement on it",
            self.best_path, found, best_epoch, trainer.best_metric,
        )  # fmt: skip

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.resumed is not None:
            self._committed = trainer.epoch  # its last.pt holds it; steps may follow
            source = _resumed_elsewhere(trainer, self.directory)
            if source is None:  # resuming the run of this folder
                if trainer.is_main_process:
                    self._repair_best(trainer)
                return
            if self.overwrite or not self.last_path.exists():
                if trainer.is_main_process:  # another run's best.pt is not this run's best
                    self.best_path.unlink(missing_ok=True)
                return
            raise RunLockError(
                f"output folder {self.directory} already holds a training run "
                f"({self.last_path}); resuming {trainer.resumed_from} there would overwrite "
                f"it. Resume into the checkpoint's own folder ({source}), choose another "
                "output folder, or pass overwrite=True (--overwrite) to replace it."
            )
        if trainer.epoch > 0:
            return  # continuing this trainer's own run
        if self.overwrite:
            if trainer.is_main_process:  # the old run's best.pt is not this run's best
                self.best_path.unlink(missing_ok=True)
            return
        if not self.last_path.exists():
            return
        raise RunLockError(
            f"output folder {self.directory} already holds a training run "
            f"({self.last_path}); starting a new run there would overwrite it. Resume it "
            f"(resume_from={str(self.last_path)!r}, `suimseg train --resume`), choose "
            "another output folder, or pass overwrite=True (--overwrite) to replace it."
        )

    def save(
        self, trainer: Trainer, record: EpochRecord | None = None, *, best: bool = False
    ) -> Path | None:
        """Write ``last.pt`` (and link it as ``best.pt`` when ``best``); rank 0 only.

        Waits for a pending write first; only an epoch end's save (with ``record``) may
        run in the background.
        """
        if not trainer.is_main_process:
            return None
        self._wait()
        extra: dict[str, Any] = {"interrupted": record is None}
        if record is not None:
            extra["last_record"] = record.to_dict()
        elif trainer.history and trainer.history[-1].epoch == trainer.epoch:
            extra["last_record"] = trainer.history[-1].to_dict()
        if self.run_config is not None:
            extra["run_config"] = self.run_config
        ckpt = trainer.state_dict(extra)
        if self.async_write and record is not None:
            pin = trainer.device.type == "cuda" and torch.cuda.is_available()
            snapshot = _snapshot(ckpt, pin)
            del ckpt
            if pin:
                torch.cuda.synchronize(trainer.device)  # the non-blocking copies have landed
            self._thread = threading.Thread(
                target=self._write_in_background,
                args=(snapshot, best, trainer.epoch),
                name="suimseg-checkpoint-writer",
            )
            self._thread.start()
        else:
            self._write(ckpt, best, trainer.epoch)
        return self.last_path

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        self.save(trainer, record, best=record.is_best)

    def on_interrupt(self, trainer: Trainer) -> str | None:
        if not trainer.is_main_process:
            return None
        self._wait()  # a pending background write finishes (or raises its error)
        # Ctrl-C inside the save of the best epoch, before its link: link it now. The
        # weights are still that epoch's (no step was taken since); once the epoch's save
        # has committed, training may have moved on and best.pt must not follow.
        best = trainer.best_epoch == trainer.epoch > 0 and self._committed != trainer.epoch
        saved = self.save(trainer, best=best)
        return None if saved is None else f"saved {saved} (epoch {trainer.epoch})"

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        try:
            self._wait()
        except Exception as exc:  # the training error is the one to report
            logger.error("background checkpoint write failed: %s", exc)

    def on_fit_end(self, trainer: Trainer, history: list[EpochRecord]) -> None:
        self._wait()  # whole files before fit returns


# ----------------------------------------------------------------------------- history


class History(Callback):
    """Append each epoch's record to ``history.jsonl`` and ``history.csv`` (rank 0).

    A new run starts empty files; a resumed one first regenerates whichever file does
    not hold exactly the epochs of its checkpoint, from the checkpoint's own records
    (:meth:`~suimseg.engine.HistoryWriter.sync_to_epoch`); so a run resumed from a
    checkpoint in another folder starts from that run's history.

    Args:
        directory: Folder of the two files.
    """

    def __init__(self, directory: PathLike) -> None:
        self.writer = HistoryWriter(directory)

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main_process:
            return
        if trainer.resumed is not None:
            extra = trainer.resumed.get("extra") or {}
            records = extra.get("history")
            records = records if isinstance(records, list) else None
            source = _resumed_elsewhere(trainer, self.writer.directory)
            if source is not None and records is None:  # an older checkpoint: no records
                self.writer.clear()
                if (source / "history.jsonl").is_file():
                    for row in read_history(source / "history.jsonl"):
                        if int(row.get("epoch", 0)) <= trainer.epoch:
                            self.writer.append(EpochRecord.from_dict(row))
            self.writer.sync_to_epoch(trainer.epoch, extra.get("last_record"), records=records)
        elif trainer.epoch == 0:
            self.writer.clear()  # a fresh (or overwritten) run starts an empty history

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if trainer.is_main_process:
            self.writer.append(record)


# ----------------------------------------------------------------------------- progress


def summary_line(record: EpochRecord, epochs: int) -> str:
    """The one-line summary of an epoch that :class:`Progress` prints.

    A group ``<name>_...`` with the rate of an earlier group ``<name>`` is not repeated.

    Example:
        >>> summary_line(EpochRecord(epoch=2, train_loss=0.5, val_miou=0.25,
        ...                          lrs={"encoder": 1e-5, "decoder": 1e-4}), 9)
        'epoch 2/9  train_loss 0.5000  mIoU 25.00%  lr encoder 1.00e-05 decoder 1.00e-04  0.0s  0.0 img/s'
    """  # noqa: E501
    parts = [f"epoch {record.epoch}/{epochs}", f"train_loss {record.train_loss:.4f}"]
    if record.val_loss is not None:
        parts.append(f"val_loss {record.val_loss:.4f}")
    if record.val_miou is not None:
        parts.append(f"mIoU {100 * record.val_miou:.2f}%")
    if record.lrs:
        shown: dict[str, float] = {}
        for name, lr in record.lrs.items():  # fold "encoder_no_decay" into an equal "encoder"
            if not any(name.startswith(f"{p}_") and lr == shown[p] for p in shown):
                shown[name] = lr
        parts.append("lr " + " ".join(f"{name} {lr:.2e}" for name, lr in shown.items()))
    parts.append(f"{record.epoch_time_s:.1f}s")
    parts.append(f"{record.images_per_s:.1f} img/s")
    if record.skipped_steps:
        parts.append(f"skipped {record.skipped_steps}")
    if record.skipped_samples:
        parts.append(f"corrupt samples skipped {record.skipped_samples}")
    if record.is_best:
        parts.append("*best*")
    return "  ".join(parts)


class Progress(Callback):
    """Progress bars (or log lines) per epoch and a summary line after each epoch (rank 0).

    Args:
        bar: Show a tqdm bar per training epoch and evaluation when tqdm is installed
            (``pip install 'suimseg[progress]'``); without tqdm, log a line every
            ``log_interval`` steps (logger ``"suimseg"``, INFO). ``False``: neither.
        log_interval: Steps between loss updates (each costs one device sync); ``None``:
            four per epoch when the loader has a length, else every 50 steps.
        verbose: Print the per-epoch summary line; ``False`` logs it at INFO instead.
    """

    def __init__(
        self, *, bar: bool = True, log_interval: int | None = None, verbose: bool = True
    ) -> None:
        if log_interval is not None:
            _positive_int("log_interval", log_interval)
        self.bar, self.log_interval, self.verbose = bar, log_interval, verbose
        self._bar: Any = None
        self._tqdm: Any = None

    def _open(self, trainer: Trainer, desc: str) -> Any:
        if self._bar is None and self.bar and trainer.is_main_process:
            if self._tqdm is None:
                try:
                    from tqdm.auto import tqdm as _tqdm
                except ImportError:
                    _tqdm = False
                self._tqdm = _tqdm
            if self._tqdm:
                self._bar = self._tqdm(
                    total=trainer.num_batches, desc=desc, leave=False, dynamic_ncols=True
                )
        return self._bar

    def _close(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()

    def on_train_batch_end(self, trainer: Trainer, step: int, loss: Tensor) -> None:
        desc = f"epoch {trainer.current_epoch}"
        bar = self._open(trainer, desc)
        if bar is not None:
            bar.update(step - bar.n)
        interval = self.log_interval or max(1, (trainer.num_batches or 200) // 4)
        if step % interval != 0 or not trainer.is_main_process:
            return
        value = float(loss.detach())  # one sync every log_interval steps
        if bar is not None:
            bar.set_postfix(loss=f"{value:.4f}")
        elif self.bar:
            logger.info("%s step %d/%s loss %.4f", desc, step, trainer.num_batches or "?", value)

    def on_train_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        self._close()

    def on_validation_batch_end(self, trainer: Trainer, step: int) -> None:
        bar = self._open(trainer, "eval")
        if bar is not None:
            bar.update(step - bar.n)

    def on_validation_end(self, trainer: Trainer, metrics: SegmentationMetrics) -> None:
        self._close()

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if not trainer.is_main_process:
            return
        line = summary_line(record, trainer.max_epochs)
        if self.verbose:
            print(line, flush=True)
        else:
            logger.info(line)

    def on_interrupt(self, trainer: Trainer) -> str | None:
        self._close()
        return None

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        self._close()


# ----------------------------------------------------------------------------- policies


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without a better validation mIoU (survives a resume).

    Raises:
        ConfigError: If ``patience`` is not a positive int, or (at ``fit``) there is no
            validation loader.
    """

    def __init__(self, patience: int) -> None:
        _positive_int("early_stopping_patience", patience, "a positive int or None")
        self.patience = patience

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.val_loader is None:
            raise ConfigError(
                "val_loader: early stopping watches validation mIoU, so a validation "
                "loader is required; pass one or set early_stopping_patience=None"
            )

    def on_epoch_end(self, trainer: Trainer, record: EpochRecord) -> None:
        if trainer.epochs_without_improvement < self.patience:
            return
        trainer.should_stop = True
        if trainer.is_main_process:
            logger.info(
                "early stopping after epoch %d: no mIoU improvement for %d epochs "
                "(best %.4f at epoch %s)",
                record.epoch,
                self.patience,
                trainer.best_metric if trainer.best_metric is not None else math.nan,
                trainer.best_epoch,
            )


class NonFiniteLoss(Callback):
    """What to do with a NaN/inf training loss: raise (default) or skip the step.

    The trainer adds ``NonFiniteLoss()`` when its callbacks hold none.

    Args:
        policy: ``"raise"`` a :class:`~suimseg.errors.NonFiniteLossError` (a
            ``FloatingPointError``) naming the epoch and step, or ``"skip"`` the step
            (counted as ``skipped_steps`` in the history).
        check_interval: Check every this many steps. Default: every step, but every 50
            on CUDA in ``"raise"`` mode (no sync per step; the error still names the first
            bad step). Under DDP all processes take the same decision.

    Raises:
        ConfigError: For an unknown policy, or ``"skip"`` with an interval other than 1.
    """

    def __init__(
        self,
        policy: NonFinitePolicy = "raise",
        *,
        check_interval: int | None = None,
    ) -> None:
        if policy not in ("raise", "skip"):
            raise ConfigError(f"nonfinite: expected 'raise' or 'skip', got {policy!r}")
        if check_interval is not None:
            _positive_int("nonfinite_check_interval", check_interval)
        if policy == "skip" and check_interval not in (None, 1):
            raise ConfigError(
                "nonfinite_check_interval: skipping non-finite steps needs a check every step "
                f"(1), got {check_interval}"
            )
        self.policy, self.check_interval = policy, check_interval
        self._first_bad: Tensor | None = None

    def _interval(self, trainer: Trainer) -> int:
        if self.check_interval is not None:
            return self.check_interval
        return 50 if trainer.device.type == "cuda" and self.policy == "raise" else 1

    def _error(self, trainer: Trainer, step: int) -> NonFiniteLossError:
        saved = any(isinstance(cb, Checkpoint) for cb in trainer.callbacks)
        epoch = trainer.current_epoch
        return NonFiniteLossError(
            f"non-finite training loss (NaN or inf) at epoch {epoch}, step {step}; common "
            "causes are a too-high learning rate, fp16 overflow (try amp='bf16') or labels "
            "outside [0, num_classes) other than ignore_index."
            + (" The last good epoch is in last.pt." if saved else "")
            + " Pass nonfinite='skip' to skip such steps instead."
        )

    def _check_deferred(self, trainer: Trainer) -> None:
        if self._first_bad is None:
            return
        worst = int(dist_utils.all_reduce_min(self._first_bad.clone()))
        if worst != _NO_STEP:
            self._first_bad = None
            raise self._error(trainer, worst)

    def on_before_backward(self, trainer: Trainer, step: int, loss: Tensor) -> bool | None:
        bad = ~torch.isfinite(loss.detach())
        interval = self._interval(trainer)
        if interval > 1:  # deferred check: no device sync this step
            if step == 1 or self._first_bad is None:
                self._first_bad = torch.full((), _NO_STEP, dtype=torch.int64, device=loss.device)
            torch.minimum(self._first_bad, torch.where(bad, step, _NO_STEP), out=self._first_bad)
            if step % interval == 0:
                self._check_deferred(trainer)
            return None
        flag = dist_utils.all_reduce_sum(bad.to(torch.int32))  # every process agrees
        if int(flag) == 0:
            return None
        if self.policy == "skip":
            logger.warning(
                "non-finite loss at epoch %d, step %d: step skipped", trainer.current_epoch, step
            )
            return False
        raise self._error(trainer, step)

    def on_train_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        try:
            self._check_deferred(trainer)
        finally:
            self._first_bad = None


class RankSeed(Callback):
    """Under DDP, :func:`~suimseg.engine.seed_rank_epoch` at every epoch start.

    Without it every rank would draw the same augmentations. A no-op in a single process;
    put it before callbacks that draw random numbers.

    Args:
        seed: The run's seed.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if trainer.distributed:
            dist_utils.seed_rank_epoch(self.seed, epoch, dist_utils.get_rank())


class DeviceTransform(Callback):
    """Apply ``(images, targets) -> (images, targets)`` transforms to batches on the device.

    Runs right after the transfer (before channels-last, outside autocast), e.g. for a
    loader of uint8 images (``train_transforms(size, output="uint8")``). An ``nn.Module``
    is moved to the trainer's device.

    Args:
        train: Transform of training batches (e.g. :class:`~suimseg.data.DeviceAugment`).
        eval: Transform of evaluation batches (e.g. :class:`~suimseg.data.DeviceNormalize`).

    Raises:
        ConfigError: If a transform is not callable, or returns something other than an
            ``(images, targets)`` tuple of tensors.
    """

    def __init__(
        self, train: BatchTransform | None = None, eval: BatchTransform | None = None
    ) -> None:
        for name, transform in (("train", train), ("eval", eval)):
            if transform is not None and not callable(transform):
                raise ConfigError(
                    f"DeviceTransform({name}=...): expected a callable (images, targets) -> "
                    f"(images, targets) such as an nn.Module, or None, got "
                    f"{type(transform).__name__}"
                )
        self.train, self.eval = train, eval
        self._moved: set[int] = set()

    def on_after_batch_transfer(
        self, trainer: Trainer, images: Tensor, targets: Tensor, training: bool
    ) -> tuple[Tensor, Tensor]:
        transform = self.train if training else self.eval
        if transform is None:
            return images, targets
        if isinstance(transform, nn.Module) and id(transform) not in self._moved:
            transform.to(trainer.device)
            self._moved.add(id(transform))
        out = transform(images, targets)
        if not (
            isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)
        ):
            raise ConfigError(
                f"DeviceTransform({'train' if training else 'eval'}=...): expected it to "
                f"return an (images, targets) tuple of tensors, got {type(out).__name__}"
            )
        return out


def default_callbacks(
    directory: PathLike | None = None,
    *,
    overwrite: bool = False,
    async_checkpoint: bool = False,
    run_config: Mapping[str, Any] | None = None,
    early_stopping_patience: int | None = None,
    nonfinite: NonFinitePolicy = "raise",
    nonfinite_check_interval: int | None = None,
    progress: bool = True,
    log_interval: int | None = None,
    verbose: bool = True,
    seed: int = 0,
) -> list[Callback]:
    """The usual callbacks, in the right order, for ``Trainer(callbacks=...)``.

    ``[RunDirLock, Checkpoint, History]`` when ``directory`` is given, then
    :class:`NonFiniteLoss`, :class:`RankSeed`, :class:`Progress` and, with a patience,
    :class:`EarlyStopping`. Append your own callbacks after these.

    Args:
        directory: Output folder, or ``None`` to write nothing.
        overwrite: :class:`Checkpoint`'s ``overwrite``.
        async_checkpoint: :class:`Checkpoint`'s ``async_write``.
        run_config: :class:`Checkpoint`'s ``run_config``.
        early_stopping_patience: :class:`EarlyStopping`'s patience (``None``: never).
        nonfinite: :class:`NonFiniteLoss`'s policy.
        nonfinite_check_interval: :class:`NonFiniteLoss`'s ``check_interval``.
        progress: :class:`Progress`'s ``bar``.
        log_interval: :class:`Progress`'s ``log_interval``.
        verbose: :class:`Progress`'s ``verbose``.
        seed: :class:`RankSeed`'s seed.

    Example:
        >>> [type(cb).__name__ for cb in default_callbacks("runs/exp1")]
        ['RunDirLock', 'Checkpoint', 'History', 'NonFiniteLoss', 'RankSeed', 'Progress']
    """
    callbacks: list[Callback] = []
    if directory is not None:
        callbacks += [
            RunDirLock(directory),
            Checkpoint(
                directory, overwrite=overwrite, async_write=async_checkpoint, run_config=run_config
            ),
            History(directory),
        ]
    else:  # still validate the arguments that only matter with a folder
        Checkpoint(".", async_write=async_checkpoint, run_config=run_config)
    callbacks.append(NonFiniteLoss(nonfinite, check_interval=nonfinite_check_interval))
    callbacks.append(RankSeed(seed))
    callbacks.append(Progress(bar=progress, log_interval=log_interval, verbose=verbose))
    if early_stopping_patience is not None:
        callbacks.append(EarlyStopping(early_stopping_patience))
    return callbacks
