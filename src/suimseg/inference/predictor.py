"""The :class:`Predictor`: label maps (and probabilities) for images of any size.

Preprocessing is the dataset's evaluation path step for step (decode, resize in uint8,
``to_dtype``, ``normalize``), so a file gives the model the same tensor here as in training
evaluation. TTA, ensembles and tiling average float32 *class probabilities*, which are
resized bilinearly to each input's size before the ``argmax`` (a large upsampling in
column strips, bit-identical, so the ``(C, H, W)`` map at native size is never held
unless returned). See ``docs/inference.md``.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast, get_args

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from suimseg.data.readers import read_image_array, read_size, resize_uint8
from suimseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_size
from suimseg.errors import ConfigError
from suimseg.inference._images import ImageInput, as_image_list, load_image, to_image_tensor
from suimseg.inference.backends import OnnxRuntimeModel, declared_in_channels, native_bf16_cpu
from suimseg.inference.tiling import TileWeighting, sliding_window_probs

__all__ = ["TTA", "AmpMode", "Prediction", "Predictor", "Tiling"]

AmpMode = Literal["auto", "bf16", "fp16"]

#: Least share of pixels whose label must match float32's for ``amp="auto"`` to keep bf16.
AMP_AUTO_MIN_AGREEMENT = 0.995

_AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: every scale x (identity + each enabled flip), averaged.

    Attributes:
        hflip: Add a horizontally flipped view.
        vflip: Add a vertically flipped view (SUIM training uses vertical flips too).
        scales: Input scales relative to the model's input size (1.0 = plain).

    Example:
        >>> TTA.standard().num_views
        9
        >>> TTA(hflip=True).num_views
        2
    """

    hflip: bool = False
    vflip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        scales = tuple(self.scales)
        if not scales or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
            for s in scales
        ):
            raise ConfigError(
                f"scales: expected a non-empty sequence of positive numbers, got {self.scales!r}"
            )
        object.__setattr__(self, "scales", tuple(float(s) for s in scales))

    @classmethod
    def standard(cls) -> TTA:
        """Horizontal and vertical flips at scales 0.75, 1.0 and 1.25 (what ``--tta`` uses)."""
        return cls(hflip=True, vflip=True, scales=(0.75, 1.0, 1.25))

    @property
    def flips(self) -> tuple[tuple[int, ...], ...]:
        """The flip dims of each view (``()`` is the identity)."""
        dims: list[tuple[int, ...]] = [()]
        if self.hflip:
            dims.append((-1,))
        if self.vflip:
            dims.append((-2,))
        return tuple(dims)

    @property
    def num_views(self) -> int:
        """Forward passes per model and image."""
        return len(self.flips) * len(self.scales)


@dataclass(frozen=True)
class Tiling:
    """Sliding-window inference at native resolution (window = the model's input size).

    Attributes:
        overlap: Minimum overlap of neighbouring windows as a fraction, in ``[0, 1)``.
        weighting: ``"gaussian"`` (centre pixels count more) or ``"uniform"``.
    """

    overlap: float = 0.25
    weighting: TileWeighting = "gaussian"

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap: expected a fraction in [0, 1), got {self.overlap!r}")
        if self.weighting not in get_args(TileWeighting):
            raise ConfigError(
                f"weighting: expected one of {list(get_args(TileWeighting))}, "
                f"got {self.weighting!r}"
            )


@dataclass(frozen=True)
class Prediction:
    """The prediction for one image, at that image's size (or the requested size).

    Attributes:
        labels: Label map ``(H, W)`` on the CPU: int64, or the ``labels_dtype`` asked for.
        probs: float32 class probabilities ``(C, H, W)`` on the CPU, or ``None`` unless
            requested.
    """

    labels: Tensor
    probs: Tensor | None = field(default=None)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    down = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down)


#: Upsampled probabilities larger than this (bytes, float32 ``(C, H, W)``) are computed in
#: column strips of about this size (see :func:`_labels_and_probs`).
_STRIP_BYTES = 32 * 2**20

#: ATen's CPU bilinear kernel switches to its channels-last kernel for outputs with
#: ``H + W <= 128`` (and for 3 channels on one thread); strips stay clear of both.
_MIN_STRIP_SIDES = 129


def _strips_exact(probs: Tensor, size: tuple[int, int]) -> bool:
    """Whether :func:`_labels_and_probs` may split the upsampling of ``probs`` into strips.

    Bilinear upsampling without antialias computes, per output pixel, the two-tap blend
    along the width nested inside the two-tap blend along the height; a width-only pass
    (height unchanged: weights exactly 1 and 0) followed by height-only passes over
    column slices (width unchanged) therefore reproduces the one-pass result bit for bit,
    provided every pass runs the same kernel. Downsampling (antialias, a wider support)
    and the cases where ATen picks another kernel keep the one-pass path, and so does
    CUDA (where the memory is the device's and exactness is not checked here).
    """
    c, h, w = probs.shape
    big, small = size, (h, w)
    return (
        big[0] >= small[0]
        and big[1] >= small[1]
        and probs.dtype == torch.float32
        and probs.device.type == "cpu"
        and c != 3
        and big[0] + big[1] >= _MIN_STRIP_SIDES
        and h + big[1] >= _MIN_STRIP_SIDES
    )


def _labels_and_probs(
    probs: Tensor,
    size: tuple[int, int],
    *,
    return_probs: bool,
    labels_dtype: torch.dtype | None = torch.int64,
) -> tuple[Tensor, Tensor | None]:
    """The CPU label map (and probabilities) of ``probs`` ``(C, h, w)`` resized to ``size``.

    Equal, bit for bit, to ``_resize`` of the whole frame followed by ``argmax``, but a
    large upsampling never holds the ``(C, H, W)`` float32 result at once unless it is
    returned: the width is upsampled first (``(C, h, W)``, ``h`` being the model's size),
    then the height in column strips of about ``_STRIP_BYTES``, each reduced to labels
    (and copied into the returned probabilities) before the next one. The labels are
    written straight into a ``labels_dtype`` map (a 48-megapixel map is 366 MiB as int64,
    46 MiB as uint8); ``None`` picks uint8 for up to 256 classes, else int64.
    """
    c = int(probs.shape[0])
    if labels_dtype is None:
        labels_dtype = torch.uint8 if c <= 256 else torch.int64
    if c - 1 > torch.iinfo(labels_dtype).max:
        raise ConfigError(
            f"labels_dtype: {labels_dtype} cannot hold the class ids of a {c}-class model; "
            "use torch.int64"
        )
    height, width = size
    full_bytes = c * height * width * probs.element_size()
    if full_bytes <= _STRIP_BYTES or not _strips_exact(probs, size):
        p = _resize(probs.unsqueeze(0), size)[0]
        return p.argmax(dim=0).to("cpu", labels_dtype), (p.cpu() if return_probs else None)
    rows = _resize(probs.unsqueeze(0), (int(probs.shape[1]), width))  # (1, C, h, W)
    labels = torch.empty((height, width), dtype=labels_dtype)
    out = torch.empty((c, height, width), dtype=probs.dtype) if return_probs else None
    step = max(_MIN_STRIP_SIDES, _STRIP_BYTES // max(1, c * height * probs.element_size()))
    for c0 in range(0, width, step):
        cols = rows[..., c0 : c0 + step]
        strip = _resize(cols, (height, int(cols.shape[-1])))[0]  # (C, H, <= step)
        labels[:, c0 : c0 + step] = strip.argmax(dim=0)
        if out is not None:
            out[:, :, c0 : c0 + step] = strip
        del strip
    return labels, out


_LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_labels_dtype(labels_dtype: object) -> torch.dtype:
    """``labels_dtype`` if it is an integer dtype a label map can be stored in."""
    if not isinstance(labels_dtype, torch.dtype) or labels_dtype not in _LABEL_DTYPES:
        names = ", ".join(str(d) for d in _LABEL_DTYPES)
        raise ConfigError(f"labels_dtype: expected one of {names}, got {labels_dtype!r}")
    return labels_dtype


@contextlib.contextmanager
def _eval_mode(models: Sequence[nn.Module]) -> Iterator[None]:
    """Put every module (and submodule) in eval mode, restoring each one's flag after."""
    saved = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


class Predictor:
    """Segment images with one model or an ensemble, with optional TTA and tiling.

    Args:
        models: One model or an ensemble, mapping a normalised ``(N, 3, h, w)`` batch to
            logits ``(N, C, h', w')`` (resized to ``(h, w)``) or a dict with ``"out"``. They
            move to ``device`` and run in eval mode (their flags are restored after).
        device: Device to run on (default: the first model's).
        image_size: Model input size (int or ``(height, width)``), or ``None`` for each
            image's native resolution; the window size with ``tiling``.
        tta: A :class:`TTA`, ``True`` for :meth:`TTA.standard`, or ``None``/``False``.
        amp: Autocast dtype (``"bf16"``, ``"fp16"``), ``None`` (float32) or ``"auto"``
            (default): bf16 on a CPU with native bf16 instructions
            (:func:`~suimseg.inference.backends.native_bf16_cpu`) if, on the first batch,
            its labels agree with float32's on >= 99.5% of pixels (else float32, with a
            warning); float32 everywhere else (also on CUDA). Probabilities stay float32.
            Autocast is PyTorch's: with an :class:`~suimseg.inference.OnnxRuntimeModel`,
            ``"bf16"``/``"fp16"`` are refused and ``"auto"`` means float32.
        weights: Ensemble weights, one per model (positive; normalised; equal by default).
        tiling: A :class:`Tiling`, ``True`` for the defaults, or ``None``/``False``.
        batch_size: Images (or windows) per forward pass.
        mean: Normalisation means (ImageNet, as in training).
        std: Normalisation standard deviations.

    Raises:
        ConfigError: For invalid arguments, ``amp`` ``"bf16"``/``"fp16"`` with an
            onnxruntime model, or a model whose ``config`` declares other than 3 input
            channels.

    Example:
        >>> from suimseg.models import UNetResAttnV3
        >>> net = UNetResAttnV3(encoder="resnet18", decoder_channels=(16, 16, 8, 8),
        ...                     bridge_channels=16)
        >>> predictor = Predictor(net, image_size=64, tta=TTA(hflip=True))
        >>> pred = predictor.predict(np.zeros((45, 71, 3), np.uint8))[0]
        >>> tuple(pred.labels.shape)
        (45, 71)
    """

    def __init__(
        self,
        models: nn.Module | Sequence[nn.Module],
        *,
        device: torch.device | str | None = None,
        image_size: int | tuple[int, int] | None = 384,
        tta: TTA | bool | None = None,
        amp: AmpMode | None = "auto",
        weights: Sequence[float] | None = None,
        tiling: Tiling | bool | None = None,
        batch_size: int = 8,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        model_list = [models] if isinstance(models, nn.Module) else list(models)
        if not model_list or not all(isinstance(m, nn.Module) for m in model_list):
            raise ConfigError(
                "models: expected an nn.Module or a non-empty sequence of nn.Modules, got "
                f"{type(models).__name__}"
            )
        for i, model in enumerate(model_list):
            channels = declared_in_channels(model)
            if channels is not None and channels != 3:
                raise ConfigError(
                    f"models[{i}]: the model expects {channels} input channels, but the "
                    "Predictor feeds it RGB images (3 channels); use a model built with "
                    "in_channels=3"
                )
        if device is None:
            first = next(model_list[0].parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.models: tuple[nn.Module, ...] = tuple(m.to(self.device) for m in model_list)
        self.image_size = normalize_size(image_size, name="image_size")
        if tta is True:
            tta = TTA.standard()
        elif tta is None or tta is False:
            tta = TTA()
        if not isinstance(tta, TTA):
            raise ConfigError(f"tta: expected a TTA, True, False or None, got {tta!r}")
        self.tta: TTA = tta
        if amp is not None and amp not in get_args(AmpMode):
            raise ConfigError(
                f"amp: expected one of {list(get_args(AmpMode))} or None, got {amp!r}"
            )
        self.amp_requested: AmpMode | None = amp
        self.amp: AmpMode | None = self._resolve_amp(amp)
        # amp="auto" chose bf16: compared with float32 on the first batch, then settled.
        self._amp_check_pending = amp == "auto" and self.amp is not None
        self.weights = self._check_weights(weights, len(self.models))
        if tiling is True:
            tiling = Tiling()
        elif tiling is False:
            tiling = None
        if tiling is not None and not isinstance(tiling, Tiling):
            raise ConfigError(f"tiling: expected a Tiling, True, False or None, got {tiling!r}")
        if tiling is not None and self.image_size is None:
            raise ConfigError(
                "tiling: needs a window size; pass image_size (e.g. the training size, 384) "
                "together with tiling, or image_size=None without tiling"
            )
        self.tiling: Tiling | None = tiling
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size: expected a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ConfigError(
                f"mean/std: expected 3 values each (std > 0), got mean={mean!r}, std={std!r}"
            )
        self._mean = [float(m) for m in mean]
        self._std = [float(s) for s in std]

    @property
    def backend(self) -> str:
        """``"torch"``, ``"onnxruntime"``, or ``"mixed"`` for an ensemble of both."""
        kinds = {isinstance(m, OnnxRuntimeModel) for m in self.models}
        return "mixed" if len(kinds) == 2 else "onnxruntime" if True in kinds else "torch"

    def _resolve_amp(self, amp: AmpMode | None) -> AmpMode | None:
        """The autocast dtype ``amp`` means here (``"auto"`` -> ``"bf16"`` or ``None``)."""
        onnx = any(isinstance(m, OnnxRuntimeModel) for m in self.models)
        if amp in ("bf16", "fp16") and onnx:
            raise ConfigError(
                f"amp: {amp!r} applies to the torch backend only (autocast); onnxruntime "
                "models run in the precision they were exported in: drop amp (amp=None, "
                "--amp none) or use backend='torch'"
            )
        if amp != "auto":
            return amp
        if onnx or self.device.type != "cpu" or not native_bf16_cpu():
            return None
        return "bf16"

    def _settle_auto_amp(self, x: Tensor) -> None:
        """``amp="auto"``: keep bf16 only if its labels agree with float32's on ``x``."""
        self._amp_check_pending = False
        agreement = 1.0
        for model in self.models:
            fp32 = self._logits(model, x, dtype=None).argmax(dim=1)
            bf16 = self._logits(model, x).argmax(dim=1)
            agreement = min(agreement, float((fp32 == bf16).float().mean()))
        if agreement < AMP_AUTO_MIN_AGREEMENT:
            self.amp = None
            warnings.warn(
                f"amp='auto': bf16 autocast labels agree with float32's on only "
                f"{100 * agreement:.2f}% of pixels (< {100 * AMP_AUTO_MIN_AGREEMENT:.1f}%) "
                "on the first batch; predicting in float32 (pass amp='bf16' to force bf16)",
                stacklevel=3,
            )

    @staticmethod
    def _check_weights(weights: Sequence[float] | None, n: int) -> tuple[float, ...]:
        if weights is None:
            return tuple(1.0 / n for _ in range(n))
        w = tuple(weights)
        if len(w) != n or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
            for x in w
        ):
            raise ConfigError(
                f"weights: expected {n} positive finite numbers (one per model), got {weights!r}"
            )
        total = float(sum(w))
        return tuple(float(x) / total for x in w)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(models={len(self.models)}, device={str(self.device)!r}, "
            f"image_size={self.image_size}, tta={self.tta}, amp={self.amp!r}, "
            f"backend={self.backend!r}, "
            f"tiling={self.tiling}, weights={self.weights})"
        )

    # ------------------------------------------------------------------ core maths
    def _logits(
        self, model: nn.Module, x: Tensor, *, dtype: torch.dtype | Literal["amp"] | None = "amp"
    ) -> Tensor:
        """Float32 logits of ``model`` at ``x``'s size, under autocast to ``dtype``
        (default: ``self.amp``'s; never for onnxruntime models)."""
        if dtype == "amp":
            dtype = _AMP_DTYPES.get(self.amp) if self.amp is not None else None
        ctx: contextlib.AbstractContextManager[object] = (
            torch.autocast(device_type=self.device.type, dtype=dtype)
            if dtype is not None and not isinstance(model, OnnxRuntimeModel)
            else contextlib.nullcontext()
        )
        with ctx:
            out = model(x)
        if isinstance(out, dict):
            out = out.get("out")
        if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ConfigError(
                f"models: expected logits of shape (N, C, H, W) with N={x.shape[0]}, got {shape}"
            )
        return _resize(out.float(), (int(x.shape[-2]), int(x.shape[-1])))

    def probs_normalized(self, x: Tensor) -> Tensor:
        """Ensemble- and TTA-averaged probabilities of a normalised batch, at its own size.

        No resizing to ``image_size``, no tiling. Call it inside :meth:`eval_context`.

        Args:
            x: An ImageNet-normalised batch ``(N, 3, h, w)`` on any device.

        Returns:
            Float32 probabilities ``(N, C, h, w)`` on ``self.device``; they sum to 1 over C.
        """
        x = x.to(self.device, torch.float32)
        if self._amp_check_pending:
            self._settle_auto_amp(x)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        views = self.tta.num_views
        total: Tensor | None = None
        for model, weight in zip(self.models, self.weights, strict=True):
            for scale in self.tta.scales:
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                xs = _resize(x, size)
                for dims in self.tta.flips:
                    xi = xs.flip(dims) if dims else xs
                    p = self._logits(model, xi).softmax(dim=1)
                    if total is not None and p.shape[1] != total.shape[1]:
                        raise ConfigError(
                            f"models: every ensemble member must predict the same number of "
                            f"classes, got {total.shape[1]} and {p.shape[1]}"
                        )
                    if dims:
                        p = p.flip(dims)
                    p = _resize(p, (h, w)) * (weight / views)
                    total = p if total is None else total + p
        if total is None:  # pragma: no cover - there is always one model and one view
            raise ConfigError("models: no forward pass ran (no model or no TTA view)")
        return total

    @contextlib.contextmanager
    def eval_context(self) -> Iterator[None]:
        """Eval mode + ``torch.inference_mode()`` for the duration; modes are restored."""
        with _eval_mode(self.models), torch.inference_mode():
            yield

    def _model_input(
        self, image: ImageInput, name: str = "image"
    ) -> tuple[Tensor, tuple[int, int]]:
        """The normalised ``(1, 3, h, w)`` input of one image (``eval_transforms``' steps).

        ``name`` names the image in error messages (``"inputs[2]"``).
        """
        size = self.image_size if self.tiling is None else None
        if isinstance(image, (str, os.PathLike)):
            if size is not None:
                w, h = read_size(image)
                arr = read_image_array(image, size=size)
                t, native = torch.from_numpy(arr).permute(2, 0, 1), (h, w)
            else:
                t = to_image_tensor(load_image(image))
                native = (int(t.shape[-2]), int(t.shape[-1]))
        else:
            t = to_image_tensor(image, name=name)
            native = (int(t.shape[-2]), int(t.shape[-1]))
        if size is not None and tuple(t.shape[-2:]) != size:
            if t.dtype == torch.uint8:
                t = resize_uint8(t, size)
            else:
                t = F.interpolate(
                    t.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True
                )[0]
        x = TF.to_dtype(t.to(self.device), torch.float32, scale=True)
        return TF.normalize(x, self._mean, self._std).unsqueeze(0), native

    # ------------------------------------------------------------------ public API
    def predict(
        self,
        inputs: ImageInput | Sequence[ImageInput],
        *,
        return_probs: bool = False,
        output_sizes: Sequence[tuple[int, int]] | None = None,
        labels_dtype: torch.dtype = torch.int64,
    ) -> list[Prediction]:
        """Predict label maps (and optionally probabilities) for one or more images.

        Args:
            inputs: One image or a sequence (see :data:`ImageInput`); sizes may differ.
            return_probs: Also return the ``(C, H, W)`` probabilities (without it, a large
                output's probabilities are upsampled and reduced to labels strip by strip).
            output_sizes: ``(height, width)`` of each output (default: each input's size).
            labels_dtype: Integer dtype of the label maps: ``torch.int64`` (what ``argmax``
                gives, the default) or a smaller one such as ``torch.uint8`` for big images
                (8x less memory; the same ids).

        Returns:
            One :class:`Prediction` per image (a 4-D tensor counts as N images), in order.

        Raises:
            ConfigError: For unsupported inputs (named ``inputs[i]``, e.g. an empty image
                with a height or width of 0), a wrong number of ``output_sizes`` or a
                ``labels_dtype`` that is not an integer dtype holding the class ids.
            InputNotFoundError: For a path that does not exist (a ``FileNotFoundError``).

        Example:
            >>> preds = predictor.predict(["a.jpg", "b.png"])  # doctest: +SKIP
            >>> preds[0].labels.shape  # the size of a.jpg  # doctest: +SKIP
        """
        images = as_image_list(inputs)
        _check_labels_dtype(labels_dtype)
        if output_sizes is not None:
            sizes = [normalize_size(s, name="output_sizes") for s in output_sizes]
            if len(sizes) != len(images):
                raise ConfigError(
                    f"output_sizes: expected one (height, width) per image ({len(images)}), "
                    f"got {len(sizes)}"
                )
        results: list[Prediction] = []
        with self.eval_context():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                prepared = [
                    self._model_input(im, f"inputs[{start + j}]") for j, im in enumerate(chunk)
                ]
                targets = (
                    [s for s in sizes[start : start + len(chunk)] if s is not None]
                    if output_sizes is not None
                    else None
                )
                results += self._predict_prepared(
                    prepared, targets, return_probs=return_probs, labels_dtype=labels_dtype
                )
        return results

    def _predict_prepared(
        self,
        prepared: list[tuple[Tensor, tuple[int, int]]],
        targets: list[tuple[int, int]] | None = None,
        *,
        return_probs: bool = False,
        labels_dtype: torch.dtype | None = torch.int64,
    ) -> list[Prediction]:
        """Predictions of inputs from :meth:`_model_input` (one batch; inside ``eval_context``).

        ``targets`` are the output sizes (default: each input's native size);
        ``labels_dtype=None``: the smallest of uint8 and int64 that holds the class ids. What
        :meth:`predict` does after decoding; :func:`~suimseg.inference.predict_files` decodes
        the next files in worker threads meanwhile.
        """
        sizes = targets if targets is not None else [native for _, native in prepared]
        batch = [x for x, _ in prepared]
        out: list[Prediction] = []
        for probs, size in zip(self._probs_chunk(batch), sizes, strict=True):
            labels, p = _labels_and_probs(
                probs, size, return_probs=return_probs, labels_dtype=labels_dtype
            )
            out.append(Prediction(labels=labels, probs=p))
        return out

    def _probs_chunk(self, inputs: list[Tensor]) -> list[Tensor]:
        """Probabilities of each prepared input: one batch at ``image_size``, else one by one."""
        if self.tiling is not None and self.image_size is not None:
            t = self.tiling
            return [
                sliding_window_probs(self.probs_normalized, x, self.image_size,
                                     overlap=t.overlap, weighting=t.weighting,
                                     batch_size=self.batch_size)[0]
                for x in inputs
            ]  # fmt: skip
        if self.image_size is None:
            return [self.probs_normalized(x)[0] for x in inputs]
        return list(self.probs_normalized(torch.cat(inputs)).unbind(0))

    def predict_proba(self, inputs: ImageInput | Sequence[ImageInput]) -> list[Tensor]:
        """Class probabilities ``(C, H, W)`` (float32, CPU) for each image at its own size.

        Example:
            >>> p = predictor.predict_proba(np.zeros((20, 30, 3), np.uint8))[0]  # doctest: +SKIP
            >>> p.sum(0)  # all ones  # doctest: +SKIP
        """
        return [cast(Tensor, p.probs) for p in self.predict(inputs, return_probs=True)]
