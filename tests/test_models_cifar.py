"""RepVGG, VGG, CIFAR ResNet and MobileNetV2: paper param counts, reparameterization, strides, input sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.models import create_attention, create_model
from pacb_edge.models.counting import count_params
from pacb_edge.models.repvgg import RepVGGBlock

ARCHS = ["repvgg_a0", "repvgg_a1", "repvgg_b0", "vgg16", "vgg19", "resnet56", "resnet110", "mobilenetv2"]
REPVGG = ["repvgg_a0", "repvgg_a1", "repvgg_b0"]
SMALL = 0.25  # width multiplier for the tests that do not check exact counts


@pytest.mark.parametrize(
    ("arch", "num_classes", "exact", "paper_m"),
    [
        ("vgg16", 10, 16_865_354, 16.87),
        ("vgg19", 10, 22_177_610, 22.18),
        ("vgg19", 100, 22_546_340, 22.55),
        ("resnet56", 10, 853_018, 0.85),
        ("resnet110", 10, 1_727_962, 1.73),
    ],
)
def test_cpsca_param_counts(arch, num_classes, exact, paper_m):
    n = count_params(create_model(arch, num_classes=num_classes))
    assert n == exact
    assert round(n / 1e6, 2) == paper_m


def test_vgg16_100_classes_count():
    # The CPSCA table prints 17.24 M; the build that matches its other three VGG numbers has 17,234,084.
    n = count_params(create_model("vgg16", num_classes=100))
    assert n == 17_234_084
    assert abs(n / 1e6 - 17.24) < 0.01


def test_repvgg_a0_imagenet_counts():
    model = create_model("repvgg_a0", num_classes=1000)
    assert round(count_params(model) / 1e6, 1) == 9.1
    model.reparameterize()
    assert round(count_params(model) / 1e6, 1) == 8.3


def test_mobilenetv2_is_torchvision():
    """Same parameter count and, with torchvision's weights copied in order, the same outputs."""
    torchvision = pytest.importorskip("torchvision")
    ref = torchvision.models.mobilenet_v2().eval()
    model = create_model("mobilenetv2", num_classes=1000).eval()
    assert count_params(model) == count_params(ref) == 3_504_872
    ours, theirs = model.state_dict(), ref.state_dict()
    assert [v.shape for v in ours.values()] == [v.shape for v in theirs.values()]
    model.load_state_dict(dict(zip(ours, theirs.values(), strict=True)))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)


def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
            with torch.no_grad():
                m.weight.copy_(torch.randn(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g) * 0.5)


@pytest.mark.parametrize("attention", [None, "ca"])
@pytest.mark.parametrize("arch", REPVGG)
def test_repvgg_reparameterize_matches(arch, attention):
    model = create_model(arch, attention=attention, width_mult=SMALL)
    _randomize_bn(model)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        n_train = count_params(model)
        assert model.reparameterize() is model
        after = model(x)
    blocks = [m for m in model.modules() if isinstance(m, RepVGGBlock)]
    assert blocks and all(b.deploy and b.rbr_dense is None and b.rbr_identity is None for b in blocks)
    assert count_params(model) < n_train
    assert (after - before).abs().max().item() < 1e-4
    assert before.abs().max().item() > 1e-3  # the comparison is not between two near-zero outputs


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_32(arch, in_chans):
    model = create_model(arch, in_chans=in_chans, width_mult=SMALL)
    x = torch.randn(2, in_chans, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == in_chans
    assert first_conv.weight.grad is not None and torch.isfinite(first_conv.weight.grad).all()
    assert first_conv.weight.grad.abs().sum() > 0


# Spatial size of the last conv's output for a 32x32 input: the documented total stride of each stem.
LAST_MAP = {
    "repvgg_a0": {"imagenet": 1, "cifar": 4},
    "vgg16": {"imagenet": 1, "cifar": 2},
    "resnet56": {"imagenet": 4, "cifar": 8},
    "mobilenetv2": {"imagenet": 1, "cifar": 4},
}


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
@pytest.mark.parametrize("arch", list(LAST_MAP))
def test_input_stem_strides(arch, stem):
    model = create_model(arch, width_mult=SMALL, input_stem=stem).eval()
    last_conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    sizes = []
    last_conv.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert sizes == [LAST_MAP[arch][stem]]


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
@pytest.mark.parametrize("arch", ARCHS)
def test_larger_input(arch, stem):
    model = create_model(arch, num_classes=7, width_mult=SMALL, input_stem=stem).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 40, 40)).shape == (1, 7)


@pytest.mark.parametrize(
    ("arch", "n_blocks"),
    [
        ("repvgg_a0", 22),
        ("repvgg_b0", 28),
        ("vgg16", 13),
        ("vgg19", 16),
        ("resnet56", 54),  # two per block: after each conv of the residual branch
        ("mobilenetv2", 17),
    ],
)
def test_attention_in_every_block(arch, n_blocks):
    ca_type = type(create_attention("ca", 16))
    assert ca_type is not nn.Identity
    model = create_model(arch, attention="ca", width_mult=SMALL).eval()
    attns = [m for m in model.modules() if isinstance(m, ca_type)]
    assert len(attns) == n_blocks
    calls = []
    for m in attns:
        m.register_forward_hook(lambda m, i, o: calls.append(m))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert sorted(map(id, calls)) == sorted(map(id, attns))  # each one runs exactly once
    assert not any(isinstance(m, ca_type) for m in create_model(arch, width_mult=SMALL).modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_unknown_input_stem(arch):
    with pytest.raises(PacbEdgeError, match="input_stem"):
        create_model(arch, width_mult=SMALL, input_stem="tiny")
