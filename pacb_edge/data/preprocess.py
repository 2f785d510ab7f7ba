"""The one inference preprocessing every split, calibration set and exported artifact shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocess:
    """The inference preprocessing: to float [0, 1], optional gray -> RGB, resize to a square, normalize."""

    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    to_rgb: bool = False

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) uint8 or [0, 1] float -> float (N, C', S, S) in [0, 1], not yet normalized.

        The result is rounded to 8-bit steps (k / 255): the images a model trains and is tested on are exactly the
        raw 0-255 pixels every exported artifact takes (`raw_pixels`), as a camera on the device would give them.
        """
        if x.dtype == torch.uint8:
            x = x.float().div(255.0)
            exact = True
        else:
            x, exact = x.float(), False
        if self.to_rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        s = self.input_size
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            exact = False
        if not exact:
            x = x.clamp(0.0, 1.0).mul(255.0).round().div(255.0)
        return x

    @staticmethod
    def raw_pixels(x: torch.Tensor) -> torch.Tensor:
        """A resized [0, 1] image as the uint8 0-255 pixels the exported artifacts take."""
        return x.mul(255.0).round().clamp(0, 255).to(torch.uint8)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C, H, W) float in [0, 1] -> `(x - mean) / std` per channel."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std
