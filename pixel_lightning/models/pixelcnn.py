"""PixelCNN (paper Section 3.4, Table 1 left column, Figure 5 right).

Body: L residual blocks of masked convolutions; the receptive field is bounded (it grows by one pixel
per block) and all positions are computed in parallel during training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixel_lightning.models.base import AutoregressiveImageModel, ModelConfig
from pixel_lightning.models.network import PixelNetwork
from pixel_lightning.models.registry import register
from pixel_lightning.nn.masked_conv import MaskedConv2d, position_major, require_cond


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
        return self.conv_out(self.pre_output(x, cond))  # (B, 2h, H, W)

    def pre_output(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The input of the last 1x1 convolution: (B, 2h, H, W) -> (B, h, H, W)."""
        y = self.conv_in(F.relu(x))  # (B, h, H, W)
        y = self.conv(F.relu(y))  # (B, h, H, W)
        if self.cond is not None:
            y = y + self.cond(require_cond(cond))
        return F.relu(y)

    @property
    def output_conv(self) -> MaskedConv2d:
        return self.conv_out

    # -- cached sampling: one position at a time ---------------------------------------------
    def begin_cache(self, batch: int, H: int, W: int, cond: torch.Tensor | None) -> dict:
        """Per-sampling state: the 3x3 conv's input map (the only map read around a position), zero
        padded, and the conditioning term of every position."""
        like = self.conv.weight
        cache = {"in": self.conv_in.point(), "conv": self.conv.point(), "out": self.conv_out.point()}
        cache["mid"] = cache["conv"].padded_buffer(
            batch, self.conv.in_channels, H, W, like
        )  # (H+1, B, W+2, h)
        cache["cond"] = None if self.cond is None else position_major(self.cond(require_cond(cond)))
        return cache

    def step(self, cache: dict, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Residual branch (B, 2h) at (i, j) from the block input x (B, 2h) at (i, j); earlier positions
        of the 3x3 conv's input come from the cache. Idempotent: re-running (i, j) overwrites (i, j)."""
        cache["conv"].write(cache["mid"], i, j, F.relu(cache["in"](F.relu(x))))  # (B, h): the 3x3's input
        y = cache["conv"].at(cache["mid"], i, j)  # (B, h)
        if cache["cond"] is not None:
            y = y + cache["cond"][i, j]
        return cache["out"](F.relu(y))  # (B, 2h)


class PixelCNNNetwork(PixelNetwork):
    """7x7 mask A, L PixelCNN blocks, output head."""

    def make_layer(self, config: ModelConfig, index: int) -> nn.Module:
        return PixelCNNBlock(config.hidden, config.image_shape[0], config.cond_channels)


@register("pixelcnn", title="PixelCNN")
class PixelCNN(AutoregressiveImageModel):
    """PixelCNN on the loss base. Paper: 15 layers, h=128 on CIFAR-10."""

    network_class = PixelCNNNetwork
