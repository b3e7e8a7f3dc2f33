"""Benchmark batch-1 CPU latency of the int8 ONNX export vs the float32 one (and eager).

The model (random weights, or ``--checkpoint``) is exported to float32 ONNX with
:func:`suimseg.inference.export_onnx` and quantized with ``export_onnx(int8=True)``
(static QDQ, per-channel int8 weights, uint8 activations), calibrated on synthetic
SUIM-format images (or ``--calibration-dir``). Then three backends run the same random,
already normalised batch-1 input in interleaved rounds (one call of each per round, so load
changes on a shared CPU hit all alike): ``eager_fp32`` (PyTorch, eval mode,
``inference_mode``), ``ort_fp32`` and ``ort_int8`` (onnxruntime's CPU provider). Only the
forward pass is timed (no softmax, no image decoding). The report lists the CPU's int8
dot-product extensions (VNNI, AMX): int8 pays off mostly where they exist.

Settings: quick: the tiny stand-in V3 at 64x64, 2 calibration images, 3 repeats;
``--full``: the design's V3 at 384x384 (training size), 8 calibration images, 15 repeats.

Usage::

    python benchmarks/quantize.py                     # quick plumbing run
    python benchmarks/quantize.py --full --threads 1  # the figure in docs/inference.md
    python benchmarks/quantize.py --checkpoint runs/v3/best.pt --size 384
"""

from __future__ import annotations

import importlib
import importlib.util
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as bench
import numpy as np
import torch
from torch import nn

from suimseg.data import make_synthetic_suim
from suimseg.engine import load_model
from suimseg.inference import export_onnx

#: /proc/cpuinfo flags of the x86 int8 dot-product instructions onnxruntime uses.
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")


def cpu_int8_flags() -> list[str]:
    """The :data:`INT8_FLAGS` this CPU has (empty where none, or not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in INT8_FLAGS if f in flags]


def _session(path: Path, threads: int) -> Any:
    ort: Any = importlib.import_module("onnxruntime")
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    p = bench.make_parser(__doc__, "quantize", device=False, threads=1, models=True)
    p.add_argument("--size", type=int, help="square input side (64; --full 384)")
    p.add_argument("--checkpoint", type=Path, help="a trained checkpoint instead of --models")
    p.add_argument("--calibration-dir", type=Path, help="calibration images (default: synthetic)")
    p.add_argument("--calibration-images", type=int, help="calibration images (2; --full 8)")
    args, device = bench.begin(p, argv)
    if importlib.util.find_spec("onnxruntime") is None:
        raise SystemExit("this benchmark needs the onnx extra: pip install 'suimseg[onnx]'")
    size: int = bench.pick(args, "size", 64, 384)
    n_calib: int = bench.pick(args, "calibration_images", 2, 8)
    warmup, repeats = bench.timing(args, (1, 3), (3, 15))
    if args.checkpoint is not None:
        model: nn.Module = load_model(args.checkpoint)
        name = str(args.checkpoint)
    else:
        name = bench.chosen_model(args)
        torch.manual_seed(0)
        model = bench.model_factories(tiny=args.tiny_models)[name]()
    model.eval()
    threads = args.threads if args.threads > 0 else torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        calibration = args.calibration_dir
        if calibration is None:
            root = make_synthetic_suim(folder / "data", n_train_val=n_calib, n_test=1,
                                       size=(size * 4 // 3, size), seed=0)  # fmt: skip
            calibration = root / "train_val" / "images"
        shape = (1, 3, size, size)
        fp32 = export_onnx(model, folder / "fp32.onnx", example_shape=shape)
        int8 = export_onnx(model, folder / "int8.onnx", example_shape=shape, int8=True,
                           calibration=calibration, calibration_size=size,
                           calibration_images=n_calib, min_agreement=0.0)  # fmt: skip
        mib = {"fp32": fp32.stat().st_size / 2**20, "int8": int8.stat().st_size / 2**20}
        x = torch.randn(shape)
        feed = {"image": x.numpy()}
        sessions = {"ort_fp32": _session(fp32, threads), "ort_int8": _session(int8, threads)}
        with torch.inference_mode():
            calls = {
                "eager_fp32": lambda: model(x),
                **{k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()},
            }
            timings = bench.time_interleaved(calls, device=device, warmup=warmup, repeats=repeats)
            want = model(x).argmax(1).numpy()
        got = {k: np.argmax(s.run(None, feed)[0], axis=1) for k, s in sessions.items()}
    results = [
        {
            "backend": backend,
            "size": [size, size],
            "batch": 1,
            "latency_ms_median": 1e3 * t["median_s"],
            "latency_ms_min": 1e3 * t["min_s"],
            "runs_s": t["runs_s"],
            "random_input_label_agreement_with_eager": (
                float((got[backend] == want).mean()) if backend in got else 1.0
            ),
        }
        for backend, t in timings.items()
    ]
    med = {r["backend"]: r["latency_ms_median"] for r in results}
    paired = [f / i for f, i in zip(timings["ort_fp32"]["runs_s"], timings["ort_int8"]["runs_s"],
                                    strict=True)]  # fmt: skip
    speedup = {
        "int8_vs_ort_fp32": med["ort_fp32"] / med["ort_int8"],
        "int8_vs_ort_fp32_paired_median": statistics.median(paired),
        "int8_vs_eager_fp32": med["eager_fp32"] / med["ort_int8"],
        "ort_fp32_vs_eager_fp32": med["eager_fp32"] / med["ort_fp32"],
    }
    settings = {
        "model": name,
        "tiny_models": bool(args.tiny_models),
        "size": [size, size],
        "batch": 1,
        "threads": threads,
        "calibration_images": n_calib,
        "calibration": "synthetic" if args.calibration_dir is None else str(calibration),
        "quantization": "static QDQ, per-channel int8 weights, uint8 activations (MinMax), "
        "first and last Conv kept in float32",
        "file_mib": mib,
        "cpu_int8_extensions": cpu_int8_flags(),
        "warmup": warmup,
        "repeats": repeats,
        "statistic": "median batch-1 forward latency; backends alternate call by call",
        "agreement_note": "label agreement with eager on the random input: a plumbing "
        "check for fp32; for int8 it means something only with a trained --checkpoint",
    }
    bench.print_table(
        ["backend", "size", "ms (median)", "ms (min)"],
        [[r["backend"], f"{size}x{size}", r["latency_ms_median"], r["latency_ms_min"]]
         for r in results],
    )  # fmt: skip
    print(
        f"int8 speed-up: {speedup['int8_vs_ort_fp32']:.2f}x vs onnxruntime fp32, "
        f"{speedup['int8_vs_eager_fp32']:.2f}x vs eager fp32 "
        f"(CPU int8 extensions: {', '.join(settings['cpu_int8_extensions']) or 'none'})"
    )
    info = bench.machine_info(device)
    bench.write_report(args.out, "suimseg int8 quantization", info, settings, results,
                       speedup=speedup)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
