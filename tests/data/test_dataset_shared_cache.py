"""Tests for SUIMDataset(cache="shared"): one decoded-pair cache in shared memory."""

from __future__ import annotations

import gc
import os
import pickle
import warnings
import weakref
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from suimseg.data import SUIMDataset, eval_transforms
from suimseg.data import dataset as dataset_module
from suimseg.errors import ConfigError

SIZE = 24


def _flags(ds: SUIMDataset) -> torch.Tensor:
    if ds._shared is None:
        raise AssertionError("expected a shared cache")
    return ds._shared[2][: len(ds)]


def _all_samples(ds: SUIMDataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [ds[i] for i in range(len(ds))]


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count image and mask decodes in this process (returned list: [images, masks])."""
    counts = [0, 0]
    read_image, read_mask = SUIMDataset._read_image, SUIMDataset._read_mask

    def counting_image(self: SUIMDataset, *args: Any) -> Any:
        counts[0] += 1
        return read_image(self, *args)

    def counting_mask(self: SUIMDataset, *args: Any) -> Any:
        counts[1] += 1
        return read_mask(self, *args)

    monkeypatch.setattr(SUIMDataset, "_read_image", counting_image)
    monkeypatch.setattr(SUIMDataset, "_read_mask", counting_mask)
    return counts


# ---------------------------------------------------------------- values and reads
@pytest.mark.parametrize("image_size", [SIZE, (16, 20)])
def test_shared_cache_gives_the_same_samples_as_no_cache(
    synthetic_root: Path, image_size: int | tuple[int, int]
) -> None:
    plain = SUIMDataset(synthetic_root, "val", image_size=image_size)
    shared = SUIMDataset(synthetic_root, "val", image_size=image_size, cache="shared")
    assert shared.cache == "shared"
    expected = _all_samples(plain)
    for _ in range(2):  # the first pass fills, the second reads the cache
        for (a, b), (c, d) in zip(_all_samples(shared), expected, strict=True):
            assert torch.equal(a, c)
            assert torch.equal(b, d)
    for i in range(len(plain)):
        for x, y in zip(shared.load(i), plain.load(i), strict=True):
            np.testing.assert_array_equal(x, y)
    assert shared.cached_samples == len(shared)


def test_second_pass_reads_no_files(synthetic_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = SUIMDataset(synthetic_root, "test", image_size=SIZE, cache="shared")
    assert ds.cached_samples == 0
    counts = _count_reads(monkeypatch)
    _all_samples(ds)
    assert counts == [len(ds), len(ds)]
    assert bool(_flags(ds).all())
    _all_samples(ds)
    ds.load(-1)
    assert counts == [len(ds), len(ds)]  # second pass: cache only


def test_cache_modes_and_cached_samples(synthetic_root: Path) -> None:
    plain = SUIMDataset(synthetic_root, "test", image_size=SIZE)
    per_process = SUIMDataset(synthetic_root, "test", image_size=SIZE, cache=True)
    assert plain.cache is False
    assert plain._shared is None
    assert per_process.cache is True
    assert per_process._shared is None
    per_process[0]
    plain[0]
    assert (plain.cached_samples, per_process.cached_samples) == (0, 1)
    empty = SUIMDataset(synthetic_root, "test", image_size=SIZE, cache="shared", stems=[])
    assert (len(empty), empty.cached_samples) == (0, 0)
    with pytest.raises(IndexError, match="out of range"):
        empty.load(0)


# ---------------------------------------------------------------- DataLoader workers
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_fill_one_cache_seen_by_every_process(
    make_root: Callable[[], Path], context: str
) -> None:
    root = make_root()
    expected = _all_samples(SUIMDataset(root, "test", image_size=SIZE))
    ds = SUIMDataset(root, "test", image_size=SIZE, cache="shared")
    loader = DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context=context)
    epoch1 = list(loader)
    assert bool(_flags(ds).all())  # filled by the workers, seen by the main process
    assert ds.cached_samples == len(ds)
    for split_dir in ("images", "masks"):
        folder = root / "TEST" / split_dir
        folder.rename(folder.with_name(f"gone_{split_dir}"))
    # Epoch 2 without the files: in fresh forked workers (whose only cache is the shared
    # one; a per-process cache would read the files again, see the next test) and in
    # the main process.
    fresh = DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context="fork")
    for epoch2 in (list(fresh), list(DataLoader(ds, batch_size=1))):
        for (a, b), (c, d), (e, f) in zip(epoch1, epoch2, expected, strict=True):
            assert torch.equal(a, c)
            assert torch.equal(a[0], e)
            assert torch.equal(b, d)
            assert torch.equal(b[0], f)


def test_per_process_cache_is_not_seen_by_the_main_process(
    make_root: Callable[[], Path],
) -> None:
    """The control for the test above: without sharing, epoch 2 needs the files."""
    root = make_root()
    ds = SUIMDataset(root, "test", image_size=SIZE, cache=True)
    list(DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context="fork"))
    assert ds.cached_samples == 0  # the workers' caches died with them
    (root / "TEST" / "images").rename(root / "TEST" / "gone")
    with pytest.raises(FileNotFoundError):
        list(DataLoader(ds, batch_size=1))


@pytest.mark.slow
def test_forkserver_workers_share_the_cache(synthetic_root: Path) -> None:
    ds = SUIMDataset(synthetic_root, "test", image_size=SIZE, cache="shared")
    loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="forkserver")
    list(loader)
    assert bool(_flags(ds).all())


def test_pickling_keeps_sharing(synthetic_root: Path) -> None:
    ds = SUIMDataset(synthetic_root, "test", image_size=SIZE, cache="shared")
    # ForkingPickler is what DataLoader uses to start spawn/forkserver workers.
    twin: SUIMDataset = pickle.loads(ForkingPickler.dumps(ds))
    assert twin._shared is not None
    assert twin._shared[0].is_shared()
    twin[1]  # fills slot 1 through the copy ...
    assert _flags(ds).tolist() == [0, 1, 0, 0]  # ... and the original sees it
    np.testing.assert_array_equal(ds.load(1)[0], twin.load(1)[0])
    # Plain pickle copies the tensors: a working, private cache.
    private: SUIMDataset = pickle.loads(pickle.dumps(ds))
    assert private.cache == "shared"
    assert private.cached_samples == 1
    private[2]
    assert ds.cached_samples == 1
    assert torch.equal(private[2][0], ds[2][0])


# ---------------------------------------------------------------- cache integrity
def test_transforms_cannot_modify_the_cache(synthetic_root: Path) -> None:
    ds = SUIMDataset(synthetic_root, "test", image_size=SIZE, cache="shared")
    image, mask = ds.load(0)  # fills the slot
    before = (image.copy(), mask.copy())
    for arr in ds.load(0):  # and the views from a filled slot
        assert not arr.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            arr[...] = 0

    def vandal(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        image[0, 0] = 255
        return torch.zeros(1), torch.zeros(1)

    vandalised = SUIMDataset(
        synthetic_root, "test", image_size=SIZE, cache="shared", transform=vandal
    )
    with pytest.raises(ValueError, match="read-only"):
        vandalised[0]
    # In-place augmentations of the default pipeline work on copies.
    augmented = SUIMDataset(synthetic_root, "train_val", image_size=SIZE, cache="shared")
    for _ in range(3):
        augmented[0]
    for arr, ref in zip(ds.load(0), before, strict=True):
        np.testing.assert_array_equal(arr, ref)
    plain = SUIMDataset(synthetic_root, "train_val", image_size=SIZE)
    for arr, ref in zip(augmented.load(0), plain.load(0), strict=True):
        np.testing.assert_array_equal(arr, ref)


def test_corrupt_sample_skip_is_unchanged(make_root: Callable[[], Path]) -> None:
    root = make_root()
    image_path = sorted((root / "TEST" / "images").iterdir())[1]
    modes: dict[str, SUIMDataset] = {}
    for mode in (False, "shared"):
        modes[str(mode)] = SUIMDataset(
            root,
            "test",
            image_size=SIZE,
            cache=mode,
            on_corrupt="skip",
            transform=eval_transforms(SIZE),
        )
    data = image_path.read_bytes()
    image_path.write_bytes(data[: len(data) // 2])  # a valid header, a broken body
    runs: dict[str, list[list[torch.Tensor]]] = {}
    for name, ds in modes.items():
        runs[name] = []
        for _ in range(2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runs[name].append([ds[i][0] for i in range(len(ds))])
    shared = modes["shared"]
    # Sample 1 is replaced by sample 2 and never cached, so it is retried each epoch.
    assert modes["False"].skipped_samples == shared.skipped_samples == 2
    assert _flags(shared).tolist() == [1, 0, 1, 1]
    for a, b in zip(runs["False"], runs["shared"], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.warns(UserWarning, match="skipping sample 1"):
        shared[1]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", ["yes", "Shared", 1, None, [True]])
def test_invalid_cache_values_raise(synthetic_root: Path, bad: object) -> None:
    with pytest.raises(ConfigError, match=r"cache: expected False .*True .*'shared'"):
        SUIMDataset(synthetic_root, "test", cache=bad)  # type: ignore[arg-type]


def test_shared_cache_needs_a_fixed_image_size(synthetic_root: Path) -> None:
    with pytest.raises(ConfigError, match=r"cache='shared' needs a fixed image_size.*None"):
        SUIMDataset(synthetic_root, "test", image_size=None, cache="shared")


def test_shared_memory_space_is_checked(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dataset_module, "_SHM_DIR", tmp_path)
    # Only this test's caches count (other tests may keep shared datasets alive).
    monkeypatch.setattr(dataset_module, "_LIVE_SHARED_CACHES", weakref.WeakSet())
    real_statvfs = os.statvfs
    seen: list[str] = []

    class Small:
        f_frsize = 4096
        f_bavail = 2  # 8192 bytes free

    def fake_statvfs(path: Any) -> Any:
        seen.append(str(path))
        return Small() if str(path) == str(tmp_path) else real_statvfs(path)

    monkeypatch.setattr(os, "statvfs", fake_statvfs)
    # 4 samples x (24 x 24 x 4 + 1) = 9220 bytes > 8192.
    with pytest.raises(
        ConfigError,
        match=r"needs 0\.0 MB \(9220 bytes.*only 0\.0 MB \(8192 bytes\) are free.*"
        r"cache=True.*smaller image_size.*--shm-size=1g",
    ):
        SUIMDataset(synthetic_root, "test", image_size=SIZE, cache="shared")
    assert seen == [str(tmp_path)]
    SUIMDataset(synthetic_root, "test", image_size=16, cache="shared")  # 4100 bytes fit
    SUIMDataset(synthetic_root, "test", image_size=SIZE, cache=True)  # no check
    assert len(seen) == 2
    # No /dev/shm (macOS, Windows): nothing to check.
    monkeypatch.setattr(dataset_module, "_SHM_DIR", tmp_path / "absent")
    SUIMDataset(synthetic_root, "test", image_size=SIZE, cache="shared")
    assert len(seen) == 2


def test_unfilled_slots_of_other_shared_caches_count_as_taken(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two caches that each fit but not together are refused before either fills."""
    monkeypatch.setattr(dataset_module, "_SHM_DIR", tmp_path)
    monkeypatch.setattr(dataset_module, "_LIVE_SHARED_CACHES", weakref.WeakSet())
    real_statvfs = os.statvfs
    one = 4 * (SIZE * SIZE * 4 + 1)  # the 4 test samples at SIZE

    class Free:
        f_frsize = 1
        f_bavail = one + one // 2  # room for one cache and a half

    monkeypatch.setattr(
        os, "statvfs", lambda p: Free() if str(p) == str(tmp_path) else real_statvfs(p)
    )
    first = SUIMDataset(synthetic_root, "test", image_size=SIZE, cache="shared")
    with pytest.raises(ConfigError, match=r"once this process's other shared caches fill"):
        SUIMDataset(synthetic_root, "test", image_size=SIZE, cache="shared")
    for i in range(len(first)):  # filled: its pages are now in the (faked) used space
        first.load(i)
    assert first.cached_samples == len(first)
    SUIMDataset(synthetic_root, "test", image_size=SIZE, cache="shared")
    del first
    gc.collect()
    assert len(dataset_module._LIVE_SHARED_CACHES) == 0
