"""torchvision ResNet encoders that report their stage channels and reductions."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Union

import torch
import torchvision
from torch import Tensor, nn

from suimseg.errors import (
    CheckpointError,
    ConfigError,
    InputNotFoundError,
    WeightsUnavailableError,
)

__all__ = [
    "ENCODER_NAMES",
    "EncoderName",
    "EncoderWeights",
    "ResNetEncoder",
    "imagenet_state_dict",
    "load_resnet_weights",
    "load_state_dict_file",
    "resolve_encoder_weights",
]

EncoderName = Literal["resnet18", "resnet34", "resnet50", "resnet101"]
#: ``None`` or ``"none"`` (random init), ``"imagenet"`` or a path to a local torchvision
#: ResNet state dict.
EncoderWeights = Union[None, str, "os.PathLike[str]"]

ENCODER_NAMES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101")

_CHANNELS: dict[str, tuple[int, int, int, int, int]] = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
    "resnet101": (64, 256, 512, 1024, 2048),
}


def _check_name(name: str) -> None:
    if name not in _CHANNELS:
        raise ConfigError(f"encoder: expected one of {', '.join(ENCODER_NAMES)}, got {name!r}")


def resolve_encoder_weights(weights: object) -> str | os.PathLike[str] | None:
    """Normalise an ``encoder_weights`` argument: ``None`` and ``"none"`` (any case) mean none.

    (A local file named ``none`` needs a folder: ``"./none"``.) Other strings and paths are
    returned unchanged.

    Raises:
        ConfigError: For anything that is not ``None``, a string or a path.

    Example:
        >>> resolve_encoder_weights("None") is None, resolve_encoder_weights("imagenet")
        (True, 'imagenet')
    """
    if weights is None or (isinstance(weights, str) and weights.strip().lower() == "none"):
        return None
    if isinstance(weights, (str, os.PathLike)):
        return weights
    raise ConfigError(
        "encoder_weights: expected None, 'imagenet' or a path to a local state-dict file "
        f"(or 'none' for random init), got {weights!r}"
    )


def load_state_dict_file(
    path: str | os.PathLike[str], *, what: str = "weights"
) -> dict[str, Tensor]:
    """Load a state dict from a local file safely (``torch.load(weights_only=True)``).

    Accepts a plain state dict, or a dict holding one under ``"state_dict"`` or ``"model"``.

    Raises:
        InputNotFoundError: If the file does not exist (a ``FileNotFoundError``).
        CheckpointError: If the file is not a loadable, pickle-free state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"{what} file not found: {str(p)!r} (pass an existing file path)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(
            f"cannot load {what} file {str(p)!r}: {type(exc).__name__}: {first_line}. "
            "Expected a state dict saved with torch.save(model.state_dict(), path); files that "
            "need arbitrary unpickling are refused for safety."
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(
            f"{what} file {str(p)!r} does not hold a state dict (a mapping of names to tensors); "
            f"got {type(obj).__name__}."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def imagenet_state_dict(name: str) -> dict[str, Tensor]:
    """torchvision's default ImageNet state dict of ResNet ``name`` (hub cache, hash-checked).

    Raises:
        ConfigError: For an unknown ResNet name.
        WeightsUnavailableError: If the weights are not cached and cannot be downloaded;
            the message gives the URL and where to put the file.
    """
    _check_name(name)
    w = torchvision.models.get_model_weights(name).DEFAULT
    try:
        sd: dict[str, Tensor] = w.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash RuntimeError
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
        raise WeightsUnavailableError(
            f"encoder_weights='imagenet': could not download {name} ImageNet weights "
            f"({type(exc).__name__}: {exc}). Fix: on a machine with internet, download "
            f"{w.url} and either place it at {cache} (torchvision's cache) or pass its "
            f"path as encoder_weights='/path/to/{Path(w.url).name}' (suimseg train "
            "--encoder-weights PATH); or train from random initialisation with "
            "encoder_weights=None (--encoder-weights none)."
        ) from exc
    return sd


def load_resnet_weights(
    module: nn.Module, name: str, weights: str | os.PathLike[str], *, hint: str = "encoder="
) -> None:
    """Load ``"imagenet"`` or a local torchvision ResNet state dict into ``module``.

    The state dict's ``fc.*`` entries are dropped and the rest must match exactly.

    Args:
        module: A ResNet body under torchvision's names (``conv1`` ... ``layer4``).
        name: The torchvision ResNet name (used for ``"imagenet"`` and in messages).
        weights: ``"imagenet"`` or a path to a state-dict file.
        hint: The argument the user can change to pick another ResNet (named in errors).

    Raises:
        WeightsUnavailableError: ImageNet weights cannot be downloaded (offline).
        InputNotFoundError: The local file does not exist (a ``FileNotFoundError``).
        CheckpointError: The file's keys or shapes do not match (listed).
    """
    if isinstance(weights, str) and weights.strip().lower() == "imagenet":
        sd = imagenet_state_dict(name)
        source = f"{name} ImageNet weights"
    elif isinstance(weights, (str, os.PathLike)):
        sd = load_state_dict_file(weights, what="encoder_weights")
        source = f"encoder_weights file {os.fspath(weights)!r}"
    else:
        raise ConfigError(
            "encoder_weights: expected None, 'imagenet' or a path to a local state-dict "
            f"file, got {weights!r}"
        )
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(
        f"{k}: expected {tuple(own[k].shape)}, got {tuple(sd[k].shape)}"
        for k in set(own) & set(sd)
        if own[k].shape != sd[k].shape
    )
    parts = [
        f"{label}: {', '.join(items[:10])}"
        + (f" ... (+{len(items) - 10} more)" if len(items) > 10 else "")
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", wrong),
        )
        if items
    ]
    if parts:
        raise CheckpointError(
            f"{source} does not match a torchvision {name}: "
            + "; ".join(parts)
            + f". Fix: pass a state dict of torchvision.models.{name}() "
            f"(or choose the matching {hint})."
        )
    module.load_state_dict(sd, strict=True)


class ResNetEncoder(nn.Module):
    """A torchvision ResNet without its classifier, returning five feature maps.

    Submodules keep torchvision's names, so a torchvision ResNet state dict loads directly.

    Args:
        name: One of ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"``.
        weights: ``None`` or ``"none"`` (any case) for random init, ``"imagenet"`` for
            torchvision's ImageNet weights (downloaded through torchvision's cache), or a
            path to a local torchvision ResNet state-dict file (loaded with
            ``weights_only=True``).
        in_channels: Input channels. With pre-trained weights and ``in_channels != 3`` the
            first convolution's weights are adapted (summed for 1 channel, otherwise tiled
            and rescaled), as timm and segmentation_models.pytorch do.

    Attributes:
        out_channels: Channels of the five features (enc1 ... enc5).
        reductions: Their strides relative to the input: ``(2, 4, 8, 16, 32)``.

    Shape:
        - Input: ``(N, in_channels, H, W)``
        - Output: a list of five tensors; feature ``i`` is ``(N, out_channels[i],
          ceil(H / reductions[i]), ceil(W / reductions[i]))``.

    Example:
        >>> enc = ResNetEncoder("resnet18")
        >>> [f.shape[1] for f in enc(torch.zeros(1, 3, 64, 64))]
        [64, 64, 128, 256, 512]
    """

    reductions: tuple[int, int, int, int, int] = (2, 4, 8, 16, 32)

    def __init__(
        self, name: str = "resnet50", weights: EncoderWeights = None, *, in_channels: int = 3
    ) -> None:
        super().__init__()
        _check_name(name)
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ConfigError(f"in_channels: expected a positive int, got {in_channels!r}")
        self.name = name
        self.in_channels = in_channels
        self.out_channels: tuple[int, int, int, int, int] = _CHANNELS[name]
        resnet = getattr(torchvision.models, name)(weights=None)
        self.conv1: nn.Conv2d = resnet.conv1
        self.bn1: nn.BatchNorm2d = resnet.bn1
        self.relu: nn.ReLU = resnet.relu
        self.maxpool: nn.MaxPool2d = resnet.maxpool
        self.layer1: nn.Sequential = resnet.layer1
        self.layer2: nn.Sequential = resnet.layer2
        self.layer3: nn.Sequential = resnet.layer3
        self.layer4: nn.Sequential = resnet.layer4
        weights = resolve_encoder_weights(weights)
        if weights is not None:
            self.load_pretrained(weights)
        if in_channels != 3:
            self._adapt_first_conv(in_channels)

    def _adapt_first_conv(self, in_channels: int) -> None:
        # Hand-written: torchvision has no input-channel adaptation (timm's adapt_input_conv
        # would be a new dependency for these eight lines).
        old = self.conv1.weight.detach()
        if in_channels == 1:
            new = old.sum(dim=1, keepdim=True)
        else:
            reps = -(-in_channels // 3)
            new = old.repeat(1, reps, 1, 1)[:, :in_channels] * (3.0 / in_channels)
        conv = nn.Conv2d(in_channels, old.shape[0], kernel_size=7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            conv.weight.copy_(new)
        self.conv1 = conv

    def load_pretrained(self, weights: str | os.PathLike[str]) -> None:
        """Load ``"imagenet"`` or a local state-dict file; see :func:`load_resnet_weights`."""
        load_resnet_weights(self, self.name, weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        f1 = self.relu(self.bn1(self.conv1(x)))
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        f5 = self.layer4(f4)
        return [f1, f2, f3, f4, f5]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, in_channels={self.in_channels}"
