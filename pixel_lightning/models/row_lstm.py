"""Row LSTM (paper Section 3.1, Table 1 middle column): 7x7 mask A, L Row LSTM layers, output head.

Paper sizes: 12 layers, h=128 on CIFAR-10; 12 layers, h=384 on ImageNet 32x32; 4 layers, h=512 and
no residual connections on ImageNet 64x64.
"""

from __future__ import annotations

from torch import nn

from pixel_lightning.models.base import AutoregressiveImageModel, ModelConfig
from pixel_lightning.models.network import PixelNetwork
from pixel_lightning.models.registry import register
from pixel_lightning.nn.row_lstm import RowLSTMLayer
from pixel_lightning.nn.wavefront import RowLSTMStack


class RowLSTMNetwork(PixelNetwork):
    """Each layer's K_is is a 1x3 mask-B convolution, K_ss a 1x3 unmasked one (B, 2h, H, W) -> same."""

    def make_layer(self, config: ModelConfig, index: int) -> nn.Module:
        return RowLSTMLayer(config.hidden, config.image_shape[0], config.cond_channels)

    def make_stack(self, layers: list[nn.Module], config: ModelConfig) -> RowLSTMStack:
        """One wavefront (``model.wavefront``; default: on CUDA only) or layer by layer."""
        h2, C = 2 * config.hidden, config.image_shape[0]
        return RowLSTMStack(layers, h2, C, config.residual, config.skip, wavefront=config.wavefront)


@register("row_lstm", title="Row LSTM")
class RowLSTM(AutoregressiveImageModel):
    """Row LSTM on the loss base."""

    network_class = RowLSTMNetwork
