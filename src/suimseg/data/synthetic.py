"""Synthetic SUIM-format data, so that the demo, the tests and the docs run anywhere.

Underwater-looking scenes with every class (its own shape, colour and texture) at SUIM-like
frequencies, written in the official layout; see ``docs/dataset.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

from suimseg.classes import NUM_CLASSES, index_to_rgb
from suimseg.data._io import atomic_save_image
from suimseg.errors import ConfigError

__all__ = ["CLASS_PRESENCE", "make_synthetic_suim", "render_scene"]

#: Probability that a scene contains each class (index order; BW is always present).
CLASS_PRESENCE: tuple[float, ...] = (1.0, 0.15, 0.3, 0.2, 0.1, 0.55, 0.45, 0.75)

# SUIM-like stem prefixes with their rough share of the real train_val set.
_PREFIXES: tuple[str, ...] = ("d_r", "f_r", "n_l", "w_r")
_PREFIX_P: tuple[float, ...] = (0.25, 0.35, 0.25, 0.15)

# Base colours (RGB, before the water cast) per class.
_BASE = np.array(
    [
        (20, 105, 140),  # BW water (overwritten by the gradient)
        (25, 25, 40),  # HD divers: dark suits
        (40, 170, 60),  # PF plants: green
        (115, 75, 45),  # WR wrecks: rust brown
        (235, 70, 30),  # RO robots: saturated orange-red
        (200, 90, 150),  # RI reefs: pink-purple
        (240, 205, 40),  # FV fish: yellow
        (185, 165, 120),  # SR sea-floor: sand
    ],
    dtype=np.float32,
)

_Array = npt.NDArray[np.float32]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> _Array:
    """Low-frequency noise in [0, 1] (a coarse random grid upsampled bilinearly)."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8))
    up = np.asarray(grid.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    return up / 255.0


def _blob(
    rng: np.random.Generator, cx: float, cy: float, r: float, n: int = 12
) -> list[tuple[float, float]]:
    """An irregular star-convex polygon (reefs, rocks)."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.6, 1.0, n)
    return [
        (float(cx + a * np.cos(t)), float(cy + a * np.sin(t)))
        for t, a in zip(ang, rad, strict=True)
    ]


def _draw_labels(
    rng: np.random.Generator, w: int, h: int, present: set[int]
) -> npt.NDArray[np.uint8]:
    """Paint the label map; later classes occlude earlier ones."""
    canvas = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(canvas)
    s = min(w, h)
    floor_y = h * rng.uniform(0.55, 0.8)
    if 7 in present:  # sea-floor: a wavy band at the bottom
        xs = np.linspace(0, w, 24)
        amp, freq, ph = h * rng.uniform(0.02, 0.08), rng.uniform(1, 4), rng.uniform(0, 6.3)
        top = floor_y + amp * np.sin(2 * np.pi * freq * xs / w + ph)
        d.polygon([(0, h), *zip(xs.tolist(), top.tolist(), strict=True), (w, h)], fill=7)
    if 3 in present:  # wrecks: a large tilted hull with a mast
        cx, cy = rng.uniform(0.25, 0.75) * w, floor_y - rng.uniform(0.0, 0.15) * h
        hw, hh, tilt = (
            rng.uniform(0.2, 0.35) * w,
            rng.uniform(0.1, 0.18) * h,
            rng.uniform(-0.2, 0.2),
        )
        pts = np.array([(-hw, -hh), (hw, -hh), (hw * 0.8, hh), (-hw * 0.8, hh)])
        rot = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
        pts = pts @ rot.T + (cx, cy)
        d.polygon([tuple(p) for p in pts.tolist()], fill=3)
        d.line([(cx, cy - hh), (cx + tilt * hh, cy - hh * 3.5)], fill=3, width=max(2, s // 40))
    if 5 in present:  # reefs: irregular blobs resting on the floor
        for _ in range(int(rng.integers(1, 4))):
            cx, r = rng.uniform(0.05, 0.95) * w, rng.uniform(0.08, 0.18) * s
            d.polygon(_blob(rng, cx, floor_y + r * 0.2, r), fill=5)
    if 2 in present:  # plants: tall thin blades
        for _ in range(int(rng.integers(3, 9))):
            bx, bw = rng.uniform(0, w), rng.uniform(0.015, 0.035) * w
            tip = (bx + rng.uniform(-0.08, 0.08) * w, floor_y - rng.uniform(0.2, 0.45) * h)
            d.polygon([(bx - bw, h), (bx + bw, h), tip], fill=2)
    if 6 in present:  # fish: small ellipses with a triangular tail, anywhere in the water
        for _ in range(int(rng.integers(1, 7))):
            cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.7) * h
            fl = rng.uniform(0.04, 0.09) * s
            fh = fl * rng.uniform(0.35, 0.5)
            side = 1 if rng.random() < 0.5 else -1
            d.ellipse([cx - fl, cy - fh, cx + fl, cy + fh], fill=6)
            tx = cx - side * fl
            d.polygon(
                [(tx, cy), (tx - side * fl * 0.7, cy - fh), (tx - side * fl * 0.7, cy + fh)], fill=6
            )
    if 1 in present:  # divers: elongated body, head, fins
        cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.6) * h
        bl, bh = rng.uniform(0.12, 0.2) * s, rng.uniform(0.05, 0.08) * s
        d.ellipse([cx - bl, cy - bh, cx + bl, cy + bh], fill=1)
        d.ellipse([cx + bl * 0.8, cy - bh * 1.1, cx + bl * 0.8 + bh * 2, cy + bh * 0.9], fill=1)
        d.polygon(
            [
                (cx - bl, cy - bh * 0.5),
                (cx - bl * 1.7, cy - bh * 1.5),
                (cx - bl * 1.7, cy + bh * 1.5),
                (cx - bl, cy + bh * 0.5),
            ],
            fill=1,
        )
    if 4 in present:  # robots: a box with a round sensor
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.7) * h
        bw, bh = rng.uniform(0.06, 0.12) * s, rng.uniform(0.05, 0.09) * s
        d.rectangle([cx - bw, cy - bh, cx + bw, cy + bh], fill=4)
        d.ellipse([cx + bw * 0.8, cy - bh * 0.6, cx + bw * 0.8 + bh * 1.2, cy + bh * 0.6], fill=4)
    labels: npt.NDArray[np.uint8] = np.array(canvas, dtype=np.uint8)
    return labels


def _textures(rng: np.random.Generator, h: int, w: int, labels: npt.NDArray[np.uint8]) -> _Array:
    """Colour each class with its own texture; returns float RGB ``(H, W, 3)`` in [0, 255]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yn = yy / max(h - 1, 1)
    s = float(min(h, w))
    jitter = rng.uniform(-15, 15, size=(NUM_CLASSES, 3)).astype(np.float32)
    out = np.empty((h, w, 3), dtype=np.float32)
    fine = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    for c in np.unique(labels).tolist():
        sel = labels == c
        base = _BASE[c] + jitter[c]
        if c == 0:  # water: lighter near the surface
            top = np.array([60, 170, 185], np.float32) + jitter[0]
            tex = yn[..., None] * base + (1 - yn[..., None]) * top
        elif c == 7:  # sand: low-frequency mottling plus grain
            m = _smooth_noise(rng, h, w, 12)
            tex = base * (0.8 + 0.35 * m[..., None]) + 10 * fine[..., None]
        elif c == 5:  # reef: bright spots
            spots = (np.sin(xx * 1.3 * 24 / s) * np.sin(yy * 1.1 * 24 / s) > 0.45).astype(
                np.float32
            )
            tex = base * (0.75 + 0.45 * spots[..., None])
        elif c == 2:  # plants: vertical stripes
            stripes = 0.5 + 0.5 * np.sin(xx * 2 * np.pi / max(3.0, s / 20))
            tex = base * (0.7 + 0.5 * stripes[..., None])
        elif c == 3:  # wreck: horizontal planks with dark seams
            seams = ((yy % max(3.0, s / 16)) < 1.5).astype(np.float32)
            tex = base * (1.0 - 0.5 * seams[..., None]) + 12 * fine[..., None]
        elif c == 6:  # fish: diagonal bands
            bands = (np.sin((xx + yy) * 2 * np.pi / max(4.0, s / 14)) > 0).astype(np.float32)
            tex = base * (0.8 + 0.25 * bands[..., None])
        elif c == 1:  # divers: dark suit with a bright tank stripe
            tank = (np.abs(np.sin(xx * 2 * np.pi / max(6.0, s / 6))) > 0.95).astype(np.float32)
            tex = base + 150 * tank[..., None] * np.array([0.9, 0.9, 1.0], np.float32)
        else:  # robots: uniform saturated colour with a checker of panels
            check = ((xx // max(2.0, s / 24) + yy // max(2.0, s / 24)) % 2).astype(np.float32)
            tex = base * (0.85 + 0.15 * check[..., None])
        out[sel] = np.broadcast_to(tex, (h, w, 3))[sel]
    return out


def render_scene(
    rng: np.random.Generator,
    size: tuple[int, int],
    *,
    force_class: int | None = None,
) -> tuple[Image.Image, npt.NDArray[np.uint8]]:
    """Render one synthetic underwater scene and its label map.

    Args:
        rng: Random generator (the scene is a pure function of its state).
        size: ``(width, height)`` of the scene.
        force_class: A class id that must appear (besides the water background).

    Returns:
        The RGB image and a uint8 label map ``(H, W)`` with ids in ``[0, 8)``.

    Example:
        >>> import numpy as np
        >>> img, labels = render_scene(np.random.default_rng(0), (64, 48), force_class=4)
        >>> img.size, 4 in labels
        ((64, 48), True)
    """
    w, h = size
    present = {c for c in range(1, NUM_CLASSES) if rng.random() < CLASS_PRESENCE[c]}
    if force_class is not None:
        present.add(force_class)
    labels = _draw_labels(rng, w, h, present)
    if force_class is not None and not (labels == force_class).any():
        # A tiny object can be fully occluded; paint a small patch so the class is present.
        cy, cx = h // 2, w // 2
        labels[max(0, cy - 2) : cy + 2, max(0, cx - 2) : cx + 2] = force_class
    rgb = _textures(rng, h, w, labels)
    # Underwater look: red absorbed with depth, a blue-green cast, haze towards the water.
    yn = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    absorb = np.array([0.55, 0.9, 1.0], np.float32) - np.array([0.15, 0.05, 0.0], np.float32) * yn
    water = np.array([25, 110, 135], np.float32) + rng.uniform(-10, 10, 3).astype(np.float32)
    t = np.float32(rng.uniform(0.7, 0.9)) - np.float32(0.15) * yn
    rgb = (rgb * absorb) * t + water * (1 - t)
    rgb += rng.normal(0.0, 3.0, rgb.shape).astype(np.float32)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(radius=0.6))
    return image, labels


def _parse_size(size: Sequence[int]) -> tuple[int, int]:
    dims = tuple(size)
    if len(dims) != 2 or not all(isinstance(d, (int, np.integer)) and d >= 16 for d in dims):
        raise ConfigError(f"size: expected (width, height) with both >= 16 pixels, got {size!r}")
    return int(dims[0]), int(dims[1])


def _noisy(rng: np.random.Generator, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Perturb a 0/255 mask so every channel stays on its side of 128 (like real masks)."""
    noise = rng.integers(0, 100, rgb.shape)
    return np.where(rgb >= 128, 255 - noise, noise).astype(np.uint8)


def make_synthetic_suim(
    root: str | Path,
    *,
    n_train_val: int = 40,
    n_test: int = 10,
    size: tuple[int, int] = (160, 120),
    seed: int = 0,
    noisy_masks: int = 0,
    size_mismatch: int = 0,
    orphan_images: int = 0,
    jpeg_quality: int = 90,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic dataset in the official SUIM layout (JPEG images, 24-bit BMP masks).

    The first seven scenes of each split contain classes 1..7 in turn; otherwise classes
    appear with the probabilities of :data:`CLASS_PRESENCE`. Stems use SUIM's prefixes.

    Args:
        root: Output folder; ``train_val/`` and ``TEST/`` are created inside it.
        n_train_val: Number of ``train_val`` pairs.
        n_test: Number of ``TEST`` pairs.
        size: ``(width, height)`` of every image.
        seed: Seed; the same arguments always give byte-identical files.
        noisy_masks: Number of ``train_val`` masks written with noisy (non 0/255) colours
            that still decode to the right classes.
        size_mismatch: Number of ``train_val`` masks saved 1/8 taller than their image.
        orphan_images: Number of extra ``train_val`` images written without a mask.
        jpeg_quality: JPEG quality of the images.
        overwrite: Replace image/mask files left by an earlier run in the split folders.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: For invalid counts or size, or files in the way without ``overwrite``.

    Example:
        >>> import tempfile
        >>> root = make_synthetic_suim(tempfile.mkdtemp(), n_train_val=8, n_test=2, size=(64, 48))
        >>> sorted(p.name for p in root.iterdir())
        ['TEST', 'train_val']
        >>> len(list((root / "TEST" / "masks").glob("*.bmp")))
        2
    """
    w, h = _parse_size(size)
    for name, value in (
        ("n_train_val", n_train_val),
        ("n_test", n_test),
        ("noisy_masks", noisy_masks),
        ("size_mismatch", size_mismatch),
        ("orphan_images", orphan_images),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{name}: expected an int >= 0, got {value!r}")
    if noisy_masks + size_mismatch > n_train_val:
        raise ConfigError(
            f"noisy_masks + size_mismatch: expected at most n_train_val={n_train_val} defective "
            f"masks, got {noisy_masks} + {size_mismatch}"
        )
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"jpeg_quality: expected 1..100, got {jpeg_quality!r}")
    out = Path(root).expanduser()
    dirs = [out / split / sub for split in ("train_val", "TEST") for sub in ("images", "masks")]
    existing = [p for d in dirs if d.is_dir() for p in d.iterdir() if p.is_file()]
    if existing and not overwrite:
        raise ConfigError(
            f"root: {out} already holds {len(existing)} dataset file(s) (e.g. {existing[0]}); "
            "pass overwrite=True to replace them or choose an empty folder"
        )
    for p in existing:
        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"):
            p.unlink()
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)

    save_jpeg = functools.partial(atomic_save_image, format="JPEG", quality=jpeg_quality)
    for split_id, (split, n) in enumerate((("train_val", n_train_val), ("TEST", n_test))):
        base = out / split
        prefix_rng = np.random.default_rng([seed, split_id, 2**31 - 1])
        prefixes = prefix_rng.choice(len(_PREFIXES), size=n + orphan_images, p=_PREFIX_P)
        for i in range(n):
            rng = np.random.default_rng([seed, split_id, i])
            force = 1 + i % 7 if i < 7 else None
            image, labels = render_scene(rng, (w, h), force_class=force)
            stem = f"{_PREFIXES[prefixes[i]]}_{i + 1}_"
            mask = index_to_rgb(labels)
            if split == "train_val" and i < noisy_masks:
                mask = _noisy(rng, mask)
            mask_img = Image.fromarray(mask)
            if split == "train_val" and i >= n - size_mismatch:
                mask_img = mask_img.resize((w, h + max(1, h // 8)), Image.Resampling.NEAREST)
            save_jpeg(image, base / "images" / f"{stem}.jpg")
            atomic_save_image(mask_img, base / "masks" / f"{stem}.bmp", format="BMP")
        for j in range(orphan_images if split == "train_val" else 0):
            image, _ = render_scene(np.random.default_rng([seed, split_id, n + j]), (w, h))
            save_jpeg(image, base / "images" / f"{_PREFIXES[prefixes[n + j]]}_{n + j + 1}_.jpg")
    return out
