"""Helpers for DistributedDataParallel training launched with ``torchrun``.

Start the same script on every process with ``torchrun``; :func:`init_distributed` reads
its environment and :func:`shard_loader` shards the data::

    torchrun --nproc_per_node=4 train.py                       # one machine, 4 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
             --rdzv_endpoint=host0:29500 train.py              # two machines
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Sized

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from suimseg.errors import ConfigError

__all__ = [
    "ShardSampler",
    "broadcast_buffers",
    "destroy_distributed",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "require_sharded",
    "seed_rank_epoch",
    "shard_loader",
]

logger = logging.getLogger("suimseg")


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Whether this process writes files and prints (rank 0)."""
    return get_rank() == 0


def init_distributed(device_type: str) -> bool:
    """Initialise the default process group from ``torchrun``'s environment if needed.

    Args:
        device_type: ``"cuda"`` selects the NCCL backend, anything else gloo.

    Returns:
        Whether running distributed (a group was active, or ``WORLD_SIZE > 1``).

    Raises:
        ConfigError: If ``WORLD_SIZE`` is set but not an integer.

    Example:
        >>> init_distributed("cpu")  # a plain `python` process
        False
    """
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable WORLD_SIZE: expected an integer, got {raw!r}; launch with "
            "torchrun or unset it"
        ) from None
    if world <= 1:
        return False
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    logger.info("initialised %s process group: rank %d of %d", backend, dist.get_rank(), world)
    return True


def destroy_distributed() -> None:
    """Wait at a barrier, then destroy the process group (a no-op in a single process).

    The barrier keeps a process from tearing its connections down while a peer still uses
    them (with gloo that aborts the peer: "terminate called without an active exception").

    Example:
        >>> destroy_distributed()  # a plain `python` process: nothing to do
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class ShardSampler(Sampler[int]):
    """Deal the indices ``0..n-1`` round-robin to the processes, without padding.

    Unlike :class:`~torch.utils.data.DistributedSampler`, which pads, each sample is seen
    exactly once over all processes, so summed metrics equal a single-process evaluation.
    Meant for evaluation (no shuffling).

    Args:
        data_source: The dataset (anything with ``len``).
        rank: This process's rank (default: the current rank).
        world_size: Number of processes (default: the current world size).

    Example:
        >>> list(ShardSampler(range(5), rank=1, world_size=2))
        [1, 3]
    """

    def __init__(
        self, data_source: Sized, *, rank: int | None = None, world_size: int | None = None
    ) -> None:
        self.num_samples_total = len(data_source)
        self.world_size = get_world_size() if world_size is None else world_size
        self.rank = get_rank() if rank is None else rank
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(
                f"ShardSampler: expected 0 <= rank < world_size, got rank={self.rank}, "
                f"world_size={self.world_size}"
            )
        self._indices = range(self.rank, self.num_samples_total, self.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)

    def set_epoch(self, epoch: int) -> None:
        """No-op (the order is fixed); present so trainers can call it on any sampler."""


def shard_loader(loader: DataLoader[object], *, train: bool, seed: int = 0) -> DataLoader[object]:
    """Return ``loader`` rebuilt with a distributed sampler (unchanged when not needed).

    Training loaders get a :class:`~torch.utils.data.DistributedSampler` (shuffling with
    ``seed + epoch`` when the original shuffled), evaluation loaders a
    :class:`ShardSampler`; every other DataLoader setting is kept. In a single process, or
    with such a sampler already, ``loader`` is returned as it is.

    Args:
        loader: A map-style DataLoader built with ``batch_size`` (not ``batch_sampler``).
        train: Whether the loader feeds training (``True``) or evaluation.
        seed: Shuffling seed of the DistributedSampler.

    Returns:
        A DataLoader that feeds this process its share of the data.

    Raises:
        ConfigError: If the loader uses a custom ``batch_sampler`` or an iterable dataset,
            which cannot be sharded automatically.
    """
    if not is_distributed() or isinstance(loader.sampler, (DistributedSampler, ShardSampler)):
        return loader
    if loader.batch_size is None or not isinstance(loader.dataset, Sized):
        raise ConfigError(
            "DataLoader: cannot shard a loader with a custom batch_sampler or an iterable "
            "dataset across processes; build it with a DistributedSampler yourself"
        )
    sampler: Sampler[int]
    if train:
        sampler = DistributedSampler(
            loader.dataset,
            shuffle=isinstance(loader.sampler, RandomSampler),
            seed=seed,
            drop_last=loader.drop_last,
        )
    else:
        sampler = ShardSampler(loader.dataset)
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
        persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device,
    )


def require_sharded(loader: object, name: str) -> None:
    """Under DDP, refuse a DataLoader without a DistributedSampler or :class:`ShardSampler`.

    A no-op in a single process and for non-DataLoader iterables.

    Raises:
        ConfigError: If ``loader`` is an unsharded DataLoader while distributed.

    Example:
        >>> require_sharded(DataLoader(range(4)), "train_loader")  # a single process: fine
    """
    if not is_distributed() or not isinstance(loader, DataLoader):
        return
    sampler = loader.sampler
    batch_sampler = getattr(loader.batch_sampler, "sampler", None)
    if any(isinstance(s, (DistributedSampler, ShardSampler)) for s in (sampler, batch_sampler)):
        return
    fix = "train=True, seed=seed" if name == "train_loader" else "train=False"
    raise ConfigError(
        f"{name}: expected a DataLoader sharded across the {get_world_size()} processes "
        f"(a DistributedSampler or ShardSampler), got one with a "
        f"{type(sampler).__name__}; pass shard_loader(loader, {fix}) from suimseg.engine"
    )


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy every buffer (BatchNorm statistics drift apart under DDP) from rank ``src``."""
    if not is_distributed():
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=src)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all processes in place (a no-op when not distributed)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(tensor: Tensor) -> Tensor:
    """Minimum of ``tensor`` over all processes in place (a no-op when not distributed)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def seed_rank_epoch(seed: int, epoch: int, rank: int) -> int:
    """Seed torch (CPU and CUDA), numpy and ``random`` for one rank's epoch; return the seed.

    Each (seed, epoch, rank) gets its own stream (see ``RankSeed`` and the Distributed
    training guide), so a resumed run repeats the interrupted epoch's draws on every rank.

    Args:
        seed: The run's seed.
        epoch: 1-based epoch number.
        rank: This process's rank.

    Returns:
        The 63-bit seed used.

    Example:
        >>> seed_rank_epoch(0, 1, 0) != seed_rank_epoch(0, 1, 1)
        True
    """
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2, np.uint32)
    derived = ((int(state[0]) << 32) | int(state[1])) & (2**63 - 1)
    torch.manual_seed(derived)  # also every CUDA device
    np.random.seed(derived % 2**32)  # noqa: NPY002 - the global state user code may draw from
    random.seed(derived)
    return derived
