"""The residual and skip wiring shared by every body (paper Section 3.3): the only owner of it.

x_0 = first layer output                      (B, 2h, H, W)
y_l = layer_l(x_{l-1})                        residual branch, no addition inside the layer
x_l = x_{l-1} + y_l   if residual else y_l
out = sum_l S_l(y_l)  if skip     else x_L    S_l: learnable 1x1 mask-B convolutions
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pixel_lightning.nn.masked_conv import MaskedConv2d


class LayerStack(nn.Module):
    """Applies ``layers`` with optional residual connections and skip connections to the output head."""

    def __init__(self, layers: Sequence[nn.Module], width: int, colours: int, residual: bool, skip: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.residual = residual
        self.skip = skip
        self.skips = nn.ModuleList(
            [MaskedConv2d(width, width, 1, "B", colours) for _ in layers] if skip else []
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        total = None
        for k, layer in enumerate(self.layers):
            y = layer(x, cond)  # (B, 2h, H, W)
            x = x + y if self.residual else y
            if self.skip:
                s = self.skips[k](y)
                total = s if total is None else total + s
        return total if self.skip and total is not None else x
