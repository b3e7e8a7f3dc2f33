"""``SUIMDataModule``: the SUIM splits as a ``LightningDataModule``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sized
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from suimseg.data import SUIMDataset, eval_transforms, train_transforms
from suimseg.engine.distributed import ShardSampler, is_distributed
from suimseg.errors import ConfigError

__all__ = ["SUIMDataModule", "UnpaddedDistributedSampler"]

Sample = tuple[torch.Tensor, torch.Tensor]


class UnpaddedDistributedSampler(DistributedSampler[int]):
    """Evaluation sampler for DDP: every sample exactly once over all processes.

    The indices are dealt round-robin like :class:`~suimseg.engine.distributed.ShardSampler`
    (process ``r`` of ``W`` gets ``r, r + W, r + 2W, ...``), with no padding and no
    shuffling, so a confusion matrix summed over the processes equals a single-process
    evaluation. It subclasses ``DistributedSampler`` only so that Lightning (with its default
    ``use_distributed_sampler=True``) sees a distributed sampler and keeps it, instead of
    replacing it with a padding ``DistributedSampler``.

    Args:
        dataset: The evaluation dataset.
        num_replicas: Number of processes (default: the process group's size).
        rank: This process's rank (default: the process group's rank).

    Example:
        >>> list(UnpaddedDistributedSampler(range(5), num_replicas=2, rank=1))
        [1, 3]
    """

    def __init__(
        self, dataset: Sized, *, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=False,
            drop_last=False,
        )
        self._shard = ShardSampler(dataset, rank=self.rank, world_size=self.num_replicas)
        self.num_samples = len(self._shard)
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(self._shard)

    def __len__(self) -> int:
        return len(self._shard)


class SUIMDataModule(pl.LightningDataModule):
    """The SUIM dataset's train / val / test splits for a Lightning ``Trainer``.

    ``"train"`` and ``"val"`` are :class:`~suimseg.data.SUIMDataset`'s seeded, prefix-
    stratified split of ``train_val/``; ``"test"`` is the ``TEST/`` folder. Training uses
    :func:`~suimseg.data.train_transforms` (augmentation on by default), evaluation
    :func:`~suimseg.data.eval_transforms`, both at ``image_size``.

    Under DDP the validation and test loaders use :class:`UnpaddedDistributedSampler`, so
    each image is scored once and the synced mIoU equals a single-process evaluation
    (Lightning's default ``DistributedSampler`` repeats images to even out the processes,
    which changes the confusion matrix). The training loader is left to Lightning, which
    gives it a shuffling ``DistributedSampler``.

    Args:
        root: The SUIM root (holding ``train_val/`` and ``TEST/``).
        image_size: Side of the square images fed to the model.
        batch_size: Batch size of every loader (per process under DDP).
        num_workers: DataLoader workers.
        val_fraction: Share of ``train_val`` held out for validation.
        seed: Seed of the train/val split.
        augment: Augment the training images.
        pin_memory: Pin host memory (for CUDA training).
        **dataset_kwargs: More :class:`~suimseg.data.SUIMDataset` arguments (``cache``,
            ``on_corrupt``, ...), given to every split.

    Example:
        >>> import tempfile
        >>> from suimseg.data import make_synthetic_suim
        >>> root = make_synthetic_suim(tempfile.mkdtemp(), n_train_val=10, n_test=2,
        ...                            size=(64, 48))
        >>> dm = SUIMDataModule(root, image_size=32, batch_size=2)
        >>> dm.setup("fit")
        >>> images, masks = next(iter(dm.train_dataloader()))
        >>> tuple(images.shape), tuple(masks.shape)
        ((2, 3, 32, 32), (2, 32, 32))
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        image_size: int = 384,
        batch_size: int = 8,
        num_workers: int = 0,
        val_fraction: float = 0.2,
        seed: int = 0,
        augment: bool = True,
        pin_memory: bool = False,
        **dataset_kwargs: Any,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("image_size", image_size, 1),
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}: expected an int >= {low}, got {value!r}")
        reserved = {"split", "transform", "image_size", "val_fraction", "seed"} & set(
            dataset_kwargs
        )
        if reserved:
            raise ConfigError(
                f"SUIMDataModule: {sorted(reserved)} are set by the data module; pass "
                "image_size/val_fraction/seed as its own arguments"
            )
        self.root = Path(root)
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.augment = augment
        self.pin_memory = pin_memory
        self.dataset_kwargs = dataset_kwargs
        self.train_set: SUIMDataset | None = None
        self.val_set: SUIMDataset | None = None
        self.test_set: SUIMDataset | None = None

    def _dataset(self, split: str) -> SUIMDataset:
        size = self.image_size
        transform = (
            train_transforms(size, augment=self.augment)
            if split == "train"
            else eval_transforms(size)
        )
        return SUIMDataset(
            self.root,
            split,  # type: ignore[arg-type]
            transform=transform,
            image_size=size,
            val_fraction=self.val_fraction,
            seed=self.seed,
            **self.dataset_kwargs,
        )

    def setup(self, stage: str) -> None:
        """Build the datasets a stage needs (``"fit"``, ``"validate"``, ``"test"``...)."""
        if stage == "fit" and self.train_set is None:
            self.train_set = self._dataset("train")
        if stage in ("fit", "validate") and self.val_set is None:
            self.val_set = self._dataset("val")
        if stage == "test" and self.test_set is None:
            self.test_set = self._dataset("test")

    def _loader(self, dataset: Dataset[Sample] | None, stage: str, *, train: bool) -> Any:
        if dataset is None:
            raise ConfigError(
                f"SUIMDataModule: the {stage} dataset is not built; call setup({stage!r}) "
                "first (the Trainer does)"
            )
        sampler = None
        if not train and is_distributed():
            # A process with no evaluation batch would skip the metric sync at the epoch's
            # end and leave the others waiting for it forever: refuse instead of hanging.
            size, world = len(dataset), torch.distributed.get_world_size()  # type: ignore[arg-type]
            if size < world:
                raise ConfigError(
                    f"SUIMDataModule: the {stage} split has {size} image(s) for {world} "
                    "processes; every process needs at least one. Use fewer processes (devices) "
                    "or a larger val_fraction"
                )
            sampler = UnpaddedDistributedSampler(dataset)  # type: ignore[arg-type]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            sampler=sampler,
            drop_last=train,  # a batch of 1 breaks BatchNorm in training
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[Sample]:
        """Shuffled training batches (the last incomplete batch is dropped)."""
        loader: DataLoader[Sample] = self._loader(self.train_set, "fit", train=True)
        return loader

    def val_dataloader(self) -> DataLoader[Sample]:
        """Validation batches, in order; unpadded shards under DDP."""
        loader: DataLoader[Sample] = self._loader(self.val_set, "validate", train=False)
        return loader

    def test_dataloader(self) -> DataLoader[Sample]:
        """Test batches, in order; unpadded shards under DDP."""
        loader: DataLoader[Sample] = self._loader(self.test_set, "test", train=False)
        return loader
