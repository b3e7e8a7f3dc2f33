"""Inference: predictor (TTA, ensembles, tiling), file prediction, export, evaluation.

Example:
    >>> import numpy as np
    >>> from suimseg.models import UNetResAttnV3
    >>> from suimseg.inference import TTA, Predictor
    >>> net = UNetResAttnV3(encoder="resnet18", decoder_channels=(16, 16, 8, 8),
    ...                     bridge_channels=16)
    >>> pred = Predictor(net, image_size=64, tta=TTA(hflip=True)).predict(
    ...     np.zeros((45, 71, 3), np.uint8))[0]
    >>> tuple(pred.labels.shape)
    (45, 71)
"""

from suimseg.inference._images import ImageInput, load_image, to_float_image
from suimseg.inference.backends import (
    Backend,
    OnnxRuntimeModel,
    cached_onnx_export,
    load_inference_model,
    native_bf16_cpu,
)
from suimseg.inference.evaluation import (
    PAPER_CLASS_CODES,
    PAPER_LABEL,
    PAPER_SIZE,
    EvalData,
    SUIMPaperMetrics,
    binary_iou,
    boundary_f_measure,
    evaluate_predictor,
    evaluate_suim_paper,
)
from suimseg.inference.export import (
    CalibrationMethod,
    export_onnx,
    export_torchscript,
    quantize_onnx,
    verify_onnx,
)
from suimseg.inference.files import MaskFormat, PredictFilesResult, collect_inputs, predict_files
from suimseg.inference.predictor import TTA, AmpMode, Prediction, Predictor, Tiling
from suimseg.inference.reports import (
    EvaluationResult,
    compare_results,
    format_comparison,
    format_gain_report,
    load_result,
    plot_history,
    save_result,
)
from suimseg.inference.tiling import sliding_window_probs, tile_starts, window_weights

__all__ = [
    "PAPER_CLASS_CODES",
    "PAPER_LABEL",
    "PAPER_SIZE",
    "TTA",
    "AmpMode",
    "Backend",
    "CalibrationMethod",
    "EvalData",
    "EvaluationResult",
    "ImageInput",
    "MaskFormat",
    "OnnxRuntimeModel",
    "PredictFilesResult",
    "Prediction",
    "Predictor",
    "SUIMPaperMetrics",
    "Tiling",
    "binary_iou",
    "boundary_f_measure",
    "cached_onnx_export",
    "collect_inputs",
    "compare_results",
    "evaluate_predictor",
    "evaluate_suim_paper",
    "export_onnx",
    "export_torchscript",
    "format_comparison",
    "format_gain_report",
    "load_image",
    "load_inference_model",
    "load_result",
    "native_bf16_cpu",
    "plot_history",
    "predict_files",
    "quantize_onnx",
    "save_result",
    "sliding_window_probs",
    "tile_starts",
    "to_float_image",
    "verify_onnx",
    "window_weights",
]
