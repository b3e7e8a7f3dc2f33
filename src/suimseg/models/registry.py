"""Build models by name from a JSON-able config (used by checkpoints and the CLI).

``build_model(model.model_name, **model.config)`` rebuilds a model's architecture (its
``config`` leaves out pre-trained weight sources: a checkpoint holds the weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from suimseg.errors import ConfigError

__all__ = ["MODEL_NAMES", "build_model", "model_spec"]


def _unet(**kwargs: Any) -> nn.Module:
    from suimseg.models.unet_resattn_v3 import UNetResAttnV3

    return UNetResAttnV3(**kwargs)


def _deeplab(**kwargs: Any) -> nn.Module:
    from suimseg.models.deeplab import DeepLabV3ResNet50

    return DeepLabV3ResNet50(**kwargs)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet_resattn_v3": _unet,
    "deeplabv3_resnet50": _deeplab,
}

#: Names accepted by :func:`build_model`.
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(name: str, **config: Any) -> nn.Module:
    """Build a model by its registry name (one of :data:`MODEL_NAMES`) from its ``config``.

    Raises:
        ConfigError: For an unknown name or invalid arguments.

    Example:
        >>> m = build_model("unet_resattn_v3", encoder="resnet18", num_classes=3)
        >>> type(m).__name__
        'UNetResAttnV3'
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ConfigError(
            f"model name: expected one of {', '.join(MODEL_NAMES)}, got {name!r}"
        ) from None
    try:
        return builder(**config)
    except TypeError as exc:
        raise ConfigError(f"invalid config for model {name!r}: {exc}") from exc


def model_spec(model: nn.Module) -> dict[str, Any]:
    """Return ``{"name": ..., "config": {...}}`` describing how to rebuild ``model``.

    Raises:
        ConfigError: If ``model`` is not a suimseg model (no ``model_name``/``config``).
    """
    name = getattr(model, "model_name", None)
    config = getattr(model, "config", None)
    if not isinstance(name, str) or not isinstance(config, dict):
        raise ConfigError(
            f"model: expected a suimseg model with `model_name` and `config` attributes, got "
            f"{type(model).__name__}; wrap custom models yourself or save their state_dict."
        )
    return {"name": name, "config": dict(config)}
