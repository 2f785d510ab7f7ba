"""Small layers and helpers shared by the model files."""

from __future__ import annotations

from torch import nn

from pacb_edge.core.errors import PacbEdgeError

INPUT_STEMS = ("imagenet", "cifar")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor`, never dropping more than 10 % (torchvision's rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def check_input_stem(input_stem: str) -> str:
    """Validate an `input_stem` option and return it.

    `imagenet` keeps the architecture's original downsampling stem (the PACB FLOPs configuration at 32x32);
    `cifar` makes the first layers stride 1, for tiny images such as 8x8 digits upsampled to 32x32.
    """
    if input_stem not in INPUT_STEMS:
        raise PacbEdgeError(f"unknown input_stem {input_stem!r}; choose one of {', '.join(INPUT_STEMS)}")
    return input_stem


def conv_bn(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv2d (no bias) followed by BatchNorm2d, with 'same' padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    )
