"""The SUIM data layer: dataset, joint transforms, synthetic data and visualisation.

Example:
    >>> import tempfile
    >>> from suimseg.data import SUIMDataset, make_synthetic_suim
    >>> root = make_synthetic_suim(tempfile.mkdtemp(), n_train_val=10, n_test=2, size=(64, 48))
    >>> len(SUIMDataset(root, "test", image_size=32))
    2
"""

from suimseg.data.dataset import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    CacheMode,
    CorruptPolicy,
    OrphanPolicy,
    SizeMismatchPolicy,
    Split,
    SUIMDataset,
    stem_prefix,
    stratified_split,
)
from suimseg.data.device_augment import DeviceAugment, DeviceAugmentParams, DeviceNormalize
from suimseg.data.readers import DEFAULT_MAX_PIXELS, read_image, read_mask_labels, to_rgb
from suimseg.data.synthetic import make_synthetic_suim, render_scene
from suimseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    JointTransform,
    OutputKind,
    denormalize,
    eval_transforms,
    train_transforms,
)
from suimseg.data.visualize import colorize, legend, overlay, side_by_side

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "CacheMode",
    "CorruptPolicy",
    "DeviceAugment",
    "DeviceAugmentParams",
    "DeviceNormalize",
    "JointTransform",
    "OrphanPolicy",
    "OutputKind",
    "SUIMDataset",
    "SizeMismatchPolicy",
    "Split",
    "colorize",
    "denormalize",
    "eval_transforms",
    "legend",
    "make_synthetic_suim",
    "overlay",
    "read_image",
    "read_mask_labels",
    "render_scene",
    "side_by_side",
    "stem_prefix",
    "stratified_split",
    "to_rgb",
    "train_transforms",
]
