"""Build models by name, and check model configs read from files (checkpoints, config.json).

``build_model(model.model_name, **model.config)`` rebuilds a model's architecture (its
``config`` leaves out pre-trained weight sources: a checkpoint holds the weights).
:func:`check_stored_config` is the one schema for a config read from a file: known fields,
the constructor defaults' types, the bounds in :data:`CONFIG_LIMITS`, and no weight source.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from suimseg.errors import CheckpointError, ConfigError
from suimseg.models.encoders import ENCODER_NAMES

__all__ = ["CONFIG_LIMITS", "MODEL_NAMES", "build_model", "check_stored_config", "model_spec"]

#: Names accepted by :func:`build_model`.
MODEL_NAMES: tuple[str, ...] = ("unet_resattn_v3", "deeplabv3_resnet50")
#: Inclusive bounds of the numeric fields of a stored model config (each list item too):
#: a damaged or hostile file must not make suimseg allocate tens of GB.
CONFIG_LIMITS: dict[str, tuple[int, int]] = {
    "in_channels": (1, 16384),
    "num_classes": (1, 1024),
    "bridge_channels": (1, 16384),
    "decoder_channels": (1, 16384),
    "se_reduction": (1, 16384),
}
_CHOICES: dict[str, tuple[str, ...]] = {"encoder": ENCODER_NAMES}
#: Fields naming a file or a download: never taken from a stored config (forced to None).
_WEIGHT_SOURCES = ("encoder_weights",)


def model_class(name: str) -> type[nn.Module]:
    """The model class registered as ``name`` (one of :data:`MODEL_NAMES`).

    Raises:
        ConfigError: For an unknown name.
    """
    from suimseg.models.deeplab import DeepLabV3ResNet50
    from suimseg.models.unet_resattn_v3 import UNetResAttnV3

    classes = {c.model_name: c for c in (UNetResAttnV3, DeepLabV3ResNet50)}
    if name not in classes:
        raise ConfigError(f"model name: expected one of {', '.join(MODEL_NAMES)}, got {name!r}")
    return classes[name]


def build_model(name: str, **config: Any) -> nn.Module:
    """Build a model by its registry name (one of :data:`MODEL_NAMES`) from its ``config``.

    Raises:
        ConfigError: For an unknown name or invalid arguments.

    Example:
        >>> m = build_model("unet_resattn_v3", encoder="resnet18", num_classes=3)
        >>> type(m).__name__
        'UNetResAttnV3'
    """
    cls = model_class(name)
    try:
        return cls(**config)
    except TypeError as exc:
        raise ConfigError(f"invalid config for model {name!r}: {exc}") from exc


def _type_ok(value: object, default: object) -> bool:
    """Whether ``value`` (read from a file) has the type of a constructor ``default``."""
    if isinstance(default, (list, tuple)):
        items = value if isinstance(value, (list, tuple)) and len(value) <= 64 else None
        return items is not None and (not default or all(_type_ok(v, default[0]) for v in items))
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float, str)):
        number = isinstance(default, float) and isinstance(value, int)
        return isinstance(value, type(default)) or number
    return True  # None or anything else: the constructor checks it


def check_stored_config(cls: type[Any], config: object, where: str) -> dict[str, Any]:
    """Validate a model config read from a file, before anything is built or downloaded.

    Args:
        cls: The model class the config is for (its constructor gives fields and types).
        config: The stored config (from a checkpoint, ``.safetensors`` metadata or
            ``config.json``).
        where: Prefix of error messages, naming the file.

    Returns:
        The keyword arguments for ``cls``, with any weight source (``encoder_weights``)
        set to ``None``: a stored model's weights are in its file, never downloaded.

    Raises:
        CheckpointError: For a non-dict, unknown fields, a field of the wrong type, out of
            :data:`CONFIG_LIMITS` or not one of the known names (e.g. the encoder).
    """
    damaged = "the file is damaged or not from suimseg"
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: expected a dict of {cls.__name__} arguments, got "
                              f"{type(config).__name__}; {damaged}")  # fmt: skip
    params = {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    unknown = sorted(str(k) for k in set(config) - set(params))
    if unknown:
        raise CheckpointError(
            f"{where}: unknown field(s) {unknown} for {cls.__name__}; expected some of "
            f"{sorted(params)}. Was it saved from another model class?"
        )
    kwargs = {}
    for key, value in config.items():
        default, field = params[key], f"{where}: field {key!r}"
        if key in _WEIGHT_SOURCES:
            value = None  # never read or download a file a stored config names
        elif default is not inspect.Parameter.empty and not _type_ok(value, default):
            kind = type(default).__name__
            kind = f"a list of {type(default[0]).__name__}" if kind in ("list", "tuple") else kind
            raise CheckpointError(f"{field} must be {kind}, got {value!r}; {damaged}")
        low, high = CONFIG_LIMITS.get(key, (None, None))
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if low is not None and high is not None and not low <= item <= high:
                side = f"above the limit {high}" if item > high else f"below the minimum {low}"
                raise CheckpointError(f"{field} = {value!r} is {side}; {damaged}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise CheckpointError(
                f"{field} = {value!r} is not one of {', '.join(_CHOICES[key])}; {damaged}"
            )
        kwargs[key] = value
    return kwargs


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
