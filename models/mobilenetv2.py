"""MobileNetV2 (Sandler et al. 2018) with an attention module in every inverted residual (LAM's place).

The layout is torchvision's (`mobilenet_v2`, the (t, c, n, s) table below); with no attention, 1000 classes
and width 1.0 it has exactly torchvision's 3,504,872 parameters. The attention module sits after the depthwise
conv-BN-ReLU6 and before the linear 1x1 projection, on the expanded channels.

Widths: every channel count is `make_divisible(c * width_mult, 8)` (torchvision's rule); the last conv has
`make_divisible(1280 * max(1, width_mult), 8)` channels.

`input_stem="imagenet"` (default): stem conv stride 2, total stride 32. `input_stem="cifar"`: the stem conv
and the first stride-2 stage (c=24) have stride 1, total stride 8.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pacb_edge.models.attention import create_attention
from pacb_edge.models.layers import check_input_stem, conv_bn, make_divisible
from pacb_edge.models.registry import register_model

# expand ratio t, output channels c, repeats n, first stride s
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _conv_bn_relu6(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(*conv_bn(in_ch, out_ch, kernel_size, stride, groups), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand (none if t=1), 3x3 depthwise, attention, linear 1x1 projection; residual if shapes match."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        expand_ratio: int,
        attention: str | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(in_ch, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            create_attention(attention, hidden, **(attention_kwargs or {})),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """Stem conv, 17 inverted residuals, 1x1 conv to 1280, global average pool, dropout and a linear layer."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        attention: str | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        width_mult: float = 1.0,
        input_stem: str = "imagenet",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        check_input_stem(input_stem)
        cifar = input_stem == "cifar"
        in_ch = make_divisible(32 * width_mult, 8)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), 8)
        features: list[nn.Module] = [_conv_bn_relu6(in_chans, in_ch, 3, 1 if cifar else 2)]
        keep_resolution = cifar  # the first stride-2 stage becomes stride 1 with the cifar stem
        for t, c, n, s in _SETTINGS:
            out_ch = make_divisible(c * width_mult, 8)
            if s == 2 and keep_resolution:
                s, keep_resolution = 1, False
            for i in range(n):
                features.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t, attention, attention_kwargs))
                in_ch = out_ch
        features.append(_conv_bn_relu6(in_ch, self.last_channel, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.mean((2, 3)))


@register_model
def mobilenetv2(
    num_classes: int = 10,
    in_chans: int = 3,
    attention: str | None = None,
    width_mult: float = 1.0,
    input_stem: str = "imagenet",
    attention_kwargs: dict[str, Any] | None = None,
    **kw: Any,
) -> MobileNetV2:
    """MobileNetV2 (`dropout=0.2` before the classifier); no attention by default."""
    return MobileNetV2(num_classes, in_chans, attention, attention_kwargs, width_mult, input_stem, **kw)
