"""CIFAR ResNet (He et al. 2016) with an attention module on every residual branch, where CPSCA puts SCA.

Three stages of n BasicBlocks with 16, 32 and 64 channels (n=9 for ResNet56, n=18 for ResNet110). Inside a
block: out = bn2(conv2(relu(bn1(conv1(x))))); out = attention(out); out = relu(out + shortcut(x)).

Shortcuts are the paper's option A (parameter-free), which gives the CPSCA counts: 853,018 params for ResNet56
and 1,727,962 for ResNet110 at 10 classes (0.85 M / 1.73 M; option B's 1x1 conv-BN projections would give 0.86
M / 1.73 M). Where the width doubles, `ZeroPadShortcut` subsamples x with stride 2 and concatenates `x * 0`
behind it on the channel axis. That is He et al.'s zero padding with the zero channels after the identity ones
instead of on both sides (the same network up to a channel permutation), written with ops that export to ONNX
(Slice, Mul, Concat) and that Torch-Pruning's dependency graph follows (slice on a spatial axis, element-wise
mul, concat): pruning channel k of a stage's output also prunes channels k and C+k of the next stage, and the
forward keeps working at any width.

Widths: the stage widths are b, 2b, 4b with b = max(1, round(16 * width_mult)), so the doubling the shortcut
needs is exact at every multiplier; at 1.0 they are 16, 32, 64.

`input_stem="cifar"` (default): the 3x3 stem conv has stride 1 (total stride 4). `input_stem="imagenet"`: the
stem conv has stride 2 (total stride 8), a quarter of the MACs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pacb_edge.models.attention import create_attention
from pacb_edge.models.layers import check_input_stem
from pacb_edge.models.registry import register_model


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: stride-2 subsampling, then as many zero channels as input channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return torch.cat([x, x * 0], dim=1)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with attention on both conv outputs of the residual branch.

    CPSCA places SCA "on the convolution outputs in each ResBlock": `attn1` after the first conv-BN-ReLU and `attn`
    after the second conv-BN, before the addition. With option-A shortcuts only the block-internal channels (between
    conv1 and conv2) can be removed structurally, so `attn1` is the one whose statistics guide CPSCA/CPSE there.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        attention: str | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.attn1 = create_attention(attention, out_ch, **(attention_kwargs or {}))
        self.attn = create_attention(attention, out_ch, **(attention_kwargs or {}))
        if stride == 1 and in_ch == out_ch:
            self.shortcut: nn.Module = nn.Identity()
        else:
            assert stride == 2 and out_ch == 2 * in_ch, "option-A shortcut needs stride 2 and doubled width"
            self.shortcut = ZeroPadShortcut()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.attn1(self.relu(self.bn1(self.conv1(x))))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv-BN-ReLU, three stages of BasicBlocks, global average pool and a linear classifier."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_chans: int = 3,
        attention: str | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        input_stem: str = "cifar",
        base_width: int = 16,
    ) -> None:
        super().__init__()
        check_input_stem(input_stem)
        assert (depth - 2) % 6 == 0, "CIFAR ResNet depth must be 6n + 2"
        n = (depth - 2) // 6
        widths = (base_width, 2 * base_width, 4 * base_width)
        stem_stride = 2 if input_stem == "imagenet" else 1
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_ch = widths[0]
        stages = []
        for i, out_ch in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride, attention, attention_kwargs))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.fc(x.mean((2, 3)))


def _resnet(
    depth: int,
    num_classes: int,
    in_chans: int,
    attention: str | None,
    width_mult: float,
    input_stem: str,
    attention_kwargs: dict[str, Any] | None,
) -> CifarResNet:
    base_width = max(1, int(round(16 * width_mult)))
    return CifarResNet(depth, num_classes, in_chans, attention, attention_kwargs, input_stem, base_width)


@register_model
def resnet56(
    num_classes: int = 10,
    in_chans: int = 3,
    attention: str | None = None,
    width_mult: float = 1.0,
    input_stem: str = "cifar",
    attention_kwargs: dict[str, Any] | None = None,
    **kw: Any,
) -> CifarResNet:
    """ResNet56 for CIFAR (n=9 blocks per stage); no attention by default."""
    return _resnet(56, num_classes, in_chans, attention, width_mult, input_stem, attention_kwargs, **kw)


@register_model
def resnet110(
    num_classes: int = 10,
    in_chans: int = 3,
    attention: str | None = None,
    width_mult: float = 1.0,
    input_stem: str = "cifar",
    attention_kwargs: dict[str, Any] | None = None,
    **kw: Any,
) -> CifarResNet:
    """ResNet110 for CIFAR (n=18 blocks per stage); no attention by default."""
    return _resnet(110, num_classes, in_chans, attention, width_mult, input_stem, attention_kwargs, **kw)
