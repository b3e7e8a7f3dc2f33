"""The predictor's output stage: large upsampled outputs reduced to labels in strips.

The strip path must equal the one-pass path (resize the whole ``(C, H, W)`` frame, then
``argmax``) bit for bit; ``_STRIP_BYTES`` is lowered so tiny images take it, and raised
above any image to get the one-pass path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import suimseg.inference.predictor as predictor_module
from suimseg.errors import ConfigError
from suimseg.inference import Predictor, Tiling

from .conftest import PointwiseNet

ONE_PASS = 2**62


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _predict_both(
    monkeypatch: pytest.MonkeyPatch, predictor: Predictor, image: np.ndarray, **kwargs: object
) -> tuple[list[Tensor], list[Tensor]]:
    out = []
    for limit in (1, ONE_PASS):
        monkeypatch.setattr(predictor_module, "_STRIP_BYTES", limit)
        pred = predictor.predict(image, return_probs=True, **kwargs)[0]  # type: ignore[arg-type]
        assert pred.probs is not None
        out.append([pred.labels, pred.probs])
    return out[0], out[1]


@pytest.mark.parametrize(
    ("image_hw", "model_size", "num_classes", "strips"),
    [
        ((150, 200), (32, 32), 8, True),  # upsampling by non-integer ratios (4.6875, 6.25)
        ((97, 301), (24, 24), 8, True),  # odd sizes, wide: several strips, a short last one
        ((301, 120), (20, 28), 5, True),  # tall, non-square model input, 5 classes
        ((140, 160), (64, 64), 1, True),  # one channel
        ((130, 130), (32, 32), 21, True),  # many classes
        ((200, 150), (32, 32), 3, False),  # 3 channels: ATen picks another kernel
        ((301, 97), (20, 28), 8, False),  # (C, 20, 97) below ATen's 128-side threshold
        ((20, 300), (32, 32), 8, False),  # height down, width up: antialias
        ((24, 28), (32, 32), 8, False),  # downsampling: antialias
    ],
)
def test_strips_equal_the_one_pass_resize(
    monkeypatch: pytest.MonkeyPatch,
    image_hw: tuple[int, int],
    model_size: tuple[int, int],
    num_classes: int,
    strips: bool,
) -> None:
    model_probs = torch.empty(num_classes, *model_size)
    assert predictor_module._strips_exact(model_probs, image_hw) is strips
    predictor = Predictor(PointwiseNet(num_classes=num_classes), image_size=model_size)
    (labels, probs), (ref_labels, ref_probs) = _predict_both(
        monkeypatch, predictor, _image(*image_hw, seed=sum(image_hw))
    )
    assert tuple(labels.shape) == image_hw
    assert labels.dtype == torch.int64
    assert torch.equal(labels, ref_labels)
    assert torch.equal(probs, ref_probs)  # bit for bit, not just close


def test_strips_equal_the_one_pass_resize_with_output_sizes_and_no_resize(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # image_size=None: the model runs at the native size, output_sizes upsamples from it.
    predictor = Predictor(PointwiseNet(), image_size=None)
    image = _image(33, 47, 1)
    for size in [(33, 47), (211, 150), (64, 400)]:
        (labels, probs), (ref_labels, ref_probs) = _predict_both(
            monkeypatch, predictor, image, output_sizes=[size]
        )
        assert tuple(labels.shape) == size
        assert torch.equal(labels, ref_labels)
        assert torch.equal(probs, ref_probs)


def test_tiling_unchanged_by_the_strip_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = Predictor(PointwiseNet(), image_size=32, tiling=Tiling(overlap=0.5))
    (labels, probs), (ref_labels, ref_probs) = _predict_both(
        monkeypatch, predictor, _image(70, 90, 2)
    )
    assert torch.equal(labels, ref_labels)
    assert torch.equal(probs, ref_probs)


def test_labels_only_never_hold_the_native_size_class_map(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without return_probs no (C, H, W) float tensor at the output size is created."""
    height, width, classes = 180, 700, 8
    monkeypatch.setattr(predictor_module, "_STRIP_BYTES", 64 * 1024)
    shapes: list[tuple[int, ...]] = []
    interpolate = F.interpolate

    def recording(x: Tensor, *args: object, **kwargs: object) -> Tensor:
        out = interpolate(x, *args, **kwargs)  # type: ignore[arg-type]
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(F, "interpolate", recording)
    predictor = Predictor(PointwiseNet(num_classes=classes), image_size=32)
    labels = predictor.predict(_image(height, width, 3))[0].labels
    assert tuple(labels.shape) == (height, width)
    assert shapes, "the output stage did not resize"
    largest = max(int(np.prod(s)) for s in shapes)
    assert largest <= classes * height * 129  # a strip of columns (129 wide at most)
    assert largest < classes * height * width // 4
    monkeypatch.setattr(predictor_module, "_STRIP_BYTES", ONE_PASS)
    shapes.clear()
    ref = predictor.predict(_image(height, width, 3))[0].labels
    assert (1, classes, height, width) in shapes  # the one-pass path does hold it
    assert torch.equal(labels, ref)


@pytest.mark.parametrize("strip_limit", [64 * 1024, ONE_PASS])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_labels_dtype_gives_the_same_ids_in_a_smaller_map(
    monkeypatch: pytest.MonkeyPatch, strip_limit: int, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(predictor_module, "_STRIP_BYTES", strip_limit)
    predictor = Predictor(PointwiseNet(num_classes=8), image_size=32)
    blocks = np.random.default_rng(4).integers(0, 256, (6, 20, 3), dtype=np.uint8)
    image = np.kron(blocks, np.ones((30, 35, 1), np.uint8))  # 180x700, 120 flat colours
    ref = predictor.predict(image)[0].labels
    small = predictor.predict(image, labels_dtype=dtype)[0].labels
    assert ref.dtype == torch.int64
    assert small.dtype == dtype
    assert len(ref.unique()) >= 6  # most ids occur, so a wrong cast would show
    assert torch.equal(small.long(), ref)


def test_labels_dtype_strip_path_allocates_no_int64_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """With uint8 labels no (H, W) int64 map is created (only strips of argmax output)."""
    height, width = 180, 700
    monkeypatch.setattr(predictor_module, "_STRIP_BYTES", 64 * 1024)
    sizes: list[int] = []
    argmax = Tensor.argmax

    def recording(self: Tensor, *args: object, **kwargs: object) -> Tensor:
        out = argmax(self, *args, **kwargs)  # type: ignore[arg-type]
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(Tensor, "argmax", recording)
    predictor = Predictor(PointwiseNet(num_classes=8), image_size=32)
    labels = predictor.predict(_image(height, width, 5), labels_dtype=torch.uint8)[0].labels
    assert labels.dtype == torch.uint8
    assert tuple(labels.shape) == (height, width)
    assert sizes
    assert max(sizes) <= height * 129


@pytest.mark.parametrize("bad", [torch.float32, torch.bool, "uint8", None, torch.complex64])
def test_labels_dtype_must_be_an_integer_dtype(bad: object) -> None:
    predictor = Predictor(PointwiseNet(), image_size=32)
    with pytest.raises(ConfigError, match=r"labels_dtype: expected one of torch\.uint8.*got"):
        predictor.predict(_image(40, 40, 0), labels_dtype=bad)  # type: ignore[arg-type]


def test_labels_dtype_too_small_for_the_classes_is_refused() -> None:
    predictor = Predictor(PointwiseNet(num_classes=300), image_size=32)
    with pytest.raises(ConfigError, match=r"labels_dtype: torch\.uint8 cannot hold .* 300-class"):
        predictor.predict(_image(40, 40, 0), labels_dtype=torch.uint8)
    labels = predictor.predict(_image(40, 40, 0), labels_dtype=torch.int16)[0].labels
    assert labels.dtype == torch.int16
    assert int(labels.max()) < 300
