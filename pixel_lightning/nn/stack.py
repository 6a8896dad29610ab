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

from pixel_lightning.nn.masked_conv import MaskedConv2d, pointwise_sum


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
        ys = []
        for layer in self.layers:
            y = layer(x, cond)  # (B, 2h, H, W)
            x = x + y if self.residual else y
            ys.append(y)
        return self.skip_sum(ys) if self.skip and ys else x

    def skip_sum(self, ys: list[torch.Tensor]) -> torch.Tensor:
        """sum_l S_l(y_l), every layer's residual branch y_l (B, 2h, H, W) through its skip 1x1 conv,
        accumulated into one map (:func:`~pixel_lightning.nn.masked_conv.pointwise_sum`)."""
        bias = torch.stack([s.bias for s in self.skips]).sum(0)  # (2h,)
        return pointwise_sum(ys, [s.matrix() for s in self.skips], bias)

    # -- cached sampling: one position at a time ---------------------------------------------
    def begin_cache(self, batch: int, H: int, W: int, cond: torch.Tensor | None) -> dict:
        """Per-sampling state of every layer (``layer.begin_cache``) and the skip convolutions."""
        skips = [s.point() for s in self.skips]
        return {
            "layers": [layer.begin_cache(batch, H, W, cond) for layer in self.layers],
            "skips": [s.weight for s in skips],  # (2h, 2h) each
            "skip_bias": sum(s.bias for s in skips).expand(batch, -1) if skips else None,  # (B, 2h)
        }

    def step(self, cache: dict, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """:meth:`forward` at one position: x (B, 2h) at (i, j) -> (B, 2h), with the same wiring."""
        total = cache["skip_bias"]  # sum of the skip convolutions' biases, then one addmm per layer
        for k, layer in enumerate(self.layers):
            y = layer.step(cache["layers"][k], x, i, j)  # (B, 2h)
            x = x + y if self.residual else y
            if self.skip:
                total = torch.addmm(total, y, cache["skips"][k])
        return total if self.skip and self.layers else x
