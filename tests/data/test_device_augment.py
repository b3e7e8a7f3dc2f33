"""Tests for the device-side batched augmentation (suimseg.data.device_augment)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from suimseg.classes import IGNORE_INDEX
from suimseg.data.device_augment import DeviceAugment, DeviceAugmentParams, DeviceNormalize
from suimseg.data.transforms import eval_transforms
from suimseg.errors import ConfigError

# Image value that encodes each label (as in test_transforms.py; distinct from fill 0).
CODES = torch.tensor([20, 45, 70, 95, 120, 145, 170, 195], dtype=torch.uint8)
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # output = image / 255
OFF = {"hflip_p": 0.0, "vflip_p": 0.0, "affine_p": 0.0, "color_p": 0.0}


def _label_encoded_batch(
    n: int = 4, h: int = 40, w: int = 48, block: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocky random label maps (with fine stripes) and images whose pixels encode them."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 8, (n, h // block, w // block), generator=g)
    labels = coarse.repeat_interleave(block, dim=1).repeat_interleave(block, dim=2)
    labels = labels.to(torch.uint8)
    labels[:, :, : w // 3] = (torch.arange(w // 3) % 8).to(torch.uint8)
    images = CODES[labels.long()].unsqueeze(1).expand(n, 3, h, w).contiguous()
    return images, labels


def _random_batch(n: int = 4, h: int = 32, w: int = 40, seed: int = 0) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)
    images = TF.gaussian_blur(images, [5, 5], [1.5, 1.5])  # smooth, like photographs
    masks = torch.randint(0, 8, (n, h, w), dtype=torch.uint8, generator=g)
    return images, masks


def _params(n: int, **overrides: Any) -> DeviceAugmentParams:
    """Neutral parameters (nothing applied) with some fields replaced."""
    false = torch.zeros(n, dtype=torch.bool)
    base: dict[str, Any] = {
        "hflip": false,
        "vflip": false,
        "affine": false,
        "angle": torch.zeros(n),
        "translate": torch.zeros(n, 2),
        "scale": torch.ones(n),
        "color": false,
        "blur": false,
        "brightness": torch.ones(n),
        "contrast": torch.ones(n),
        "saturation": torch.ones(n),
        "hue": torch.zeros(n),
        "sigma": torch.ones(n),
    }
    base.update(overrides)
    return DeviceAugmentParams(**base)


def _is_hflipped(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per sample: does ``out`` equal the horizontally flipped input (vs the input)?"""
    ref = DeviceNormalize(**RAW)(images, images[:, 0])[0]
    flipped = (out - ref.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-6
    same = (out - ref).abs().amax(dim=(1, 2, 3)) < 1e-6
    assert bool((flipped ^ same).all()), "every sample is either flipped or not"
    return flipped


# ---------------------------------------------------------------------- formats


@pytest.mark.parametrize("module", [DeviceNormalize(), DeviceAugment()])
@pytest.mark.parametrize("mask_dtype", [torch.uint8, torch.int64, torch.int32])
def test_output_dtypes_and_shapes(module: torch.nn.Module, mask_dtype: torch.dtype) -> None:
    images, masks = _random_batch(n=3, h=32, w=48)
    x, y = module(images, masks.to(mask_dtype))
    assert x.shape == (3, 3, 32, 48)
    assert x.dtype == torch.float32
    assert y.shape == (3, 32, 48)
    assert y.dtype == torch.int64


def test_normalize_equals_eval_transforms_float_output() -> None:
    images, masks = _random_batch(n=2, h=24, w=40)
    x, y = DeviceNormalize()(images, masks)
    for i in range(2):
        ref_img, ref_mask = eval_transforms(None)(images[i], masks[i])
        torch.testing.assert_close(x[i], ref_img, rtol=0, atol=1e-6)
        assert torch.equal(y[i], ref_mask)


def test_normalize_keeps_channels_last() -> None:
    images, masks = _random_batch()
    cl = images.contiguous(memory_format=torch.channels_last)
    x, _ = DeviceNormalize()(cl, masks)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, DeviceNormalize()(images, masks)[0])


def test_all_probabilities_zero_is_exactly_normalize() -> None:
    images, masks = _random_batch()
    x, y = DeviceAugment(**OFF)(images, masks)
    ref_x, ref_y = DeviceNormalize()(images, masks)
    assert torch.equal(x, ref_x)
    assert torch.equal(y, ref_y)


@pytest.mark.parametrize("module", [DeviceNormalize(), DeviceAugment()])
def test_float_images_are_rejected(module: torch.nn.Module) -> None:
    images, masks = _random_batch()
    with pytest.raises(ConfigError, match=r"output='uint8'.*normalised twice"):
        module(images.float() / 255, masks)


@pytest.mark.parametrize(
    ("images", "masks", "match"),
    [
        (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, 8, 8), r"\(N, 3, H, W\)"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(8, 8), r"\(N, 3, H, W\)"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 1, 8, 8), r"\(N, H, W\)"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 8, 8), "integer masks"),
        (
            torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
            torch.zeros(2, 8, 8, dtype=torch.bool),
            "integer masks",
        ),
        (
            torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
            torch.zeros(2, 8, 9, dtype=torch.uint8),
            "do not match",
        ),
        (
            torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
            torch.zeros(3, 8, 8, dtype=torch.uint8),
            "do not match",
        ),
    ],
)
@pytest.mark.parametrize("module_cls", [DeviceNormalize, DeviceAugment])
def test_bad_batches_are_rejected(
    module_cls: type[torch.nn.Module], images: torch.Tensor, masks: torch.Tensor, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        module_cls()(images, masks)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hflip_p": 1.5}, r"hflip_p: expected a probability in \[0, 1\]"),
        ({"vflip_p": -0.1}, "vflip_p: expected a probability"),
        ({"affine_p": 2.0}, "affine_p: expected a probability"),
        ({"color_p": -1.0}, "color_p: expected a probability"),
        ({"shift_limit": 1.5}, r"shift_limit: expected a fraction in \[0, 1\]"),
        ({"scale_limit": (1.1, 0.9)}, "scale_limit: expected .min, max. with 0 < min <= max"),
        ({"scale_limit": (0.0, 1.0)}, "scale_limit"),
        ({"rotate_limit": -5.0}, "rotate_limit: expected degrees >= 0"),
        ({"blur_kernel": 4}, "blur_kernel: expected an odd positive int"),
        ({"blur_kernel": 0}, "blur_kernel"),
        ({"ignore_index": 256}, r"ignore_index: expected a value in \[0, 255\]"),
        ({"image_fill": -1}, r"image_fill: expected a value in \[0, 255\]"),
        ({"brightness": -0.1}, "brightness: expected a jitter strength >= 0"),
        ({"contrast": -0.1}, "contrast"),
        ({"saturation": -0.1}, "saturation"),
        ({"hue": 0.6}, r"hue: expected a value in \[0, 0.5\]"),
        ({"blur_sigma": (2.0, 1.0)}, "blur_sigma: expected"),
        ({"blur_sigma": (0.0, 1.0)}, "blur_sigma"),
        ({"mean": (0.5, 0.5)}, "mean: expected 3 values"),
        ({"std": (0.2, 0.0, 0.2)}, "std: expected 3 positive values"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DeviceAugment(**kwargs)


def test_normalize_bad_statistics() -> None:
    with pytest.raises(ConfigError, match="std: expected 3 positive values"):
        DeviceNormalize(std=(1.0, -1.0, 1.0))
    with pytest.raises(ConfigError, match="mean: expected 3 values"):
        DeviceNormalize(mean=(0.1,))


def test_params_for_another_batch_size_are_rejected() -> None:
    images, masks = _random_batch(n=4)
    with pytest.raises(ConfigError, match="drawn for a batch of 3"):
        DeviceAugment().apply_params(images, masks, _params(3))


def test_generator_on_another_device_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"generator: expected a torch.Generator on meta"):
        DeviceAugment().sample_params(2, size=(8, 8), device="meta", generator=torch.Generator())


def test_blur_kernel_larger_than_image_is_rejected() -> None:
    images, masks = _random_batch(n=2, h=4, w=16)
    with pytest.raises(ConfigError, match="too small for blur_kernel=9"):
        DeviceAugment(blur_kernel=9)(images, masks)


# ---------------------------------------------------------------------- geometry


@pytest.mark.parametrize("affine_path", [False, True])
@pytest.mark.parametrize(("hflip", "vflip"), [(True, False), (False, True), (True, True)])
def test_flips_move_image_and_mask_together(affine_path: bool, hflip: bool, vflip: bool) -> None:
    """Both code paths: flips alone and flips followed by an identity warp (exact up to
    grid_sample's float32 coordinate rounding; the mask exactly)."""
    images, labels = _label_encoded_batch()
    affine: dict[str, Any] = (
        {"affine_p": 1.0, "rotate_limit": 0.0, "shift_limit": 0.0, "scale_limit": (1.0, 1.0)}
        if affine_path
        else {"affine_p": 0.0}
    )
    aug = DeviceAugment(hflip_p=float(hflip), vflip_p=float(vflip), color_p=0.0, **affine, **RAW)
    x, y = aug(images, labels)
    dims = [d for d, on in ((-1, hflip), (-2, vflip)) if on]
    ref_x, ref_y = DeviceNormalize(**RAW)(images.flip(dims), labels.flip(dims))
    if affine_path:
        torch.testing.assert_close(x, ref_x, rtol=0, atol=1e-5)  # < 0.003 grey levels
    else:
        assert torch.equal(x, ref_x)
    assert torch.equal(y, ref_y)


def test_identity_affine_reproduces_the_input() -> None:
    images, masks = _random_batch()
    masks[:, :3] = IGNORE_INDEX
    aug = DeviceAugment(
        hflip_p=0.0,
        vflip_p=0.0,
        affine_p=1.0,
        rotate_limit=0.0,
        shift_limit=0.0,
        scale_limit=(1.0, 1.0),
        color_p=0.0,
        image_fill=255,
    )
    x, y = aug(images, masks)
    ref_x, ref_y = DeviceNormalize()(images, masks)
    # grid_sample's normalised float32 coordinates are off by ~1e-6 pixel: a grey level is
    # 1 / (255 * 0.225) = 0.017 here.
    torch.testing.assert_close(x, ref_x, rtol=0, atol=5e-5)
    assert torch.equal(y, ref_y)


def test_whole_pixel_shift_is_exact_and_fills_outside() -> None:
    images, masks = _random_batch(n=2, h=16, w=20)
    aug = DeviceAugment(**OFF | {"affine_p": 1.0}, image_fill=200, **RAW)
    shift = torch.tensor([[3.0, -2.0], [0.0, 5.0]])
    params = _params(2, affine=torch.ones(2, dtype=torch.bool), translate=shift)
    x, y = aug.apply_params(images, masks, params)
    raw = DeviceNormalize(**RAW)(images, masks)[0]
    # Sample 0: moved right by 3 and up by 2.
    torch.testing.assert_close(x[0, :, :-2, 3:], raw[0, :, 2:, :-3], rtol=0, atol=1e-5)
    assert torch.equal(y[0, :-2, 3:], masks[0, 2:, :-3].long())
    assert bool((y[0, :, :3] == IGNORE_INDEX).all())
    assert bool((y[0, -2:] == IGNORE_INDEX).all())
    torch.testing.assert_close(x[0, :, :, :3], torch.full((3, 16, 3), 200 / 255))
    # Sample 1: moved down by 5.
    torch.testing.assert_close(x[1, :, 5:], raw[1, :, :-5], rtol=0, atol=1e-5)
    assert torch.equal(y[1, 5:], masks[1, :-5].long())
    assert bool((y[1, :5] == IGNORE_INDEX).all())


def test_affine_keeps_labels_aligned_and_fills_ignore() -> None:
    images, labels = _label_encoded_batch(n=8, h=48, w=64, block=8)
    aug = DeviceAugment(
        hflip_p=0.5,
        vflip_p=0.5,
        affine_p=1.0,
        rotate_limit=45.0,
        scale_limit=(0.6, 0.8),  # zoom out: every sample brings in outside pixels
        color_p=0.0,
        image_fill=0,
        **RAW,
    )
    x, y = aug(images, labels, generator=torch.Generator().manual_seed(1))
    gray = x[:, 0] * 255
    valid = y != IGNORE_INDEX
    assert bool((~valid).flatten(1).any(dim=1).all()), "every sample has ignore pixels"
    decoded = (gray.unsqueeze(-1) - CODES.float()).abs().argmin(-1)
    # Away from label edges (a uniform 3x3 neighbourhood in the output mask) bilinear
    # sampling does not blend labels, so the image must decode to the mask's label.
    yf = y.float().unsqueeze(1)
    pool = torch.nn.functional.max_pool2d
    interior = ((pool(yf, 3, 1, 1) == -pool(-yf, 3, 1, 1)).squeeze(1) & valid)[:, 1:-1, 1:-1]
    assert int(interior.sum()) > 1000
    hits = (decoded == y)[:, 1:-1, 1:-1][interior]
    assert float(hits.float().mean()) > 0.99
    # The check can tell a mask that did not move with the image apart.
    unwarped = (decoded == labels.long())[:, 1:-1, 1:-1][interior]
    assert float(unwarped.float().mean()) < 0.5
    # Pixels whose whole 3x3 neighbourhood is outside get exactly the fill value.
    outside = -torch.nn.functional.max_pool2d(-(~valid).float().unsqueeze(1), 3, 1, 1)
    outside = outside.squeeze(1).bool()
    assert bool(outside.any())
    assert bool((gray[outside] == 0).all())


def test_affine_matches_torchvision_for_the_same_parameters() -> None:
    images, masks = _random_batch(n=3, h=40, w=48)
    params = _params(
        3,
        affine=torch.ones(3, dtype=torch.bool),
        angle=torch.tensor([-32.5, 10.0, 44.0]),
        translate=torch.tensor([[-3.0, -2.0], [1.0, 0.0], [2.0, 3.0]]),
        scale=torch.tensor([0.93, 1.0, 1.09]),
    )
    aug = DeviceAugment(**OFF | {"affine_p": 1.0}, image_fill=30, **RAW)
    x, y = aug.apply_params(images, masks, params)
    for i in range(3):
        kwargs: dict[str, Any] = {
            "angle": float(params.angle[i]),
            "translate": [int(v) for v in params.translate[i]],
            "scale": float(params.scale[i]),
            "shear": [0.0, 0.0],
        }
        ref = TF.affine(
            images[i].float() / 255,
            interpolation=InterpolationMode.BILINEAR,
            fill=30 / 255,
            **kwargs,
        )
        torch.testing.assert_close(x[i], ref, rtol=0, atol=1e-4)
        ref_mask = TF.affine(tv_tensors.Mask(masks[i]), fill=IGNORE_INDEX, **kwargs)
        mismatch = (y[i] != ref_mask.long()).float().mean()
        assert mismatch < 0.01  # only exact .5 ties may round differently


@pytest.mark.parametrize("hflip", [False, True])
def test_enabled_steps_that_pick_no_sample_leave_it_exact(hflip: bool) -> None:
    """Every step enabled but none picked (drawn warp and colour values ignored): the
    output is the input (or torch.flip of it) bit for bit, not a resampled copy."""
    images, masks = _random_batch(n=3)
    masks[:, :2] = IGNORE_INDEX
    n = 3
    params = _params(
        n,
        hflip=torch.full((n,), hflip),
        angle=torch.tensor([30.0, -12.0, 0.0]),
        translate=torch.tensor([[2.0, -1.0], [0.0, 3.0], [0.0, 0.0]]),
        scale=torch.tensor([0.8, 1.1, 1.0]),
        brightness=torch.full((n,), 1.2),
        sigma=torch.full((n,), 1.5),
    )
    aug = DeviceAugment(hflip_p=0.5, vflip_p=0.5, affine_p=0.5, color_p=0.5, **RAW)
    x, y = aug.apply_params(images, masks, params)
    ref_x, ref_y = DeviceNormalize(**RAW)(images, masks)
    if hflip:
        ref_x, ref_y = torch.flip(ref_x, dims=[-1]), torch.flip(ref_y, dims=[-1])
    assert torch.equal(x, ref_x)
    assert torch.equal(y, ref_y)


@pytest.mark.parametrize(("angle", "k"), [(90.0, -1), (-90.0, 1), (180.0, 2)])
def test_quarter_turns_equal_rot90(angle: float, k: int) -> None:
    """torchvision's affine angle is clockwise: +90 degrees is rot90(k=-1)."""
    images, masks = _random_batch(n=2, h=24, w=24)
    params = _params(
        2, affine=torch.tensor([True, True]), angle=torch.full((2,), angle), scale=torch.ones(2)
    )
    aug = DeviceAugment(**OFF | {"affine_p": 1.0}, **RAW)
    x, y = aug.apply_params(images, masks, params)
    ref_x, ref_y = DeviceNormalize(**RAW)(images, masks)
    torch.testing.assert_close(x, torch.rot90(ref_x, k, dims=(-2, -1)), rtol=0, atol=1e-5)
    assert torch.equal(y, torch.rot90(ref_y, k, dims=(-2, -1)))


def test_flip_then_warp_matches_torchvision_on_a_non_square_image() -> None:
    """Flips come before the warp (torchvision's order); per sample the result equals
    TF.horizontal_flip / vertical_flip then TF.affine, image and mask."""
    images, masks = _random_batch(n=3, h=36, w=52, seed=2)
    params = _params(
        3,
        hflip=torch.tensor([True, False, True]),
        vflip=torch.tensor([False, True, True]),
        affine=torch.ones(3, dtype=torch.bool),
        angle=torch.tensor([25.0, -40.0, 7.5]),
        translate=torch.tensor([[4.0, -1.0], [-2.0, 3.0], [0.0, -2.0]]),
        scale=torch.tensor([1.08, 0.9, 0.95]),
    )
    aug = DeviceAugment(hflip_p=0.5, vflip_p=0.5, affine_p=1.0, color_p=0.0, image_fill=90, **RAW)
    x, y = aug.apply_params(images, masks, params)
    for i in range(3):
        img, mask = images[i].float() / 255, tv_tensors.Mask(masks[i])
        if params.hflip[i]:
            img, mask = TF.horizontal_flip(img), TF.horizontal_flip(mask)
        if params.vflip[i]:
            img, mask = TF.vertical_flip(img), TF.vertical_flip(mask)
        kwargs: dict[str, Any] = {
            "angle": float(params.angle[i]),
            "translate": [int(v) for v in params.translate[i]],
            "scale": float(params.scale[i]),
            "shear": [0.0, 0.0],
        }
        ref = TF.affine(img, interpolation=InterpolationMode.BILINEAR, fill=90 / 255, **kwargs)
        torch.testing.assert_close(x[i], ref, rtol=0, atol=1e-4)
        ref_mask = TF.affine(mask, fill=IGNORE_INDEX, **kwargs).long()
        assert float((y[i] != ref_mask).float().mean()) < 0.01  # only .5 ties may differ


@pytest.mark.parametrize("mask_dtype", [torch.uint8, torch.int64])
def test_warped_masks_hold_only_input_labels_and_the_ignore_value(
    mask_dtype: torch.dtype,
) -> None:
    """Nearest sampling never invents labels: every output value is an input label or
    ignore_index, for every sample (here ignore_index 99 and an existing 255 region)."""
    images, masks = _random_batch(n=16, h=24, w=28, seed=3)
    masks = masks.to(mask_dtype)
    masks[:, 5:9, 5:9] = 255
    aug = DeviceAugment(
        affine_p=1.0, scale_limit=(0.6, 1.4), shift_limit=0.2, ignore_index=99, color_p=0.0
    )
    _, y = aug(images, masks, generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.int64
    allowed = set(range(8)) | {255, 99}
    assert set(y.unique().tolist()) <= allowed
    assert bool((y == 99).flatten(1).any(dim=1).all())  # outside pixels everywhere (seeded)
    assert bool((y == 255).any())  # the input's own ignore pixels move with the mask
    kept = torch.isin(y, torch.arange(8)).float().mean()
    assert float(kept) > 0.5


# ---------------------------------------------------------------------- photometric


def test_color_and_blur_change_only_the_image() -> None:
    images, masks = _random_batch(n=16)
    aug = DeviceAugment(**OFF | {"color_p": 1.0}, hue=0.2)
    x, y = aug(images, masks, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, masks.long())
    changed = (x - DeviceNormalize()(images, masks)[0]).abs().amax(dim=(1, 2, 3)) > 1e-3
    assert bool(changed.all())


def test_color_jitter_matches_torchvision_kernels() -> None:
    images, masks = _random_batch(n=4)
    n = 4
    params = _params(
        n,
        color=torch.ones(n, dtype=torch.bool),
        blur=torch.zeros(n, dtype=torch.bool),
        brightness=torch.tensor([0.8, 1.2, 1.0, 0.9]),
        contrast=torch.tensor([1.2, 0.8, 1.1, 0.85]),
        saturation=torch.tensor([0.8, 1.15, 1.2, 0.9]),
        hue=torch.tensor([0.05, -0.05, 0.2, -0.3]),
        jitter_order=(2, 0, 3, 1),
    )
    aug = DeviceAugment(**OFF | {"color_p": 1.0}, hue=0.3, **RAW)
    x, _ = aug.apply_params(images, masks, params)
    for i in range(n):
        ref = images[i].float() / 255
        ref = TF.adjust_saturation(ref, float(params.saturation[i]))
        ref = TF.adjust_brightness(ref, float(params.brightness[i]))
        ref = TF.adjust_hue(ref, float(params.hue[i]))
        ref = TF.adjust_contrast(ref, float(params.contrast[i]))
        torch.testing.assert_close(x[i], ref, rtol=0, atol=1e-5)


def test_blur_matches_torchvision_kernel() -> None:
    images, masks = _random_batch(n=3)
    n = 3
    sigma = torch.tensor([0.3, 1.0, 2.0])
    params = _params(
        n, color=torch.ones(n, dtype=torch.bool), blur=torch.ones(n, dtype=torch.bool), sigma=sigma
    )
    aug = DeviceAugment(**OFF | {"color_p": 1.0}, blur_kernel=5, **RAW)
    x, _ = aug.apply_params(images, masks, params)
    for i in range(n):
        s = float(sigma[i])
        ref = TF.gaussian_blur(images[i].float() / 255, [5, 5], [s, s])
        torch.testing.assert_close(x[i], ref, rtol=0, atol=1e-5)


def test_brightness_factors_stay_in_range() -> None:
    n, b = 256, 0.2
    images = torch.full((n, 3, 8, 8), 128, dtype=torch.uint8)
    masks = torch.zeros(n, 8, 8, dtype=torch.uint8)
    aug = DeviceAugment(
        **OFF | {"color_p": 1.0}, brightness=b, contrast=0.0, saturation=0.0, hue=0.0, **RAW
    )
    x, _ = aug(images, masks, generator=torch.Generator().manual_seed(0))
    ratio = x.mean(dim=(1, 2, 3)) / (128 / 255)  # a flat image: blur keeps it flat
    assert bool((ratio >= 1 - b - 1e-5).all())
    assert bool((ratio <= 1 + b + 1e-5).all())
    assert float(ratio.min()) < 1 - b / 2  # the factors do vary over the range
    assert float(ratio.max()) > 1 + b / 2


def test_sampled_parameters_follow_the_limits() -> None:
    aug = DeviceAugment(shift_limit=0.1, rotate_limit=30.0, scale_limit=(0.8, 1.2), hue=0.1)
    p = aug.sample_params(4000, size=(40, 50), generator=torch.Generator().manual_seed(0))
    assert float(p.angle.abs().max()) <= 30.0
    assert float(p.angle.abs().max()) > 29.0
    assert torch.equal(p.translate, p.translate.round())
    assert float(p.translate[:, 0].abs().max()) == 5.0  # 0.1 * 50
    assert float(p.translate[:, 1].abs().max()) == 4.0  # 0.1 * 40
    assert float(p.scale.min()) >= 0.8
    assert float(p.scale.max()) <= 1.2
    assert float(p.hue.abs().max()) <= 0.1
    assert float(p.sigma.min()) >= 0.1
    assert float(p.sigma.max()) <= 2.0
    for name in ("hflip", "vflip", "affine", "color", "blur"):
        assert abs(float(getattr(p, name).float().mean()) - 0.5) < 0.03, name
    assert sorted(p.jitter_order) == [0, 1, 2, 3]


# ---------------------------------------------------------------------- randomness


def test_samples_are_augmented_independently() -> None:
    images, masks = _random_batch(n=64, h=8, w=12)
    aug = DeviceAugment(**OFF | {"hflip_p": 0.5}, **RAW)
    x, _ = aug(images, masks, generator=torch.Generator().manual_seed(0))
    flipped = _is_hflipped(x, images)
    assert 0 < int(flipped.sum()) < 64


def test_flip_fraction_matches_probability() -> None:
    n = 2000
    images, masks = _random_batch(n=n, h=4, w=6, seed=1)
    aug = DeviceAugment(**OFF | {"hflip_p": 0.3}, **RAW)
    x, _ = aug(images, masks, generator=torch.Generator().manual_seed(0))
    assert abs(float(_is_hflipped(x, images).float().mean()) - 0.3) < 0.03


def test_same_generator_seed_reproduces_and_another_differs() -> None:
    images, masks = _random_batch(n=8)
    aug = DeviceAugment(affine_p=0.8, color_p=0.8)
    a = aug(images, masks, generator=torch.Generator().manual_seed(3))
    b = aug(images, masks, generator=torch.Generator().manual_seed(3))
    c = aug(images, masks, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_global_rng_is_used_by_default() -> None:
    images, masks = _random_batch(n=8)
    aug = DeviceAugment(affine_p=0.8, color_p=0.8)
    torch.manual_seed(11)
    a, _ = aug(images, masks)
    b, _ = aug(images, masks)  # the global state moved on
    torch.manual_seed(11)
    c, _ = aug(images, masks)
    assert torch.equal(a, c)
    assert not torch.equal(a, b)


def test_eval_mode_still_augments() -> None:
    images, masks = _random_batch(n=8)
    aug = DeviceAugment(**OFF | {"hflip_p": 1.0}).eval()
    x, _ = aug(images, masks)
    assert not torch.equal(x, DeviceNormalize()(images, masks)[0])


# ---------------------------------------------------------------------- masks and layout


@pytest.mark.parametrize("mask_dtype", [torch.uint8, torch.int64])
def test_ignore_pixels_survive_flips_and_warps(mask_dtype: torch.dtype) -> None:
    images, masks = _random_batch(n=2, h=16, w=16)
    masks = masks.to(mask_dtype)
    masks[:, 2:5, 1:4] = IGNORE_INDEX
    params = _params(
        2,
        hflip=torch.tensor([True, False]),
        affine=torch.tensor([False, True]),
        translate=torch.tensor([[0.0, 0.0], [2.0, 1.0]]),
    )
    aug = DeviceAugment(hflip_p=0.5, affine_p=0.5, color_p=0.0)
    _, y = aug.apply_params(images, masks, params)
    assert y.dtype == torch.int64
    assert bool((y[0, 2:5, 12:15] == IGNORE_INDEX).all())  # 1:4 mirrored in 16 columns
    assert bool((y[1, 3:6, 3:6] == IGNORE_INDEX).all())  # shifted by (+2, +1)
    assert int((y[0] == IGNORE_INDEX).sum()) == 9


def test_channels_last_input_gives_the_same_result_in_channels_last() -> None:
    images, masks = _random_batch(n=4)
    cl = images.contiguous(memory_format=torch.channels_last)
    aug = DeviceAugment(affine_p=1.0, color_p=1.0)
    a, ya = aug(images, masks, generator=torch.Generator().manual_seed(5))
    b, yb = aug(cl, masks, generator=torch.Generator().manual_seed(5))
    assert b.is_contiguous(memory_format=torch.channels_last)
    assert a.is_contiguous()
    assert torch.equal(a, b)
    assert torch.equal(ya, yb)


def test_params_move_between_devices_and_repr_lists_settings() -> None:
    p = DeviceAugment().sample_params(2, size=(8, 8))
    q = p.to("cpu")
    for f in dataclasses.fields(p):
        if f.name == "jitter_order":
            assert q.jitter_order == p.jitter_order
        else:
            assert torch.equal(getattr(q, f.name), getattr(p, f.name))
    assert q.batch_size == 2
    text = repr(DeviceAugment(hflip_p=0.25))
    assert "hflip_p=0.25" in text
    assert "mean=" in repr(DeviceNormalize())


def test_photometric_step_touches_only_the_selected_samples() -> None:
    """Per sample: no photometric step, blur only, or jitter only (never both)."""
    images, masks = _random_batch(n=3)
    params = _params(
        3,
        color=torch.tensor([False, True, True]),
        blur=torch.tensor([True, True, False]),
        brightness=torch.full((3,), 1.2),
        sigma=torch.full((3,), 1.5),
    )
    aug = DeviceAugment(**OFF | {"color_p": 0.5}, **RAW)
    x, _ = aug.apply_params(images, masks, params)
    raw = DeviceNormalize(**RAW)(images, masks)[0]
    assert torch.equal(x[0], raw[0])
    blurred = TF.gaussian_blur(images[1].float() / 255, [5, 5], [1.5, 1.5])
    torch.testing.assert_close(x[1], blurred, rtol=0, atol=1e-5)
    torch.testing.assert_close(x[2], (raw[2] * 1.2).clamp(0, 1), rtol=0, atol=1e-6)


def test_unselected_samples_ignore_their_drawn_warp_parameters() -> None:
    images, masks = _random_batch(n=2)
    params = _params(
        2,
        affine=torch.tensor([False, True]),
        angle=torch.tensor([30.0, 0.0]),
        scale=torch.tensor([0.7, 1.0]),
        translate=torch.tensor([[3.0, -3.0], [0.0, 0.0]]),
    )
    x, y = DeviceAugment(**OFF | {"affine_p": 0.5}).apply_params(images, masks, params)
    ref_x, ref_y = DeviceNormalize()(images, masks)
    assert torch.equal(x[0], ref_x[0])  # not selected: returned as is
    torch.testing.assert_close(x[1], ref_x[1], rtol=0, atol=5e-5)  # an identity warp
    assert torch.equal(y, ref_y)


@pytest.mark.parametrize("module_cls", [DeviceNormalize, DeviceAugment])
def test_forward_needs_no_host_access_to_the_data(module_cls: type[torch.nn.Module]) -> None:
    """On the meta device any ``.item()``, ``.tolist()`` or ``nonzero`` on the batch (a
    device-to-host sync on CUDA) would raise: the forward must be pure tensor code."""
    kwargs = {"hflip_p": 1.0, "vflip_p": 1.0, "affine_p": 1.0, "color_p": 1.0}
    module = (module_cls(**kwargs) if module_cls is DeviceAugment else module_cls()).to("meta")
    images = torch.empty(4, 3, 32, 32, dtype=torch.uint8, device="meta")
    masks = torch.empty(4, 32, 32, dtype=torch.uint8, device="meta")
    x, y = module(images, masks)
    assert x.device.type == "meta"
    assert (x.dtype, y.dtype) == (torch.float32, torch.int64)
    assert x.shape == (4, 3, 32, 32)
    with pytest.raises(RuntimeError):
        x.sum().item()  # the check above would catch a sync


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_does_not_synchronise() -> None:
    images, masks = _random_batch(n=8)
    images, masks = images.cuda(), masks.cuda()
    augment = DeviceAugment(hflip_p=1.0, vflip_p=1.0, affine_p=1.0, color_p=1.0).cuda()
    normalize = DeviceNormalize().cuda()
    augment(images, masks)  # warm-up (cuDNN set-up may synchronise once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        augment(images, masks)
        normalize(images, masks)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # A CUDA generator draws the per-sample parameters; the batch's jitter order comes
    # from the CPU RNG, seeded here as well.
    torch.manual_seed(0)
    a = augment(images, masks, generator=torch.Generator(device="cuda").manual_seed(0))[0]
    torch.manual_seed(0)
    b = augment(images, masks, generator=torch.Generator(device="cuda").manual_seed(0))[0]
    assert torch.equal(a, b)


def test_params_on_another_device_are_rejected() -> None:
    images, masks = _random_batch(n=2)
    params = DeviceAugment().sample_params(2, size=(32, 40), device="meta")
    with pytest.raises(ConfigError, match="params: on meta but the images are on cpu"):
        DeviceAugment().apply_params(images, masks, params)
