"""RepVGG (Ding et al., CVPR 2021) with an attention module after every block, as PACB places CA.

Train time, each `RepVGGBlock` sums a 3x3 conv-BN, a 1x1 conv-BN and (when shapes allow) an identity BN, then
applies ReLU and the attention module. `reparameterize()` fuses the three branches into one 3x3 conv with
bias, in place, for deployment; the block then computes conv -> ReLU -> attention.

QARepVGG (Chu et al., "Make RepVGG Greater Again", 2023; YOLOv6's `QARepVGGBlock`), built by the `qarepvgg_*`
builders, is the INT8-friendly form. Fusing RepVGG's per-branch BNs gives weights and activations with wide,
outlier-heavy ranges, so per-tensor INT8 post-training quantization of the deploy model loses far more accuracy than
a plain conv net does. `QARepVGGBlock` keeps the BN on the 3x3 conv only, has no BN on the 1x1 conv or the identity,
and puts one BN after the sum, before the ReLU; that BN is the block's channel BN (its gamma scales the whole output
channel). It re-parameterizes exactly into the same conv -> ReLU -> attention, with the post-sum BN folded in.

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

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.models.attention import ChannelAttentionBase, create_attention
from pacb_edge.models.layers import check_input_stem, conv_bn, make_divisible
from pacb_edge.models.registry import register_model


def _fuse_conv_bn(
    kernel: torch.Tensor, bn: nn.BatchNorm2d, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding conv (bias-free unless `bias`); returns (kernel, bias)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    shift = bn.running_mean if bias is None else bn.running_mean - bias
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - shift * scale


def _identity_kernel(like: torch.Tensor) -> torch.Tensor:
    """The identity as a 3x3 kernel shaped like `like` (C x C x 3 x 3): a single 1 at the centre of channel i -> i."""
    ident = torch.zeros_like(like)
    idx = torch.arange(like.shape[0], device=like.device)
    ident[idx, idx, 1, 1] = 1.0
    return ident


class RepVGGBlock(nn.Module):
    """3x3 conv-BN + 1x1 conv-BN + identity BN, summed, then ReLU and attention."""

    # The train-time modules that `reparameterize()` replaces by `rbr_reparam`.
    train_branches: tuple[str, ...] = ("rbr_dense", "rbr_1x1", "rbr_identity")

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
        self.build_branches(in_ch, out_ch, stride, has_identity=in_ch == out_ch and stride == 1)
        self.rbr_reparam: nn.Conv2d | None = None
        self.act = nn.ReLU(inplace=True)
        self.attn = create_attention(attention, out_ch, **(attention_kwargs or {}))

    def build_branches(self, in_ch: int, out_ch: int, stride: int, has_identity: bool) -> None:
        """Create the train-time branches (`train_branches`)."""
        self.rbr_dense: nn.Module | None = conv_bn(in_ch, out_ch, 3, stride)
        self.rbr_1x1: nn.Module | None = conv_bn(in_ch, out_ch, 1, stride)
        self.rbr_identity: nn.Module | None = nn.BatchNorm2d(in_ch) if has_identity else None

    @property
    def deploy(self) -> bool:
        return self.rbr_reparam is not None

    def branch_sum(self, x: torch.Tensor) -> torch.Tensor:
        """The train-time pre-activation: the sum of the three branches."""
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rbr_reparam(x) if self.rbr_reparam is not None else self.branch_sum(x)
        return self.attn(self.act(out))

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equal (in eval mode) to the sum of the three branches."""
        k3, b3 = _fuse_conv_bn(self.rbr_dense[0].weight, self.rbr_dense[1])
        k1, b1 = _fuse_conv_bn(self.rbr_1x1[0].weight, self.rbr_1x1[1])
        kernel = k3 + nn.functional.pad(k1, [1, 1, 1, 1])
        bias = b3 + b1
        if self.rbr_identity is not None:
            ki, bi = _fuse_conv_bn(_identity_kernel(k3), self.rbr_identity)
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
        for name in self.train_branches:
            setattr(self, name, None)


class QARepVGGBlock(RepVGGBlock):
    """QARepVGG: 3x3 conv-BN + bias-free 1x1 conv + plain identity, summed, then BN (`bn`), ReLU and attention.

    `bn`, after the sum, is the block's channel BN: its gamma scales the whole output channel.

    The attention module starts as a uniform rescale (`zero_init_gate`): with the default init, CA's BatchNorm,
    which sees batch statistics in training, makes the gates differ strongly between images from the first step.
    Through 14 blocks at 2x2 whose BN-free identity is outweighed by the BN'd 3x3 branch, that collapses the
    features' effective rank over a batch to about 2, and QARepVGG-A0 CA stays at chance (a 30-step one-batch fit:
    loss 2.31 -> 2.19; with the gate zeroed at init, -> 0.27). SE, ECA and CA are zeroed; other modules keep their
    init.
    """

    train_branches = ("rbr_dense", "rbr_1x1", "rbr_identity", "bn")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.attn, ChannelAttentionBase):
            self.attn.zero_init_gate()

    def build_branches(self, in_ch: int, out_ch: int, stride: int, has_identity: bool) -> None:
        self.rbr_dense: nn.Module | None = conv_bn(in_ch, out_ch, 3, stride)
        self.rbr_1x1: nn.Module | None = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
        self.rbr_identity: nn.Module | None = nn.Identity() if has_identity else None
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(out_ch)

    def branch_sum(self, x: torch.Tensor) -> torch.Tensor:
        """The train-time pre-activation: BN of the sum of the three branches."""
        return self.bn(super().branch_sum(x))

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equal (in eval mode) to BN(3x3 conv-BN + 1x1 conv + identity)."""
        kernel, bias = _fuse_conv_bn(self.rbr_dense[0].weight, self.rbr_dense[1])
        kernel = kernel + nn.functional.pad(self.rbr_1x1.weight, [1, 1, 1, 1])
        if self.rbr_identity is not None:
            kernel = kernel + _identity_kernel(kernel)
        return _fuse_conv_bn(kernel, self.bn, bias)


class RepVGG(nn.Module):
    """Five stages of RepVGG blocks (`block`: `RepVGGBlock` or `QARepVGGBlock`), global average pooling and a linear
    classifier."""

    def __init__(
        self,
        num_blocks: tuple[int, int, int, int],
        widths: tuple[int, int, int, int, int],
        num_classes: int = 10,
        in_chans: int = 3,
        attention: str | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        input_stem: str = "imagenet",
        block: type[RepVGGBlock] = RepVGGBlock,
    ) -> None:
        super().__init__()
        check_input_stem(input_stem)
        first_strides = (2, 2, 2, 2, 2) if input_stem == "imagenet" else (1, 1, 2, 2, 2)
        self.stage0 = block(in_chans, widths[0], first_strides[0], attention, attention_kwargs)
        in_ch = widths[0]
        stages = []
        for n, out_ch, stride in zip(num_blocks, widths[1:], first_strides[1:], strict=True):
            blocks = []
            for i in range(n):
                blocks.append(block(in_ch, out_ch, stride if i == 0 else 1, attention, attention_kwargs))
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


# Per variant: blocks of stages 1-4 (stage 0 is one block), the paper's width multipliers a and b.
_VARIANTS: dict[str, tuple[tuple[int, int, int, int], float, float]] = {
    "a0": ((2, 4, 14, 1), 0.75, 2.5),
    "a1": ((2, 4, 14, 1), 1.0, 2.5),
    "b0": ((4, 6, 16, 1), 1.0, 2.5),
}


def _repvgg(
    arch: str,
    block: type[RepVGGBlock],
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    attention: str | None = None,
    width_mult: float = 1.0,
    input_stem: str = "imagenet",
    attention_kwargs: dict[str, Any] | None = None,
    **unknown: Any,
) -> RepVGG:
    """Build `arch` (e.g. `qarepvgg_a0`: variant `a0`) from `block`s; `None` and `"none"` attention both mean none.

    Raises `PacbEdgeError` for an option the builder does not take.
    """
    if unknown:
        raise PacbEdgeError(
            f"model {arch!r} takes no option {', '.join(sorted(unknown))}; its options: num_classes, in_chans, "
            "attention, width_mult, input_stem, attention_kwargs"
        )
    num_blocks, a, b = _VARIANTS[arch.rpartition("_")[2]]
    paper = (min(64, int(64 * a)), int(64 * a), int(128 * a), int(256 * a), int(512 * b))
    widths = tuple(make_divisible(c * width_mult, 8) for c in paper)
    return RepVGG(num_blocks, widths, num_classes, in_chans, attention, attention_kwargs, input_stem, block)


@register_model
def repvgg_a0(**kw: Any) -> RepVGG:
    """RepVGG-A0: blocks [1, 2, 4, 14, 1], a=0.75, b=2.5 (widths 48, 48, 96, 192, 1280)."""
    return _repvgg("repvgg_a0", RepVGGBlock, **kw)


@register_model
def repvgg_a1(**kw: Any) -> RepVGG:
    """RepVGG-A1: blocks [1, 2, 4, 14, 1], a=1, b=2.5 (widths 64, 64, 128, 256, 1280)."""
    return _repvgg("repvgg_a1", RepVGGBlock, **kw)


@register_model
def repvgg_b0(**kw: Any) -> RepVGG:
    """RepVGG-B0: blocks [1, 4, 6, 16, 1], a=1, b=2.5 (widths 64, 64, 128, 256, 1280)."""
    return _repvgg("repvgg_b0", RepVGGBlock, **kw)


@register_model
def qarepvgg_a0(**kw: Any) -> RepVGG:
    """QARepVGG-A0: RepVGG-A0's stages and widths with `QARepVGGBlock`s."""
    return _repvgg("qarepvgg_a0", QARepVGGBlock, **kw)


@register_model
def qarepvgg_a1(**kw: Any) -> RepVGG:
    """QARepVGG-A1: RepVGG-A1's stages and widths with `QARepVGGBlock`s."""
    return _repvgg("qarepvgg_a1", QARepVGGBlock, **kw)


@register_model
def qarepvgg_b0(**kw: Any) -> RepVGG:
    """QARepVGG-B0: RepVGG-B0's stages and widths with `QARepVGGBlock`s."""
    return _repvgg("qarepvgg_b0", QARepVGGBlock, **kw)
