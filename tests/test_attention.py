"""Attention modules: shapes and recorded gates, the factory, each module's math, SE layout, ONNX parity."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.models.attention import (
    ATTENTIONS,
    CoordAttention,
    SpatialChannelAttention,
    SpatialGroupEnhance,
    SqueezeExcite,
    create_attention,
    list_attentions,
)

NAMES = sorted(ATTENTIONS)


def _perturb(module: nn.Module, scale: float = 0.5) -> nn.Module:
    """Move every parameter and BN statistic off its init, so identity-like inits can't hide wrong math."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return module


@pytest.mark.parametrize("size", [(1, 1), (4, 4), (7, 5)])
@pytest.mark.parametrize("channels", [8, 24, 40])
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_shapes_and_recorded_gate(name, channels, size):
    m = create_attention(name, channels)
    assert m.channels == channels
    assert m.last_channel_attention is None
    x = torch.randn(2, channels, *size, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape
    assert not torch.allclose(out, x)
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for p in m.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    a = m.last_channel_attention
    assert a.shape == (2, channels)
    assert not a.requires_grad
    assert (a >= 0).all() and (a <= 1).all()


def test_factory_names_identity_and_errors():
    assert list_attentions() == ["ca", "cbam", "eca", "lam", "sca", "se", "sge"]
    assert isinstance(create_attention(None, 16), nn.Identity)
    assert isinstance(create_attention("none", 16), nn.Identity)
    m = create_attention("se", 48, rd_channels=12)
    assert isinstance(m, SqueezeExcite) and m.channels == 48 and m.fc1.out_channels == 12
    with pytest.raises(PacbEdgeError) as e:
        create_attention("transformer", 16)
    msg = str(e.value)
    assert "transformer" in msg and all(n in msg for n in NAMES)
    with pytest.raises(PacbEdgeError, match="rd_ratio"):
        create_attention("ca", 16, rd_ratio=0.5)
    with pytest.raises(PacbEdgeError, match="hardsigmoid"):
        create_attention("se", 16, gate="relu")


def test_se_layout_and_torchvision_equivalence():
    from torchvision.ops import SqueezeExcitation

    m = SqueezeExcite(96, rd_channels=24, gate="hardsigmoid")
    assert sum(p.numel() for p in m.parameters()) == 96 * 24 + 24 + 24 * 96 + 96
    tv = SqueezeExcitation(96, 24, scale_activation=nn.Hardsigmoid)
    _perturb(tv)
    m.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 96, 5, 5)
    torch.testing.assert_close(m(x), tv(x))
    # Default reduction: make_divisible(C * 0.25, 8).
    assert SqueezeExcite(40).fc1.out_channels == 16


@pytest.mark.parametrize("name", ["se", "eca"])
def test_pure_channel_gates_apply_the_recorded_gate(name):
    m = _perturb(create_attention(name, 24))
    x = torch.randn(3, 24, 6, 4)
    out = m(x)
    torch.testing.assert_close(out, x * m.last_channel_attention[:, :, None, None])


def test_coord_attention_math():
    m = _perturb(CoordAttention(64)).eval()
    assert m.conv1.out_channels == 8  # max(8, 64 // 32)
    assert CoordAttention(512).conv1.out_channels == 16
    x = torch.randn(2, 64, 7, 5)
    out = m(x)
    with torch.no_grad():
        z = torch.cat([x.mean(3), x.mean(2)], dim=2)  # B, C, H + W
        f = F.conv2d(z[..., None], m.conv1.weight, m.conv1.bias)
        bn = m.bn1
        f = (f - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
        f = F.hardswish(f * bn.weight[:, None, None] + bn.bias[:, None, None])
        g_h = torch.sigmoid(F.conv2d(f[:, :, :7], m.conv_h.weight, m.conv_h.bias))  # B, C, H, 1
        g_w = torch.sigmoid(F.conv2d(f[:, :, 7:], m.conv_w.weight, m.conv_w.bias))  # B, C, W, 1
        gate = g_h * g_w.transpose(2, 3)  # B, C, H, W
    torch.testing.assert_close(out, x * gate)
    torch.testing.assert_close(m.last_channel_attention, gate.mean((2, 3)))


def _reference_spatial(x, groups, weight, bias, eps, use_max):
    """SGE / SCA spatial gate written out per group, with a loop over groups instead of reshapes."""
    b, c, h, w = x.shape
    cg = c // groups
    out, gates = torch.empty_like(x), []
    for g in range(groups):
        xg = x[:, g * cg : (g + 1) * cg]
        desc = xg.mean((2, 3), keepdim=True)
        if use_max:
            desc = desc + xg.amax((2, 3), keepdim=True)
        t = (xg * desc).sum(1)  # B, H, W
        t = t - t.mean((1, 2), keepdim=True)
        t = t / torch.sqrt(t.var((1, 2), keepdim=True, unbiased=False) + eps)
        gate = torch.sigmoid(t * weight[0, g] + bias[0, g])[:, None]
        out[:, g * cg : (g + 1) * cg] = xg * gate
        gates.append(gate.mean((2, 3)).expand(b, cg))
    return out, torch.cat(gates, dim=1)


def test_sca_channel_gate_is_sigmoid_of_groupnorms():
    m = _perturb(SpatialChannelAttention(48, groups=4, gn_groups=6))
    assert m.groups == 4 and m.gn_avg.num_groups == 6
    x = torch.randn(2, 48, 6, 5)
    out = m(x)
    with torch.no_grad():
        y, _ = _reference_spatial(x, 4, m.weight, m.bias, m.eps, use_max=True)
        avg = F.group_norm(y.mean((2, 3), keepdim=True), 6, m.gn_avg.weight, m.gn_avg.bias, m.gn_avg.eps)
        mx = F.group_norm(y.amax((2, 3), keepdim=True), 6, m.gn_max.weight, m.gn_max.bias, m.gn_max.eps)
        m_c = torch.sigmoid(avg + mx)
    torch.testing.assert_close(m.last_channel_attention, m_c.flatten(1))
    torch.testing.assert_close(out, y * m_c)


def test_sca_and_sge_group_counts_are_clamped():
    small = SpatialChannelAttention(8)  # groups=64 > C, gn_groups=16 > C
    assert small.groups == 8
    assert small.gn_avg.num_groups == 4  # at least 2 channels per GN group, or GN outputs a constant
    assert SpatialChannelAttention(24, groups=64, gn_groups=16).groups == 24
    assert SpatialChannelAttention(40, groups=16).groups == 10
    assert SpatialGroupEnhance(40).groups == 40
    x = torch.randn(2, 8, 4, 4)
    _perturb(small)
    out = small(x)
    assert torch.isfinite(out).all()
    # The channel gate depends on the input (a degenerate 1-channel GN would make it constant across inputs).
    small(torch.randn(2, 8, 4, 4))
    assert not torch.allclose(small.last_channel_attention, torch.sigmoid(small.gn_avg.bias + small.gn_max.bias))


def test_sge_math():
    m = _perturb(SpatialGroupEnhance(32, groups=8))
    x = torch.randn(2, 32, 5, 7)
    out = m(x)
    want, per_channel = _reference_spatial(x, 8, m.weight.detach(), m.bias.detach(), m.eps, use_max=False)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(m.last_channel_attention, per_channel)


def test_eca_and_lam_kernel_and_gate():
    assert create_attention("eca", 64).conv.kernel_size == (3,)  # int((6 + 1) / 2) = 3
    assert create_attention("eca", 256).conv.kernel_size == (5,)  # int((8 + 1) / 2) = 4 -> odd 5
    assert create_attention("eca", 64, kernel_size=7).conv.kernel_size == (7,)
    m = _perturb(create_attention("lam", 64))
    assert m.eca_conv.kernel_size == (3,) and m.spatial_dw.groups == 2
    x = torch.randn(2, 64, 6, 6)
    out = m(x)
    with torch.no_grad():
        s = torch.sigmoid(m.eca_conv(x.mean((2, 3))[:, None])).reshape(2, 64, 1, 1)
        xs = x * s
        pooled = torch.cat([xs.amax(1, keepdim=True), xs.mean(1, keepdim=True)], dim=1)
        want = xs * torch.sigmoid(m.spatial_pw(m.spatial_dw(pooled)))
    torch.testing.assert_close(m.last_channel_attention, s.flatten(1))
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_onnxruntime(name):
    import onnxruntime as ort

    m = _perturb(create_attention(name, 16)).eval()
    x = torch.randn(2, 16, 8, 8)
    buf = io.BytesIO()
    torch.onnx.export(m, (x,), buf, opset_version=17, input_names=["x"], output_names=["y"], dynamo=False)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = m(x).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4
