"""Generate the pictures and numbers of docs/inference.md with the library itself.

Everything runs on the CPU in a few minutes: a synthetic SUIM-format dataset
(``make_synthetic_suim``), a narrow UNetResAttnV3 trained with the demo recipe
(``suimseg.app.demo.demo_config`` + ``suimseg.app.recipe.train``), then the inference API:
``Predictor`` (plain, TTA, tiled), ``evaluate_predictor``, ``evaluate_suim_paper``,
``predict_files`` (overlays), ``plot_history`` (needs matplotlib) and
``data.visualize.colorize/overlay/legend`` for the panels.

Usage::

    python docs/gen_inference_pictures.py [--out docs/images] [--epochs 6]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from suimseg.app.demo import demo_config
from suimseg.app.recipe import train
from suimseg.data import SUIMDataset, colorize, legend, make_synthetic_suim, render_scene
from suimseg.engine import load_model
from suimseg.errors import MissingDependencyError
from suimseg.inference import (
    TTA,
    Predictor,
    evaluate_predictor,
    evaluate_suim_paper,
    format_gain_report,
    plot_history,
    predict_files,
)
from suimseg.metrics import ConfusionMatrix


def _captioned(img: Image.Image, caption: str, height: int = 14) -> Image.Image:
    out = Image.new("RGB", (img.width, img.height + height), (255, 255, 255))
    ImageDraw.Draw(out).text((2, 1), caption, fill=(0, 0, 0), font=ImageFont.load_default())
    out.paste(img, (0, height))
    return out


def _grid(rows: list[list[Image.Image]], pad: int = 4) -> Image.Image:
    w = max(sum(im.width for im in r) + pad * (len(r) - 1) for r in rows)
    h = sum(max(im.height for im in r) for r in rows) + pad * (len(rows) - 1)
    out = Image.new("RGB", (w, h), (255, 255, 255))
    y = 0
    for r in rows:
        x = 0
        for im in r:
            out.paste(im, (x, y))
            x += im.width + pad
        y += max(im.height for im in r) + pad
    return out


def _with_legend(panel: Image.Image) -> Image.Image:
    strip = legend(width=panel.width, columns=4)
    out = Image.new("RGB", (panel.width, panel.height + strip.height + 4), (255, 255, 255))
    out.paste(panel, (0, 0))
    out.paste(strip, (0, panel.height + 4))
    return out


def _miou(pred: np.ndarray, labels: np.ndarray) -> float:
    import torch

    cm = ConfusionMatrix(8)
    cm.update(torch.as_tensor(pred)[None], torch.as_tensor(labels.astype(np.int64))[None])
    return cm.compute().miou


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "images"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--work", default=None, help="working folder (default: a temp dir)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="suimseg_pics_"))
    t0 = time.perf_counter()

    root = make_synthetic_suim(
        work / "data", n_train_val=120, n_test=20, size=(160, 120), seed=0, overwrite=True
    )
    config = demo_config(root, work / "run", epochs=args.epochs, seed=0)
    train(config, progress=False, verbose=False)
    model = load_model(work / "run" / "best.pt")
    size = config.image_size
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t0:.0f} s")

    # 1. Plain vs TTA on the synthetic TEST split (8-class, native resolution).
    test = SUIMDataset(root, "test", image_size=None)
    plain = Predictor(model, image_size=size)
    tta = Predictor(model, image_size=size, tta=TTA.standard())
    m_plain = evaluate_predictor(plain, test)
    m_tta = evaluate_predictor(tta, test)
    print(format_gain_report(m_plain, m_tta, improved_name="TTA (h+v flips, 3 scales)"))
    print()
    print(evaluate_suim_paper(plain, test).format_table())
    print()

    rows = []
    for i in range(3):
        image, labels = test.get_raw(i)
        p = plain.predict(image)[0].labels
        q = tta.predict(image)[0].labels
        rows.append(
            [
                _captioned(image, "image"),
                _captioned(colorize(labels), "ground truth"),
                _captioned(colorize(p), f"plain  mIoU {100 * _miou(p.numpy(), labels):.1f}"),
                _captioned(colorize(q), f"TTA  mIoU {100 * _miou(q.numpy(), labels):.1f}"),
            ]
        )
    _with_legend(_grid(rows)).save(out / "inference_tta.png")

    # 2. Tiled inference on a 4x3 mosaic of scenes at the training scale (384x288).
    rng = np.random.default_rng(7)
    mosaic = Image.new("RGB", (4 * size, 3 * size))
    mosaic_labels = np.zeros((3 * size, 4 * size), np.uint8)
    for r in range(3):
        for c in range(4):
            scene, lab = render_scene(rng, (160, 120))
            mosaic.paste(
                scene.resize((size, size), Image.Resampling.BILINEAR), (c * size, r * size)
            )
            lab_small = Image.fromarray(lab).resize((size, size), Image.Resampling.NEAREST)
            mosaic_labels[r * size : (r + 1) * size, c * size : (c + 1) * size] = np.asarray(
                lab_small
            )
    resized = plain.predict(mosaic)[0].labels
    tiled = Predictor(model, image_size=size, tiling=True).predict(mosaic)[0].labels
    m_resized = _miou(resized.numpy(), mosaic_labels)
    m_tiled = _miou(tiled.numpy(), mosaic_labels)
    print(
        f"mosaic 384x288: resized to {size}: mIoU {100 * m_resized:.1f}; "
        f"tiled ({size} windows, 25% overlap): mIoU {100 * m_tiled:.1f}"
    )
    panel = _grid(
        [
            [
                _captioned(mosaic, "image (384x288)"),
                _captioned(colorize(mosaic_labels), "ground truth"),
            ],
            [
                _captioned(
                    colorize(resized), f"resized to {size}x{size}: mIoU {100 * m_resized:.1f}"
                ),
                _captioned(colorize(tiled), f"tiled, native resolution: mIoU {100 * m_tiled:.1f}"),
            ],
        ]
    )
    _with_legend(panel).save(out / "inference_tiled.png")

    # 3. What `suimseg predict --overlay` writes.
    res = predict_files(plain, [test.image_paths[0]], work / "pred", overlay=True)
    overlay_file = next(p for p in res.written if p.parent.name == "overlays")
    shutil.copyfile(overlay_file, out / "inference_overlay.png")

    # 4. Training curves.
    try:
        plot_history(work / "run" / "history.csv", out / "inference_training_curves.png")
    except MissingDependencyError as exc:
        print(f"skipped the training curves: {exc}")
    print(f"pictures in {out} ({time.perf_counter() - t0:.0f} s in all)")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
