"""MobileNetV3 (Howard et al. 2019) built from torchvision's own blocks, with a pluggable attention module.

With `attention="se"` (the default) the network is torchvision's, parameter for parameter: SE sits in the
bottlenecks that torchvision's configuration marks. Any other attention module (PACB puts CA there) takes SE's place
in *every* bottleneck, after the depthwise conv, as the PACB paper does. `attention="none"` removes it everywhere.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn
from torchvision.models.mobilenetv3 import InvertedResidual, MobileNetV3, _mobilenet_v3_conf

from pacb_edge.models.attention import create_attention
from pacb_edge.models.layers import check_input_stem
from pacb_edge.models.registry import register_model


def _attention_layer(name: str, attention_kwargs: dict[str, Any], channels: int, squeeze_channels: int) -> nn.Module:
    """The `se_layer` callable torchvision's InvertedResidual expects, mapped onto our attention factory."""
    if name == "se":
        # torchvision's SE: squeeze to make_divisible(C // 4, 8), ReLU, hard-sigmoid gate.
        kw = {"rd_channels": squeeze_channels, "gate": "hardsigmoid", **attention_kwargs}
        return create_attention("se", channels, **kw)
    return create_attention(name, channels, **attention_kwargs)


def _mobilenetv3(
    arch: str,
    num_classes: int,
    in_chans: int,
    attention: str | None,
    width_mult: float,
    input_stem: str,
    attention_kwargs: dict[str, Any] | None,
    dropout: float = 0.2,
    bn_momentum: float = 0.1,
) -> MobileNetV3:
    check_input_stem(input_stem)
    attention = "se" if attention is None else attention
    setting, last_channel = _mobilenet_v3_conf(arch, width_mult=width_mult)
    for cnf in setting:
        if attention == "none":
            cnf.use_se = False
        elif attention != "se":
            cnf.use_se = True
    se_layer = partial(_attention_layer, attention, dict(attention_kwargs or {}))
    block = partial(InvertedResidual, se_layer=se_layer)
    # torchvision uses BN momentum 0.01 for 600-epoch ImageNet runs; with the few hundred steps of a small dataset the
    # running statistics would barely leave their initial values and eval-mode accuracy collapses. 0.1 is PyTorch's
    # default; parameters are unchanged.
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=bn_momentum)
    model = MobileNetV3(
        setting, last_channel, num_classes=num_classes, block=block, norm_layer=norm_layer, dropout=dropout
    )
    stem_conv = model.features[0][0]
    stride = 2 if input_stem == "imagenet" else 1
    if in_chans != 3 or stride != 2:
        new_conv = nn.Conv2d(in_chans, stem_conv.out_channels, 3, stride, 1, bias=False)
        nn.init.kaiming_normal_(new_conv.weight, mode="fan_out")
        model.features[0][0] = new_conv
    return model


@register_model
def mobilenetv3_small(
    num_classes: int = 10,
    in_chans: int = 3,
    attention: str | None = None,
    width_mult: float = 1.0,
    input_stem: str = "imagenet",
    attention_kwargs: dict[str, Any] | None = None,
    **kw: Any,
) -> MobileNetV3:
    """MobileNetV3-Small; `input_stem="cifar"` makes the stem conv stride 1 (total stride 16 instead of 32)."""
    return _mobilenetv3(
        "mobilenet_v3_small", num_classes, in_chans, attention, width_mult, input_stem, attention_kwargs, **kw
    )


@register_model
def mobilenetv3_large(
    num_classes: int = 10,
    in_chans: int = 3,
    attention: str | None = None,
    width_mult: float = 1.0,
    input_stem: str = "imagenet",
    attention_kwargs: dict[str, Any] | None = None,
    **kw: Any,
) -> MobileNetV3:
    """MobileNetV3-Large; `input_stem="cifar"` makes the stem conv stride 1 (total stride 16 instead of 32)."""
    return _mobilenetv3(
        "mobilenet_v3_large", num_classes, in_chans, attention, width_mult, input_stem, attention_kwargs, **kw
    )
