"""Building blocks: masks, masked convolutions, the LSTM layers and the residual/skip stack."""

from pixel_lightning.nn.masked_conv import MaskedConv2d
from pixel_lightning.nn.masks import causal_mask, channel_groups

__all__ = ["MaskedConv2d", "causal_mask", "channel_groups"]
