"""evaluate_predictor (8-class, native resolution) and the SUIM-paper protocol."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from suimseg.classes import index_to_rgb
from suimseg.data import SUIMDataset
from suimseg.errors import ConfigError
from suimseg.inference import (
    TTA,
    Predictor,
    binary_iou,
    boundary_f_measure,
    evaluate_predictor,
    evaluate_suim_paper,
    format_gain_report,
)
from suimseg.metrics import ConfusionMatrix


class ColourOracle(nn.Module):
    """Predicts the class whose palette colour is nearest to the (denormalised) pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        bits = torch.tensor([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)]).float()
        self.register_buffer("palette", bits)

    def forward(self, x: Tensor) -> Tensor:
        rgb = x * self.std + self.mean  # (N, 3, H, W) in [0, 1]
        d = ((rgb.unsqueeze(1) - self.palette.view(1, 8, 3, 1, 1)) ** 2).sum(2)
        return -20.0 * d


def _pair(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return index_to_rgb(labels), labels


def test_perfect_oracle_scores_one() -> None:
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 8, (6, 5)), np.ones((8, 8), np.int64))
    m = evaluate_predictor(Predictor(ColourOracle(), image_size=None), [_pair(labels)])
    assert m.miou == 1.0
    assert m.pixel_accuracy == 1.0
    assert int(m.confusion.sum()) == labels.size


def test_scored_at_the_labels_native_resolution() -> None:
    """A mask larger than its image is scored at the mask's own size."""
    labels = np.zeros((40, 60), np.int64)
    labels[:, 30:] = 6
    small_image = np.asarray(Image.fromarray(index_to_rgb(labels)).resize((30, 20), 0))
    m = evaluate_predictor(Predictor(ColourOracle(), image_size=32), [(small_image, labels)])
    assert int(m.confusion.sum()) == 40 * 60
    assert m.pixel_accuracy > 0.95


def test_matches_a_hand_accumulated_confusion(unet: nn.Module, suim_root: Path) -> None:
    ds = SUIMDataset(suim_root, "test", image_size=None)
    predictor = Predictor(unet, image_size=32, batch_size=3)
    got = evaluate_predictor(predictor, ds)
    cm = ConfusionMatrix(8)
    for ip, mp in zip(ds.image_paths, ds.mask_paths, strict=True):
        image, labels = Image.open(ip).convert("RGB"), ds.get_raw(ds.image_paths.index(ip))[1]
        pred = predictor.predict(image)[0].labels
        cm.update(pred[None], torch.from_numpy(labels)[None])
        assert Image.open(mp).size == image.size
    assert torch.equal(got.confusion, cm.matrix)


def test_evaluation_with_tta_runs_on_synthetic_data(unet: nn.Module, suim_root: Path) -> None:
    ds = SUIMDataset(suim_root, "test", image_size=None)
    done: list[int] = []
    plain = evaluate_predictor(Predictor(unet, image_size=32, batch_size=3), ds)
    tta = evaluate_predictor(
        Predictor(unet, image_size=32, tta=TTA(hflip=True, scales=(0.75, 1.0)), batch_size=3),
        ds,
        progress=done.append,
    )
    assert done == [3, 4]
    assert int(tta.confusion.sum()) == int(plain.confusion.sum()) == 4 * 64 * 48
    report = format_gain_report(plain, tta, improved_name="TTA (hflip, 2 scales)")
    assert report.splitlines()[0].startswith("mIoU: plain ")
    gain = 100 * (tta.miou - plain.miou)
    assert f"({gain:+.2f} points)" in report
    assert "| Metric | plain | TTA (hflip, 2 scales) |" in report


def test_label_inputs_paths_and_rgb(tmp_path: Path) -> None:
    labels = np.array([[1, 1, 6, 6]] * 4)
    img_path = tmp_path / "i.png"
    mask_path = tmp_path / "m.bmp"
    Image.fromarray(index_to_rgb(labels)).save(img_path)
    Image.fromarray(index_to_rgb(labels)).save(mask_path)
    oracle = Predictor(ColourOracle(), image_size=None)
    for pair in [(img_path, mask_path), (img_path, index_to_rgb(labels)), (img_path, labels)]:
        assert evaluate_predictor(oracle, [pair]).miou == 1.0  # type: ignore[list-item]


def test_bad_evaluation_data() -> None:
    oracle = Predictor(ColourOracle(), image_size=None)
    with pytest.raises(ConfigError, match="at least one"):
        evaluate_predictor(oracle, [])
    with pytest.raises(ConfigError, match=r"expected an \(image, label\) pair"):
        evaluate_predictor(oracle, [np.zeros((4, 4, 3), np.uint8)])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="expected a SUIMDataset"):
        evaluate_predictor(oracle, "data/")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="label: expected"):
        evaluate_predictor(oracle, [(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)))])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_predictor(oracle, [(np.zeros((4, 4, 3), np.uint8), "missing.bmp")])


# ---------------------------------------------------------------------- paper protocol
def test_binary_iou_and_boundary_f_by_hand() -> None:
    a = torch.zeros(20, 20, dtype=torch.bool)
    a[5:15, 5:15] = True
    b = torch.zeros(20, 20, dtype=torch.bool)
    b[5:15, 5:10] = True
    assert binary_iou(a, b) == 0.5
    assert binary_iou(torch.zeros(3, 3), torch.zeros(3, 3)) == 1.0
    assert boundary_f_measure(a, a) == 1.0
    assert boundary_f_measure(a, torch.zeros_like(a)) == 0.0
    assert boundary_f_measure(torch.zeros_like(a), torch.zeros_like(a)) == 1.0
    shifted = torch.roll(a, shifts=2, dims=1)
    assert boundary_f_measure(a, shifted, tolerance=2) == 1.0
    assert boundary_f_measure(a, shifted, tolerance=0) < 0.6
    # A mask touching the image edge has no boundary there.
    full = torch.ones(6, 6, dtype=torch.bool)
    assert boundary_f_measure(full, full) == 1.0
    with pytest.raises(ConfigError, match="tolerance"):
        boundary_f_measure(a, a, tolerance=-1)
    with pytest.raises(ConfigError, match="one shape"):
        boundary_f_measure(a, a[:5])


def test_paper_protocol_perfect_and_per_image_average() -> None:
    # Image 1 holds HD (1) and FV (6); image 2 holds only background and FV.
    l1 = np.zeros((240, 320), np.int64)
    l1[40:120, 40:120] = 1
    l1[150:200, 200:300] = 6
    l2 = np.zeros((240, 320), np.int64)
    l2[50:150, 50:250] = 6
    res = evaluate_suim_paper(Predictor(ColourOracle(), image_size=None), [_pair(l1), _pair(l2)])
    assert res.images_with_class == {"HD": 1, "WR": 0, "RO": 0, "RI": 0, "FV": 2}
    assert res.iou["HD"] == 1.0
    assert res.iou["FV"] == 1.0
    assert math.isnan(res.iou["WR"])
    assert res.mean_iou == pytest.approx(1.0)
    assert res.boundary_f["FV"] == pytest.approx(1.0)
    assert res.size == (240, 320)
    d = res.to_dict()
    assert d["protocol"] == "suim-paper"
    assert d["iou"]["WR"] is None
    assert "NOT comparable" in res.format_table()


def test_paper_protocol_per_image_mean_not_pooled() -> None:
    """A wrong prediction on one of two images gives a per-image mean of 0.5."""

    class AlwaysFish(ColourOracle):
        def forward(self, x: Tensor) -> Tensor:
            out = torch.zeros(x.shape[0], 8, *x.shape[-2:])
            out[:, 6] = 1.0
            return out

    full_fish = np.full((24, 32), 6, np.int64)
    res = evaluate_suim_paper(
        Predictor(AlwaysFish(), image_size=None),
        [
            (np.zeros((24, 32, 3), np.uint8), full_fish),
            (np.zeros((24, 32, 3), np.uint8), np.where(full_fish, 0, 0) + 1),
        ],
    )
    assert res.images_with_class["FV"] == 1
    assert res.iou["FV"] == 1.0
    assert res.iou["HD"] == 0.0
    assert res.mean_iou == 0.5
    with pytest.raises(ConfigError, match="class_codes"):
        evaluate_suim_paper(Predictor(AlwaysFish(), image_size=None), [], class_codes=["XX"])
