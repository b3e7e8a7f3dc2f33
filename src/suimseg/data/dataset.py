"""The SUIM dataset: robust pairing, a reproducible stratified split and fast decoding.

Images and masks are paired by file stem in the official layout (``docs/dataset.md``); the
real data's defects (size mismatches, unpaired or unreadable files) each have an explicit
policy, and files are read by the rules of :mod:`suimseg.data.readers`.
"""

from __future__ import annotations

import math
import os
import re
import warnings
import weakref
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, TypeAlias, get_args

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch.utils.data import Dataset

from suimseg.classes import NUM_CLASSES, SUIM_CLASSES, SUIMClass
from suimseg.data._bmp import read_bmp_labels, resize_labels_nearest
from suimseg.data.readers import (
    DEFAULT_MAX_PIXELS,
    check_max_pixels,
    read_image,
    read_image_array,
    read_mask_labels,
    read_size,
)
from suimseg.data.transforms import (
    JointTransformFn,
    SizeArg,
    eval_transforms,
    normalize_size,
    train_transforms,
)
from suimseg.errors import ConfigError, DatasetError, DatasetNotFoundError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "SPLIT_FOLDERS",
    "CacheMode",
    "CorruptPolicy",
    "OrphanPolicy",
    "SUIMDataset",
    "SizeMismatchPolicy",
    "Split",
    "stem_prefix",
    "stratified_split",
]

Split = Literal["train", "val", "train_val", "test"]
SizeMismatchPolicy = Literal["resize", "skip", "error"]
OrphanPolicy = Literal["error", "skip"]
CorruptPolicy = Literal["error", "skip"]
#: ``False`` (no cache), ``True`` (one in-memory cache per process) or ``"shared"`` (one
#: preallocated cache in shared memory, filled and read by every DataLoader worker).
CacheMode: TypeAlias = bool | Literal["shared"]

#: Image file extensions accepted (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
#: Mask file extensions accepted (compared case-insensitively).
MASK_EXTENSIONS: tuple[str, ...] = (".bmp", ".png")
#: Folder under the root that holds each split.
SPLIT_FOLDERS: dict[str, str] = {
    "train": "train_val",
    "val": "train_val",
    "train_val": "train_val",
    "test": "TEST",
}

_LAYOUT = (
    "Expected the official SUIM layout:\n"
    "  ROOT/\n"
    "    train_val/images/*.jpg   train_val/masks/*.bmp\n"
    "    TEST/images/*.jpg        TEST/masks/*.bmp\n"
    "Download SUIM from https://irvlab.cs.umn.edu/resources/suim-dataset, or write a "
    "synthetic copy with suimseg.data.make_synthetic_suim(ROOT) / `suimseg synth ROOT`."
)
_MAX_LISTED = 20
#: The shared-memory filesystem checked before a ``cache="shared"`` allocation (Linux).
_SHM_DIR = Path("/dev/shm")
_PREFIX_RE = re.compile(r"^([^_]+_[^_]+)_")


def stem_prefix(stem: str) -> str:
    """The SUIM source prefix of a stem: its first two ``_``-separated tokens, lower-cased.

    Stems without that shape give ``""``. The validation split is stratified by it.

    Example:
        >>> stem_prefix("f_r_1965_"), stem_prefix("image7")
        ('f_r', '')
    """
    m = _PREFIX_RE.match(stem)
    return m.group(1).lower() if m else ""


def stratified_split(
    stems: Iterable[str], *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split stems into train and validation, stratified by :func:`stem_prefix`.

    Each prefix group sends ``round(len(group) * val_fraction)`` stems (half rounded up) to
    validation, chosen by a generator seeded with ``seed`` and the prefix: deterministic
    and independent of the order of ``stems``.

    Args:
        stems: All stems to split (duplicates are not allowed).
        val_fraction: Fraction of each prefix group sent to validation, in ``[0, 1)``.
        seed: Seed of the split.

    Returns:
        ``(train_stems, val_stems)``, each sorted; disjoint and together covering ``stems``.

    Raises:
        ConfigError: If ``val_fraction`` is outside ``[0, 1)`` or stems repeat.

    Example:
        >>> tr, va = stratified_split([f"d_r_{i}_" for i in range(10)], val_fraction=0.2)
        >>> len(tr), len(va)
        (8, 2)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction: expected a fraction in [0, 1), got {val_fraction!r}")
    all_stems = sorted(stems)
    if len(set(all_stems)) != len(all_stems):
        raise ConfigError("stratified_split: stems must be unique")
    groups: dict[str, list[str]] = defaultdict(list)
    for s in all_stems:
        groups[stem_prefix(s)].append(s)
    val: list[str] = []
    for prefix, group in sorted(groups.items()):
        n_val = math.floor(len(group) * val_fraction + 0.5)
        rng = np.random.default_rng([seed, zlib.crc32(prefix.encode())])
        order = rng.permutation(len(group))
        val.extend(group[j] for j in order[:n_val])
    val_set = set(val)
    return [s for s in all_stems if s not in val_set], sorted(val)


def _list_files(folder: Path, extensions: tuple[str, ...], kind: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in extensions:
            continue
        if p.stem in files:
            raise DatasetError(
                f"two {kind} files share the stem {p.stem!r}: {files[p.stem]} and {p}; "
                "keep only one of them"
            )
        files[p.stem] = p
    return files


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" ... and {more} more" if more > 0 else "")


#: A shared cache: uint8 images ``(N, H, W, 3)``, labels ``(N, H, W)`` and filled flags ``(N,)``.
_Shared: TypeAlias = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _shared_views(shared: _Shared, i: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Read-only numpy views of shared slot ``i``: a transform cannot write into the cache."""
    image, mask = shared[0][i].numpy(), shared[1][i].numpy()
    image.flags.writeable = False
    mask.flags.writeable = False
    return image, mask


def _shared_cache_nbytes(n: int, size: tuple[int, int]) -> int:
    """Bytes of a shared cache of ``n`` pairs at ``size`` (h, w): RGB + labels + flags."""
    h, w = size
    return n * (h * w * 4 + 1)


#: The shared caches of this process that are still alive: their slots not yet filled
#: are promised but not yet taken from /dev/shm (see :func:`_check_shm_space`).
_LIVE_SHARED_CACHES: weakref.WeakSet[SUIMDataset] = weakref.WeakSet()


def _pending_shared_bytes() -> int:
    """Bytes that live shared caches will still take from ``/dev/shm`` when they fill."""
    shared = [ds._shared for ds in list(_LIVE_SHARED_CACHES) if ds._shared is not None]
    return sum(
        _shared_cache_nbytes(int((filled == 0).sum()), (images.shape[1], images.shape[2]))
        for images, _, filled in shared
    )


def _check_shm_space(n: int, size: tuple[int, int]) -> None:
    """Refuse a shared cache larger than the free space of ``/dev/shm`` (if there is one).

    tmpfs pages are taken only when written, so an oversized cache would die of SIGBUS
    mid-epoch; slots the other live shared caches have not filled yet count as taken.
    """
    if not _SHM_DIR.is_dir():
        return
    needed = _shared_cache_nbytes(n, size)
    st = os.statvfs(_SHM_DIR)
    pending = _pending_shared_bytes()
    available = max(0, st.f_bavail * st.f_frsize - pending)
    if needed <= available:
        return
    suggest_gb = math.ceil(needed * 1.5 / 2**30)
    raise ConfigError(
        f"cache='shared': the shared cache of {n} samples at image_size {size[0]}x{size[1]} "
        f"needs {needed / 1e6:.1f} MB ({needed} bytes; 4 bytes per pixel) in {_SHM_DIR}, but "
        f"only {available / 1e6:.1f} MB ({available} bytes) are free there"
        + (
            f" once this process's other shared caches fill ({pending / 1e6:.1f} MB)"
            if pending
            else ""
        )
        + ". Use cache=True "
        "(a cache per process, in ordinary memory), a smaller image_size, or give the "
        f"container more shared memory (docker run --shm-size={suggest_gb}g ...; DataLoader "
        "workers also pass every batch through it)."
    )


def check_layout(root: str | os.PathLike[str], split: Split) -> tuple[Path, Path]:
    """The split's ``images`` and ``masks`` folders under ``root`` (no file is read).

    Raises:
        DatasetNotFoundError: If one is missing; the message shows the expected layout.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"SUIM root folder not found: {root} (root={str(root)!r}).\n{_LAYOUT}"
        )
    folder = root / SPLIT_FOLDERS[split]
    images_dir, masks_dir = folder / "images", folder / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise DatasetNotFoundError(
                f"split {split!r} needs the folder {d}, which does not exist.\n{_LAYOUT}"
            )
    return images_dir, masks_dir


class SUIMDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The SUIM dataset in its official folder layout.

    Args:
        root: The dataset root holding ``train_val/`` and/or ``TEST/``.
        split: ``"train"`` or ``"val"`` (a seeded split of ``train_val``, stratified by
            file-name prefix), ``"train_val"`` (all of it) or ``"test"``.
        transform: ``transform(image, mask) -> (image, mask)`` on a uint8 ``(H, W, 3)`` array
            and uint8 labels ``(H, W)``; default :func:`train_transforms` for
            ``"train"``/``"train_val"``, else :func:`eval_transforms`, at ``image_size``.
        image_size: Size the pair is decoded and resized to *before* ``transform``: an int
            (square), ``(height, width)``, or ``None`` for the native resolution.
        val_fraction: Fraction of each prefix group held out for ``"val"``.
        seed: Seed of the train/val split.
        stems: Explicit stems of the split's folder, in this order, instead of the split.
        on_size_mismatch: A mask whose size differs from its image is ``"resize"``-d
            nearest-neighbour (default), ``"skip"``-ped (both warn) or an ``"error"``.
        on_orphan: Unpaired images or masks are an ``"error"`` naming them, or ``"skip"``.
        cache: Keep decoded, resized uint8 pairs in memory: ``False`` (default), ``True``
            (a dict per process; use ``persistent_workers=True``) or ``"shared"`` (one
            cache in shared memory, preallocated here, filled and read by every process;
            needs a fixed ``image_size`` and ``N * H * W * 4`` bytes of ``/dev/shm``,
            checked first). See ``docs/dataset.md``, "In-memory cache".
        fast_decode: Allow reduced-scale JPEG decoding and direct reads of 24-bit BMP
            masks (``False``: full-size Pillow decoding; same masks, nearly same images).
        on_corrupt: For a file that cannot be decoded: ``"error"`` (default) raises a
            :class:`DatasetError` naming it; ``"skip"`` warns and leaves the pair out (at
            construction: listed in :attr:`unreadable_files`; while loading: replaced by
            the next readable sample and counted in :attr:`skipped_samples`).
        max_pixels: Files whose header announces more pixels are refused before decoding;
            ``None`` lifts the limit.

    Raises:
        DatasetNotFoundError: If the root or the split's folders are missing.
        DatasetError: For orphans, size mismatches or unreadable files (under ``"error"``)
            and unknown explicit stems.
        ConfigError: For invalid arguments, or a shared cache that cannot be allocated.

    Shape:
        ``dataset[i]``: float32 ``(3, H, W)`` (normalised) and int64 ``(H, W)`` by default.

    Example:
        >>> from suimseg.data import make_synthetic_suim
        >>> import tempfile
        >>> root = make_synthetic_suim(tempfile.mkdtemp(), n_train_val=10, n_test=2,
        ...                            size=(64, 48))
        >>> ds = SUIMDataset(root, "val", image_size=32)
        >>> image, mask = ds[0]
        >>> len(ds), tuple(image.shape), mask.dtype
        (2, (3, 32, 32), torch.int64)
    """

    #: The class table (index, code, name, rgb) of the labels this dataset returns.
    classes: tuple[SUIMClass, ...] = SUIM_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: Split = "train",
        *,
        transform: JointTransformFn | None = None,
        image_size: SizeArg = 384,
        val_fraction: float = 0.2,
        seed: int = 0,
        stems: Sequence[str] | None = None,
        on_size_mismatch: SizeMismatchPolicy = "resize",
        on_orphan: OrphanPolicy = "error",
        cache: CacheMode = False,
        fast_decode: bool = True,
        on_corrupt: CorruptPolicy = "error",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        for name, value, choices in (
            ("split", split, Split),
            ("on_size_mismatch", on_size_mismatch, SizeMismatchPolicy),
            ("on_orphan", on_orphan, OrphanPolicy),
            ("on_corrupt", on_corrupt, CorruptPolicy),
        ):
            if value not in get_args(choices):
                raise ConfigError(
                    f"{name}: expected one of {list(get_args(choices))}, got {value!r}"
                )
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction: expected a fraction in [0, 1), got {val_fraction!r}")
        if not (isinstance(cache, bool) or (isinstance(cache, str) and cache == "shared")):
            raise ConfigError(
                "cache: expected False (no cache), True (a cache per process) or 'shared' "
                f"(one cache in shared memory for all DataLoader workers), got {cache!r}"
            )
        self.max_pixels = check_max_pixels(max_pixels)
        self.on_corrupt: CorruptPolicy = on_corrupt
        self.root = Path(root).expanduser()
        self.split: Split = split
        self.image_size: tuple[int, int] | None = normalize_size(image_size, name="image_size")
        if cache == "shared" and self.image_size is None:
            raise ConfigError(
                "cache='shared' needs a fixed image_size (an int or (height, width)) to "
                "preallocate the shared arrays, got image_size=None; pass e.g. "
                "image_size=384, or use cache=True for native-resolution pairs"
            )
        #: The cache mode: ``False``, ``True`` (per process) or ``"shared"``.
        self.cache: CacheMode = cache
        self.val_fraction = val_fraction
        self.seed = seed
        self.on_size_mismatch: SizeMismatchPolicy = on_size_mismatch
        self.fast_decode = fast_decode
        self.transform = transform if transform is not None else self._default_transform()

        pairs = self._scan_pairs(on_orphan)
        chosen = self._select_stems(pairs, stems)
        self._image_paths: list[str] = [str(pairs[s][0]) for s in chosen]
        self._mask_paths: list[str] = [str(pairs[s][1]) for s in chosen]
        self._stems: list[str] = list(chosen)
        self._check_sizes()
        self._cache: dict[int, tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]] | None = (
            {} if cache is True else None
        )
        self._shared: _Shared | None = None
        if cache == "shared" and self.image_size is not None:
            self._shared = self._allocate_shared(self.image_size)
            _LIVE_SHARED_CACHES.add(self)
        self._count_cache: dict[tuple[str, int, int], npt.NDArray[np.int64]] = {}
        # Per-index skip counts in shared memory: DataLoader workers (fork or spawn)
        # write into the same buffer, so the parent sees skips made in any worker.
        skips = torch.zeros(max(len(self._stems), 1), dtype=torch.int64)
        self._skips: torch.Tensor = skips.share_memory_()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ construction
    def _allocate_shared(self, size: tuple[int, int]) -> _Shared:
        """Preallocate images, labels and filled flags in shared memory (every worker's)."""
        n = len(self._stems)
        _check_shm_space(n, size)
        h, w = size
        slots = max(n, 1)  # shared memory cannot be empty
        images = torch.empty((slots, h, w, 3), dtype=torch.uint8)
        masks = torch.empty((slots, h, w), dtype=torch.uint8)
        filled = torch.zeros(slots, dtype=torch.uint8)
        return (
            images.share_memory_(),  # type: ignore[no-untyped-call]
            masks.share_memory_(),  # type: ignore[no-untyped-call]
            filled.share_memory_(),  # type: ignore[no-untyped-call]
        )

    def _default_transform(self) -> JointTransformFn:
        if self.split in ("train", "train_val"):
            return train_transforms(self.image_size)
        return eval_transforms(self.image_size)

    def _scan_pairs(self, on_orphan: OrphanPolicy) -> dict[str, tuple[Path, Path]]:
        images_dir, masks_dir = check_layout(self.root, self.split)
        images = _list_files(images_dir, IMAGE_EXTENSIONS, "image")
        masks = _list_files(masks_dir, MASK_EXTENSIONS, "mask")
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask or no_image:
            detail = "; ".join(
                f"{len(orphans)} {kind}(s) in {folder} without {other}: "
                f"{_listing([files[s].name for s in orphans])}"
                for orphans, kind, folder, other, files in (
                    (no_mask, "image", images_dir, "a mask", images),
                    (no_image, "mask", masks_dir, "an image", masks),
                )
                if orphans
            )
            if on_orphan == "error":
                raise DatasetError(
                    f"unpaired files in split {self.split!r}: {detail}. Images and masks are "
                    "paired by file stem; add the missing files, or pass on_orphan='skip' to "
                    "skip them with a warning."
                )
            warnings.warn(f"skipping unpaired files: {detail}", UserWarning, stacklevel=3)
        return {s: (images[s], masks[s]) for s in sorted(set(images) & set(masks))}

    def _select_stems(
        self, pairs: dict[str, tuple[Path, Path]], stems: Sequence[str] | None
    ) -> list[str]:
        if stems is not None:
            if isinstance(stems, str):
                raise ConfigError(f"stems: expected a sequence of stems, got the string {stems!r}")
            chosen = list(stems)
            unknown = [s for s in chosen if s not in pairs]
            if unknown:
                raise DatasetError(
                    f"stems: {len(unknown)} stem(s) have no image/mask pair in "
                    f"{self.root / SPLIT_FOLDERS[self.split]}: {_listing(unknown)}"
                )
            if len(set(chosen)) != len(chosen):
                raise ConfigError("stems: the explicit list of stems contains duplicates")
            return chosen
        if self.split in ("train", "val"):
            train, val = stratified_split(pairs, val_fraction=self.val_fraction, seed=self.seed)
            return train if self.split == "train" else val
        return sorted(pairs)

    def _check_sizes(self) -> None:
        """Read every header once: catches unreadable files early and applies the policy."""
        keep: list[int] = []
        mismatched: list[str] = []
        unreadable: list[str] = []
        for i, (ip, mp) in enumerate(zip(self._image_paths, self._mask_paths, strict=True)):
            try:
                isize = read_size(ip, kind="image", max_pixels=self.max_pixels)
                msize = read_size(mp, kind="mask", max_pixels=self.max_pixels)
            except (DatasetError, OSError) as e:
                if self.on_corrupt == "error":
                    raise
                unreadable.append(str(e))
                continue
            if isize != msize:
                mismatched.append(
                    f"{self._stems[i]} (image {isize[0]}x{isize[1]}, mask {msize[0]}x{msize[1]})"
                )
                if self.on_size_mismatch == "skip":
                    continue
            keep.append(i)
        #: Descriptions of the pairs whose mask size differs from the image.
        self.size_mismatches: tuple[str, ...] = tuple(mismatched)
        #: Errors of the files dropped at construction under ``on_corrupt="skip"``.
        self.unreadable_files: tuple[str, ...] = tuple(unreadable)
        if unreadable:
            warnings.warn(
                f"on_corrupt='skip': left out {len(unreadable)} unreadable pair(s) of split "
                f"{self.split!r}: {_listing(unreadable)}",
                UserWarning,
                stacklevel=3,
            )
        if mismatched and self.on_size_mismatch == "error":
            raise DatasetError(
                f"{len(mismatched)} mask(s) differ in size from their image: "
                f"{_listing(mismatched)}. Pass on_size_mismatch='resize' (nearest-neighbour "
                "to the image) or 'skip'."
            )
        if mismatched:
            action = (
                "resized nearest-neighbour to the image"
                if self.on_size_mismatch == "resize"
                else "skipped"
            )
            warnings.warn(
                f"{len(mismatched)} mask(s) in split {self.split!r} differ in size from their "
                f"image and were {action}: {_listing(mismatched)}",
                UserWarning,
                stacklevel=3,
            )
        if len(keep) == len(self._stems):
            return
        self._image_paths = [self._image_paths[i] for i in keep]
        self._mask_paths = [self._mask_paths[i] for i in keep]
        self._stems = [self._stems[i] for i in keep]

    # ------------------------------------------------------------------ public API
    @property
    def stems(self) -> tuple[str, ...]:
        """The sample stems in index order."""
        return tuple(self._stems)

    @property
    def image_paths(self) -> tuple[Path, ...]:
        """Image file paths in index order."""
        return tuple(Path(p) for p in self._image_paths)

    @property
    def mask_paths(self) -> tuple[Path, ...]:
        """Mask file paths in index order."""
        return tuple(Path(p) for p in self._mask_paths)

    def __len__(self) -> int:
        return len(self._stems)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"n={len(self)}, image_size={self.image_size})"
        )

    def _index(self, index: int) -> int:
        n = len(self)
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise ConfigError(f"index: expected an int, got {type(index).__name__}")
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        return int(index) % n

    @property
    def skipped_samples(self) -> int:
        """Samples replaced so far (``on_corrupt="skip"``) in any process, workers included."""
        return int(self._skips.sum())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the transformed pair ``(image, mask)`` at ``index``.

        Raises:
            DatasetError: If the files cannot be decoded (``on_corrupt="error"``), or if
                no sample at all can be decoded (``"skip"``).
        """
        if self.on_corrupt == "error":
            image, mask = self.load(index)
            return self.transform(image, mask)
        i = self._index(index)
        n = len(self)
        for k in range(n):
            j = (i + k) % n
            try:
                image, mask = self.load(j)
            except (DatasetError, OSError) as e:
                self._skips[j] += 1
                warnings.warn(
                    f"on_corrupt='skip': skipping sample {j} ({self._stems[j]}): {e}",
                    UserWarning,
                    stacklevel=2,
                )
                continue
            return self.transform(image, mask)
        raise DatasetError(
            f"on_corrupt='skip': none of the {n} samples of split {self.split!r} in "
            f"{self.root} could be decoded; check the dataset files"
        )

    def load(self, index: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """Decode pair ``index`` at ``image_size``, before ``transform`` (cached if enabled).

        Returns:
            A uint8 image ``(H, W, 3)`` and a uint8 label map ``(H, W)`` with ids in
            ``[0, 8)``.
        """
        i = self._index(index)
        shared = self._shared
        if shared is not None and shared[2][i]:
            return _shared_views(shared, i)
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        target = None if self.image_size is None else (self.image_size[1], self.image_size[0])
        image = self._read_image(i, target)
        mask = self._read_mask(i, (image.shape[1], image.shape[0]))
        pair = (image, mask)
        if shared is not None:
            return self._fill_shared(shared, i, image, mask)
        if self._cache is not None:
            # Read-only, so a transform cannot corrupt the cache in place.
            for arr in pair:
                arr.flags.writeable = False
            self._cache[i] = pair
        return pair

    def _fill_shared(
        self, shared: _Shared, i: int, image: npt.NDArray[np.uint8], mask: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """Copy a decoded pair into shared slot ``i``, then set its flag.

        Readers test the flag first; the flag is stored after both copies (separate C
        calls; x86-64 keeps stores in order, and on ARM64/POWER a slot is read in a later
        epoch, after the DataLoader's synchronising round trips). Two processes filling a
        slot at once write identical bytes.
        """
        images, masks, filled = shared
        slot_image, slot_mask = images[i].numpy(), masks[i].numpy()
        if image.shape != slot_image.shape or mask.shape != slot_mask.shape:
            raise DatasetError(
                f"cache='shared': sample {i} ({self._stems[i]}) decoded to image "
                f"{image.shape} and mask {mask.shape}, expected {slot_image.shape} and "
                f"{slot_mask.shape}; use cache=True"
            )
        np.copyto(slot_image, image)
        np.copyto(slot_mask, mask)
        filled[i] = 1
        return _shared_views(shared, i)

    @property
    def cached_samples(self) -> int:
        """Samples held by the cache: filled shared slots (any process) or this process's."""
        if self._shared is not None:
            return int(self._shared[2][: len(self)].sum())
        return 0 if self._cache is None else len(self._cache)

    def get_raw(self, index: int) -> tuple[Image.Image, npt.NDArray[np.int64]]:
        """The untransformed pair at native resolution: RGB image, int64 labels ``(H, W)``.

        A mismatched mask is resized nearest-neighbour to the image.

        Raises:
            DatasetError: If a file cannot be decoded (whatever ``on_corrupt`` says).
        """
        i = self._index(index)
        image = self._decode_image(i, None)
        return image, self._read_mask(i, image.size).astype(np.int64)

    def class_pixel_counts(self) -> npt.NDArray[np.int64]:
        """Label pixels per class over this split: int64 ``(8,)``, reading only the masks.

        Masks are decoded at native size; counts are cached per (path, mtime, size).
        """
        total = np.zeros(NUM_CLASSES, dtype=np.int64)
        for path in self._mask_paths:
            st = Path(path).stat()
            key = (path, st.st_mtime_ns, st.st_size)
            counts = self._count_cache.get(key)
            if counts is None:
                labels = self._read_mask_native(path)
                counts = np.bincount(labels.ravel(), minlength=NUM_CLASSES).astype(np.int64)
                self._count_cache[key] = counts
            total += counts
        return total

    # ------------------------------------------------------------------ decoding
    def _read_mask_native(self, path: str) -> npt.NDArray[np.uint8]:
        labels = read_bmp_labels(path) if path.lower().endswith(".bmp") else None
        if labels is not None:
            return labels
        return read_mask_labels(path, max_pixels=self.max_pixels)

    def _decode_image(self, i: int, target: tuple[int, int] | None) -> Image.Image:
        """Decode image ``i`` as upright RGB: native size, or (JPEG) reduced but >= target."""
        draft = target if self.fast_decode else None
        return read_image(self._image_paths[i], max_pixels=self.max_pixels, draft_size=draft)

    def _read_image(self, i: int, target: tuple[int, int] | None) -> npt.NDArray[np.uint8]:
        """Image ``i`` as a uint8 array ``(H, W, 3)`` at ``target`` (w, h) or native size."""
        size = None if target is None else (target[1], target[0])
        return read_image_array(
            self._image_paths[i],
            size=size,
            fast_decode=self.fast_decode,
            max_pixels=self.max_pixels,
        )

    def _read_mask(self, i: int, size: tuple[int, int]) -> npt.NDArray[np.uint8]:
        """Mask ``i`` as uint8 labels at ``size`` (w, h), sampled nearest.

        Plain 24-bit BMPs (no EXIF) are sampled straight from the file; nearest sampling
        commutes with the colour rule, so both paths give the same labels.
        """
        path = self._mask_paths[i]
        if self.fast_decode and path.lower().endswith(".bmp"):
            labels = read_bmp_labels(path, size)
            if labels is not None:
                return labels
        return resize_labels_nearest(read_mask_labels(path, max_pixels=self.max_pixels), size)
