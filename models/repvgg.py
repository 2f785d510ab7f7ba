"""RepVGG (Ding et al., CVPR 2021) with an attention module after every block, as PACB places CA.

Train time, each `RepVGGBlock` sums a 3x3 conv-BN, a 1x1 conv-BN and (when shapes allow) an identity BN, then
applies ReLU and the attention module. `reparameterize()` fuses the three branches into one 3x3 conv with
bias, in place, for deployment; the block then computes conv -> ReLU -> attention.

Widths: stage 0 has min(64, 64a) channels, stages 1-4 have 64a, 128a, 256a, 512b (a, b from the paper).
`width_mult` scales each of them with `make_divisible(c * width_mult, 8)`; at 1.0 the paper's widths are kept
exactly.

`input_stem="imagenet"` (default): every one of the 5 stages starts with a stride-2 block (total stride 32; at
32x32 this is the PACB FLOPs configuration). `input_stem="cifar"`: stages 0 and 1 start with stride 1 (total
stride 8).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pacb_edge.models.attention import create_attention
from pacb_edge.models.layers import check_input_stem, conv_bn, make_divisible
from pacb_edge.models.registry import register_model


def _fuse_conv_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding bias-free conv; returns (kernel, bias)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class RepVGGBlock(nn.Module):
    """3x3 conv-BN + 1x1 conv-BN + identity BN, summed, then ReLU and attention."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        attention: str | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.rbr_dense: nn.Module | None = conv_bn(in_ch, out_ch, 3, stride)
        self.rbr_1x1: nn.Module | None = conv_bn(in_ch, out_ch, 1, stride)
        self.rbr_identity: nn.Module | None = nn.BatchNorm2d(in_ch) if in_ch == out_ch and stride == 1 else None
        self.rbr_reparam: nn.Conv2d | None = None
        self.act = nn.ReLU(inplace=True)
        self.attn = create_attention(attention, out_ch, **(attention_kwargs or {}))

    @property
    def deploy(self) -> bool:
        return self.rbr_reparam is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rbr_reparam is not None:
            out = self.rbr_reparam(x)
        else:
            out = self.rbr_dense(x) + self.rbr_1x1(x)
            if self.rbr_identity is not None:
                out = out + self.rbr_identity(x)
        return self.attn(self.act(out))

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equal (in eval mode) to the sum of the three branches."""
        conv3, bn3 = self.rbr_dense[0], self.rbr_dense[1]
        conv1, bn1 = self.rbr_1x1[0], self.rbr_1x1[1]
        k3, b3 = _fuse_conv_bn(conv3.weight, bn3)
        k1, b1 = _fuse_conv_bn(conv1.weight, bn1)
        kernel = k3 + nn.functional.pad(k1, [1, 1, 1, 1])
        bias = b3 + b1
        if self.rbr_identity is not None:
            # Identity as a 3x3 kernel with a single 1 at the centre of channel i -> i (ungrouped conv).
            ident = torch.zeros_like(k3)
            idx = torch.arange(conv3.in_channels, device=ident.device)
            ident[idx, idx, 1, 1] = 1.0
            ki, bi = _fuse_conv_bn(ident, self.rbr_identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one 3x3 conv with bias, in place. A no-op when already done."""
        if self.rbr_reparam is not None:
            return
        kernel, bias = self.fused_kernel_bias()
        conv3 = self.rbr_dense[0]
        conv = nn.Conv2d(conv3.in_channels, conv3.out_channels, 3, conv3.stride, 1, bias=True)
        conv = conv.to(device=kernel.device, dtype=kernel.dtype)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        self.rbr_reparam = conv
        self.rbr_dense = self.rbr_1x1 = self.rbr_identity = None


class RepVGG(nn.Module):
    """Five stages of RepVGG blocks, global average pooling and a linear classifier."""

    def __init__(
        self,
        num_blocks: tuple[int, int, int, int],
        widths: tuple[int, int, int, int, int],
        num_classes: int = 10,
        in_chans: int = 3,
        attention: str | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        input_stem: str = "imagenet",
    ) -> None:
        super().__init__()
        check_input_stem(input_stem)
        first_strides = (2, 2, 2, 2, 2) if input_stem == "imagenet" else (1, 1, 2, 2, 2)
        self.stage0 = RepVGGBlock(in_chans, widths[0], first_strides[0], attention, attention_kwargs)
        in_ch = widths[0]
        stages = []
        for n, out_ch, stride in zip(num_blocks, widths[1:], first_strides[1:], strict=True):
            blocks = []
            for i in range(n):
                blocks.append(RepVGGBlock(in_ch, out_ch, stride if i == 0 else 1, attention, attention_kwargs))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.linear = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage0(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.stage4(x)
        return self.linear(x.mean((2, 3)))

    def reparameterize(self) -> RepVGG:
        """Fuse every block with the BN running statistics, in place, for deployment; returns the model."""
        for m in self.modules():
            if isinstance(m, RepVGGBlock):
                m.reparameterize()
        return self


def _repvgg(
    num_blocks: tuple[int, int, int, int],
    a: float,
    b: float,
    num_classes: int,
    in_chans: int,
    attention: str | None,
    width_mult: float,
    input_stem: str,
    attention_kwargs: dict[str, Any] | None,
) -> RepVGG:
    """Build a RepVGG variant; `None` and `"none"` attention both mean none (the architecture's default)."""
    paper = (min(64, int(64 * a)), int(64 * a), int(128 * a), int(256 * a), int(512 * b))
    widths = tuple(make_divisible(c * width_mult, 8) for c in paper)
    return RepVGG(num_blocks, widths, num_classes, in_chans, attention, attention_kwargs, input_stem)


@register_model
def repvgg_a0(
    num_classes: int = 10,
    in_chans: int = 3,
    attention: str | None = None,
    width_mult: float = 1.0,
    input_stem: str = "imagenet",
    attention_kwargs: dict[str, Any] | None = None,
    **kw: Any,
) -> RepVGG:
    """RepVGG-A0: blocks [1, 2, 4, 14, 1], a=0.75, b=2.5 (widths 48, 48, 96, 192, 1280)."""
    return _repvgg(
        (2, 4, 14, 1),
        0.75,
        2.5,
        num_classes,
        in_chans,
        attention,
        width_mult,
        input_stem,
        attention_kwargs,
        **kw,
    )


@register_model
def repvgg_a1(
    num_classes: int = 10,
    in_chans: int = 3,
    attention: str | None = None,
    width_mult: float = 1.0,
    input_stem: str = "imagenet",
    attention_kwargs: dict[str, Any] | None = None,
    **kw: Any,
) -> RepVGG:
    """RepVGG-A1: blocks [1, 2, 4, 14, 1], a=1, b=2.5 (widths 64, 64, 128, 256, 1280)."""
    return _repvgg(
        (2, 4, 14, 1),
        1.0,
        2.5,
        num_classes,
        in_chans,
        attention,
        width_mult,
        input_stem,
        attention_kwargs,
        **kw,
    )


@register_model
def repvgg_b0(
    num_classes: int = 10,
    in_chans: int = 3,
    attention: str | None = None,
    width_mult: float = 1.0,
    input_stem: str = "imagenet",
    attention_kwargs: dict[str, Any] | None = None,
    **kw: Any,
) -> RepVGG:
    """RepVGG-B0: blocks [1, 4, 6, 16, 1], a=1, b=2.5 (widths 64, 64, 128, 256, 1280)."""
    return _repvgg(
        (4, 6, 16, 1),
        1.0,
        2.5,
        num_classes,
        in_chans,
        attention,
        width_mult,
        input_stem,
        attention_kwargs,
        **kw,
    )
