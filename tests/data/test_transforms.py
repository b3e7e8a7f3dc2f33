"""Tests for the joint image + mask transforms (suimseg.data.transforms)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode

from suimseg.classes import IGNORE_INDEX
from suimseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    denormalize,
    eval_transforms,
    normalize_size,
    train_transforms,
)
from suimseg.errors import ConfigError

# Image value that encodes each label (distinct from the fill value 0).
CODES = np.array([20, 45, 70, 95, 120, 145, 170, 195], dtype=np.uint8)


def _label_encoded_pair(h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A random blocky label map and an image whose pixels encode their label."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 8, (h // 4, w // 4))
    labels = np.kron(coarse, np.ones((4, 4), dtype=np.int64)).astype(np.uint8)
    labels[:, : w // 3] = np.arange(w // 3) % 8  # fine stripes too: edge pixels matter
    image = np.repeat(CODES[labels][..., None], 3, axis=2)
    return image, labels


def test_eval_output_shapes_and_dtypes() -> None:
    image, labels = _label_encoded_pair()
    out_img, out_mask = eval_transforms(32)(image, labels)
    assert out_img.shape == (3, 32, 32)
    assert out_img.dtype == torch.float32
    assert out_mask.shape == (32, 32)
    assert out_mask.dtype == torch.int64
    assert set(out_mask.unique().tolist()) <= set(range(8))


@pytest.mark.parametrize(("size", "expected"), [((24, 40), (24, 40)), (None, (40, 48))])
def test_size_tuple_and_native(size: tuple[int, int] | None, expected: tuple[int, int]) -> None:
    image, labels = _label_encoded_pair()
    out_img, out_mask = eval_transforms(size)(image, labels)
    assert tuple(out_img.shape[-2:]) == expected
    assert tuple(out_mask.shape) == expected


def test_eval_normalises_with_imagenet_statistics() -> None:
    image = np.full((8, 8, 3), 255, np.uint8)
    out, _ = eval_transforms(None)(image, np.zeros((8, 8), np.uint8))
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(out[:, 0, 0], torch.tensor(expected))
    np.testing.assert_array_equal(denormalize(out).permute(1, 2, 0).numpy(), image)


def test_native_size_mask_values_unchanged() -> None:
    image, labels = _label_encoded_pair()
    _, out_mask = eval_transforms(None)(image, labels)
    np.testing.assert_array_equal(out_mask.numpy(), labels)


def test_image_and_mask_stay_aligned_under_every_random_transform() -> None:
    """With nearest interpolation, every pixel's image code must match its label."""
    image, labels = _label_encoded_pair()
    t = train_transforms(
        (36, 44),
        affine_p=1.0,
        hflip_p=0.5,
        vflip_p=0.5,
        color_p=0.0,
        interpolation=InterpolationMode.NEAREST,
    )
    torch.manual_seed(0)
    saw_ignore = False
    lut = torch.full((256,), -1, dtype=torch.int64)
    lut[torch.from_numpy(CODES).long()] = torch.arange(8)
    for _ in range(60):
        out_img, out_mask = t(image, labels)
        px = denormalize(out_img)
        assert torch.equal(px[0], px[1])
        assert torch.equal(px[0], px[2])
        decoded = lut[px[0].long()]
        valid = out_mask != IGNORE_INDEX
        assert torch.equal(decoded[valid], out_mask[valid])
        # Pixels brought in from outside the image: ignore label, image fill 0.
        assert torch.all(px[0][~valid] == 0)
        saw_ignore |= bool((~valid).any())
    assert saw_ignore, "rotations up to 45 degrees should uncover some pixels"


def test_bilinear_default_keeps_labels_aligned_away_from_edges() -> None:
    image = np.zeros((48, 48, 3), np.uint8)
    labels = np.zeros((48, 48), np.uint8)
    labels[12:36, 12:36] = 6
    image[12:36, 12:36] = 200
    t = train_transforms(48, color_p=0.0, affine_p=1.0)
    torch.manual_seed(1)
    for _ in range(20):
        out_img, out_mask = t(image, labels)
        px = denormalize(out_img)[0].long()
        assert torch.all(px[out_mask == 6] > 60)  # blended edges stay on the object's side
        assert (px[out_mask == 0] < 140).float().mean() > 0.97


def test_flips_move_image_and_mask_together() -> None:
    image, labels = _label_encoded_pair()
    t = train_transforms(None, hflip_p=1.0, vflip_p=1.0, affine_p=0.0, color_p=0.0)
    out_img, out_mask = t(image, labels)
    np.testing.assert_array_equal(out_mask.numpy(), labels[::-1, ::-1])
    np.testing.assert_array_equal(denormalize(out_img)[0].numpy(), image[::-1, ::-1, 0])


def test_colour_step_changes_only_the_image() -> None:
    image, labels = _label_encoded_pair()
    t = train_transforms(None, hflip_p=0, vflip_p=0, affine_p=0, color_p=1.0)
    torch.manual_seed(0)
    changed = 0
    for _ in range(10):
        out_img, out_mask = t(image, labels)
        np.testing.assert_array_equal(out_mask.numpy(), labels)
        changed += int(not np.array_equal(denormalize(out_img)[0].numpy(), image[..., 0]))
    assert changed >= 8


def test_augment_false_is_eval_pipeline() -> None:
    image, labels = _label_encoded_pair()
    a = train_transforms(32, augment=False)(image, labels)
    b = eval_transforms(32)(image, labels)
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])


def test_transforms_pickle_and_accept_pil_and_tensors() -> None:
    from PIL import Image

    image, labels = _label_encoded_pair()
    t = pickle.loads(pickle.dumps(train_transforms(32)))
    out_img, out_mask = t(Image.fromarray(image), torch.from_numpy(labels))
    assert out_img.shape == (3, 32, 32)
    assert out_mask.dtype == torch.int64
    chw = torch.from_numpy(image).permute(2, 0, 1)
    a, _ = eval_transforms(None)(chw, labels)
    b, _ = eval_transforms(None)(image, labels)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hflip_p": 1.5}, "hflip_p"),
        ({"color_p": -0.1}, "color_p"),
        ({"blur_kernel": 4}, "blur_kernel"),
        ({"scale_limit": (1.2, 1.1)}, "scale_limit"),
        ({"shift_limit": 2.0}, "shift_limit"),
        ({"rotate_limit": -5.0}, "rotate_limit"),
        ({"ignore_index": 300}, "ignore_index"),
        # The rest of DeviceAugment's checks (one table): ConfigError, not torchvision's
        # bare ValueError, and image_fill was not checked at all.
        ({"image_fill": 300}, r"image_fill: expected a value in \[0, 255\]"),
        ({"brightness": -0.1}, "brightness: expected a jitter strength >= 0"),
        ({"hue": 0.6}, r"hue: expected a value in \[0, 0.5\]"),
        ({"blur_sigma": (2.0, 1.0)}, "blur_sigma: expected"),
        ({"size": 0}, "size"),
        ({"size": (10, 10, 3)}, "size"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        train_transforms(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("image", "mask", "match"),
    [
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9), np.uint8), "sizes differ"),
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), "uint8"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32), "integer mask"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 1), np.uint8), r"\(H, W\)"),
        ("image.jpg", np.zeros((8, 8), np.uint8), "PIL image"),
    ],
)
def test_bad_inputs_raise(image: object, mask: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        eval_transforms(8)(image, mask)


def test_normalize_size_and_denormalize_validate() -> None:
    assert normalize_size(5) == (5, 5)
    assert normalize_size((3, 4)) == (3, 4)
    with pytest.raises(ConfigError, match="image_size"):
        normalize_size(True, name="image_size")
    with pytest.raises(ConfigError, match="denormalize"):
        denormalize(torch.zeros(2, 4, 4))


@pytest.mark.parametrize("build", [eval_transforms, train_transforms])
def test_uint8_output_is_the_float_output_before_normalisation(build: object) -> None:
    """``output="uint8"`` returns the same pixels, un-normalised, and a uint8 mask."""
    image, labels = _label_encoded_pair()
    make = build  # type: ignore[assignment]
    torch.manual_seed(3)
    img_f, mask_f = make(32)(image, labels)  # type: ignore[operator]
    torch.manual_seed(3)
    img_u, mask_u = make(32, output="uint8")(image, labels)  # type: ignore[operator]
    assert img_u.dtype == torch.uint8
    assert img_u.shape == (3, 32, 32)
    assert mask_u.dtype == torch.uint8
    assert mask_f.dtype == torch.int64
    torch.testing.assert_close(mask_u.long(), mask_f)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close((img_u.float() / 255 - mean) / std, img_f)


def test_uint8_output_keeps_ignore_fill_and_pickles() -> None:
    image, labels = _label_encoded_pair()
    t = train_transforms(
        32, output="uint8", hflip_p=0, vflip_p=0, affine_p=1.0, rotate_limit=45, color_p=0
    )
    t = pickle.loads(pickle.dumps(t))
    seen = set()
    for seed in range(5):
        torch.manual_seed(seed)
        _, mask = t(image, labels)
        seen |= set(mask.unique().tolist())
    assert IGNORE_INDEX in seen


@pytest.mark.parametrize("build", [eval_transforms, train_transforms])
def test_bad_output_kind_raises(build: object) -> None:
    with pytest.raises(ConfigError, match=r"output: expected 'float'.*got 'u8'"):
        build(32, output="u8")  # type: ignore[operator]
