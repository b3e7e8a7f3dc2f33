"""Tests of the DeepLabV3-ResNet50 baseline wrapper and the model registry round trip."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from suimseg.errors import (
    CheckpointError,
    ConfigError,
    InputNotFoundError,
    WeightsUnavailableError,
)
from suimseg.models import (
    MODEL_NAMES,
    DeepLabV3ResNet50,
    UNetResAttnV3,
    build_model,
    deeplabv3_resnet50,
    model_spec,
)
from suimseg.optim import param_groups

from .conftest import FakeImagenet


@pytest.fixture(scope="module")
def model() -> DeepLabV3ResNet50:
    torch.manual_seed(0)
    return deeplabv3_resnet50(num_classes=8)


def test_forward_returns_logits_tensor(model: DeepLabV3ResNet50) -> None:
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
        odd = model(torch.randn(1, 3, 50, 70))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 8, 64, 64)
    assert odd.shape == (1, 8, 50, 70)
    assert torch.isfinite(out).all()


def test_one_training_step_reaches_every_parameter_and_lowers_loss() -> None:
    torch.manual_seed(1)
    net = deeplabv3_resnet50(num_classes=3).train()
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 3, (2, 64, 64))
    # plain gradient descent with a small step must lower the loss on the same batch
    opt = torch.optim.SGD(param_groups(net, 0.1, lr=1e-2, weight_decay=0.0))
    loss = nn.functional.cross_entropy(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    opt.step()
    with torch.no_grad():
        after = nn.functional.cross_entropy(net(x), y)
    assert after.item() < loss.item()


def test_matches_torchvision_state_dict_and_outputs(model: DeepLabV3ResNet50) -> None:
    torch.manual_seed(2)
    tv = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=8, aux_loss=False
    ).eval()
    model.load_state_dict(tv.state_dict(), strict=True)
    model.eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x)["out"])


def test_encoder_is_backbone_and_param_groups_find_it(model: DeepLabV3ResNet50) -> None:
    assert model.encoder is model.backbone
    groups = param_groups(model)
    assert [g["name"] for g in groups] == [
        "encoder",
        "encoder_no_decay",
        "decoder",
        "decoder_no_decay",
    ]
    enc_ids = {id(p) for g in groups[:2] for p in g["params"]}
    assert enc_ids == {id(p) for p in model.backbone.parameters()}
    opt = torch.optim.SGD(groups, lr=0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert opt.param_groups[2]["lr"] == pytest.approx(0.5)
    # the encoder alias does not duplicate state-dict entries
    assert not any(k.startswith("encoder.") for k in model.state_dict())


def test_count_parameters(model: DeepLabV3ResNet50) -> None:
    counts = model.count_parameters()
    resnet = torchvision.models.resnet50(weights=None)
    expected_enc = sum(p.numel() for n, p in resnet.named_parameters() if not n.startswith("fc."))
    assert counts["encoder"] == expected_enc
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["decoder"] == counts["total"] - counts["encoder"] > 0


def test_local_encoder_weights_load(tmp_path: Path) -> None:
    torch.manual_seed(3)
    resnet = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(resnet.state_dict(), path)  # includes fc.*, which must be ignored
    net = deeplabv3_resnet50(num_classes=4, encoder_weights=path)
    torch.testing.assert_close(net.backbone.conv1.weight, resnet.conv1.weight)
    torch.testing.assert_close(
        net.backbone.layer4[2].conv3.weight,  # type: ignore[index]
        resnet.layer4[2].conv3.weight,
    )
    torch.testing.assert_close(net.backbone.bn1.running_var, resnet.bn1.running_var)
    assert "encoder_weights" not in net.config


def test_mismatched_or_missing_encoder_weights(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3), "extra.bias": torch.zeros(1)}, bad)
    with pytest.raises(
        CheckpointError,
        match=r"does not match a torchvision resnet50: missing keys: .*unexpected keys: "
        r"extra\.bias; shape mismatches: conv1\.weight",
    ):
        deeplabv3_resnet50(encoder_weights=bad)
    with pytest.raises(InputNotFoundError, match="encoder_weights file not found"):
        deeplabv3_resnet50(encoder_weights=tmp_path / "nope.pth")


def test_imagenet_weights_offline_and_cached(fake_imagenet: FakeImagenet) -> None:
    fake_imagenet(urllib.error.URLError("no network"))
    with pytest.raises(
        WeightsUnavailableError, match=r"resnet50 ImageNet weights.*encoder_weights="
    ):
        deeplabv3_resnet50(encoder_weights="imagenet")

    resnet = torchvision.models.resnet50(weights=None)
    seen = fake_imagenet(resnet.state_dict())
    net = deeplabv3_resnet50(encoder_weights="imagenet")
    assert seen["name"] == "resnet50"
    assert seen["kwargs"]["weights_only"] is True
    assert seen["kwargs"]["check_hash"] is True
    torch.testing.assert_close(net.backbone.conv1.weight, resnet.conv1.weight)


def test_aux_head() -> None:
    torch.manual_seed(4)
    net = deeplabv3_resnet50(num_classes=5, aux_loss=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out, aux = net.forward_with_aux(x)
        plain = net(x)
    assert out.shape == aux.shape == (1, 5, 32, 32)
    torch.testing.assert_close(out, plain)
    assert not torch.equal(out, aux)


def test_forward_with_aux_needs_aux_head(model: DeepLabV3ResNet50) -> None:
    with pytest.raises(ConfigError, match="aux_loss=True"):
        model.forward_with_aux(torch.randn(2, 3, 32, 32))


def test_bad_inputs(model: DeepLabV3ResNet50) -> None:
    model.eval()
    with pytest.raises(
        ConfigError, match=r"expected input of shape \(N, 3, H, W\), got \(1, 1, 32, 32\)"
    ):
        model(torch.randn(1, 1, 32, 32))
    model.train()
    with pytest.raises(ConfigError, match="batch size 1 in training mode"):
        model(torch.randn(1, 3, 32, 32))
    model.eval()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "num_classes: expected a positive int, got 0"),
        ({"num_classes": True}, "num_classes: expected a positive int"),
        ({"aux_loss": "yes"}, "aux_loss: expected True or False"),
        ({"encoder_weights": 123}, "encoder_weights: expected None, 'imagenet' or a path"),
    ],
)
def test_invalid_config(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DeepLabV3ResNet50(**kwargs)  # type: ignore[arg-type]


def test_build_model_by_name() -> None:
    assert "deeplabv3_resnet50" in MODEL_NAMES
    net = build_model("deeplabv3_resnet50", num_classes=3)
    assert isinstance(net, DeepLabV3ResNet50)
    assert net.classifier[-1].out_channels == 3  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="invalid config for model 'deeplabv3_resnet50'"):
        build_model("deeplabv3_resnet50", encoder="resnet18")


@pytest.mark.parametrize(
    "make",
    [
        lambda: UNetResAttnV3(
            encoder="resnet18", decoder_channels=(32, 16, 8, 8), bridge_channels=32, num_classes=5
        ),
        lambda: DeepLabV3ResNet50(num_classes=5, aux_loss=True),
    ],
    ids=["unet_resattn_v3", "deeplabv3_resnet50"],
)
def test_registry_round_trip(make: object) -> None:
    original = make()  # type: ignore[operator]
    spec = model_spec(original)
    assert spec["name"] == original.model_name
    clone = build_model(original.model_name, **original.config)
    assert type(clone) is type(original)
    a, b = original.state_dict(), clone.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    assert clone.config == original.config
