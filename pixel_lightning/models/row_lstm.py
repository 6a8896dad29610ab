"""Row LSTM (paper Section 3.1, Table 1 middle column): 7x7 mask A, L Row LSTM layers, output head.

Paper sizes: 12 layers, h=128 on CIFAR-10; 12 layers, h=384 on ImageNet 32x32; 4 layers, h=512 and
no residual connections on ImageNet 64x64.
"""

from __future__ import annotations

from torch import nn

from pixel_lightning.models.base import AutoregressiveImageModel
from pixel_lightning.nn.row_lstm import RowLSTMLayer
from pixel_lightning.nn.wavefront import RowLSTMStack


class RowLSTM(AutoregressiveImageModel):
    """Row LSTM: each layer's K_is is a 1x3 mask-B convolution, K_ss a 1x3 unmasked one."""

    arch = "row_lstm"

    def make_layer(self, index: int) -> nn.Module:
        c = self.config
        return RowLSTMLayer(c.hidden, c.image_shape[0], c.cond_channels)

    def make_stack(self, layers: list[nn.Module], width: int, colours: int, residual: bool, skip: bool):
        """One wavefront (``model.wavefront``; default: on CUDA only) or layer by layer."""
        return RowLSTMStack(layers, width, colours, residual, skip, wavefront=self.config.wavefront)
