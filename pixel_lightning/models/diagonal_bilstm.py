"""Diagonal BiLSTM (paper Section 3.2, Table 1 right column): 7x7 mask A, L Diagonal BiLSTM layers,
output head. Paper sizes: 12 layers, h=128 on CIFAR-10; 7 layers, h=16 (or 1 layer, h=32) on MNIST.
"""

from __future__ import annotations

from torch import nn

from pixel_lightning.models.base import AutoregressiveImageModel
from pixel_lightning.nn.diagonal_lstm import DiagonalBiLSTMLayer


class DiagonalBiLSTM(AutoregressiveImageModel):
    """Diagonal BiLSTM: K_is 1x1 mask B, K_ss 2x1 on the skewed map, backward direction shifted down."""

    arch = "diagonal_bilstm"

    def make_layer(self, index: int) -> nn.Module:
        c = self.config
        return DiagonalBiLSTMLayer(c.hidden, c.image_shape[0], c.cond_channels)
