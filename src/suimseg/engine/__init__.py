"""Training: the reference :class:`Trainer`, checkpoints, history files and DDP helpers."""

from suimseg.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    atomic_save,
    capture_rng_state,
    load_checkpoint,
    load_model,
    make_checkpoint,
    read_run_config,
    restore_rng_state,
    save_safetensors,
)
from suimseg.engine.distributed import (
    ShardSampler,
    destroy_distributed,
    seed_rank_epoch,
    shard_loader,
)
from suimseg.engine.history import EpochRecord, HistoryWriter, read_history
from suimseg.engine.lock import LOCK_NAME, RunLock
from suimseg.engine.trainer import (
    BatchTransform,
    Callback,
    Trainer,
    TrainStats,
    reduce_on_plateau,
    resolve_device,
    skipped_sample_count,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "LOCK_NAME",
    "BatchTransform",
    "Callback",
    "EpochRecord",
    "HistoryWriter",
    "RunLock",
    "ShardSampler",
    "TrainStats",
    "Trainer",
    "atomic_save",
    "capture_rng_state",
    "destroy_distributed",
    "load_checkpoint",
    "load_model",
    "make_checkpoint",
    "read_history",
    "read_run_config",
    "reduce_on_plateau",
    "resolve_device",
    "restore_rng_state",
    "save_safetensors",
    "seed_rank_epoch",
    "shard_loader",
    "skipped_sample_count",
]
