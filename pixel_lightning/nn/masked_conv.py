"""MaskedConv2d: a convolution whose kernel is multiplied by a causal mask (paper Section 3.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixel_lightning.nn.masks import MaskType, causal_mask, channel_groups


class MaskedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a mask A or mask B (see :mod:`pixel_lightning.nn.masks`), 'same' padding.

    Args:
        in_channels, out_channels: feature maps; each is split into ``colours`` contiguous groups,
            unless explicit ``in_groups`` / ``out_groups`` (one group index per channel) are given.
        kernel_size: (kh, kw) or k; the centre is (kh // 2, kw // 2). Row LSTM's K_is is (1, 3).
        mask_type: "A" (first layer: a colour does not see itself) or "B" (later layers: it does).
        colours: 3 for RGB, 1 for grey images.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        mask_type: MaskType,
        colours: int,
        in_groups: torch.Tensor | None = None,
        out_groups: torch.Tensor | None = None,
        bias: bool = True,
    ) -> None:
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        in_groups = channel_groups(in_channels, colours) if in_groups is None else in_groups
        out_groups = channel_groups(out_channels, colours) if out_groups is None else out_groups
        self.mask_type = mask_type
        self.register_buffer(
            "mask", causal_mask(out_groups, in_groups, (kh, kw), mask_type), persistent=False
        )
        with torch.no_grad():
            self.weight.mul_(self.mask)  # masked weights start (and, by the product below, stay) at zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W) -> (B, out, H, W)
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)
