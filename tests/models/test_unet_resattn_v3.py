"""Tests of UNetResAttnV3: shapes, sizes, budget, gradients, weights, ablations, export."""

from __future__ import annotations

import copy
import math
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from suimseg import UNetResAttnV3
from suimseg.errors import (
    CheckpointError,
    ConfigError,
    InputNotFoundError,
    WeightsUnavailableError,
)
from suimseg.models import build_model, model_spec
from suimseg.models.blocks import (
    AttentionGate,
    DecoderBlock,
    ResidualDoubleConv,
    SqueezeExcitation,
)
from suimseg.models.encoders import ResNetEncoder

from .conftest import FakeImagenet


def tiny(**kwargs: object) -> UNetResAttnV3:
    """A small configuration for fast behaviour tests."""
    defaults: dict[str, object] = {
        "encoder": "resnet18",
        "decoder_channels": (32, 16, 8, 8),
        "bridge_channels": 32,
    }
    defaults.update(kwargs)
    return UNetResAttnV3(**defaults)  # type: ignore[arg-type]


def _stage_shapes(model: UNetResAttnV3, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        model.bridge.register_forward_hook(
            lambda m, i, o: shapes.__setitem__("bridge", tuple(o.shape))
        )
    ]
    for k, block in zip((4, 3, 2, 1), model.decoder, strict=True):
        hooks.append(
            block.register_forward_hook(
                lambda m, i, o, k=k: shapes.__setitem__(f"dec{k}", tuple(o.shape))
            )
        )
    with torch.no_grad():
        feats = model.encoder(x)
        out = model(x)
    for h in hooks:
        h.remove()
    for i, f in enumerate(feats, start=1):
        shapes[f"enc{i}"] = tuple(f.shape)
    shapes["out"] = tuple(out.shape)
    return shapes


@pytest.fixture(scope="module")
def default_model() -> UNetResAttnV3:
    torch.manual_seed(0)
    return UNetResAttnV3().eval()


def test_default_stage_shapes_small_input(default_model: UNetResAttnV3) -> None:
    s = _stage_shapes(default_model, torch.randn(1, 3, 64, 64))
    assert s["enc1"] == (1, 64, 32, 32)
    assert s["enc2"] == (1, 256, 16, 16)
    assert s["enc3"] == (1, 512, 8, 8)
    assert s["enc4"] == (1, 1024, 4, 4)
    assert s["enc5"] == (1, 2048, 2, 2)
    assert s["bridge"] == (1, 1024, 2, 2)
    assert s["dec4"] == (1, 512, 4, 4)
    assert s["dec3"] == (1, 256, 8, 8)
    assert s["dec2"] == (1, 128, 16, 16)
    assert s["dec1"] == (1, 64, 32, 32)
    assert s["out"] == (1, 8, 64, 64)


def test_default_model_at_design_resolution(default_model: UNetResAttnV3) -> None:
    """The design's table: 384x384 in, 8x384x384 out, with the documented stage sizes."""
    s = _stage_shapes(default_model, torch.randn(1, 3, 384, 384))
    assert s["enc1"] == (1, 64, 192, 192)
    assert s["enc2"] == (1, 256, 96, 96)
    assert s["enc3"] == (1, 512, 48, 48)
    assert s["enc4"] == (1, 1024, 24, 24)
    assert s["enc5"] == (1, 2048, 12, 12)
    assert s["bridge"] == (1, 1024, 12, 12)
    assert s["dec4"] == (1, 512, 24, 24)
    assert s["dec1"] == (1, 64, 192, 192)
    assert s["out"] == (1, 8, 384, 384)


def test_parameter_budget(default_model: UNetResAttnV3) -> None:
    counts = default_model.count_parameters()
    assert 70_800_000 <= counts["total"] <= 78_200_000, counts
    assert counts["total"] == sum(p.numel() for p in default_model.parameters())
    assert counts["encoder"] == sum(p.numel() for p in default_model.encoder.parameters())
    # torchvision's resnet50 without its 1000-way classifier.
    r50 = torchvision.models.resnet50(weights=None)
    assert counts["encoder"] == sum(p.numel() for p in r50.parameters()) - 2048 * 1000 - 1000
    assert counts["encoder"] + counts["decoder"] == counts["total"]


def test_encoder_reports_channels_and_reductions(default_model: UNetResAttnV3) -> None:
    enc = default_model.encoder
    assert enc.out_channels == (64, 256, 512, 1024, 2048)
    assert enc.reductions == (2, 4, 8, 16, 32)
    small = tiny().encoder
    assert small.out_channels == (64, 64, 128, 256, 512)


@pytest.mark.parametrize(("h", "w"), [(65, 97), (64, 64), (33, 47), (100, 36)])
@pytest.mark.parametrize("num_classes", [2, 8])
def test_output_matches_input_size(h: int, w: int, num_classes: int) -> None:
    model = tiny(num_classes=num_classes).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w))
    assert out.shape == (2, num_classes, h, w)
    assert out.dtype == torch.float32


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    # se_reduction=4 keeps >= 8 squeeze units per SE block, so none is dead by chance.
    model = tiny(decoder_channels=(64, 32, 32, 32), se_reduction=4).train()
    x = torch.randn(2, 3, 64, 64)
    target = torch.randint(0, 8, (2, 64, 64))
    loss = nn.functional.cross_entropy(model(x), target)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    zero = [
        n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() == 0
    ]
    assert not zero, zero


def test_batch_size_one_training() -> None:
    model = tiny().train()
    out = model(torch.randn(1, 3, 64, 64))  # 2x2 bottleneck: BatchNorm can train
    assert out.shape == (1, 8, 64, 64)
    with pytest.raises(ConfigError, match="batch size 1"):
        model(torch.randn(1, 3, 32, 32))  # 1x1 bottleneck
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 8, 32, 32)


def test_forward_rejects_wrong_input() -> None:
    model = tiny().eval()
    with pytest.raises(ConfigError, match=r"expected input of shape \(N, 3, H, W\)"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ConfigError, match="expected input of shape"):
        model(torch.randn(3, 32, 32))


def test_initialisation() -> None:
    model = tiny()
    for part in (model.bridge, model.decoder):
        for m in part.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert torch.all(m.weight == 1)
                assert torch.all(m.bias == 0)
    conv = model.bridge.conv1[0]
    assert isinstance(conv, nn.Conv2d)
    # Kaiming normal (fan_out, relu): std = sqrt(2 / (out * k * k)).
    expected = (2.0 / (conv.out_channels * 9)) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.1


def _initial_ce(model: UNetResAttnV3, size: int = 64) -> float:
    """Cross-entropy of a fresh model (train mode, as at the first step) on random data."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=gen)
    y = torch.randint(0, model.num_classes, (2, size, size), generator=gen)
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model.train()(x), y))


def test_initial_loss_is_near_uniform_default_model(default_model: UNetResAttnV3) -> None:
    # Issue #16: the head used the decoder's ReLU fan-out init, CE ~3.08 for 8 classes.
    model = copy.deepcopy(default_model)
    assert abs(_initial_ce(model) - math.log(8)) < 0.2


@pytest.mark.parametrize("num_classes", [3, 8, 21])
def test_initial_loss_is_near_uniform_resnet18(num_classes: int) -> None:
    torch.manual_seed(0)
    model = tiny(num_classes=num_classes, decoder_channels=(64, 32, 16, 16), bridge_channels=64)
    assert abs(_initial_ce(model) - math.log(num_classes)) < 0.2


def test_attention_and_se_switches() -> None:
    full = tiny()
    plain = tiny(attention=False, se=False)
    assert sum(isinstance(m, AttentionGate) for m in full.modules()) == 4
    assert sum(isinstance(m, SqueezeExcitation) for m in full.modules()) == 4
    assert not any(isinstance(m, (AttentionGate, SqueezeExcitation)) for m in plain.modules())
    assert plain.count_parameters()["total"] < full.count_parameters()["total"]
    assert not any(isinstance(m, AttentionGate) for m in full.encoder.modules())
    with torch.no_grad():
        assert plain.eval()(torch.randn(1, 3, 40, 40)).shape == (1, 8, 40, 40)


def _gate_with_psi_bias(bias: float) -> AttentionGate:
    """An eval-mode gate whose psi logit is the constant ``bias`` (BN weight 0)."""
    gate = AttentionGate(4, 6, 3).eval()
    bn = gate.psi[1]
    assert isinstance(bn, nn.BatchNorm2d)
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.fill_(bias)
    return gate


def test_attention_gate_closed_passes_nothing() -> None:
    gate = _gate_with_psi_bias(-1e4)
    g, x = torch.randn(2, 4, 5, 7), torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        out = gate(g, x)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0


def test_attention_gate_saturated_passes_skip_unchanged() -> None:
    gate = _gate_with_psi_bias(1e4)
    g, x = torch.randn(2, 4, 5, 7), torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(gate(g, x), x)


def test_attention_gate_depends_on_gating_signal_and_never_amplifies() -> None:
    torch.manual_seed(0)
    gate = AttentionGate(4, 6, 3).eval()
    x = torch.randn(1, 6, 9, 11)
    with torch.no_grad():
        a, b = gate(torch.randn(1, 4, 9, 11), x), gate(torch.randn(1, 4, 9, 11), x)
    assert not torch.allclose(a, b)
    # a per-pixel coefficient in [0, 1]: same sign as the skip, never larger
    assert torch.all(a * x >= 0)
    assert torch.all(a.abs() <= x.abs() + 1e-6)


def test_attention_gate_gradients_reach_inputs_and_parameters() -> None:
    torch.manual_seed(0)
    gate = AttentionGate(4, 6, 3).train()
    g = torch.randn(2, 4, 5, 7, requires_grad=True)
    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    (gate(g, x) * torch.randn(2, 6, 5, 7)).sum().backward()
    for name, t in [("g", g), ("x", x), *gate.named_parameters()]:
        assert t.grad is not None, name
        assert t.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("h", "w"), [(1, 1), (7, 9), (13, 5)])
def test_attention_gate_and_decoder_block_at_odd_sizes(h: int, w: int) -> None:
    gate = AttentionGate(4, 6, 2).eval()
    with torch.no_grad():
        assert gate(torch.randn(1, 4, h, w), torch.randn(1, 6, h, w)).shape == (1, 6, h, w)
        block = DecoderBlock(8, 6, 4).eval()
        coarse = torch.randn(1, 8, (h + 1) // 2, (w + 1) // 2)
        assert block(coarse, torch.randn(1, 6, h, w)).shape == (1, 4, h, w)


def test_conv_blocks_keep_their_state_dict_keys() -> None:
    """Checkpoints written before ConvBNReLU became torchvision's Conv2dNormActivation load."""
    keys = list(ResidualDoubleConv(4, 8).state_dict())
    assert keys[:6] == [
        "conv1.0.weight",
        "conv1.1.weight",
        "conv1.1.bias",
        "conv1.1.running_mean",
        "conv1.1.running_var",
        "conv1.1.num_batches_tracked",
    ]
    assert "conv2.weight" in keys
    assert "shortcut.0.weight" in keys
    assert ResidualDoubleConv(4, 8).conv1[0].bias is None


def test_in_channels() -> None:
    model = tiny(in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 48, 48)).shape == (2, 8, 48, 48)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"encoder": "resnet9"}, "encoder: expected one of resnet18"),
        ({"decoder_channels": (32, 16, 8)}, "decoder_channels: expected 4 positive ints"),
        ({"decoder_channels": (32, 16, 8, 0)}, "decoder_channels"),
        ({"num_classes": 0}, "num_classes: expected a positive int, got 0"),
        ({"in_channels": 2.5}, "in_channels"),
        ({"bridge_channels": -1}, "bridge_channels"),
        ({"se_reduction": 0}, "se_reduction"),
        ({"attention": "yes"}, "attention: expected True or False"),
        ({"se": 1}, "se: expected True or False"),
        ({"encoder_weights": 123}, "encoder_weights: expected None, 'imagenet' or a path"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        tiny(**kwargs)
    with pytest.raises(ValueError, match=match):  # ConfigError is also a ValueError
        tiny(**kwargs)


def test_local_encoder_weights(tmp_path: Path) -> None:
    torch.manual_seed(1)
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    model = tiny(encoder_weights=path)
    torch.testing.assert_close(model.encoder.layer3[0].conv1.weight, resnet.layer3[0].conv1.weight)
    torch.testing.assert_close(model.encoder.bn1.running_mean, resnet.bn1.running_mean)
    # A wrapped {"state_dict": ...} file with DDP's "module." prefix also loads.
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet.state_dict().items()}}, wrapped)
    model2 = tiny(encoder_weights=str(wrapped))
    torch.testing.assert_close(model2.encoder.conv1.weight, resnet.conv1.weight)


def test_local_encoder_weights_adapt_first_conv(tmp_path: Path) -> None:
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(resnet.state_dict(), path)
    model = tiny(encoder_weights=path, in_channels=1)
    torch.testing.assert_close(
        model.encoder.conv1.weight, resnet.conv1.weight.sum(dim=1, keepdim=True)
    )


def test_mismatched_encoder_weights_list_keys(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"missing keys: .*layer1\.2"):
        tiny(encoder="resnet34", encoder_weights=path)
    broken = torchvision.models.resnet18(weights=None).state_dict()
    broken["extra.weight"] = torch.zeros(1)
    broken["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    bad = tmp_path / "bad.pth"
    torch.save(broken, bad)
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight.*shape mismatches"):
        tiny(encoder_weights=bad)


def test_missing_and_non_state_dict_weight_files(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="encoder_weights file not found"):
        tiny(encoder_weights=tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot load encoder_weights file"):
        tiny(encoder_weights=junk)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        tiny(encoder_weights=listing)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (open, (self.marker, "w"))  # would create the marker file when unpickled


def test_pickle_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused for safety"):
        tiny(encoder_weights=path)
    assert not marker.exists()


def test_imagenet_offline_error(fake_imagenet: FakeImagenet) -> None:
    fake_imagenet(urllib.error.URLError("no network"))
    with pytest.raises(WeightsUnavailableError, match="pass its path as encoder_weights=") as exc:
        tiny(encoder_weights="imagenet")
    # a command-line user learns the flag, and that random init needs no download
    assert "--encoder-weights PATH" in str(exc.value)
    assert "--encoder-weights none" in str(exc.value)
    fake_imagenet(RuntimeError("invalid hash value"))
    with pytest.raises(WeightsUnavailableError, match="invalid hash value"):
        tiny(encoder_weights="ImageNet")


def test_imagenet_weights_through_torchvision_api(fake_imagenet: FakeImagenet) -> None:
    """'imagenet' asks torchvision's weights enum (hash-checked, weights_only=True)."""
    resnet = torchvision.models.resnet18(weights=None)
    seen = fake_imagenet(resnet.state_dict())
    model = tiny(encoder_weights="imagenet")
    assert seen["name"] == "resnet18"
    assert seen["kwargs"]["weights_only"] is True
    assert seen["kwargs"]["check_hash"] is True
    torch.testing.assert_close(model.encoder.conv1.weight, resnet.conv1.weight)
    torch.testing.assert_close(
        model.encoder.layer4[1].bn2.running_var, resnet.layer4[1].bn2.running_var
    )


@pytest.mark.parametrize("spelling", [None, "none", "None", "NONE"])
def test_encoder_weights_none_spellings(
    spelling: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Issue: "none" (the CLI/TrainConfig spelling) was read as a file named "none".
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    a = tiny(encoder_weights=spelling)
    torch.manual_seed(0)
    b = tiny()
    torch.testing.assert_close(a.encoder.conv1.weight, b.encoder.conv1.weight)
    torch.manual_seed(0)
    enc = ResNetEncoder("resnet18", spelling)
    torch.testing.assert_close(enc.conv1.weight, b.encoder.conv1.weight)


def test_config_round_trip() -> None:
    model = tiny(num_classes=5, se=False)
    spec = model_spec(model)
    assert spec["name"] == "unet_resattn_v3"
    clone = build_model(spec["name"], **spec["config"])
    assert isinstance(clone, UNetResAttnV3)
    a, b = model.state_dict(), clone.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    with pytest.raises(ConfigError, match="model name: expected one of"):
        build_model("unet9")
    with pytest.raises(ConfigError, match="invalid config"):
        build_model("unet_resattn_v3", depth=3)
    with pytest.raises(ConfigError, match="expected a suimseg model"):
        model_spec(nn.Linear(2, 2))


def test_channels_last_and_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = tiny().eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.shape == (2, 8, 48, 48)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.1 * ref.abs().mean() + 0.1


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the input check, by design
@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # torch's own deprecation
def test_jit_trace_and_export() -> None:
    model = tiny().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), ref)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), ref)


@pytest.mark.slow
def test_torch_compile() -> None:
    model = tiny().eval()
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
