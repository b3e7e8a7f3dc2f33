"""Tests for SUIMDataset: pairing, split, defect policies, decoding and workers."""

from __future__ import annotations

import pickle
import shutil
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile
from torch.utils.data import DataLoader

from suimseg.classes import NUM_CLASSES, SUIM_CLASSES, index_to_rgb
from suimseg.data import SUIMDataset, eval_transforms, stem_prefix, stratified_split
from suimseg.errors import ConfigError, DatasetError, DatasetNotFoundError

REAL_TOTALS = {  # sums of the per-class counts in the real samples' README
    "BW": 1316735, "HD": 180550, "WR": 159524, "RO": 94440, "RI": 487580, "FV": 126611,
}  # fmt: skip


def _quiet(*args: object, **kwargs: object) -> SUIMDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SUIMDataset(*args, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- basics
def test_getitem_shapes_dtypes_and_metadata(synthetic_root: Path) -> None:
    ds = SUIMDataset(synthetic_root, "test", image_size=32)
    assert len(ds) == 4
    image, mask = ds[0]
    assert image.shape == (3, 32, 32)
    assert image.dtype == torch.float32
    assert mask.shape == (32, 32)
    assert mask.dtype == torch.int64
    assert ds.classes is SUIM_CLASSES
    assert list(ds.stems) == sorted(ds.stems)
    assert [p.stem for p in ds.image_paths] == list(ds.stems)
    assert [p.stem for p in ds.mask_paths] == list(ds.stems)
    assert ds[-1][0].shape == image.shape
    with pytest.raises(IndexError, match="out of range"):
        ds[4]
    with pytest.raises(ConfigError, match="index"):
        ds["0"]  # type: ignore[index]


def test_raw_pair_is_native_and_matches_the_mask_file(synthetic_root: Path) -> None:
    ds = SUIMDataset(synthetic_root, "test")
    image, labels = ds.get_raw(1)
    assert image.size == (64, 48)
    assert labels.shape == (48, 64)
    assert labels.dtype == np.int64
    with Image.open(ds.mask_paths[1]) as m:
        np.testing.assert_array_equal(index_to_rgb(labels), np.asarray(m.convert("RGB")))


def test_image_size_none_keeps_native_resolution(synthetic_root: Path) -> None:
    ds = SUIMDataset(synthetic_root, "val", image_size=None)
    image, mask = ds[0]
    assert image.shape == (3, 48, 64)
    np.testing.assert_array_equal(mask.numpy(), ds.get_raw(0)[1])


def test_default_transforms_augment_train_only(synthetic_root: Path) -> None:
    train = SUIMDataset(synthetic_root, "train", image_size=32)
    val = SUIMDataset(synthetic_root, "val", image_size=32)
    assert "RandomAffine" in repr(train.transform)
    assert "RandomAffine" not in repr(val.transform)
    a, b = val[0], val[0]
    assert torch.equal(a[0], b[0])
    custom = SUIMDataset(synthetic_root, "train", image_size=32, transform=eval_transforms(16))
    assert custom[0][0].shape == (3, 16, 16)


# ---------------------------------------------------------------- split
def _fake_stems() -> list[str]:
    counts = {"d_r": 50, "f_r": 31, "n_l": 14, "w_r": 5}
    return [f"{p}_{i}_" for p, n in counts.items() for i in range(n)] + ["odd"]


def test_split_is_deterministic_disjoint_covering_and_stratified() -> None:
    stems = _fake_stems()
    train, val = stratified_split(stems, val_fraction=0.2, seed=3)
    assert (train, val) == stratified_split(reversed(stems), val_fraction=0.2, seed=3)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(stems)
    per_prefix = Counter(stem_prefix(s) for s in val)
    assert per_prefix == {"d_r": 10, "f_r": 6, "n_l": 3, "w_r": 1}
    _, other_val = stratified_split(stems, val_fraction=0.2, seed=4)
    assert other_val != val
    assert Counter(stem_prefix(s) for s in other_val) == per_prefix


def test_dataset_split_matches_train_val(synthetic_root: Path) -> None:
    train = SUIMDataset(synthetic_root, "train", seed=1)
    val = SUIMDataset(synthetic_root, "val", seed=1)
    full = SUIMDataset(synthetic_root, "train_val")
    assert not set(train.stems) & set(val.stems)
    assert sorted(train.stems + val.stems) == list(full.stems)
    assert len(val) == sum(
        int(np.floor(n * 0.2 + 0.5)) for n in Counter(map(stem_prefix, full.stems)).values()
    )
    assert SUIMDataset(synthetic_root, "val", seed=1).stems == val.stems


def test_explicit_stems(synthetic_root: Path) -> None:
    full = SUIMDataset(synthetic_root, "train_val")
    chosen = [full.stems[3], full.stems[0]]
    ds = SUIMDataset(synthetic_root, "val", stems=chosen)
    assert list(ds.stems) == chosen
    with pytest.raises(DatasetError, match="no_such_stem_"):
        SUIMDataset(synthetic_root, "train", stems=["no_such_stem_"])
    with pytest.raises(ConfigError, match="duplicates"):
        SUIMDataset(synthetic_root, "train", stems=chosen + chosen[:1])
    with pytest.raises(ConfigError, match="string"):
        SUIMDataset(synthetic_root, "train", stems="d_r_1_")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "training"}, "split"),
        ({"on_size_mismatch": "crop"}, "on_size_mismatch"),
        ({"on_orphan": "ignore"}, "on_orphan"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"image_size": -1}, "image_size"),
    ],
)
def test_bad_arguments(synthetic_root: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SUIMDataset(synthetic_root, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- layout and defects
def test_missing_root_and_split_folder_show_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"(?s)not found.*train_val/images"):
        SUIMDataset(tmp_path / "nowhere")
    (tmp_path / "train_val" / "images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"(?s)train_val/masks.*Expected"):
        SUIMDataset(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="TEST"):
        SUIMDataset(tmp_path, "test")


def test_orphans_are_reported_by_name(make_root: Callable[[], Path]) -> None:
    root = make_root()
    imgs, masks = root / "train_val" / "images", root / "train_val" / "masks"
    stems = sorted(p.stem for p in imgs.iterdir())
    (masks / f"{stems[0]}.bmp").unlink()
    (imgs / f"{stems[1]}.jpg").unlink()
    with pytest.raises(DatasetError, match=rf"(?s){stems[0]}\.jpg.*{stems[1]}\.bmp.*on_orphan"):
        SUIMDataset(root, "train")
    with pytest.warns(UserWarning, match=stems[0]):
        ds = SUIMDataset(root, "train_val", on_orphan="skip")
    assert len(ds) == 18
    assert stems[0] not in ds.stems
    assert stems[1] not in ds.stems


def _make_mismatch(root: Path) -> str:
    mask_path = sorted((root / "train_val" / "masks").iterdir())[2]
    with Image.open(mask_path) as m:
        big = m.resize((64, 60), Image.Resampling.NEAREST)
    big.save(mask_path)
    return mask_path.stem


def test_size_mismatch_resize_is_the_default(make_root: Callable[[], Path]) -> None:
    root = make_root()
    stem = _make_mismatch(root)
    with pytest.warns(UserWarning, match=rf"{stem} \(image 64x48, mask 64x60\)"):
        ds = SUIMDataset(root, "train_val", image_size=None)
    assert len(ds) == 20
    i = ds.stems.index(stem)
    image, labels = ds.get_raw(i)
    assert labels.shape == (image.height, image.width)
    assert ds[i][1].shape == (48, 64)
    assert ds.size_mismatches == (f"{stem} (image 64x48, mask 64x60)",)


def test_size_mismatch_skip_and_error(make_root: Callable[[], Path]) -> None:
    root = make_root()
    stem = _make_mismatch(root)
    with pytest.warns(UserWarning, match="skipped"):
        ds = SUIMDataset(root, "train_val", on_size_mismatch="skip")
    assert len(ds) == 19
    assert stem not in ds.stems
    with pytest.raises(DatasetError, match=rf"{stem}.*on_size_mismatch"):
        SUIMDataset(root, "train_val", on_size_mismatch="error")


def test_corrupt_files_raise_naming_the_file(make_root: Callable[[], Path]) -> None:
    root = make_root()
    images = sorted((root / "TEST" / "images").iterdir())
    images[0].write_bytes(b"this is not a jpeg")
    with pytest.raises(DatasetError, match=rf"{images[0].name}.*corrupt"):
        SUIMDataset(root, "test")
    # A truncated JPEG has a valid header: the error comes when decoding it.
    shutil.copy(images[1], images[0])
    data = images[1].read_bytes()
    images[1].write_bytes(data[: len(data) // 2])
    ds = SUIMDataset(root, "test", image_size=None)
    with pytest.raises(DatasetError, match=images[1].name):
        ds[1]
    masks = sorted((root / "TEST" / "masks").iterdir())
    Image.new("L", (64, 48)).save(masks[2], format="BMP")
    with pytest.raises(DatasetError, match=rf"{masks[2].name}.*mode 'L'"):
        ds[2]


def test_extensions_any_case_subfolders_and_duplicates(make_root: Callable[[], Path]) -> None:
    root = make_root()
    imgs, masks = root / "TEST" / "images", root / "TEST" / "masks"
    files = sorted(imgs.iterdir())
    files[0].rename(files[0].with_suffix(".JPG"))
    files[1].rename(files[1].with_suffix(".jpeg"))
    with Image.open(files[2]) as im:
        im.save(files[2].with_suffix(".png"))
    files[2].unlink()
    mfiles = sorted(masks.iterdir())
    with Image.open(mfiles[3]) as m:
        m.save(mfiles[3].with_suffix(".PNG"))
    mfiles[3].unlink()
    (masks / "FV").mkdir()
    shutil.copy(mfiles[0], masks / "FV" / "extra_1_.bmp")
    (masks / "notes.txt").write_text("not a mask")
    ds = SUIMDataset(root, "test", image_size=16)
    assert len(ds) == 4
    assert all(ds[i][0].shape == (3, 16, 16) for i in range(4))
    shutil.copy(mfiles[0], mfiles[0].with_suffix(".png"))
    with pytest.raises(DatasetError, match="share the stem"):
        SUIMDataset(root, "test")


# ---------------------------------------------------------------- counting and decoding
def test_class_pixel_counts_reads_only_masks(
    synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = SUIMDataset(synthetic_root, "train_val")
    expected = sum(
        np.bincount(ds.get_raw(i)[1].ravel(), minlength=NUM_CLASSES) for i in range(len(ds))
    )

    def no_images(*_: object) -> None:
        raise AssertionError("class_pixel_counts must not decode images")

    monkeypatch.setattr(SUIMDataset, "_read_image", no_images)
    monkeypatch.setattr(SUIMDataset, "_decode_image", no_images)
    counts = ds.class_pixel_counts()
    assert counts.dtype == np.int64
    assert counts.shape == (NUM_CLASSES,)
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(ds.class_pixel_counts(), expected)  # cached path
    assert counts.sum() == len(ds) * 64 * 48


def test_reduced_scale_decoding_is_used_and_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from suimseg.data import make_synthetic_suim

    root = make_synthetic_suim(tmp_path, n_train_val=0, n_test=2, size=(320, 240))
    calls: list[tuple[int, int]] = []
    original = JpegImageFile.draft

    def spy(self: JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        result = original(self, mode, size)
        calls.append(self.size)  # the size the JPEG will be decoded at
        return result

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    fast = SUIMDataset(root, "test", image_size=(60, 80))
    slow = SUIMDataset(root, "test", image_size=(60, 80), fast_decode=False)
    img_fast, mask_fast = fast.load(0)
    calls_after_fast = len(calls)
    img_slow, mask_slow = slow.load(0)
    assert calls_after_fast >= 1
    assert calls[0] == (80, 60)  # 320x240 decoded at 1/4 scale, still >= 80x60
    assert len(calls) == calls_after_fast  # fast_decode=False never drafts
    assert img_fast.shape == img_slow.shape == (60, 80, 3)
    np.testing.assert_array_equal(mask_fast, mask_slow)
    assert np.abs(img_fast.astype(int) - img_slow.astype(int)).mean() < 6


def test_cache_returns_the_same_decoded_arrays(synthetic_root: Path) -> None:
    cached = SUIMDataset(synthetic_root, "val", image_size=24, cache=True)
    plain = SUIMDataset(synthetic_root, "val", image_size=24)
    first = cached.load(0)
    assert cached.load(0) is first
    assert not first[0].flags.writeable
    for a, b in zip(cached[0], plain[0], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(cached[0][0], plain[0][0])


def test_dataloader_with_two_workers(synthetic_root: Path) -> None:
    ds = pickle.loads(pickle.dumps(SUIMDataset(synthetic_root, "train", image_size=32)))
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)
    seen = 0
    for images, masks in loader:
        assert images.shape[1:] == (3, 32, 32)
        assert masks.dtype == torch.int64
        seen += images.shape[0]
    assert seen == len(ds)


# ---------------------------------------------------------------- real samples
def test_real_samples_load_with_the_documented_counts(real_samples: Path) -> None:
    ds = SUIMDataset(real_samples, "test", image_size=64)
    assert len(ds) == 8
    counts = ds.class_pixel_counts()
    expected = np.zeros(NUM_CLASSES, dtype=np.int64)
    for c in SUIM_CLASSES:
        expected[c.index] = REAL_TOTALS.get(c.code, 0)
    np.testing.assert_array_equal(counts, expected)
    image, mask = ds[0]
    assert image.shape == (3, 64, 64)
    assert set(mask.unique().tolist()) <= set(range(8))
    raw_image, raw_labels = ds.get_raw(ds.stems.index("d_r_47_"))
    assert raw_image.size == (480, 448)
    assert raw_labels.shape == (448, 480)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=5),
    fraction=st.floats(0.0, 0.9),
    seed=st.integers(0, 1000),
)
def test_split_properties_hold_for_any_stems(counts: list[int], fraction: float, seed: int) -> None:
    prefixes = ["d_r", "f_r", "n_l", "w_r", "x_y"]
    stems = [f"{prefixes[k]}_{i}_" for k, n in enumerate(counts) for i in range(n)]
    train, val = stratified_split(stems, val_fraction=fraction, seed=seed)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(stems)
    assert (train, val) == stratified_split(stems[::-1], val_fraction=fraction, seed=seed)
    per_prefix = Counter(stem_prefix(s) for s in val)
    for k, n in enumerate(counts):
        assert per_prefix.get(prefixes[k], 0) == int(np.floor(n * fraction + 0.5))
