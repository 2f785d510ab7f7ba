"""Attention modules by name from one factory, as timm's `create_attn`: `create_attention("ca", channels)`.

Every module subclasses `ChannelAttentionBase`, keeps its input shape, and records the per-channel attention
of its last forward pass in `last_channel_attention` (B, C), detached. The CPSCA / CPSE pruning criteria read
it with forward hooks and average it over the training set. Modules never nest another `ChannelAttentionBase`,
so a hook on every instance sees each gate once.

All modules export to ONNX (opset 17) with plain ops: means and maxima over explicit dims, 1x1/kxk convs,
GroupNorm, sigmoid and reshapes whose sizes come from `x.shape`. No adaptive pooling with `None` sizes (it
breaks ONNX export, CoordAttention issue #6).

Defaults for values the paper copies lost are documented on each class (see the method notes beside the papers).
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.models.layers import make_divisible

GATES = {"sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid}


def _largest_divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of `n` that is <= `cap` (at least 1), so a group count fits any channel count."""
    for d in range(max(1, min(n, cap)), 0, -1):
        if n % d == 0:
            return d
    return 1


def _eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """ECA's adaptive Conv1d kernel: t = int(|(log2 C + beta) / gamma|), made odd."""
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


def _channel_conv_gate(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """ECA's gate sigmoid(Conv1d over the channel axis of the pooled vector), shape (B, C, 1, 1).

    The Conv1d's weights run as a (1, k) 2-D convolution on a (B, 1, 1, C) map: the same numbers, but ONNX gets a
    2-D `Conv`, which every TensorRT parser imports (TensorRT 8.2 takes 2-D and 3-D convolutions only).
    """
    b, c = x.shape[:2]
    pooled = x.mean((2, 3)).reshape(b, 1, 1, c)
    y = F.conv2d(pooled, conv.weight.unsqueeze(2), conv.bias, padding=(0, conv.padding[0]))
    return torch.sigmoid(y).reshape(b, c, 1, 1)


def _grouped_spatial_gate(
    x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float, use_max: bool
) -> torch.Tensor:
    """SGE-style spatial gate, shape (B*G, 1, H, W), for `x` split into `groups` channel groups.

    Each position's group vector is dotted with the group's global descriptor (average pool, plus max pool
    when `use_max`), normalized over positions, scaled and shifted per group, then passed through a sigmoid.
    The std is sqrt(var + eps) rather than SGE's std + eps: the same for any real feature map, but its
    gradient stays finite when a group's map is constant (e.g. 1x1 spatial size). The variance is the biased
    one, so a single position gives 0 instead of NaN.
    """
    b, c, h, w = x.shape
    xg = x.reshape(b * groups, c // groups, h, w)
    descriptor = xg.mean((2, 3), keepdim=True)
    if use_max:
        descriptor = descriptor + xg.amax((2, 3), keepdim=True)
    t = (xg * descriptor).sum(1, keepdim=True)
    t = t - t.mean((2, 3), keepdim=True)
    t = t / torch.sqrt((t * t).mean((2, 3), keepdim=True) + eps)
    t = t.reshape(b, groups, h, w) * weight + bias
    return torch.sigmoid(t).reshape(b * groups, 1, h, w)


def _apply_grouped_gate(x: torch.Tensor, gate: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiply `x` (B, C, H, W) by a per-group spatial gate (B*G, 1, H, W).

    Returns the gated map and the gate's mean over positions broadcast to every channel of its group, (B, C).
    """
    b, c, h, w = x.shape
    out = (x.reshape(b * groups, c // groups, h, w) * gate).reshape(b, c, h, w)
    per_channel = gate.mean((2, 3), keepdim=True).expand(b * groups, c // groups, 1, 1).reshape(b, c)
    return out, per_channel


def _group_norm(x: torch.Tensor, gn: nn.GroupNorm) -> torch.Tensor:
    """`gn(x)` for a (B, C, 1, 1) tensor, written with reshape/mean so it exports as plain ONNX ops.

    torch exports `nn.GroupNorm` as InstanceNormalization with computed scale inputs, which onnx2tf cannot convert;
    the result is the same (biased variance, eps inside the square root, per-channel affine).
    """
    b, c = x.shape[0], x.shape[1]
    g = x.reshape(b, gn.num_groups, -1)
    g = g - g.mean(2, keepdim=True)
    g = g / torch.sqrt((g * g).mean(2, keepdim=True) + gn.eps)
    out = g.reshape(b, c, 1, 1)
    if gn.affine:
        out = out * gn.weight.reshape(1, c, 1, 1) + gn.bias.reshape(1, c, 1, 1)
    return out


class ChannelAttentionBase(nn.Module):
    """Base of every attention module: keeps `channels` and the last forward's per-channel attention.

    `last_channel_attention` is a detached (B, C) tensor, None before the first forward. For gates that are
    not purely per channel it is the gate's mean over positions per channel.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise PacbEdgeError(f"attention needs at least 1 channel, got {channels}")
        self.channels = channels
        self.last_channel_attention: torch.Tensor | None = None

    def _record(self, attention: torch.Tensor) -> None:
        """Store a (B, C, ...) or (B, C) per-channel attention as a detached (B, C) tensor.

        C comes from the tensor, not from `self.channels`, so the record stays right after structural pruning.
        """
        self.last_channel_attention = attention.detach().reshape(attention.shape[0], -1)

    def gate_layers(self) -> tuple[nn.Module, ...]:
        """The layers whose output is the gate's pre-activation (what `zero_init_gate` zeroes); none by default."""
        return ()

    def spatial_gate_output(self) -> nn.Module | None:
        """The layer whose output is a one-channel spatial gate (N, 1, H, W) multiplied into every channel, or None.

        Such a gate does not depend on which channels are kept (it pools over all of them), so structural pruning
        treats it as independent of the channels (`pacb_edge.pruning.pruner`)."""
        return None

    @torch.no_grad()
    def zero_init_gate(self) -> bool:
        """Zero the weights of `gate_layers()`, so that at init the gate is a constant and the module a uniform
        rescale (what SGE and SCA start from). Returns False when the module has no such layer. QARepVGG blocks
        call it; see `pacb_edge.models.repvgg` for the measurement behind it."""
        layers = self.gate_layers()
        for layer in layers:
            nn.init.zeros_(layer.weight)
        return bool(layers)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class SqueezeExcite(ChannelAttentionBase):
    """Squeeze-and-Excitation (Hu et al. 2018): global average pool, 1x1 conv down, act, 1x1 conv up, gate.

    The layout (`fc1`, `fc2`, both convs with bias) is torchvision's `SqueezeExcitation`, so MobileNetV3 with
    `rd_channels=make_divisible(C // 4, 8), gate="hardsigmoid"` has torchvision's parameters, name for name.
    `rd_channels` overrides `make_divisible(C * rd_ratio, rd_divisor)`.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        act_layer: type[nn.Module] = nn.ReLU,
        gate: str = "sigmoid",
    ) -> None:
        super().__init__(channels)
        if gate not in GATES:
            raise PacbEdgeError(f"unknown SE gate {gate!r}; choose one of {', '.join(GATES)}")
        rd = rd_channels or make_divisible(channels * rd_ratio, rd_divisor)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=True)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=True)
        self.gate = GATES[gate]()

    def gate_layers(self) -> tuple[nn.Module, ...]:
        return (self.fc2,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))
        self._record(s)
        return x * s


class CoordAttention(ChannelAttentionBase):
    """Coordinate Attention (Hou et al., CVPR 2021), the module PACB inserts.

    Pools over width and over height, shares one 1x1 conv (to `mip = max(min_mip, C // reduction)`), BatchNorm
    and h-swish on the concatenated strips, then a sigmoid gate per direction: y = x * g_h * g_w. Submodule
    names (`conv1`, `bn1`, `conv_h`, `conv_w`) follow the authors' code. Defaults `reduction=32`, `min_mip=8`
    are theirs. `last_channel_attention` is the mean of g_h * g_w over positions (= mean(g_h) * mean(g_w)).
    """

    def __init__(self, channels: int, reduction: int = 32, min_mip: int = 8) -> None:
        super().__init__(channels)
        mip = max(min_mip, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, channels, 1)
        self.conv_w = nn.Conv2d(mip, channels, 1)

    def gate_layers(self) -> tuple[nn.Module, ...]:
        return (self.conv_h, self.conv_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        z_h = x.mean(dim=3, keepdim=True)  # B, C, H, 1
        # Moving a size-1 axis is a reshape. A Transpose here is mis-mapped by onnx2tf when the map is 1x1 (the last
        # stage at 32x32 input) and the TFLite conversion fails; the reshape is bit-identical in PyTorch.
        z_w = x.mean(dim=2, keepdim=True).reshape(b, c, w, 1)  # B, C, W, 1
        f = self.act(self.bn1(self.conv1(torch.cat([z_h, z_w], dim=2))))
        f_h, f_w = f[:, :, :h], f[:, :, h:].reshape(b, -1, 1, w)
        g_h = torch.sigmoid(self.conv_h(f_h))  # B, C, H, 1
        g_w = torch.sigmoid(self.conv_w(f_w))  # B, C, 1, W
        self._record(g_h.mean((2, 3)) * g_w.mean((2, 3)))
        return x * g_h * g_w


class SpatialChannelAttention(ChannelAttentionBase):
    """SCA (CPSCA, Liu, Fang et al.): grouped spatial attention, then GroupNorm channel attention.

    Spatial: SGE-style over `groups` channel groups, with a global descriptor that sums the group's average-
    and max-pooled vectors. Channel: the refined map's average- and max-pooled (B, C, 1, 1) vectors each pass
    through their own GroupNorm (`gn_avg`, `gn_max`; the paper normalizes them "respectively", and separate
    affine parameters let the two statistics, whose scales differ, be weighted apart at a cost of 2C
    parameters), are added, and a sigmoid gives M_c, recorded as `last_channel_attention`.

    Defaults for values the paper copy lost: `groups=64` (SGE's default), clamped to the largest divisor of C
    that is <= groups; `gn_groups=16`, clamped to the largest divisor of C that leaves at least 2 channels per
    group (GroupNorm of a (B, C, 1, 1) tensor normalizes across the channels of a group, so a 1-channel group
    would output a constant). The spatial scale starts at 0 and the shift at 1, as in SGE: a fresh module's
    spatial gate is the constant sigmoid(1), a uniform rescale that leaves the feature map's structure intact,
    and learns where to look from there.
    """

    def __init__(self, channels: int, groups: int = 64, gn_groups: int = 16, eps: float = 1e-5) -> None:
        super().__init__(channels)
        self.groups = _largest_divisor_at_most(channels, groups)
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(1, self.groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, self.groups, 1, 1))
        gn = _largest_divisor_at_most(channels, min(gn_groups, max(1, channels // 2)))
        self.gn_avg = nn.GroupNorm(gn, channels, eps=eps)
        self.gn_max = nn.GroupNorm(gn, channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = _grouped_spatial_gate(x, self.groups, self.weight, self.bias, self.eps, use_max=True)
        y, _ = _apply_grouped_gate(x, gate, self.groups)
        avg = _group_norm(y.mean((2, 3), keepdim=True), self.gn_avg)
        mx = _group_norm(y.amax((2, 3), keepdim=True), self.gn_max)
        m_c = torch.sigmoid(avg + mx)
        self._record(m_c)
        return y * m_c

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}"


class SpatialGroupEnhance(ChannelAttentionBase):
    """Spatial Group-wise Enhance (Li et al. 2019): a per-group spatial gate from average-pooled descriptors.

    `groups=64` is SGE's default, clamped to the largest divisor of C that is <= groups. Scale starts at 0 and
    shift at 1, as in SGE. `last_channel_attention` is the gate's mean over positions, shared by a group's
    channels.
    """

    def __init__(self, channels: int, groups: int = 64, eps: float = 1e-5) -> None:
        super().__init__(channels)
        self.groups = _largest_divisor_at_most(channels, groups)
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(1, self.groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, self.groups, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = _grouped_spatial_gate(x, self.groups, self.weight, self.bias, self.eps, use_max=False)
        out, per_channel = _apply_grouped_gate(x, gate, self.groups)
        self._record(per_channel)
        return out

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}"


class CBAM(ChannelAttentionBase):
    """CBAM (Woo et al. 2018): channel attention, then spatial attention.

    Channel: a shared MLP (1x1 convs with bias) on the average- and max-pooled vectors, summed, sigmoid; its
    hidden width is `max(min_rd_channels, int(C * rd_ratio))`: the paper's ratio 1/16, but at least 8 so
    narrow layers keep a usable MLP. Spatial: a `kernel_size` conv (7, the paper's) plus BatchNorm, as in the
    authors' code, over the channel-mean and channel-max maps, sigmoid. `last_channel_attention` is the
    channel gate.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        min_rd_channels: int = 8,
        kernel_size: int = 7,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(channels)
        rd = rd_channels or max(min_rd_channels, int(channels * rd_ratio))
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=True)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=True)
        self.spatial_conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1)

    def spatial_gate_output(self) -> nn.Module:
        return self.spatial_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        mx = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        m_c = torch.sigmoid(avg + mx)
        self._record(m_c)
        x = x * m_c
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial_bn(self.spatial_conv(pooled)))


class ECA(ChannelAttentionBase):
    """Efficient Channel Attention (Wang et al. 2020): global average pool, Conv1d across channels, sigmoid.

    The kernel is ECA's adaptive size from C (`gamma=2`, `beta=1`, the paper's b) unless `kernel_size` is
    given. The Conv1d's weights run as a 2-D (1, k) convolution (`_channel_conv_gate`), so ONNX gets a 2-D Conv.
    """

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2, beta: float = 1) -> None:
        super().__init__(channels)
        k = kernel_size or _eca_kernel_size(channels, gamma, beta)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def gate_layers(self) -> tuple[nn.Module, ...]:
        return (self.conv,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _channel_conv_gate(self.conv, x)
        self._record(s)
        return x * s


class LAM(ChannelAttentionBase):
    """LAM (Zhang, Hu, Wang 2025): ECA, then light spatial attention (LSA).

    LSA concatenates the channel-wise max and mean maps (B, 2, H, W) and applies the paper's
    depthwise-separable conv: a `kernel_size` depthwise conv (3, lost in the paper copy; the smallest that
    sees neighbours) and a 1x1 conv to one map, then a sigmoid. The optional AFF fusion is a network-level
    choice and is not part of this module. `last_channel_attention` is the ECA gate.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        eca_kernel_size: int | None = None,
        gamma: float = 2,
        beta: float = 1,
    ) -> None:
        super().__init__(channels)
        k = eca_kernel_size or _eca_kernel_size(channels, gamma, beta)
        self.eca_conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.spatial_dw = nn.Conv2d(2, 2, kernel_size, padding=kernel_size // 2, groups=2, bias=False)
        self.spatial_pw = nn.Conv2d(2, 1, 1, bias=True)

    def spatial_gate_output(self) -> nn.Module:
        return self.spatial_pw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _channel_conv_gate(self.eca_conv, x)
        self._record(s)
        x = x * s
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial_pw(self.spatial_dw(pooled)))


ATTENTIONS: dict[str, type[ChannelAttentionBase]] = {
    "ca": CoordAttention,
    "sca": SpatialChannelAttention,
    "se": SqueezeExcite,
    "cbam": CBAM,
    "eca": ECA,
    "sge": SpatialGroupEnhance,
    "lam": LAM,
}


def list_attentions() -> list[str]:
    """The attention module names `create_attention` knows, sorted ("none" aside)."""
    return sorted(ATTENTIONS)


def create_attention(name: str | None, channels: int, **kw) -> nn.Module:
    """Build the attention module `name` for `channels` channels; `None` or "none" gives `nn.Identity()`.

    Raises `PacbEdgeError` for an unknown name or an option the module does not take, listing what is known.
    """
    if name is None or name.lower() == "none":
        return nn.Identity()
    cls = ATTENTIONS.get(name.lower())
    if cls is None:
        raise PacbEdgeError(f"unknown attention {name!r}; known attentions: none, {', '.join(list_attentions())}")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "channels")]
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise PacbEdgeError(
            f"attention {name!r} takes no option {', '.join(unknown)}; its options: {', '.join(accepted)}"
        )
    return cls(channels, **kw)
