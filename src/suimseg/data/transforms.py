"""Joint image + mask transforms built on ``torchvision.transforms.v2``.

Every pipeline is a picklable :class:`JointTransform`, ``transform(image, mask) ->
(image_tensor, mask_tensor)``: image and mask get the *same* random parameters and masks are
always resampled nearest-neighbour (``tv_tensors.Mask``), so labels never blend.

Shape:
    - image in: PIL image, uint8 array ``(H, W, 3)`` or tensor ``(3, H, W)`` (uint8, or
      float in ``[0, 1]``); mask in: integer array or tensor ``(H, W)``
    - out: float32 ``(3, H', W')`` normalised with ImageNet statistics and int64 ``(H', W')``;
      with ``output="uint8"`` a uint8 image and mask, normalised later on the device
      (:class:`~suimseg.data.DeviceNormalize`, :class:`~suimseg.data.DeviceAugment`)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from suimseg.classes import IGNORE_INDEX
from suimseg.errors import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "JointTransform",
    "JointTransformFn",
    "OutputKind",
    "SizeArg",
    "denormalize",
    "eval_transforms",
    "train_transforms",
]

#: ImageNet channel means (RGB) used by torchvision's pre-trained encoders.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: ImageNet channel standard deviations (RGB).
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: A target size: an int for a square ``size x size`` output, ``(height, width)``, or
#: ``None`` to keep the input's resolution.
SizeArg: TypeAlias = int | tuple[int, int] | None

#: The callable signature every dataset transform follows.
JointTransformFn: TypeAlias = Callable[[Any, Any], tuple[torch.Tensor, torch.Tensor]]

#: What a pipeline returns: ``"float"`` (normalised float32 image, int64 mask) or
#: ``"uint8"`` (uint8 image and mask, for normalisation on the device).
OutputKind: TypeAlias = Literal["float", "uint8"]


def normalize_size(
    size: int | Sequence[int] | None, *, name: str = "size"
) -> tuple[int, int] | None:
    """Validate ``None``, a positive int (square) or ``(height, width)``; return ``(h, w)``.

    Raises:
        ConfigError: If the size is not one or two positive integers (named ``name``).

    Example:
        >>> normalize_size(384)
        (384, 384)
    """
    if size is None:
        return None
    if isinstance(size, bool):
        raise ConfigError(f"{name}: expected a positive int or (height, width), got {size!r}")
    if isinstance(size, (int, np.integer)):
        dims: tuple[Any, ...] = (int(size), int(size))
    else:
        dims = tuple(size)
    if len(dims) != 2 or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in dims
    ):
        raise ConfigError(
            f"{name}: expected a positive int or a (height, width) pair of positive ints, "
            f"got {size!r}"
        )
    return int(dims[0]), int(dims[1])


def _writable(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``arr``, or a C-contiguous writable copy if torch cannot view it (read-only, strides < 0)."""
    if arr.flags.writeable and arr.flags.c_contiguous and all(s >= 0 for s in arr.strides):
        return arr
    return np.array(arr, order="C", copy=True)


def _to_image_tensor(image: Any) -> tv_tensors.Image:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ConfigError(
                f"transform: expected an image array of shape (H, W, 3), got {image.shape}"
            )
        if image.dtype != np.uint8:
            raise ConfigError(
                f"transform: expected a uint8 image array, got dtype {image.dtype}; "
                "convert with (x * 255).round().astype(np.uint8) for [0, 1] floats"
            )
        # A contiguous (3, H, W) copy made by numpy: torch kernels on the permuted
        # (channels-last) view are many times slower (measured in benchmarks/data.py).
        return tv_tensors.Image(torch.from_numpy(np.array(image.transpose(2, 0, 1), order="C")))
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ConfigError(
                f"transform: expected an image tensor of shape (3, H, W), got {tuple(image.shape)}"
            )
        return tv_tensors.Image(image)
    raise ConfigError(
        "transform: expected the image as a PIL image, a uint8 array (H, W, 3) or a tensor "
        f"(3, H, W), got {type(image).__name__}"
    )


def _to_mask_tensor(mask: Any) -> tv_tensors.Mask:
    t = torch.from_numpy(_writable(mask)) if isinstance(mask, np.ndarray) else mask
    if not isinstance(t, torch.Tensor):
        raise ConfigError(
            "transform: expected the mask as an integer array or tensor (H, W), "
            f"got {type(mask).__name__}"
        )
    if t.ndim != 2:
        raise ConfigError(f"transform: expected a mask of shape (H, W), got {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ConfigError(f"transform: expected an integer mask, got dtype {t.dtype}")
    return tv_tensors.Mask(t)


class JointTransform:
    """A joint image + mask pipeline: ``(image, mask) -> (image tensor, mask tensor)``.

    Converts the inputs to ``tv_tensors`` once, runs a ``torchvision.transforms.v2`` pipeline
    on both and returns plain tensors of fixed dtypes. Picklable (DataLoader workers).

    Args:
        pipeline: A v2 transform that takes and returns ``(Image, Mask)``; it should end by
            converting the image to float unless images are normalised on the device.
        mask_dtype: dtype of the returned mask: ``torch.int64`` (default) or ``torch.uint8``.

    Example:
        >>> import numpy as np
        >>> t = eval_transforms(32)
        >>> img, mask = t(np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64), np.int64))
        >>> tuple(img.shape), mask.dtype
        ((3, 32, 32), torch.int64)
    """

    def __init__(
        self, pipeline: Callable[..., Any], *, mask_dtype: torch.dtype = torch.int64
    ) -> None:
        if mask_dtype not in (torch.int64, torch.uint8):
            raise ConfigError(
                f"mask_dtype: expected torch.int64 or torch.uint8, got {mask_dtype!r}"
            )
        self.pipeline = pipeline
        self.mask_dtype = mask_dtype

    def __call__(self, image: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the pipeline to one pair."""
        img_t = _to_image_tensor(image)
        if 0 in img_t.shape:
            raise ConfigError(
                "transform: expected an image of at least 1x1 pixel, got an empty one of shape "
                f"{tuple(img_t.shape)} (channels, height, width)"
            )
        mask_t = _to_mask_tensor(mask)
        if tuple(img_t.shape[-2:]) != tuple(mask_t.shape):
            raise ConfigError(
                f"transform: image and mask sizes differ: image (H, W) = "
                f"{tuple(img_t.shape[-2:])}, mask = {tuple(mask_t.shape)}; resize the mask to "
                "the image with nearest-neighbour first (SUIMDataset does this by default)"
            )
        out_img, out_mask = self.pipeline(img_t, mask_t)
        return (
            out_img.as_subclass(torch.Tensor),
            out_mask.as_subclass(torch.Tensor).to(self.mask_dtype),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline!r})"


def _resize(size: tuple[int, int] | None, interpolation: InterpolationMode) -> list[Any]:
    if size is None:
        return []
    return [v2.Resize(list(size), interpolation=interpolation, antialias=True)]


def _joint(
    steps: list[Any], mean: Sequence[float], std: Sequence[float], output: OutputKind
) -> JointTransform:
    """``steps``, then (``output="float"``) to float and normalise, as a :class:`JointTransform`."""
    if output not in ("float", "uint8"):
        raise ConfigError(
            f"output: expected 'float' (normalised float32 image, int64 mask) or 'uint8' "
            f"(uint8 image and mask, normalised later on the device), got {output!r}"
        )
    if output == "uint8":
        return JointTransform(v2.Compose(steps), mask_dtype=torch.uint8)
    to_float = v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)
    normalize = v2.Normalize(mean=list(mean), std=list(std))
    return JointTransform(v2.Compose([*steps, to_float, normalize]))


_P, _JITTER = "a probability in [0, 1]", "a jitter strength >= 0"
#: Range checks of the augmentation arguments: ``name: (low, high, expected)``.
_AUGMENT_RANGES: dict[str, tuple[float, float, str]] = {
    **dict.fromkeys(("hflip_p", "vflip_p", "affine_p", "color_p"), (0.0, 1.0, _P)),
    "shift_limit": (0.0, 1.0, "a fraction in [0, 1]"),
    "rotate_limit": (0.0, math.inf, "degrees >= 0"),
    **dict.fromkeys(("brightness", "contrast", "saturation"), (0.0, math.inf, _JITTER)),
    "hue": (0.0, 0.5, "a value in [0, 0.5]"),
    "ignore_index": (0, 255, "a value in [0, 255]"),
    "image_fill": (0, 255, "a value in [0, 255]"),
}


def check_augment_args(args: dict[str, Any]) -> None:
    """The argument checks of :func:`train_transforms` and :class:`~suimseg.data.DeviceAugment`.

    Raises:
        ConfigError: Naming the first argument of ``args`` (a ``locals()``) out of range.
    """
    for name, (low, high, expected) in _AUGMENT_RANGES.items():
        if not low <= args[name] <= high:
            raise ConfigError(f"{name}: expected {expected}, got {args[name]!r}")
    for name in ("scale_limit", "blur_sigma"):
        if not 0.0 < args[name][0] <= args[name][1]:
            raise ConfigError(
                f"{name}: expected (min, max) with 0 < min <= max, got {args[name]!r}"
            )
    kernel = args["blur_kernel"]
    if kernel < 1 or kernel % 2 == 0:
        raise ConfigError(f"blur_kernel: expected an odd positive int, got {kernel!r}")


def eval_transforms(
    size: int | tuple[int, int] | None = 384,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: InterpolationMode = InterpolationMode.BILINEAR,
    output: OutputKind = "float",
) -> JointTransform:
    """Deterministic pipeline: resize (mask nearest), to float, normalise.

    Args:
        size: An int for ``size x size``, ``(height, width)``, or ``None`` for the input size.
        mean: Per-channel means for normalisation (ImageNet by default).
        std: Per-channel standard deviations (ImageNet by default).
        interpolation: Image interpolation for the resize; masks always use nearest.
        output: ``"float"`` (default): a normalised float32 image and an int64 mask;
            ``"uint8"``: a uint8 image and mask, to be normalised on the device.

    Returns:
        A :class:`JointTransform`.

    Example:
        >>> import numpy as np
        >>> img, mask = eval_transforms(16)(np.zeros((20, 30, 3), np.uint8),
        ...                                  np.ones((20, 30), np.uint8))
        >>> tuple(img.shape), tuple(mask.shape), int(mask.max())
        ((3, 16, 16), (16, 16), 1)
    """
    return _joint(_resize(normalize_size(size), interpolation), mean, std, output)


def train_transforms(
    size: int | tuple[int, int] | None = 384,
    *,
    augment: bool = True,
    hflip_p: float = 0.5,
    vflip_p: float = 0.5,
    affine_p: float = 0.5,
    shift_limit: float = 0.0625,
    scale_limit: tuple[float, float] = (0.9, 1.1),
    rotate_limit: float = 45.0,
    color_p: float = 0.5,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.05,
    blur_kernel: int = 5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    ignore_index: int = IGNORE_INDEX,
    image_fill: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: InterpolationMode = InterpolationMode.BILINEAR,
    output: OutputKind = "float",
) -> JointTransform:
    """Training pipeline with the usual SUIM augmentations.

    In order: resize; horizontal and vertical flips; with probability ``affine_p`` a
    shift-scale-rotate (albumentations' ``ShiftScaleRotate`` limits; uncovered pixels get
    ``ignore_index`` in the mask and ``image_fill`` in the image); with probability
    ``color_p`` a colour jitter *or* a Gaussian blur (uniformly); normalisation. A
    probability of 0 switches a step off.

    Args:
        size: Output size (int, ``(height, width)`` or ``None`` for the input size).
        augment: If ``False``, return the deterministic :func:`eval_transforms` pipeline.
        hflip_p: Probability of a horizontal flip.
        vflip_p: Probability of a vertical flip.
        affine_p: Probability of the shift-scale-rotate step.
        shift_limit: Maximum shift as a fraction of the width/height.
        scale_limit: ``(min, max)`` zoom factor.
        rotate_limit: Maximum absolute rotation in degrees.
        color_p: Probability of the colour-jitter-or-blur step.
        brightness: ColorJitter brightness.
        contrast: ColorJitter contrast.
        saturation: ColorJitter saturation.
        hue: ColorJitter hue (at most 0.5).
        blur_kernel: Odd Gaussian blur kernel size.
        blur_sigma: ``(min, max)`` blur sigma.
        ignore_index: Mask value for pixels brought in from outside the image.
        image_fill: Image value (0-255) for those pixels.
        mean: Normalisation means.
        std: Normalisation standard deviations.
        interpolation: Image interpolation for resize and warp (masks: always nearest).
        output: ``"float"`` or ``"uint8"``, as in :func:`eval_transforms`.

    Returns:
        A :class:`JointTransform`.

    Raises:
        ConfigError: If a probability or limit is out of range.

    Example:
        >>> import numpy as np
        >>> t = train_transforms(32)
        >>> img, mask = t(np.zeros((40, 40, 3), np.uint8), np.zeros((40, 40), np.uint8))
        >>> tuple(img.shape), sorted(set(mask.unique().tolist()) - {0, 255})
        ((3, 32, 32), [])
    """
    hw = normalize_size(size)
    if not augment:
        return eval_transforms(hw, mean=mean, std=std, interpolation=interpolation, output=output)
    check_augment_args(locals())
    steps = _resize(hw, interpolation)
    if hflip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip_p))
    if vflip_p > 0:
        steps.append(v2.RandomVerticalFlip(p=vflip_p))
    if affine_p > 0:
        affine = v2.RandomAffine(
            degrees=(-rotate_limit, rotate_limit),
            translate=(shift_limit, shift_limit),
            scale=scale_limit,
            interpolation=interpolation,
            fill={tv_tensors.Image: image_fill, tv_tensors.Mask: ignore_index},
        )
        steps.append(v2.RandomApply([affine], p=affine_p))
    if color_p > 0:
        photometric = v2.RandomChoice(
            [
                v2.ColorJitter(
                    brightness=brightness, contrast=contrast, saturation=saturation, hue=hue
                ),
                v2.GaussianBlur(kernel_size=blur_kernel, sigma=blur_sigma),
            ]
        )
        steps.append(v2.RandomApply([photometric], p=color_p))
    return _joint(steps, mean, std, output)


def denormalize(
    image: torch.Tensor,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Undo normalisation: float ``(3, H, W)`` (or ``(N, 3, H, W)``) to uint8 in ``[0, 255]``.

    ``mean`` and ``std`` are the statistics used to normalise.

    Example:
        >>> import torch
        >>> denormalize(torch.zeros(3, 1, 1)).flatten().tolist()
        [124, 116, 104]
    """
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ConfigError(
            f"denormalize: expected a (3, H, W) or (N, 3, H, W) tensor, got {tuple(image.shape)}"
        )
    m = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * s + m).mul(255).round().clamp(0, 255).to(torch.uint8)
