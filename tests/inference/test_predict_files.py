"""predict_files: masks in the SUIM palette, overlays, safe output paths."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from suimseg.classes import rgb_to_index
from suimseg.data import overlay
from suimseg.data.visualize import LEGEND_COLUMN_PX
from suimseg.errors import ConfigError, DatasetError, InputNotFoundError
from suimseg.inference import Predictor, collect_inputs, predict_files

from .conftest import PointwiseNet


def _write(path: Path, size: tuple[int, int], seed: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


@pytest.fixture
def predictor() -> Predictor:
    return Predictor(PointwiseNet(), image_size=32)


@pytest.mark.parametrize("fmt", ["bmp", "png"])
def test_masks_decode_back_to_predicted_labels(
    predictor: Predictor, tmp_path: Path, fmt: str
) -> None:
    src = tmp_path / "in" / "dive 01 é.png"
    arr = _write(src, (37, 29), 0)
    res = predict_files(predictor, [src], tmp_path / "out", fmt=fmt)  # type: ignore[arg-type]
    mask_path = tmp_path / "out" / "masks" / f"dive 01 é.{fmt}"
    assert res.written == [mask_path]
    assert res.skipped == []
    with Image.open(mask_path) as m:
        assert m.mode == "RGB"
        assert m.size == (37, 29)
        decoded = rgb_to_index(m)
    expected = predictor.predict(arr)[0].labels.numpy()
    np.testing.assert_array_equal(decoded, expected)


def test_folder_inputs_mirror_relative_paths_and_overlays(
    predictor: Predictor, tmp_path: Path
) -> None:
    root = tmp_path / "dive"
    _write(root / "a.jpg", (20, 16), 1)
    _write(root / "sub" / "b.png", (18, 22), 2)
    _write(root / ".hidden" / "c.png", (8, 8), 3)
    (root / "notes.txt").write_text("not an image")
    out = tmp_path / "preds"
    res = predict_files(predictor, [root], out, overlay=True)
    names = sorted(p.relative_to(out).as_posix() for p in res.written)
    assert names == ["masks/a.bmp", "masks/sub/b.bmp", "overlays/a.png", "overlays/sub/b.png"]
    with Image.open(out / "overlays" / "sub" / "b.png") as ov:
        assert ov.width == LEGEND_COLUMN_PX  # widened so the legend text fits
        assert ov.height > 22  # the legend strip is appended below the image
        top = np.asarray(ov.convert("RGB").crop((0, 0, 18, 22)))
    image = Image.open(root / "sub" / "b.png").convert("RGB")
    expected = overlay(image, predictor.predict(image)[0].labels, 0.5)
    np.testing.assert_array_equal(top, np.asarray(expected))


def test_existing_outputs_kept_unless_overwrite(predictor: Predictor, tmp_path: Path) -> None:
    src = tmp_path / "x.png"
    _write(src, (16, 16), 4)
    out = tmp_path / "out"
    predict_files(predictor, [src], out)
    mask = out / "masks" / "x.bmp"
    Image.new("RGB", (16, 16), (255, 255, 255)).save(mask)  # a user's edit
    with pytest.warns(UserWarning, match="outputs exist already"):
        res = predict_files(predictor, [src], out)
    assert res.skipped == [src]
    assert res.written == []
    assert rgb_to_index(Image.open(mask)).min() == 7
    # A missing overlay is still written; the existing mask is kept.
    res = predict_files(predictor, [src], out, overlay=True)
    assert res.written == [out / "overlays" / "x.png"]
    assert rgb_to_index(Image.open(mask)).min() == 7
    res = predict_files(predictor, [src], out, overwrite=True)
    assert res.written == [mask]
    expected = predictor.predict(src)[0].labels.numpy()
    np.testing.assert_array_equal(rgb_to_index(Image.open(mask)), expected)


def test_never_overwrites_inputs_or_rereads_outputs(predictor: Predictor, tmp_path: Path) -> None:
    root = tmp_path / "data"
    image = root / "masks" / "y.png"
    _write(image, (12, 12), 5)
    # Out folder = the image's grandparent: masks/y.png would overwrite the input image.
    with pytest.raises(ConfigError, match="would overwrite the input image"):
        predict_files(predictor, [image], root, fmt="png")
    assert image.is_file()
    # A folder input whose out folder is itself finds nothing new to read.
    with pytest.raises(ConfigError, match="no images found"):
        predict_files(predictor, [root / "masks"], root / "masks")
    # An out folder inside the input folder is not scanned on a second run.
    out = root / "preds"
    predict_files(predictor, [root], out, fmt="png")
    res = predict_files(predictor, [root], out, fmt="png", overwrite=True)
    assert [p.relative_to(out).as_posix() for p in res.written] == ["masks/masks/y.png"]


def test_output_collisions_and_bad_arguments(predictor: Predictor, tmp_path: Path) -> None:
    _write(tmp_path / "a" / "x.png", (8, 8), 6)
    _write(tmp_path / "b" / "x.jpg", (8, 8), 7)
    with pytest.raises(ConfigError, match="would write the same output"):
        predict_files(predictor, [tmp_path / "a" / "x.png", tmp_path / "b" / "x.jpg"], tmp_path)
    with pytest.raises(ConfigError, match="fmt: expected"):
        predict_files(predictor, [tmp_path / "a"], tmp_path / "o", fmt="jpg")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="alpha"):
        predict_files(predictor, [tmp_path / "a"], tmp_path / "o", alpha=2.0)
    with pytest.raises(InputNotFoundError, match="does not exist"):
        predict_files(predictor, [tmp_path / "nope"], tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images found"):
        collect_inputs([tmp_path / "empty"])
    assert not (tmp_path / "o").exists()


def test_labels_roundtrip_all_classes(tmp_path: Path) -> None:
    """Every class id survives the palette round trip of a written mask."""

    class Stripes(PointwiseNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = x.shape[-1]
            cls = (torch.arange(w) * 8 // w).view(1, 1, 1, w).expand(x.shape[0], 1, x.shape[2], w)
            return torch.nn.functional.one_hot(cls[:, 0], 8).permute(0, 3, 1, 2).float() * 10

    src = tmp_path / "s.png"
    _write(src, (16, 4), 8)
    predict_files(Predictor(Stripes(), image_size=None), [src], tmp_path / "o")
    decoded = rgb_to_index(Image.open(tmp_path / "o" / "masks" / "s.bmp"))
    assert sorted(np.unique(decoded).tolist()) == list(range(8))


# --------------------------------------------------------------------------- pipelining


def _folder(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = root / ("sub" if i % 2 else ".") / f"img{i}.{'jpg' if i % 3 else 'png'}"
        _write(path, (21 + 3 * i, 17 + 2 * i), 10 + i)
        paths.append(path)
    return paths


def _tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("fmt", "overlay_too"), [("bmp", False), ("png", True)])
def test_pipelined_outputs_are_byte_identical_to_the_plain_loop(
    tmp_path: Path, fmt: str, overlay_too: bool
) -> None:
    from .conftest import tiny_unet

    predictor = Predictor(tiny_unet(), image_size=32)  # a real network, batch-size sensitive
    _folder(tmp_path / "in", 7)
    results = {}
    for workers in (0, 1, 3):
        out = tmp_path / f"out{workers}"
        kwargs = {"fmt": fmt, "overlay": overlay_too, "workers": workers}
        res = predict_files(predictor, [tmp_path / "in"], out, **kwargs)  # type: ignore[arg-type]
        results[workers] = ([p.relative_to(out) for p in res.written], _tree(out))
    assert len(results[0][0]) == 7 * (2 if overlay_too else 1)
    assert results[1] == results[0]
    assert results[3] == results[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_input_mid_folder_stops_like_the_plain_loop(
    predictor: Predictor, tmp_path: Path, workers: int
) -> None:
    paths = _folder(tmp_path / "in", 6)
    bad = tmp_path / "in" / "img2.jpg"
    assert bad in paths
    bad.write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as info:
        predict_files(predictor, [tmp_path / "in"], out, workers=workers)
    assert str(bad) in str(info.value)
    # collect_inputs order: img0, img2, img4 (top level), then sub/img1, sub/img3, sub/img5.
    assert sorted(_tree(out)) == ["masks/img0.bmp"]
    assert _errors(predictor, tmp_path, 0) == _errors(predictor, tmp_path, 2)


def _errors(predictor: Predictor, tmp_path: Path, workers: int) -> tuple[type, str, list[str]]:
    out = tmp_path / f"cmp{workers}"
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is what is compared
        predict_files(predictor, [tmp_path / "in"], out, workers=workers, overwrite=True)
    return type(info.value), str(info.value), sorted(_tree(out))


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unwritable_output_stops_like_the_plain_loop(
    predictor: Predictor, tmp_path: Path, workers: int
) -> None:
    _folder(tmp_path / "in", 6)
    out = tmp_path / "out"
    blocker = out / "masks" / "img2.bmp"
    blocker.mkdir(parents=True)  # a folder where the mask should go
    with pytest.raises(OSError, match=r"img2\.bmp") as info:
        predict_files(predictor, [tmp_path / "in"], out, workers=workers, overwrite=True)
    assert not isinstance(info.value, DatasetError)
    assert sorted(_tree(out)) == ["masks/img0.bmp"]  # nothing after the failing output
    assert not [t for t in threading.enumerate() if t.name.startswith("suimseg-")]


def test_pipelined_error_matches_the_plain_loop_for_an_unwritable_output(
    predictor: Predictor, tmp_path: Path
) -> None:
    _folder(tmp_path / "in", 5)
    for workers in (0, 2):
        (tmp_path / f"cmp{workers}" / "masks" / "img4.bmp").mkdir(parents=True)
    plain, piped = _errors(predictor, tmp_path, 0), _errors(predictor, tmp_path, 2)
    assert plain[0] is piped[0]
    assert plain[1].replace("cmp0", "cmpN") == piped[1].replace("cmp2", "cmpN")
    assert plain[2] == piped[2] == ["masks/img0.bmp", "masks/img2.bmp"]


class _Interrupting(PointwiseNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calls == 2:
            raise KeyboardInterrupt
        return super().forward(x)


def test_interrupt_stops_the_threads_and_leaves_no_partial_files(tmp_path: Path) -> None:
    _folder(tmp_path / "in", 6)
    out = tmp_path / "out"
    predictor = Predictor(_Interrupting(), image_size=32)
    with pytest.raises(KeyboardInterrupt):
        predict_files(predictor, [tmp_path / "in"], out, workers=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("suimseg-")]
    assert set(_tree(out)) <= {"masks/img0.bmp", "masks/img2.bmp"}  # no temporaries
    assert predictor.models[0].training  # eval_context restored the mode


def test_bad_workers(predictor: Predictor, tmp_path: Path) -> None:
    _write(tmp_path / "a.png", (8, 8), 0)
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="workers: expected an int >= 0"):
            predict_files(predictor, [tmp_path / "a.png"], tmp_path / "o", workers=bad)  # type: ignore[arg-type]


def test_mask_image_of_uint8_labels_equals_the_palette_encoding() -> None:
    from suimseg.classes import index_to_rgb
    from suimseg.inference.files import _mask_image

    ids = torch.arange(256, dtype=torch.uint8).reshape(16, 16)  # ids >= 8: ignore colour
    image = _mask_image(ids)
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), index_to_rgb(ids.long()))
    assert np.array_equal(np.asarray(_mask_image(ids.long())), index_to_rgb(ids.long()))
