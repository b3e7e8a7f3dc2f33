"""Tests of suimseg.optim.param_groups and group_min_lrs."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from suimseg.errors import ConfigError
from suimseg.models import UNetResAttnV3
from suimseg.optim import GROUP_NAMES, ParamGroup, group_min_lrs, param_groups


@pytest.fixture(scope="module")
def unet() -> UNetResAttnV3:
    torch.manual_seed(0)
    return UNetResAttnV3(encoder="resnet18", decoder_channels=(32, 16, 8, 8), bridge_channels=32)


def _ids(group: dict[str, object]) -> set[int]:
    params = group["params"]
    assert isinstance(params, list)
    return {id(p) for p in params}


def test_four_groups_with_lrs_and_decay(unet: UNetResAttnV3) -> None:
    groups = param_groups(unet, 0.1, lr=2e-4, weight_decay=0.05)
    assert [g["name"] for g in groups] == list(GROUP_NAMES)
    by_name = {g["name"]: g for g in groups}
    assert by_name["encoder"]["lr"] == pytest.approx(2e-5)
    assert by_name["encoder_no_decay"]["lr"] == pytest.approx(2e-5)
    assert by_name["decoder"]["lr"] == pytest.approx(2e-4)
    assert by_name["decoder_no_decay"]["lr"] == pytest.approx(2e-4)
    assert by_name["encoder"]["weight_decay"] == 0.05
    assert by_name["decoder"]["weight_decay"] == 0.05
    assert by_name["encoder_no_decay"]["weight_decay"] == 0.0
    assert by_name["decoder_no_decay"]["weight_decay"] == 0.0
    assert by_name["encoder"]["lr_mult"] == pytest.approx(0.1)
    assert by_name["decoder"]["lr_mult"] == 1.0
    for g in groups:
        decays = g["weight_decay"] > 0
        assert all((p.ndim >= 2) == decays for p in g["params"]), g["name"]


def test_encoder_membership_and_counts(unet: UNetResAttnV3) -> None:
    groups = param_groups(unet)
    by_name = {g["name"]: g for g in groups}
    enc_ids = {id(p) for p in unet.encoder.parameters()}
    assert _ids(by_name["encoder"]) | _ids(by_name["encoder_no_decay"]) == enc_ids
    n_enc_2d = sum(1 for p in unet.encoder.parameters() if p.ndim >= 2)
    assert len(by_name["encoder"]["params"]) == n_enc_2d
    # the BN weights/biases of the encoder are in the no-decay group
    assert id(unet.encoder.bn1.weight) in _ids(by_name["encoder_no_decay"])
    assert id(unet.head.bias) in _ids(by_name["decoder_no_decay"])
    assert id(unet.head.weight) in _ids(by_name["decoder"])


def test_every_trainable_param_exactly_once(unet: UNetResAttnV3) -> None:
    groups = param_groups(unet)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in unet.parameters()}
    assert sum(p.numel() for g in groups for p in g["params"]) == unet.count_parameters()["total"]


def test_frozen_params_skipped_and_empty_groups_dropped() -> None:
    model = UNetResAttnV3(encoder="resnet18", decoder_channels=(32, 16, 8, 8), bridge_channels=32)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    model.head.bias.requires_grad_(False)  # type: ignore[union-attr]
    groups = param_groups(model)
    assert [g["name"] for g in groups] == ["decoder", "decoder_no_decay"]
    seen = {id(p) for g in groups for p in g["params"]}
    assert seen == {id(p) for p in model.parameters() if p.requires_grad}
    assert id(model.head.bias) not in seen


def test_explicit_encoder_for_other_models() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1, bias=False))
    groups = param_groups(model, 0.5, lr=1.0, encoder=model[0])
    by_name = {g["name"]: g for g in groups}
    assert [g["name"] for g in groups] == [
        "encoder",
        "encoder_no_decay",
        "decoder",
        "decoder_no_decay",
    ]
    assert _ids(by_name["encoder"]) == {id(model[0].weight)}
    assert _ids(by_name["encoder_no_decay"]) == {id(model[0].bias)}
    assert _ids(by_name["decoder"]) == {id(model[2].weight)}
    assert _ids(by_name["decoder_no_decay"]) == {id(model[1].weight), id(model[1].bias)}
    assert by_name["encoder"]["lr"] == 0.5


def test_shared_parameter_counted_once() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Linear(4, 4)
            self.head = nn.Linear(4, 4)
            self.head.weight = self.encoder.weight

    model = Tied()
    groups = param_groups(model)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == 3
    enc_group = next(g for g in groups if g["name"] == "encoder")
    assert _ids(enc_group) == {id(model.encoder.weight)}


def test_adamw_accepts_groups_and_steps(unet: UNetResAttnV3) -> None:
    model = UNetResAttnV3(encoder="resnet18", decoder_channels=(32, 16, 8, 8), bridge_channels=32)
    opt = torch.optim.AdamW(param_groups(model))
    before = model.head.weight.detach().clone()
    model(torch.randn(2, 3, 32, 32)).mean().backward()
    opt.step()
    assert not torch.equal(before, model.head.weight)
    assert [g["name"] for g in opt.param_groups] == list(GROUP_NAMES)


def test_lr_ratio_survives_reduce_on_plateau(unet: UNetResAttnV3) -> None:
    groups = param_groups(unet, 0.1, lr=1e-4, weight_decay=1e-4)
    opt = torch.optim.AdamW(groups)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=0.5, patience=0, min_lr=1e-6
    )
    sched.step(0.5)  # best so far
    sched.step(0.4)  # worse: one reduction
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["decoder"] == pytest.approx(5e-5)
    assert lrs["encoder"] == pytest.approx(5e-6)
    assert lrs["encoder"] / lrs["decoder"] == pytest.approx(0.1)
    assert lrs["encoder_no_decay"] == lrs["encoder"]
    assert lrs["decoder_no_decay"] == lrs["decoder"]


def test_scalar_min_lr_breaks_ratio_but_group_min_lrs_keeps_it(unet: UNetResAttnV3) -> None:
    def run(min_lr: float | list[float]) -> dict[str, float]:
        opt = torch.optim.AdamW(param_groups(unet, 0.1, lr=1e-4))
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=0.5, patience=0, min_lr=min_lr
        )
        sched.step(1.0)
        for _ in range(8):  # eight reductions: 1e-4 / 256 < 1e-6
            sched.step(0.0)
        return {g["name"]: g["lr"] for g in opt.param_groups}

    scalar = run(1e-6)
    assert scalar["encoder"] == pytest.approx(1e-6)  # clamped: ratio lost
    assert scalar["decoder"] == pytest.approx(1e-6)
    groups = param_groups(unet, 0.1, lr=1e-4)
    per_group = run(group_min_lrs(groups, 1e-6))
    assert per_group["decoder"] == pytest.approx(1e-6)
    assert per_group["encoder"] / per_group["decoder"] == pytest.approx(0.1)


def test_zero_multiplier_and_zero_decay(unet: UNetResAttnV3) -> None:
    groups = param_groups(unet, 0.0, weight_decay=0.0)
    opt = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.5)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["encoder"]["lr"] == 0.0
    assert by_name["decoder"]["lr"] == 1e-3
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)


def _effective(opt: torch.optim.Optimizer) -> dict[str, tuple[float, float]]:
    return {g["name"]: (g["lr"], g["weight_decay"]) for g in opt.param_groups}


def test_optimizer_lr_and_weight_decay_are_the_base(unet: UNetResAttnV3) -> None:
    # Issue #15: the optimizer's lr/weight_decay were silently replaced by 1e-4/1e-4.
    opt = torch.optim.AdamW(param_groups(unet), lr=3e-4, weight_decay=0.05)
    eff = _effective(opt)
    assert eff["encoder"] == pytest.approx((3e-5, 0.05))
    assert eff["encoder_no_decay"] == pytest.approx((3e-5, 0.0))
    assert eff["decoder"] == pytest.approx((3e-4, 0.05))
    assert eff["decoder_no_decay"] == pytest.approx((3e-4, 0.0))
    # keyword spelling of the design's call, another optimizer and its own defaults
    sgd = torch.optim.SGD(param_groups(unet, enc_lr_mult=0.5), lr=0.2, weight_decay=1e-3)
    eff = _effective(sgd)
    assert eff["encoder"] == pytest.approx((0.1, 1e-3))
    assert eff["decoder"] == pytest.approx((0.2, 1e-3))
    assert eff["decoder_no_decay"] == pytest.approx((0.2, 0.0))
    adamw_default = torch.optim.AdamW(param_groups(unet))  # lr=1e-3, weight_decay=1e-2
    eff = _effective(adamw_default)
    assert eff["encoder"] == pytest.approx((1e-4, 1e-2))
    assert eff["decoder"] == pytest.approx((1e-3, 1e-2))


def test_explicit_lr_and_weight_decay_override_the_optimizer(unet: UNetResAttnV3) -> None:
    groups = param_groups(unet, 0.1, lr=1e-4, weight_decay=1e-4)
    opt = torch.optim.AdamW(groups, lr=3e-4, weight_decay=0.05)
    eff = _effective(opt)
    assert eff["encoder"] == pytest.approx((1e-5, 1e-4))
    assert eff["encoder_no_decay"] == pytest.approx((1e-5, 0.0))
    assert eff["decoder"] == pytest.approx((1e-4, 1e-4))
    assert eff["decoder_no_decay"] == pytest.approx((1e-4, 0.0))
    # lr given, weight_decay left to the optimizer (and the reverse)
    eff = _effective(torch.optim.AdamW(param_groups(unet, 0.1, lr=1e-4), weight_decay=0.3))
    assert eff["encoder"] == pytest.approx((1e-5, 0.3))
    eff = _effective(torch.optim.AdamW(param_groups(unet, 0.1, weight_decay=0.2), lr=2e-3))
    assert eff["encoder"] == pytest.approx((2e-4, 0.2))
    assert eff["decoder_no_decay"] == pytest.approx((2e-3, 0.0))


def test_base_lr_groups_survive_state_dict_deepcopy_and_plateau(unet: UNetResAttnV3) -> None:
    groups = param_groups(unet, 0.1)
    copied = copy.deepcopy(groups)
    opt = torch.optim.AdamW(groups, lr=4e-4, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=0.5, patience=0, min_lr=group_min_lrs(opt.param_groups, 1e-6)
    )
    sched.step(1.0)
    sched.step(0.0)  # one reduction keeps the 0.1 ratio
    eff = _effective(opt)
    assert eff["decoder"] == pytest.approx((2e-4, 0.05))
    assert eff["encoder"] == pytest.approx((2e-5, 0.05))
    for _ in range(10):  # down to the floors, ratio kept
        sched.step(0.0)
    eff = _effective(opt)
    assert eff["decoder"][0] == pytest.approx(1e-6)
    assert eff["encoder"][0] == pytest.approx(1e-7)
    # a deep copy taken before the optimizer saw the groups still resolves lazily
    opt2 = torch.optim.AdamW(copied, lr=1.0)
    assert _effective(opt2)["encoder"] == pytest.approx((0.1, 1e-2))
    # save/load: the loaded optimizer gets the saved (resolved, reduced) values
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    assert _effective(opt2) == _effective(opt)
    assert [g["lr_mult"] for g in opt2.param_groups] == pytest.approx([0.1, 0.1, 1.0, 1.0])
    assert copy.deepcopy(opt2).param_groups[0]["lr"] == pytest.approx(1e-7)


def test_param_group_setdefault_only_scales_a_missing_lr() -> None:
    g = ParamGroup(params=[], lr_mult=0.25)
    assert g.setdefault("weight_decay", 0.5) == 0.5
    assert g.setdefault("lr", 2.0) == 0.5
    assert g.setdefault("lr", 8.0) == 0.5
    assert ParamGroup(params=[]).setdefault("lr", 2.0) == 2.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"enc_lr_mult": -0.1}, "enc_lr_mult: expected a non-negative finite number"),
        ({"enc_lr_mult": float("nan")}, "enc_lr_mult: expected a non-negative"),
        ({"lr": 0.0}, "lr: expected a positive finite number, got 0.0"),
        ({"lr": float("inf")}, "lr: expected a positive"),
        ({"weight_decay": -1e-4}, "weight_decay: expected a non-negative"),
        ({"lr": True}, "lr: expected a positive"),
        ({"lr": "1e-4"}, "lr: expected a positive"),
    ],
)
def test_invalid_numbers(unet: UNetResAttnV3, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        param_groups(unet, **kwargs)  # type: ignore[arg-type]


def test_model_without_encoder_raises() -> None:
    with pytest.raises(ConfigError, match=r"cannot find the encoder of Sequential.*encoder="):
        param_groups(nn.Sequential(nn.Linear(2, 2)))


def test_non_module_encoder_attribute_raises() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder_name = "x"
            self.lin = nn.Linear(2, 2)

    model = Odd()
    model.encoder = "resnet50"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="cannot find the encoder of Odd"):
        param_groups(model)


def test_foreign_encoder_raises(unet: UNetResAttnV3) -> None:
    with pytest.raises(ConfigError, match="not a submodule"):
        param_groups(unet, encoder=nn.Linear(2, 2))
    with pytest.raises(ConfigError, match=r"expected an nn\.Module"):
        param_groups(unet, encoder="encoder")  # type: ignore[arg-type]


def test_not_a_model_and_all_frozen_raise() -> None:
    with pytest.raises(ConfigError, match=r"model: expected an nn\.Module"):
        param_groups([nn.Parameter(torch.zeros(2))])  # type: ignore[arg-type]
    model = nn.Sequential(nn.Linear(2, 2))
    model.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        param_groups(model, encoder=model[0])


def test_group_min_lrs_validation() -> None:
    assert group_min_lrs([{"lr_mult": 0.1}, {}], 1e-6) == pytest.approx([1e-7, 1e-6])
    with pytest.raises(ConfigError, match="min_lr: expected a non-negative"):
        group_min_lrs([{}], -1.0)
    with pytest.raises(ConfigError, match=r"groups\[0\]\['lr_mult'\]"):
        group_min_lrs([{"lr_mult": -2}], 1e-6)
