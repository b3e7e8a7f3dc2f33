"""Training: the reference :class:`Trainer`, checkpoints, history files and DDP helpers."""

from suimseg.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    atomic_save,
    capture_rng_state,
    load_checkpoint,
    load_model,
    make_checkpoint,
    restore_rng_state,
)
from suimseg.engine.distributed import ShardSampler, shard_loader
from suimseg.engine.history import EpochRecord, HistoryWriter, read_history
from suimseg.engine.trainer import Callback, Trainer, TrainStats, reduce_on_plateau

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "Callback",
    "EpochRecord",
    "HistoryWriter",
    "ShardSampler",
    "TrainStats",
    "Trainer",
    "atomic_save",
    "capture_rng_state",
    "load_checkpoint",
    "load_model",
    "make_checkpoint",
    "read_history",
    "reduce_on_plateau",
    "restore_rng_state",
    "shard_loader",
]
