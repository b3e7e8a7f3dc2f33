"""Tests for the synthetic SUIM-format generator (suimseg.data.synthetic)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from suimseg.classes import NUM_CLASSES, rgb_to_index
from suimseg.data import SUIMDataset, make_synthetic_suim
from suimseg.errors import ConfigError

STEM = re.compile(r"^(d_r|f_r|n_l|w_r)_\d+_$")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_layout_formats_and_stems(synthetic_root: Path) -> None:
    for split, n in (("train_val", 20), ("TEST", 4)):
        images = sorted((synthetic_root / split / "images").iterdir())
        masks = sorted((synthetic_root / split / "masks").iterdir())
        assert len(images) == len(masks) == n
        assert [p.stem for p in images] == [p.stem for p in masks]
        assert all(STEM.match(p.stem) for p in images)
        with Image.open(images[0]) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (64, 48))
        with Image.open(masks[0]) as m:
            assert (m.format, m.mode, m.size) == ("BMP", "RGB", (64, 48))
            assert set(np.unique(np.asarray(m)).tolist()) <= {0, 255}


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = make_synthetic_suim(tmp_path / "a", n_train_val=3, n_test=1, size=(48, 32), seed=5)
    b = make_synthetic_suim(tmp_path / "b", n_train_val=3, n_test=1, size=(48, 32), seed=5)
    c = make_synthetic_suim(tmp_path / "c", n_train_val=3, n_test=1, size=(48, 32), seed=6)
    assert _files(a) == _files(b)
    assert _files(a) != _files(c)


def test_every_class_present_and_suim_like_imbalance(synthetic_root: Path) -> None:
    counts = SUIMDataset(synthetic_root, "train_val").class_pixel_counts()
    assert np.all(counts > 0), counts
    share = counts / counts.sum()
    # Water and sea-floor dominate; divers and robots are among the rarest classes.
    assert share[0] > 0.4
    assert share[7] > 0.1
    assert share[4] < share[0] / 20
    assert share[1] < share[0] / 10
    # The forced first seven scenes also put every class in a split of >= 7 images.
    test_root = synthetic_root.parent / "suim_every_class"
    make_synthetic_suim(test_root, n_train_val=0, n_test=7, size=(32, 32), seed=9)
    present: set[int] = set()
    for m in (test_root / "TEST" / "masks").iterdir():
        with Image.open(m) as im:
            present |= set(np.unique(rgb_to_index(im)).tolist())
    assert present == set(range(NUM_CLASSES))


def test_classes_have_distinct_appearance(synthetic_root: Path) -> None:
    """Mean colours per class differ, so a small model has something to learn."""
    ds = SUIMDataset(synthetic_root, "train_val")
    sums = np.zeros((NUM_CLASSES, 3))
    n = np.zeros(NUM_CLASSES)
    for i in range(len(ds)):
        image, labels = ds.get_raw(i)
        arr = np.asarray(image, dtype=np.float64)
        for c in range(NUM_CLASSES):
            sel = labels == c
            sums[c] += arr[sel].sum(axis=0)
            n[c] += sel.sum()
    means = sums / n[:, None]
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    off_diagonal = dist[~np.eye(NUM_CLASSES, dtype=bool)]
    assert off_diagonal.min() > 8, np.round(means)


def test_defect_flags(tmp_path: Path) -> None:
    root = make_synthetic_suim(
        tmp_path, n_train_val=8, n_test=1, size=(48, 32), noisy_masks=2, size_mismatch=1,
        orphan_images=1,
    )  # fmt: skip
    images = sorted((root / "train_val" / "images").iterdir())
    masks = sorted((root / "train_val" / "masks").iterdir())
    assert len(images) == 9
    assert len(masks) == 8
    noisy = 0
    wrong_size = 0
    for m in masks:
        with Image.open(m) as im:
            values = set(np.unique(np.asarray(im)).tolist())
            noisy += not values <= {0, 255}
            wrong_size += im.size != (48, 32)
    assert noisy == 2
    assert wrong_size == 1
    with pytest.raises(Exception, match="without a mask"):
        SUIMDataset(root, "train_val")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = SUIMDataset(root, "train_val", on_orphan="skip", image_size=None)
    assert len(caught) == 2  # one for the orphan, one for the size mismatch
    assert len(ds) == 8
    assert all(ds[i][1].shape == (32, 48) for i in range(len(ds)))


def test_noisy_masks_decode_like_clean_ones(tmp_path: Path) -> None:
    clean = make_synthetic_suim(tmp_path / "c", n_train_val=2, n_test=0, size=(32, 32))
    noisy = make_synthetic_suim(
        tmp_path / "n", n_train_val=2, n_test=0, size=(32, 32), noisy_masks=2
    )
    for name in ("train_val/masks",):
        for a, b in zip(
            sorted((clean / name).iterdir()), sorted((noisy / name).iterdir()), strict=True
        ):
            with Image.open(a) as ma, Image.open(b) as mb:
                assert not np.array_equal(np.asarray(ma), np.asarray(mb))
                np.testing.assert_array_equal(rgb_to_index(ma), rgb_to_index(mb))


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    make_synthetic_suim(tmp_path, n_train_val=2, n_test=1, size=(32, 32))
    with pytest.raises(ConfigError, match="overwrite=True"):
        make_synthetic_suim(tmp_path, n_train_val=1, n_test=1, size=(32, 32))
    make_synthetic_suim(tmp_path, n_train_val=1, n_test=1, size=(32, 32), overwrite=True)
    assert len(list((tmp_path / "train_val" / "images").iterdir())) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": (8, 8)}, "size"),
        ({"size": (32,)}, "size"),
        ({"n_train_val": -1}, "n_train_val"),
        ({"n_test": 1.5}, "n_test"),
        ({"noisy_masks": 3, "size_mismatch": 3, "n_train_val": 4}, "at most"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_synthetic_suim(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_classes_are_learnable_from_colour_alone(synthetic_root: Path) -> None:
    """A nearest-mean-colour pixel classifier fitted on train_val does well on TEST."""

    def pixels(split: str) -> tuple[np.ndarray, np.ndarray]:
        ds = SUIMDataset(synthetic_root, split)  # type: ignore[arg-type]
        pairs = [ds.get_raw(i) for i in range(len(ds))]
        x = np.concatenate([np.asarray(im, np.float64).reshape(-1, 3) for im, _ in pairs])
        return x, np.concatenate([lb.ravel() for _, lb in pairs])

    x, y = pixels("train_val")
    xt, yt = pixels("test")
    means = np.stack([x[y == c].mean(axis=0) for c in range(NUM_CLASSES)])
    pred = np.argmin(((xt[:, None] - means[None]) ** 2).sum(-1), axis=1)
    ious = [
        ((pred == c) & (yt == c)).sum() / ((pred == c) | (yt == c)).sum()
        for c in range(NUM_CLASSES)
        if ((pred == c) | (yt == c)).any()
    ]
    assert np.mean(ious) > 0.5, np.round(ious, 2)
