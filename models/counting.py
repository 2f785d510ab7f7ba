"""Parameter and FLOP counting with `torch.utils.flop_counter`.

Convention: `macs` are multiply-accumulates of convolutions and matrix products; `flops = 2 * macs`. The PACB paper's
FLOPs column is in MACs; the CPSCA paper's GFLOPs are 2 x MACs. Element-wise ops (activations, attention gates) are
not counted, as in both papers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def _in_chans(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError("model has no Conv2d layer")


def count_flops(model: nn.Module, input_size: int | tuple[int, int] = 32, in_chans: int | None = None) -> dict:
    """FLOPs and MACs of one forward pass at batch 1. Returns {"flops": int, "macs": int}."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    in_chans = in_chans or _in_chans(model)
    param = next(model.parameters())
    x = torch.zeros(1, in_chans, h, w, dtype=param.dtype, device=param.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    flops = int(counter.get_total_flops())
    return {"flops": flops, "macs": flops // 2}


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every Conv2d and Linear layer, by module name: the per-layer widths a pruning report shows."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            widths[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            widths[name] = m.out_features
    return widths
