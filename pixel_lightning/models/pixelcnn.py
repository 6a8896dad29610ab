"""PixelCNN (paper Section 3.4, Table 1 left column, Figure 5 right).

Body: L residual blocks of masked convolutions; the receptive field is bounded (it grows by one pixel
per block) and all positions are computed in parallel during training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixel_lightning.models.base import AutoregressiveImageModel
from pixel_lightning.nn.masked_conv import MaskedConv2d


class PixelCNNBlock(nn.Module):
    """ReLU, 1x1 (2h -> h), ReLU, 3x3 mask B (h -> h), ReLU, 1x1 (h -> 2h); every conv mask B.

    Returns the residual branch (B, 2h, H, W); LayerStack adds the input when ``residual`` is on.
    A conditioning map (multi-scale) is added to the 3x3 masked convolution's output.
    """

    def __init__(self, hidden: int, colours: int, cond_channels: int = 0) -> None:
        super().__init__()
        h = hidden
        self.conv_in = MaskedConv2d(2 * h, h, 1, "B", colours)
        self.conv = MaskedConv2d(h, h, 3, "B", colours)
        self.conv_out = MaskedConv2d(h, 2 * h, 1, "B", colours)
        self.cond = nn.Conv2d(cond_channels, h, 1) if cond_channels else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv_in(F.relu(x))  # (B, h, H, W)
        y = self.conv(F.relu(y))  # (B, h, H, W)
        if self.cond is not None:
            if cond is None:
                raise ValueError("this block was built with cond_channels > 0 and needs a `cond` map")
            y = y + self.cond(cond)
        return self.conv_out(F.relu(y))  # (B, 2h, H, W)


class PixelCNN(AutoregressiveImageModel):
    """PixelCNN: 7x7 mask A, L PixelCNN blocks, output head. Paper: 15 layers, h=128 on CIFAR-10."""

    arch = "pixelcnn"

    def make_layer(self, index: int) -> nn.Module:
        c = self.config
        return PixelCNNBlock(c.hidden, c.image_shape[0], c.cond_channels)
