"""Benchmark folder prediction (images/s, plain vs pipelined) and the peak memory of one big image.

Two measurements, both through the library's own entry points:

- ``folder``: :func:`suimseg.inference.predict_files` over ``--n-images`` synthetic JPEGs
  of ``--source-size`` (generated into a temporary folder), BMP masks written to a
  temporary output folder (``overwrite=True``). ``workers=0`` is the plain loop (decode,
  predict, write one image after the other, in one thread, as before issue #20);
  ``workers=N`` (``--workers``) decodes the next images in ``N`` threads while the model
  runs and writes the masks in another thread. Same :class:`Predictor` (same model,
  backend and threads), interleaved rounds (``--warmup`` untimed, ``--repeats`` timed),
  images/s from the median; the two variants' mask files are compared byte for byte.
- ``memory``: the peak resident memory (``ru_maxrss``) of predicting one ``--big-size``
  JPEG (``Predictor.predict(path)``, the default resize path) in a fresh subprocess per
  variant: ``decode`` (only the predictor's decode-and-resize of the file: what the
  input side costs), ``one-pass`` (the code before issue #20: the ``(C, H, W)``
  probabilities upsampled to native size in one ``F.interpolate``, then ``argmax``;
  reached by raising ``suimseg.inference.predictor._STRIP_BYTES`` above any image, which
  makes the predictor take exactly that path) and ``strips`` (the default: width
  upsampled at the model's height, then the height in column strips reduced to labels
  one by one), ``strips-uint8`` (the same with ``labels_dtype=torch.uint8``) and
  ``mask-file`` (:func:`~suimseg.inference.predict_files` writing the BMP mask, what
  ``suimseg predict`` does; its digest is of the mask decoded back to ids). ``baseline``
  is the process's peak before the prediction (Python, torch, the model); the label
  maps' SHA-256 digests must be equal. ``--onnx FILE`` runs the memory part on an
  onnxruntime model (e.g. an int8 export) instead of the PyTorch one.

Settings: quick (any CPU): 16 images of 640x480, 3000x4000 big image, the ``v3`` model
at 384. ``--full``: 100 images, 8000x6000 (48 megapixels). ``--tiny-models`` swaps in the
ResNet-18 stand-in (the memory figures keep their meaning, minus the weights; images/s
then weighs decoding and writing more than a real model would).

Usage::

    python benchmarks/predict_folder.py                  # quick
    python benchmarks/predict_folder.py --full           # the issue's settings
    python benchmarks/predict_folder.py --full --tiny-models --parts memory
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as bench
import numpy as np
from PIL import Image

MEMORY_VARIANTS = ("decode", "one-pass", "strips", "strips-uint8", "mask-file")
PARTS = ("folder", "memory")


def _synthetic_jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    """A smooth random ``(height, width)`` JPEG (a small noise field, upscaled)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, size[0] // 40), max(2, size[1] // 40), 3), np.uint8)
    image = Image.fromarray(small).resize((size[1], size[0]), Image.Resampling.BICUBIC)
    image.save(path, format="JPEG", quality=90)


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0); ``False`` where it cannot be reset.

    A child's ``ru_maxrss`` starts at its parent's peak (Linux keeps the forked copy's
    high-water mark across ``exec``), so the child resets it before measuring.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _maxrss_mib() -> float:
    """This process's peak resident memory (since :func:`_reset_peak`), in MiB.

    ``VmHWM`` from ``/proc/self/status`` (the number ``ru_maxrss`` reports, resettable),
    else ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _child(argv: list[str]) -> int:
    """``--child VARIANT IMAGE MODEL TINY SIZE THREADS ONNX``: measure one variant, print JSON."""
    variant, image, model_name, tiny, size, threads, onnx = argv
    reset = _reset_peak()
    import torch

    import suimseg.inference.predictor as predictor_module
    from suimseg.inference import Predictor

    if int(threads) > 0:
        torch.set_num_threads(int(threads))
    torch.manual_seed(0)  # the same random weights in every child
    if onnx:
        from suimseg.inference import OnnxRuntimeModel

        model: torch.nn.Module = OnnxRuntimeModel(onnx)
    else:
        model = bench.model_factories(tiny=tiny == "1")[model_name]().eval()
    predictor = Predictor(model, device="cpu", image_size=int(size))
    if variant == "one-pass":
        predictor_module._STRIP_BYTES = 2**62
    baseline = _maxrss_mib()
    t0 = time.perf_counter()
    digest = None
    if variant == "decode":
        predictor._model_input(image)
    elif variant == "mask-file":
        from suimseg.classes import rgb_to_index
        from suimseg.inference import predict_files

        with tempfile.TemporaryDirectory() as out:
            mask = predict_files(predictor, [image], out, overwrite=True).written[0]
            seconds, peak = time.perf_counter() - t0, _maxrss_mib()
            labels = torch.from_numpy(rgb_to_index(Image.open(mask)))
    else:
        dtype = torch.uint8 if variant == "strips-uint8" else torch.int64
        labels = predictor.predict(image, labels_dtype=dtype)[0].labels
    if variant != "mask-file":
        seconds, peak = time.perf_counter() - t0, _maxrss_mib()
    if variant != "decode":
        digest = hashlib.sha256(labels.to(torch.uint8).numpy().tobytes()).hexdigest()
    out = {"baseline_rss_mib": baseline, "peak_rss_mib": peak, "seconds": seconds,
           "peak_reset": reset}  # fmt: skip
    print(json.dumps({**out, "labels_sha256": digest}))
    return 0


def _memory(args: argparse.Namespace, image: Path, model: str) -> list[dict[str, Any]]:
    rows = []
    for variant in MEMORY_VARIANTS:
        tiny = "1" if args.tiny_models else "0"
        cmd = [sys.executable, __file__, "--child", variant, str(image), model, tiny,
               str(args.image_size), str(args.threads), args.onnx or ""]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"memory child {variant} failed:\n{done.stderr}")
        rows.append({"variant": variant, **json.loads(done.stdout.strip().splitlines()[-1])})
    return rows


def _folder(args: argparse.Namespace, device: Any, tmp: Path, model: str) -> dict[str, Any]:
    import torch

    from suimseg.inference import Predictor, predict_files

    n = bench.pick(args, "n_images", 16, 100)
    size = args.source_size
    folder = tmp / "images"
    folder.mkdir()
    for i in range(n):
        _synthetic_jpeg(folder / f"img_{i:03d}.jpg", size, i)
    net = bench.model_factories(tiny=args.tiny_models)[model]().eval()
    predictor = Predictor(net, device=device, image_size=args.image_size)
    outs = {"sequential": tmp / "out_seq", "pipelined": tmp / "out_pipe"}
    workers = {"sequential": 0, "pipelined": args.workers}

    def run(name: str) -> None:
        predict_files(predictor, [folder], outs[name], overwrite=True, workers=workers[name])

    warmup, repeats = bench.timing(args, (1, 2), (1, 3))
    with torch.inference_mode():
        timed = bench.time_interleaved(
            {k: (lambda k=k: run(k)) for k in outs}, device=device, warmup=warmup, repeats=repeats
        )
    masks = {k: sorted((v / "masks").iterdir()) for k, v in outs.items()}
    identical = len(masks["sequential"]) == n and all(
        a.name == b.name and a.read_bytes() == b.read_bytes()
        for a, b in zip(masks["sequential"], masks["pipelined"], strict=True)
    )
    rows = [
        {
            "variant": k,
            "workers": workers[k],
            "median_s": t["median_s"],
            "images_per_s": n / t["median_s"],
            "runs_s": t["runs_s"],
        }
        for k, t in timed.items()
    ]
    speedup = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    return {
        "n_images": n,
        "source_size": list(size),
        "rows": rows,
        "speedup": speedup,
        "identical_masks": identical,
        "warmup": warmup,
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    p = bench.make_parser(__doc__, "predict_folder", models=True)
    p.add_argument("--parts", default="folder,memory", help="comma-separated: folder,memory")
    p.add_argument("--n-images", type=int, default=None, help="folder images (16; --full 100)")
    p.add_argument(
        "--source-size", type=lambda t: bench.size_list(t)[0], default=(480, 640),
        help="HxW of the folder's JPEGs (480x640)",
    )  # fmt: skip
    p.add_argument(
        "--big-size", type=lambda t: bench.size_list(t)[0], default=None,
        help="HxW of the memory test's JPEG (3000x4000; --full 6000x8000)",
    )  # fmt: skip
    p.add_argument("--image-size", type=int, default=384, help="model input size (384)")
    p.add_argument("--workers", type=int, default=2, help="pipelined reader threads (2)")
    p.add_argument("--onnx", default=None, help="memory part: an .onnx model instead (none)")
    args, device = bench.begin(p, argv)
    parts = args.parts.split(",")
    if unknown := [x for x in parts if x not in PARTS]:
        raise SystemExit(f"--parts: unknown {unknown}; expected a subset of {list(PARTS)}")
    model = bench.chosen_model(args)
    big: tuple[int, int] = bench.pick(args, "big_size", (3000, 4000), (6000, 8000))
    info = bench.machine_info(device)
    settings: dict[str, Any] = {
        "parts": parts,
        "model": model,
        "tiny_models": bool(args.tiny_models),
        "image_size": args.image_size,
        "workers": args.workers,
        "big_size": list(big),
        "onnx": args.onnx,
        "measured": "folder: predict_files(workers=0) vs predict_files(workers=N), "
        "interleaved rounds, median; memory: ru_maxrss of one Predictor.predict(path) "
        "per variant, each in a fresh subprocess",
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="suimseg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if "folder" in parts:
            folder = _folder(args, device, tmp, model)
            results["folder"] = folder
            print(f"folder: {folder['n_images']} JPEGs of {folder['source_size']}, "
                  f"masks identical: {folder['identical_masks']}")  # fmt: skip
            bench.print_table(
                ["variant", "workers", "s/folder", "img/s"],
                [[r["variant"], r["workers"], r["median_s"], r["images_per_s"]]
                 for r in folder["rows"]],
            )  # fmt: skip
            print(f"pipelined / sequential: {folder['speedup']:.2f}x\n")
        if "memory" in parts:
            image = tmp / "big.jpg"
            _synthetic_jpeg(image, big, 0)
            rows = _memory(args, image, model)
            digests = {r["labels_sha256"] for r in rows if r["labels_sha256"]}
            results["memory"] = {"rows": rows, "labels_equal": len(digests) == 1}
            print(f"memory: one {big[0]}x{big[1]} JPEG, labels equal: {len(digests) == 1}")
            bench.print_table(
                ["variant", "baseline MiB", "peak MiB", "s"],
                [[r["variant"], r["baseline_rss_mib"], r["peak_rss_mib"], r["seconds"]]
                 for r in rows],
            )  # fmt: skip
    info["load_average_1_5_15_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    bench.write_report(args.out, "suimseg folder prediction", info, settings, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
