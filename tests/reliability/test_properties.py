"""Property-based tests (hypothesis) of the palette, the confusion matrix, the losses and
the joint transforms. Further loss properties live with the losses: focal >= 0 and
invariance to ignored logits in ``tests/losses/test_focal_loss.py``, Dice in [0, 1] and
invariance in ``tests/losses/test_dice_loss.py``.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.transforms import InterpolationMode

from suimseg.classes import IGNORE_INDEX, NUM_CLASSES, index_to_rgb, rgb_to_index, rgb_to_index_u8
from suimseg.data import denormalize, train_transforms
from suimseg.losses import dice_focal_loss
from suimseg.metrics import ConfusionMatrix

# ----------------------------------------------------------------------------- palette


@settings(max_examples=50, deadline=None)
@given(
    labels=st.lists(st.integers(0, NUM_CLASSES - 1), min_size=1, max_size=60), w=st.integers(1, 6)
)
def test_index_to_rgb_to_index_is_the_identity(labels: list[int], w: int) -> None:
    lab = np.array(labels * w, dtype=np.int64).reshape(w, -1)
    np.testing.assert_array_equal(rgb_to_index(index_to_rgb(lab)), lab)


def test_rgb_to_index_is_total_over_all_2_24_colours() -> None:
    # Every colour maps to a class in [0, 8), by the documented rule (exhaustive, ~0.5 s).
    v = np.arange(2**24, dtype=np.uint32)
    rgb = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=-1).astype(np.uint8)
    out = rgb_to_index_u8(rgb.reshape(4096, 4096, 3)).ravel()
    want = 4 * (rgb[:, 0] >= 128) + 2 * (rgb[:, 1] >= 128) + (rgb[:, 2] >= 128)
    np.testing.assert_array_equal(out, want)
    assert int(out.max()) < NUM_CLASSES


# ----------------------------------------------------------------------------- confusion matrix


def _batches(seed: int, n: int, c: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        h, w = (
            int(torch.randint(1, 6, (1,), generator=g)),
            int(torch.randint(1, 6, (1,), generator=g)),
        )
        logits = torch.randn(2, c, h, w, generator=g)
        target = torch.randint(0, c, (2, h, w), generator=g)
        target[torch.rand(target.shape, generator=g) < 0.2] = IGNORE_INDEX
        out.append((logits, target))
    return out


def _flat(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    preds = torch.cat([lg.argmax(1).flatten() for lg, _ in batches])
    targets = torch.cat([t.flatten() for _, t in batches])
    return preds, targets


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 6),
    c=st.integers(1, 9),
    ranks=st.integers(1, 4),
    order_seed=st.integers(0, 1000),
)
def test_confusion_matrix_chunking_order_and_ranks(
    seed: int, n: int, c: int, ranks: int, order_seed: int
) -> None:
    batches = _batches(seed, n, c)
    preds, targets = _flat(batches)
    once = ConfusionMatrix(c)
    once.update(preds, targets)  # one update over everything

    chunked = ConfusionMatrix(c)
    for logits, target in batches:
        chunked.update(logits, target)
    assert torch.equal(chunked.matrix, once.matrix)

    shuffled = ConfusionMatrix(c)
    for k in np.random.default_rng(order_seed).permutation(n):
        shuffled.update(*batches[k])
    assert torch.equal(shuffled.matrix, once.matrix)

    per_rank = [ConfusionMatrix(c) for _ in range(ranks)]
    for k, batch in enumerate(batches):
        per_rank[k % ranks].update(*batch)  # each rank sees its shard
    assert torch.equal(sum(cm.matrix for cm in per_rank), once.matrix)  # what all_reduce sums
    assert int(once.matrix.sum()) == int((targets != IGNORE_INDEX).sum())


# ----------------------------------------------------------------------------- losses


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), c=st.integers(2, 8), frac=st.sampled_from([0.0, 0.3, 0.9]))
def test_dice_focal_is_non_negative_and_ignores_ignored_logits(
    seed: int, c: int, frac: float
) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2, c, 5, 4, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (2, 5, 4), generator=g)
    ignored = torch.rand(target.shape, generator=g) < frac
    target[ignored] = IGNORE_INDEX
    parts = dice_focal_loss(logits, target)
    assert parts.total.item() >= 0.0
    assert parts.focal.item() >= 0.0
    assert 0.0 <= parts.dice.item() <= 1.0
    changed = logits.movedim(1, -1).clone()
    changed[ignored] = -5 * changed[ignored] + 1
    again = dice_focal_loss(changed.movedim(-1, 1), target)
    assert again.total.item() == parts.total.item()


# ----------------------------------------------------------------------------- transforms


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(4, 40),
    w=st.integers(4, 40),
    out=st.one_of(st.none(), st.tuples(st.integers(4, 40), st.integers(4, 40))),
    hflip=st.sampled_from([0.0, 0.5, 1.0]),
    vflip=st.sampled_from([0.0, 0.5, 1.0]),
    affine=st.sampled_from([0.0, 0.5, 1.0]),
    shift=st.floats(0.0, 0.3),
    scale=st.tuples(st.floats(0.5, 1.0), st.floats(1.0, 2.0)),
    rotate=st.floats(0.0, 180.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_joint_transforms_keep_image_and_mask_aligned(
    h: int,
    w: int,
    out: tuple[int, int] | None,
    hflip: float,
    vflip: float,
    affine: float,
    shift: float,
    scale: tuple[float, float],
    rotate: float,
    seed: int,
) -> None:
    # The image encodes each pixel's label in its grey value; with nearest interpolation
    # the transformed image must still decode to the transformed mask everywhere.
    codes = np.array([10, 40, 70, 100, 130, 160, 190, 220], np.uint8)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, (h, w)).astype(np.uint8)
    image = np.repeat(codes[labels][..., None], 3, axis=-1)
    t = train_transforms(
        out,
        hflip_p=hflip,
        vflip_p=vflip,
        affine_p=affine,
        shift_limit=shift,
        scale_limit=scale,
        rotate_limit=rotate,
        color_p=0.0,
        interpolation=InterpolationMode.NEAREST,
    )
    torch.manual_seed(seed)
    img_t, mask_t = t(image, labels)
    assert tuple(img_t.shape[1:]) == tuple(mask_t.shape) == ((h, w) if out is None else out)
    px = denormalize(img_t)[0].long()
    lut = torch.full((256,), -1, dtype=torch.int64)
    lut[torch.from_numpy(codes).long()] = torch.arange(NUM_CLASSES)
    valid = mask_t != IGNORE_INDEX
    assert torch.equal(lut[px][valid], mask_t[valid])
    assert torch.all(px[~valid] == 0)  # uncovered pixels: ignore label and image fill
