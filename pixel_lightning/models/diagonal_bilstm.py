"""Diagonal BiLSTM (paper Section 3.2, Table 1 right column): 7x7 mask A, L Diagonal BiLSTM layers,
output head. Paper sizes: 12 layers, h=128 on CIFAR-10; 7 layers, h=16 (or 1 layer, h=32) on MNIST.
"""

from __future__ import annotations

from torch import nn

from pixel_lightning.models.base import AutoregressiveImageModel, ModelConfig
from pixel_lightning.models.network import PixelNetwork
from pixel_lightning.models.registry import register
from pixel_lightning.nn.diagonal_lstm import DiagonalBiLSTMLayer


class DiagonalBiLSTMNetwork(PixelNetwork):
    """K_is 1x1 mask B, K_ss 2x1 on the skewed map, backward direction shifted down: (B, 2h, H, W)."""

    def make_layer(self, config: ModelConfig, index: int) -> nn.Module:
        return DiagonalBiLSTMLayer(config.hidden, config.image_shape[0], config.cond_channels)


@register("diagonal_bilstm", title="Diagonal BiLSTM")
class DiagonalBiLSTM(AutoregressiveImageModel):
    """Diagonal BiLSTM on the loss base."""

    network_class = DiagonalBiLSTMNetwork
