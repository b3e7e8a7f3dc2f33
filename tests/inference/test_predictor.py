"""Predictor: sizes, TTA, ensembles, modes, inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from suimseg.data import SUIMDataset, eval_transforms, make_synthetic_suim
from suimseg.errors import ConfigError, InputNotFoundError
from suimseg.inference import (
    TTA,
    Prediction,
    Predictor,
    Tiling,
    load_image,
    predict_files,
    to_float_image,
)

from .conftest import PointwiseNet, tiny_unet


@pytest.mark.parametrize(("h", "w"), [(33, 47), (64, 64), (17, 90)])
def test_predictions_come_back_at_original_size(unet: nn.Module, h: int, w: int) -> None:
    pred = Predictor(unet, image_size=32).predict(
        np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8),
        return_probs=True,
    )[0]
    assert isinstance(pred, Prediction)
    assert tuple(pred.labels.shape) == (h, w)
    assert pred.labels.dtype == torch.int64
    assert pred.probs is not None
    assert tuple(pred.probs.shape) == (8, h, w)
    torch.testing.assert_close(pred.probs.sum(0), torch.ones(h, w))
    assert torch.equal(pred.probs.argmax(0), pred.labels)


def test_mixed_inputs_and_batched_tensor(unet: nn.Module, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    path = tmp_path / "ünïcode name.png"
    Image.fromarray(arr).save(path)
    predictor = Predictor(unet, image_size=32, batch_size=2)
    inputs = [path, Image.fromarray(arr), arr, torch.from_numpy(arr).permute(2, 0, 1)]
    preds = predictor.predict(inputs)
    for p in preds[1:]:
        assert torch.equal(p.labels, preds[0].labels)
    batch = torch.rand(3, 3, 21, 35)
    out = predictor.predict(batch)
    assert len(out) == 3
    assert all(tuple(p.labels.shape) == (21, 35) for p in out)
    # Same images one at a time give the same results as in a batch.
    single = predictor.predict(batch[1])[0]
    torch.testing.assert_close(single.labels, out[1].labels)


def test_preprocessing_matches_training_normalisation() -> None:
    """The model sees (x / 255 - mean) / std, resized to image_size."""
    seen: list[torch.Tensor] = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 8, *x.shape[-2:])

    img = np.full((10, 12, 3), 255, np.uint8)
    Predictor(Spy(), image_size=(8, 6)).predict(img)
    x = seen[0]
    assert tuple(x.shape) == (1, 3, 8, 6)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[0, :, 0, 0], expected)


def test_tta_with_flip_equivariant_model_equals_plain(pointwise: PointwiseNet) -> None:
    x = torch.rand(2, 3, 24, 31)
    plain = Predictor(pointwise, image_size=None).predict_proba(x)
    for tta in (TTA(hflip=True), TTA(vflip=True), TTA(hflip=True, vflip=True)):
        got = Predictor(pointwise, image_size=None, tta=tta).predict_proba(x)
        for a, b in zip(plain, got, strict=True):
            torch.testing.assert_close(a, b)


def test_multiscale_tta_on_constant_image_equals_plain(pointwise: PointwiseNet) -> None:
    img = np.full((30, 22, 3), (10, 200, 90), np.uint8)
    plain = Predictor(pointwise, image_size=32).predict(img, return_probs=True)[0]
    tta = Predictor(pointwise, image_size=32, tta=TTA.standard()).predict(img, return_probs=True)[0]
    assert tta.probs is not None
    assert plain.probs is not None
    torch.testing.assert_close(tta.probs, plain.probs)
    assert torch.equal(tta.labels, plain.labels)


def test_tta_runs_every_view_at_the_right_sizes() -> None:
    net = PointwiseNet()
    Predictor(net, image_size=40, tta=TTA.standard()).predict(np.zeros((9, 9, 3), np.uint8))
    assert net.calls == 9
    assert sorted({s[-1] for s in net.input_shapes}) == [30, 40, 50]


def test_tta_changes_a_non_equivariant_model(unet: nn.Module) -> None:
    x = torch.rand(1, 3, 40, 40)
    a = Predictor(unet, image_size=None).predict_proba(x)[0]
    b = Predictor(unet, image_size=None, tta=TTA(hflip=True)).predict_proba(x)[0]
    assert not torch.allclose(a, b)


def test_ensemble_of_a_model_with_itself_equals_the_model(unet: nn.Module) -> None:
    x = torch.rand(2, 3, 37, 29)
    alone = Predictor(unet, image_size=32).predict(x, return_probs=True)
    twice = Predictor([unet, unet], image_size=32).predict(x, return_probs=True)
    for a, b in zip(alone, twice, strict=True):
        assert a.probs is not None
        assert b.probs is not None
        torch.testing.assert_close(a.probs, b.probs)
        assert torch.equal(a.labels, b.labels)


def test_ensemble_weights_average_probabilities() -> None:
    m1, m2 = PointwiseNet(seed=1), PointwiseNet(seed=2)
    x = torch.rand(1, 3, 8, 8)
    p1 = Predictor(m1, image_size=None).predict_proba(x)[0]
    p2 = Predictor(m2, image_size=None).predict_proba(x)[0]
    mixed = Predictor([m1, m2], image_size=None, weights=[3, 1]).predict_proba(x)[0]
    torch.testing.assert_close(mixed, 0.75 * p1 + 0.25 * p2)


def test_ensemble_of_v3_and_deeplab_style_dict_output() -> None:
    class DictNet(PointwiseNet):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
            return {"out": self.conv(x)}

    x = torch.rand(1, 3, 16, 16)
    a = Predictor(PointwiseNet(), image_size=None).predict_proba(x)[0]
    b = Predictor(DictNet(), image_size=None).predict_proba(x)[0]
    torch.testing.assert_close(a, b)


def test_models_restored_to_their_previous_mode() -> None:
    net = tiny_unet()
    net.train()
    net.encoder.eval()  # a mixed state must survive too
    before = [m.training for m in net.modules()]
    Predictor(net, image_size=32).predict(torch.rand(1, 3, 32, 32))
    assert [m.training for m in net.modules()] == before
    net.eval()
    Predictor(net, image_size=32).predict(torch.rand(1, 3, 32, 32))
    assert not any(m.training for m in net.modules())


def test_runs_in_eval_mode_under_inference_mode() -> None:
    flags: list[tuple[bool, bool]] = []

    class Probe(PointwiseNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flags.append((self.training, torch.is_inference_mode_enabled()))
            return super().forward(x)

    net = Probe().train()
    Predictor(net, image_size=None).predict(torch.rand(1, 3, 4, 4))
    assert flags == [(False, True)]
    assert net.training


def test_output_sizes(unet: nn.Module) -> None:
    preds = Predictor(unet, image_size=32).predict(
        [torch.rand(3, 20, 30), torch.rand(3, 25, 25)], output_sizes=[(10, 15), (50, 40)]
    )
    assert [tuple(p.labels.shape) for p in preds] == [(10, 15), (50, 40)]
    with pytest.raises(ConfigError, match="output_sizes: expected one"):
        Predictor(unet, image_size=32).predict(torch.rand(3, 8, 8), output_sizes=[(4, 4)] * 2)


def test_amp_bf16_close_to_float32(pointwise: PointwiseNet) -> None:
    x = torch.rand(1, 3, 16, 16)
    a = Predictor(pointwise, image_size=None).predict_proba(x)[0]
    b = Predictor(pointwise, image_size=None, amp="bf16").predict_proba(x)[0]
    assert b.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=0.05, rtol=0)


def test_exif_orientation_applied_to_files(tmp_path: Path) -> None:
    img = Image.new("RGB", (6, 4), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif)
    assert load_image(path).size == (4, 6)
    assert load_image(path, exif_transpose=False).size == (6, 4)
    pred = Predictor(PointwiseNet(), image_size=None).predict(path)[0]
    assert tuple(pred.labels.shape) == (6, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 0}, "image_size"),
        ({"tta": "yes"}, "tta: expected"),
        ({"amp": "fp8"}, "amp: expected"),
        ({"weights": [1.0, 2.0]}, "weights: expected 1"),
        ({"weights": [-1.0]}, "weights: expected 1"),
        ({"tiling": True, "image_size": None}, "tiling: needs a window"),
        ({"tiling": "on"}, "tiling: expected"),
        ({"batch_size": 0}, "batch_size"),
        ({"std": (1.0, 0.0, 1.0)}, "mean/std"),
    ],
)
def test_bad_arguments(pointwise: PointwiseNet, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Predictor(pointwise, **kwargs)  # type: ignore[arg-type]


def test_bad_models_and_configs() -> None:
    with pytest.raises(ConfigError, match=r"models: expected an nn\.Module"):
        Predictor([])
    with pytest.raises(ConfigError, match=r"models: expected an nn\.Module"):
        Predictor("net")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="scales: expected"):
        TTA(scales=())
    with pytest.raises(ConfigError, match="scales: expected"):
        TTA(scales=(1.0, -0.5))
    with pytest.raises(ConfigError, match="overlap: expected"):
        Tiling(overlap=1.0)
    with pytest.raises(ConfigError, match="weighting: expected"):
        Tiling(weighting="cosine")  # type: ignore[arg-type]


def test_ensemble_class_count_mismatch() -> None:
    p = Predictor([PointwiseNet(8), PointwiseNet(5)], image_size=None)
    with pytest.raises(ConfigError, match="same number of classes"):
        p.predict(torch.rand(1, 3, 4, 4))


def test_bad_model_output() -> None:
    class Flat(PointwiseNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).flatten(1)

    with pytest.raises(ConfigError, match=r"expected logits of shape \(N, C, H, W\)"):
        Predictor(Flat(), image_size=None).predict(torch.rand(1, 3, 4, 4))


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 4, 4), np.uint8), r"shape \(H, W, 3\)"),
        (np.zeros((4, 4, 3), np.int32), "dtype"),
        (np.full((4, 4, 3), 2.0, np.float32), r"values in \[0, 1\]"),
        (torch.full((3, 4, 4), -1.5), "denormalised"),
        (torch.zeros(2, 4, 4), r"shape \(3, H, W\)"),
        (torch.zeros(3, 4, 4, dtype=torch.bool), "dtype"),
        (42, "expected an image"),
    ],
)
def test_bad_images(pointwise: PointwiseNet, image: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Predictor(pointwise, image_size=None).predict(image)  # type: ignore[arg-type]


def test_bad_files(pointwise: PointwiseNet, tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        Predictor(pointwise).predict(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot read image file .*bad\.jpg"):
        Predictor(pointwise).predict(bad)
    with pytest.raises(ConfigError, match="at least one image"):
        Predictor(pointwise).predict([])


def test_to_float_image_grayscale_and_float() -> None:
    g = to_float_image(np.full((3, 5), 255, np.uint8))
    assert tuple(g.shape) == (3, 3, 5)
    assert float(g.min()) == 1.0
    f = to_float_image(np.full((3, 5, 3), 0.5, np.float64))
    assert f.dtype == torch.float32
    assert float(f.max()) == 0.5


def test_repr_mentions_settings(pointwise: PointwiseNet) -> None:
    text = repr(Predictor([pointwise, pointwise], tta=True))
    assert "models=2" in text
    assert "scales=(0.75, 1.0, 1.25)" in text


@pytest.mark.slow
def test_ensemble_of_v3_and_deeplabv3(unet: nn.Module) -> None:
    from suimseg.models import DeepLabV3ResNet50

    deeplab = DeepLabV3ResNet50(num_classes=8).train()
    x = torch.rand(2, 3, 41, 53)
    preds = Predictor([unet, deeplab], image_size=64, weights=[2, 1], tta=TTA(hflip=True)).predict(
        x, return_probs=True
    )
    assert [tuple(p.labels.shape) for p in preds] == [(41, 53), (41, 53)]
    assert deeplab.training
    p0 = Predictor(unet, image_size=64, tta=TTA(hflip=True)).predict_proba(x)
    p1 = Predictor(deeplab, image_size=64, tta=TTA(hflip=True)).predict_proba(x)
    for got, a, b in zip(preds, p0, p1, strict=True):
        assert got.probs is not None
        torch.testing.assert_close(got.probs, (2 * a + b) / 3)


class _InputSpy(nn.Module):
    """Records the tensor it is fed; predicts class 0 everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return torch.zeros(x.shape[0], 8, *x.shape[-2:])


def _suim_with(tmp_path: Path, fmt: str) -> Path:
    """A synthetic SUIM copy (300x220 images) whose test images are saved as ``fmt``."""
    root = make_synthetic_suim(tmp_path / "suim", n_train_val=2, n_test=2, size=(300, 220))
    if fmt == "PNG":
        for jpg in sorted((root / "TEST" / "images").glob("*.jpg")):
            Image.open(jpg).save(jpg.with_suffix(".png"))
            jpg.unlink()
    return root


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("size", [48, (40, 72)])
def test_predictor_feeds_the_model_what_the_dataset_yields(
    tmp_path: Path, fmt: str, size: int | tuple[int, int]
) -> None:
    # Issue: Predictor decoded at full size and resized in float after normalising;
    # training decodes JPEGs at reduced scale and resizes in uint8.
    root = _suim_with(tmp_path, fmt)
    ds = SUIMDataset(root, "test", image_size=size, transform=eval_transforms(size))
    path = ds.image_paths[0]
    assert path.suffix == (".jpg" if fmt == "JPEG" else ".png")
    expected, _ = ds[0]
    spy = _InputSpy()
    pred = Predictor(spy, image_size=size).predict(path)[0]
    assert pred.labels.shape == (220, 300)  # still at the file's own size
    torch.testing.assert_close(spy.seen[0][0], expected, rtol=0, atol=0)
    # predict_files hands the path over: the same tensor again
    spy.seen.clear()
    predict_files(Predictor(spy, image_size=size), [path], tmp_path / "out", overlay=False)
    torch.testing.assert_close(spy.seen[0][0], expected, rtol=0, atol=0)


def test_in_memory_uint8_image_is_resized_in_uint8_like_the_dataset(tmp_path: Path) -> None:
    root = _suim_with(tmp_path, "PNG")
    ds = SUIMDataset(root, "test", image_size=40, transform=eval_transforms(40))
    expected, _ = ds[1]
    spy = _InputSpy()
    arr = np.asarray(Image.open(ds.image_paths[1]))
    Predictor(spy, image_size=40).predict([arr, Image.open(ds.image_paths[1])])
    torch.testing.assert_close(spy.seen[0][0], expected, rtol=0, atol=0)
    torch.testing.assert_close(spy.seen[0][1], expected, rtol=0, atol=0)


def test_native_and_tiled_paths_decode_files_at_full_size(tmp_path: Path) -> None:
    root = _suim_with(tmp_path, "JPEG")
    path = sorted((root / "TEST" / "images").glob("*.jpg"))[0]
    full = eval_transforms(None)(load_image(path), np.zeros((220, 300), np.uint8))[0]
    spy = _InputSpy()
    Predictor(spy, image_size=None).predict(path)
    torch.testing.assert_close(spy.seen[0][0], full, rtol=0, atol=0)
    spy.seen.clear()
    Predictor(spy, image_size=64, tiling=Tiling(overlap=0.0)).predict(path)
    assert all(x.shape[-2:] == (64, 64) for x in spy.seen)
    torch.testing.assert_close(spy.seen[0][0], full[:, :64, :64], rtol=0, atol=0)
