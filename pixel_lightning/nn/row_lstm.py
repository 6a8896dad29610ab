"""Row LSTM layer (paper Section 3.1, Figure 2 middle).

The image is processed row by row from the top. For row i the gates are

    [o_i, f_i, i_i, g_i] = K_ss (*) h_{i-1}  +  K_is (*) x_i          (paper Equation 3)

K_is is a width-3 convolution along the row with mask B (it sees x at (i, j-1) and, colour-masked,
(i, j)); it is computed for the whole map at once before the recurrence. K_ss is a width-3 unmasked
convolution over the previous row's hidden state. The receptive field is a triangle above the pixel:
row i-k contributes columns j-k-1 .. j+k.

    K_is (1x3, mask B)      K_ss (1x3 on row i-1, unmasked)
        [1 c 0]                 [1 1 1]   <- h_{i-1}
                                [. x .]   <- row i
"""

from __future__ import annotations

import torch
from torch import nn

from pixel_lightning.nn.lstm_cell import lstm_update
from pixel_lightning.nn.masked_conv import MaskedConv2d
from pixel_lightning.nn.masks import channel_groups


class RowLSTMLayer(nn.Module):
    """One Row LSTM layer: (B, 2h, H, W) -> residual branch (B, 2h, H, W).

    The h-dimensional state is raised back to 2h by a 1x1 mask-B convolution (Section 3.4). Residual
    and skip wiring are not done here: :class:`pixel_lightning.nn.stack.LayerStack` owns them.
    """

    def __init__(self, hidden: int, colours: int, cond_channels: int = 0) -> None:
        super().__init__()
        h = hidden
        self.hidden = h
        state_groups = channel_groups(h, colours)
        gate_groups = state_groups.repeat(4)  # o, f, i, g each grouped like the state
        self.K_is = MaskedConv2d(2 * h, 4 * h, (1, 3), "B", colours, out_groups=gate_groups)
        self.K_ss = nn.Conv1d(h, 4 * h, 3, padding=1)  # unmasked: row i-1 is entirely in the past
        self.h0 = nn.Parameter(torch.zeros(h))  # learned initial state (Section 3.1)
        self.c0 = nn.Parameter(torch.zeros(h))
        self.out = MaskedConv2d(h, 2 * h, 1, "B", colours)
        self.cond = nn.Conv2d(cond_channels, 4 * h, 1) if cond_channels else None

    def input_to_state(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """K_is for the whole map at once (plus the conditioning map, if any): (B, 4h, H, W)."""
        s = self.K_is(x)
        if self.cond is not None:
            if cond is None:
                raise ValueError("this layer was built with cond_channels > 0 and needs a `cond` map")
            s = s + self.cond(cond)
        return s

    def initial_state(self, batch: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.h0.view(1, -1, 1).expand(batch, -1, width)  # (B, h, W)
        c = self.c0.view(1, -1, 1).expand(batch, -1, width)
        return h, c

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        B, _, H, W = x.shape
        s_is = self.input_to_state(x, cond)  # (B, 4h, H, W)
        h, c = self.initial_state(B, W)
        rows = []
        for i in range(H):
            gates = s_is[:, :, i] + self.K_ss(h)  # (B, 4h, W)
            h, c = lstm_update(gates, c, dim=1)  # (B, h, W)
            rows.append(h)
        return self.out(torch.stack(rows, dim=2))  # (B, h, H, W) -> (B, 2h, H, W)
