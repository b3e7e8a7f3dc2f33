"""Strange and broken files: a correct result or a clear error naming the file.

Covers the dataset (``SUIMDataset``), the shared readers (``suimseg.data.readers``) and the
predictor's file reading (``suimseg.inference``): empty, truncated and mislabelled files,
colour modes, mask encodings, EXIF orientation, decompression bombs, tiny and extreme
sizes, and file names with spaces and non-ASCII characters.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from suimseg.classes import index_to_rgb
from suimseg.data import SUIMDataset
from suimseg.data.readers import read_image, read_mask_labels, read_size, to_rgb
from suimseg.engine import read_history
from suimseg.errors import ConfigError, DatasetError

RNG = np.random.default_rng(0)


def _labels(h: int, w: int) -> np.ndarray:
    """A label map with one class per quadrant (classes 1, 2, 4, 7)."""
    lab = np.full((h, w), 1, np.uint8)
    lab[: h // 2, w // 2 :] = 2
    lab[h // 2 :, : w // 2] = 4
    lab[h // 2 :, w // 2 :] = 7
    return lab


def _image_for(labels: np.ndarray) -> np.ndarray:
    """An RGB image whose colour is the label's palette colour (so alignment is visible)."""
    return index_to_rgb(labels)


def _write_pair(
    root: Path,
    stem: str,
    image: Image.Image | bytes,
    mask: Image.Image | bytes,
    *,
    image_ext: str = ".png",
    mask_ext: str = ".bmp",
    image_format: str | None = None,
) -> tuple[Path, Path]:
    images = root / "TEST" / "images"
    masks = root / "TEST" / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    ip, mp = images / f"{stem}{image_ext}", masks / f"{stem}{mask_ext}"
    for path, obj, fmt in ((ip, image, image_format), (mp, mask, None)):
        if isinstance(obj, bytes):
            path.write_bytes(obj)
        else:
            obj.save(path, format=fmt)
    return ip, mp


def _good_pair(root: Path, stem: str, size: tuple[int, int] = (16, 12)) -> tuple[Path, Path]:
    lab = _labels(size[1], size[0])
    return _write_pair(
        root, stem, Image.fromarray(_image_for(lab)), Image.fromarray(index_to_rgb(lab))
    )


def _encoded(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def _dataset(root: Path, **kwargs: Any) -> SUIMDataset:
    kwargs.setdefault("image_size", None)
    return SUIMDataset(root, "test", **kwargs)


# ----------------------------------------------------------------------------- broken files

_PIC = Image.fromarray(_image_for(_labels(48, 64)))
BROKEN_IMAGES = {
    "zero-byte.jpg": b"",
    "truncated.jpg": _encoded(_PIC, "JPEG")[:400],
    "truncated.png": _encoded(_PIC, "PNG")[:120],
    "truncated.bmp": _encoded(_PIC, "BMP")[:200],
    "text.jpg": b"this is a text file, not an image\n",
    "html.png": b"<html><body>404 not found</body></html>",
}


@pytest.mark.parametrize("name", list(BROKEN_IMAGES))
def test_broken_image_raises_dataset_error_naming_the_file(tmp_path: Path, name: str) -> None:
    stem, ext = name.rsplit(".", 1)
    data = BROKEN_IMAGES[name]
    mask = Image.fromarray(index_to_rgb(_labels(48, 64)))
    if ext == "bmp":  # images are jpg/png: test the BMP as a mask instead
        _write_pair(tmp_path, stem, _PIC, data, mask_ext=".bmp")
    else:
        _write_pair(tmp_path, stem, data, mask, image_ext=f".{ext}")
    with pytest.raises(DatasetError, match=rf"{stem}\.{ext}.*(empty|truncated|not a readable)"):
        _dataset(tmp_path)[0]
    if ext != "bmp":
        with pytest.raises(DatasetError, match=rf"{stem}\.{ext}"):
            read_image(tmp_path / "TEST" / "images" / name)


def test_zero_byte_message_says_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty\.jpg: the file is empty \(0 bytes\)"):
        read_image(path)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg does not exist"):
        read_image(tmp_path / "nope.jpg")


def test_png_saved_under_a_jpg_name_reads_correctly(tmp_path: Path) -> None:
    lab = _labels(12, 16)
    _write_pair(
        tmp_path,
        "x",
        Image.fromarray(_image_for(lab)),
        Image.fromarray(index_to_rgb(lab)),
        image_ext=".jpg",
        image_format="PNG",
    )
    image, mask = _dataset(tmp_path).load(0)
    np.testing.assert_array_equal(image, _image_for(lab))  # lossless: PNG content
    np.testing.assert_array_equal(mask, lab)


# ----------------------------------------------------------------------------- colour modes


def _grey16() -> np.ndarray:
    return (np.arange(12 * 16, dtype=np.uint32).reshape(12, 16) * 341).astype(np.uint16)


MODES: dict[str, tuple[Image.Image, np.ndarray]] = {}
_rgb = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)
_grey = RNG.integers(0, 256, (12, 16), dtype=np.uint8)
MODES["L"] = (Image.fromarray(_grey), np.repeat(_grey[..., None], 3, -1))
_pal = Image.fromarray(_rgb).quantize(16)
MODES["P"] = (_pal, np.asarray(_pal.convert("RGB")))
_rgba = np.concatenate([_rgb, RNG.integers(0, 256, (12, 16, 1), dtype=np.uint8)], -1)
MODES["RGBA"] = (Image.fromarray(_rgba), _rgb)  # alpha dropped, colours kept
_cmyk = Image.fromarray(_rgb).convert("CMYK")
MODES["CMYK"] = (_cmyk, np.asarray(_cmyk.convert("RGB")))
MODES["I;16"] = (Image.fromarray(_grey16()), np.repeat((_grey16() // 257)[..., None], 3, -1))


@pytest.mark.parametrize("mode", list(MODES))
def test_image_modes_convert_to_rgb_by_the_documented_rule(tmp_path: Path, mode: str) -> None:
    img, expected = MODES[mode]
    fmt, ext = ("TIFF", ".tif") if mode == "CMYK" else ("PNG", ".png")
    path = tmp_path / f"img{ext}"
    img.save(path, format=fmt)
    with Image.open(path) as check:
        assert check.mode == mode  # the file really is in that mode
    got = np.asarray(read_image(path))
    np.testing.assert_array_equal(got, expected.astype(np.uint8))
    if ext == ".png":  # and the dataset reads it identically
        lab = _labels(12, 16)
        _write_pair(tmp_path / "ds", "a", img, Image.fromarray(index_to_rgb(lab)))
        np.testing.assert_array_equal(_dataset(tmp_path / "ds").load(0)[0], got)


def test_16_bit_grey_uses_the_full_range(tmp_path: Path) -> None:
    # Pillow's own convert("RGB") clips 16-bit values at 255: everything would be white.
    img = Image.fromarray(np.array([[0, 257, 32896, 65535]], np.uint16))
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == [0, 1, 128, 255]


def test_float_images_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((4, 4), np.float32)).save(path)
    with pytest.raises(DatasetError, match=r"float\.tif: 32-bit float images"):
        read_image(path)


def test_cmyk_jpeg_reads(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(_rgb).convert("CMYK").save(path, quality=95)
    out = read_image(path)
    assert out.mode == "RGB"
    assert out.size == (16, 12)


# ----------------------------------------------------------------------------- masks


def test_palette_rgba_and_noisy_masks_decode_by_the_colour_rule(tmp_path: Path) -> None:
    lab = _labels(12, 16)
    rgb = index_to_rgb(lab)
    pal = Image.fromarray(rgb).quantize(colors=8, method=Image.Quantize.FASTOCTREE)
    rgba = Image.fromarray(np.concatenate([rgb, np.full((12, 16, 1), 7, np.uint8)], -1))
    noise = RNG.integers(0, 100, rgb.shape)
    noisy = np.where(rgb == 255, 255 - noise, noise).astype(np.uint8)  # JPEG-like colours
    for name, mask in (("pal", pal), ("rgba", rgba), ("noisy", Image.fromarray(noisy))):
        path = tmp_path / f"{name}.png"
        mask.save(path)
        np.testing.assert_array_equal(read_mask_labels(path), lab, err_msg=name)
        _write_pair(tmp_path / name, "m", Image.fromarray(rgb), mask, mask_ext=".png")
        np.testing.assert_array_equal(_dataset(tmp_path / name).load(0)[1], lab, err_msg=name)


def test_real_jpeg_noisy_mask_decodes(tmp_path: Path) -> None:
    lab = np.kron(_labels(4, 4), np.ones((16, 16), np.uint8))  # 64x64, big blocks
    path = tmp_path / "mask.jpg"
    Image.fromarray(index_to_rgb(lab)).save(path, quality=90)
    got = read_mask_labels(path)
    inner = np.ones_like(lab, bool)  # JPEG ringing stays near the block edges
    for k in range(0, 64, 32):
        inner[max(k - 2, 0) : k + 2] = False
        inner[:, max(k - 2, 0) : k + 2] = False
    np.testing.assert_array_equal(got[inner], lab[inner])


@pytest.mark.parametrize("mode", ["L", "I;16", "LA"])
def test_single_channel_mask_is_a_clear_error(tmp_path: Path, mode: str) -> None:
    arr = np.zeros((12, 16), np.uint16 if mode == "I;16" else np.uint8)
    mask = Image.fromarray(arr).convert(mode) if mode == "LA" else Image.fromarray(arr)
    _write_pair(tmp_path, "g", Image.fromarray(_image_for(_labels(12, 16))), mask, mask_ext=".png")
    with pytest.raises(DatasetError, match=r"g\.png: PIL mode .* colour rule .* does not apply"):
        _dataset(tmp_path)[0]


# ----------------------------------------------------------------------------- EXIF


def _with_orientation(img: Image.Image, orientation: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encoded(img, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_keeps_image_mask_and_prediction_aligned(
    tmp_path: Path, orientation: int
) -> None:
    # What the viewer shows (upright): 64x48, quadrant labels. The camera stored the
    # pixels rotated and set the EXIF tag; the annotator drew the mask upright.
    lab = np.kron(_labels(4, 4), np.ones((12, 16), np.uint8))  # 48x64
    upright = Image.fromarray(_image_for(lab))
    undo = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,
        8: Image.Transpose.ROTATE_270,
    }
    stored = upright.transpose(undo[orientation])
    _write_pair(
        tmp_path,
        "e",
        _with_orientation(stored, orientation, "JPEG"),
        Image.fromarray(index_to_rgb(lab)),
        image_ext=".jpg",
    )
    ip = tmp_path / "TEST" / "images" / "e.jpg"
    assert read_size(ip) == (64, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no size-mismatch warning: both are 64x48 upright
        ds = _dataset(tmp_path)
    image, mask = ds.load(0)
    assert image.shape == (48, 64, 3)
    np.testing.assert_array_equal(mask, lab)
    # Aligned: each pixel's colour (JPEG-noisy) decodes to its own label, away from edges.
    from suimseg.classes import rgb_to_index

    decoded = rgb_to_index(image)
    assert (decoded == lab).mean() > 0.97
    # The predictor reads the file by the same rule, so its output is in the same frame.
    from suimseg.inference import load_image

    np.testing.assert_array_equal(np.asarray(load_image(ip)), image)


def test_exif_rotated_mask_png_is_turned_upright_too(tmp_path: Path) -> None:
    lab = _labels(12, 16)
    stored = Image.fromarray(index_to_rgb(lab)).transpose(Image.Transpose.ROTATE_90)
    path = tmp_path / "m.png"
    path.write_bytes(_with_orientation(stored, 6, "PNG"))
    np.testing.assert_array_equal(read_mask_labels(path), lab)


# ----------------------------------------------------------------------------- bombs


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR announces width x height but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [12_000, 100_000])
def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path, side: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(side, side))
    with pytest.raises(DatasetError, match=r"bomb\.png: .*(max_pixels|MAX_IMAGE_PIXELS)"):
        read_image(path)
    _write_pair(tmp_path / "ds", "b", path.read_bytes(), Image.new("RGB", (4, 4)))
    with pytest.raises(DatasetError, match=r"images/b\.png: .*(max_pixels|MAX_IMAGE_PIXELS)"):
        _dataset(tmp_path / "ds")


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    _good_pair(tmp_path, "a", size=(16, 12))
    with pytest.raises(DatasetError, match=r"a\.png: 16x12 = 192 pixels exceeds max_pixels=100"):
        _dataset(tmp_path, max_pixels=100)
    assert len(_dataset(tmp_path, max_pixels=192)) == 1
    with pytest.raises(ConfigError, match="max_pixels: expected a positive int"):
        _dataset(tmp_path, max_pixels=0)


# ----------------------------------------------------------------------------- sizes, names


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (4000, 16), (16, 4000)])
@pytest.mark.parametrize("image_size", [None, 32])
def test_tiny_and_extreme_images_through_the_dataset(
    tmp_path: Path, size: tuple[int, int], image_size: int | None
) -> None:
    w, h = size
    lab = (np.arange(w * h).reshape(h, w) % 8).astype(np.uint8)
    _write_pair(
        tmp_path, "t", Image.fromarray(index_to_rgb(lab)), Image.fromarray(index_to_rgb(lab))
    )
    for split_tf in ("eval", "train"):
        from suimseg.data import eval_transforms, train_transforms

        tf = eval_transforms(image_size) if split_tf == "eval" else train_transforms(image_size)
        image, mask = _dataset(tmp_path, image_size=image_size, transform=tf)[0]
        want = (h, w) if image_size is None else (32, 32)
        if split_tf == "eval" or image_size is not None:
            assert tuple(image.shape) == (3, *want)
            assert tuple(mask.shape) == want
        assert image.shape[1:] == mask.shape
        valid = mask[mask != 255]
        assert valid.numel() == 0 or int(valid.max()) < 8
    if image_size is None:
        np.testing.assert_array_equal(_dataset(tmp_path).load(0)[1], lab)


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (4000, 16)])
def test_tiny_and_extreme_images_through_predict(tmp_path: Path, size: tuple[int, int]) -> None:
    from suimseg.inference import Predictor

    net = torch.nn.Conv2d(3, 8, 1)
    path = tmp_path / f"p {size[0]}x{size[1]}.png"
    Image.fromarray(RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    for image_size in (None, 32):
        pred = Predictor(net, image_size=image_size).predict(path)[0]
        assert tuple(pred.labels.shape) == (size[1], size[0])


@pytest.mark.parametrize(
    ("kind", "empty", "shape"),
    [
        ("uint8 tensor, height 0", torch.zeros(3, 0, 5, dtype=torch.uint8), r"\(3, 0, 5\)"),
        ("float tensor, width 0", torch.zeros(3, 5, 0), r"\(3, 5, 0\)"),
        ("uint8 array 0x0", np.zeros((0, 0), np.uint8), r"\(3, 0, 0\)"),
        ("PIL image, width 0", Image.new("RGB", (0, 4)), r"\(3, 4, 0\)"),
    ],
)
def test_empty_images_are_a_config_error_naming_the_input(
    kind: str, empty: Any, shape: str
) -> None:
    """Before: torch's RuntimeError "shape '[3, 32, 32]' is invalid for input of size 0"."""
    from suimseg.data import eval_transforms, train_transforms
    from suimseg.inference import Predictor

    good = np.zeros((4, 4, 3), np.uint8)
    for image_size in (None, 32):
        predictor = Predictor(torch.nn.Conv2d(3, 8, 1), image_size=image_size)
        with pytest.raises(ConfigError, match=rf"inputs\[1\]: .*at least 1x1 pixel.*{shape}"):
            predictor.predict([good, empty])
    if isinstance(empty, torch.Tensor) and empty.dtype == torch.uint8:  # the dataset's path
        for transform in (eval_transforms(32), train_transforms(32)):
            with pytest.raises(ConfigError, match=rf"transform: .*at least 1x1 pixel.*{shape}"):
                transform(empty, torch.zeros(empty.shape[1:], dtype=torch.int64))


def test_names_with_spaces_and_non_ascii(tmp_path: Path) -> None:
    stems = ["f_r 12 été_", "d_r_ü 7_", "n_l_水中_"]
    for stem in stems:
        _good_pair(tmp_path, stem)
    ds = _dataset(tmp_path)
    assert sorted(ds.stems) == sorted(stems)
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds.load(i)[1], _labels(12, 16))
    bad = tmp_path / "TEST" / "images" / "f_r 12 été_.png"
    bad.write_bytes(b"")
    with pytest.raises(DatasetError, match="f_r 12 été_"):
        _dataset(tmp_path)


# ----------------------------------------------------------------------------- lenient mode


def _corrupt_mid_epoch(root: Path, n: int = 6) -> Path:
    for i in range(n):
        _good_pair(root, f"s_{i}_")
    bad = root / "TEST" / "images" / "s_2_.png"
    noise = _encoded(Image.fromarray(RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)), "PNG")
    bad.write_bytes(noise[: len(noise) // 2])  # header intact, pixel data cut
    return bad


def test_corrupt_sample_mid_epoch_is_an_error_by_default(tmp_path: Path) -> None:
    _corrupt_mid_epoch(tmp_path)
    ds = _dataset(tmp_path, image_size=16)  # the header check passes
    loader = DataLoader(ds, batch_size=2)
    with pytest.raises(DatasetError, match=r"s_2_\.png"):
        list(loader)


def test_lenient_mode_skips_with_a_warning_and_counts_across_workers(tmp_path: Path) -> None:
    _corrupt_mid_epoch(tmp_path)
    ds = _dataset(tmp_path, image_size=16, on_corrupt="skip")
    with pytest.warns(UserWarning, match=r"skipping sample 2 \(s_2_\).*s_2_\.png"):
        _, mask = ds[2]
    assert torch.equal(mask, ds[3][1])  # replaced by the next readable sample
    assert ds.skipped_samples == 1
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    assert sum(b[0].shape[0] for b in batches) == 6
    assert ds.skipped_samples == 2  # the skip inside a worker process is counted here


def test_lenient_mode_drops_files_unreadable_at_construction(tmp_path: Path) -> None:
    for i in range(3):
        _good_pair(tmp_path, f"s_{i}_")
    (tmp_path / "TEST" / "images" / "s_1_.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"left out 1 unreadable pair.*s_1_\.png"):
        ds = _dataset(tmp_path, on_corrupt="skip")
    assert ds.stems == ("s_0_", "s_2_")
    assert len(ds.unreadable_files) == 1
    with pytest.raises(ConfigError, match="on_corrupt: expected one of"):
        _dataset(tmp_path, on_corrupt="ignore")


def test_all_samples_corrupt_in_lenient_mode_is_an_error(tmp_path: Path) -> None:
    _good_pair(tmp_path, "s_0_")
    noise = _encoded(Image.fromarray(RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)), "PNG")
    (tmp_path / "TEST" / "images" / "s_0_.png").write_bytes(noise[: len(noise) // 2])
    ds = _dataset(tmp_path, on_corrupt="skip")
    with (
        pytest.warns(UserWarning, match="skipping sample 0"),
        pytest.raises(DatasetError, match="none of the 1 samples"),
    ):
        ds[0]


def test_trainer_records_skipped_samples_in_the_history(tmp_path: Path) -> None:
    from suimseg.engine import Trainer, default_callbacks

    _corrupt_mid_epoch(tmp_path / "data")
    ds = _dataset(tmp_path / "data", image_size=16, on_corrupt="skip")
    model = torch.nn.Conv2d(3, 8, 1)
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(ignore_index=255),
        torch.optim.SGD(model.parameters(), lr=0.1),
        device="cpu",
        callbacks=default_callbacks(tmp_path / "run", verbose=False, progress=False),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = trainer.fit(DataLoader(ds, batch_size=3), epochs=2)
    assert [r.skipped_samples for r in records] == [1, 1]
    assert [r["skipped_samples"] for r in read_history(tmp_path / "run")] == [1, 1]
    assert [r["skipped_samples"] for r in read_history(tmp_path / "run" / "history.csv")] == [1, 1]


@pytest.mark.parametrize("mode", MODES)
def test_predictor_reads_every_mode_like_the_dataset(tmp_path: Path, mode: str) -> None:
    from suimseg.inference import load_image

    img, _ = MODES[mode]
    fmt, ext = ("TIFF", ".tif") if mode == "CMYK" else ("PNG", ".png")
    path = tmp_path / f"img{ext}"
    img.save(path, format=fmt)
    np.testing.assert_array_equal(np.asarray(load_image(path)), np.asarray(read_image(path)))
