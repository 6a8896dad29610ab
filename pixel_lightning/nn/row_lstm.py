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

from pixel_lightning.nn.lstm_cell import lstm_scan, lstm_update
from pixel_lightning.nn.masked_conv import MaskedConv2d, position_major, require_cond
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
            s = s + self.cond(require_cond(cond))
        return s

    def initial_state(self, batch: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.h0.view(1, -1, 1).expand(batch, -1, width)  # (B, h, W)
        c = self.c0.view(1, -1, 1).expand(batch, -1, width)
        return h, c

    def forward_reference(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Straightforward row loop with a conv1d K_ss (the definition; tests compare :meth:`forward`)."""
        B, _, H, W = x.shape
        s_is = self.input_to_state(x, cond)  # (B, 4h, H, W)
        h, c = self.initial_state(B, W)
        rows = []
        for i in range(H):
            gates = s_is[:, :, i] + self.K_ss(h)  # (B, 4h, W)
            h, c = lstm_update(gates, c, dim=1)  # (B, h, W)
            rows.append(h)
        return self.out(torch.stack(rows, dim=2))  # (B, h, H, W) -> (B, 2h, H, W)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.pre_output(x, cond))  # (B, 2h, H, W)

    @property
    def output_conv(self) -> MaskedConv2d:
        return self.out

    def pre_output(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The state maps, the input of the 1x1 output convolution: (B, 2h, H, W) -> (B, h, H, W)."""
        B, _, H, W = x.shape
        hd = self.hidden
        s = self.input_to_state(x, cond) + self.K_ss.bias.view(1, -1, 1, 1)  # (B, 4h, H, W)
        s = s.permute(2, 1, 3, 0).unsqueeze(1).contiguous()  # (H, 1, 4h, W, B): a step is a row
        K_ss = self.K_ss.weight.permute(0, 2, 1).reshape(1, 4 * hd, 3 * hd)  # taps (j-1, j, j+1)
        h0 = self.h0.view(1, hd, 1, 1).expand(1, hd, W, B)
        c0 = self.c0.view(1, hd, 1, 1).expand(1, hd, W, B)
        hs = lstm_scan(s, K_ss, h0, c0, (-1, 0, 1))  # (H, 1, h, W, B)
        return hs[:, 0].permute(3, 0, 2, 1).contiguous().permute(0, 3, 1, 2)  # (B, h, H, W) channels-last

    # -- cached sampling: one position at a time ---------------------------------------------
    def begin_cache(self, batch: int, H: int, W: int, cond: torch.Tensor | None) -> dict:
        """Per-sampling state. Row i-1's h, c are final once row i starts, so K_ss of the whole
        previous row is computed once per row; a step runs K_is and the LSTM update at (i, j) only."""
        K_is = self.K_is.point()
        w = K_is.weight.view(self.K_is.in_channels, 3, -1)  # (2h, taps j-1, j, j+1, 4h); j+1 masked
        h, c = self.initial_state(batch, W)  # (B, h, W)
        return {
            "K_is": torch.cat([w[:, 0], w[:, 1]], 0),  # on [x(i, j-1), x(i, j)]: (4h, 4h)
            "K_is_bias": K_is.bias,
            "out": self.out.point(),
            "x": [],  # this row's layer inputs, (B, 2h) each
            "h": list(h.unbind(2)),  # the row being written, (B, h) per column
            "c": list(c.unbind(2)),
            "row": -1,
            "cond": None if self.cond is None else position_major(self.cond(require_cond(cond))),
            "zero": self.h0.new_zeros(batch, 2 * self.hidden),
        }

    def _begin_row(self, cache: dict, i: int) -> None:
        """Row i starts: the finished row becomes h_{i-1}, c_{i-1}; K_ss over it (plus the K_is bias
        and the conditioning of row i) once: (W, B, 4h)."""
        h_prev = torch.stack(cache["h"], 2)  # (B, h, W)
        kss = self.K_ss(h_prev) + cache["K_is_bias"][:, None]  # (B, 4h, W)
        kss = kss.permute(2, 0, 1)  # (W, B, 4h)
        if cache["cond"] is not None:
            kss = kss + cache["cond"][i]
        cache["kss"] = kss.contiguous()
        cache["c_prev"] = cache["c"]
        W = len(cache["c"])
        cache["x"], cache["h"], cache["c"] = [None] * W, [None] * W, [None] * W
        cache["row"] = i

    def step(self, cache: dict, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Residual branch (B, 2h) at (i, j) from the layer input x (B, 2h) at (i, j). Idempotent."""
        if cache["row"] != i:
            self._begin_row(cache, i)
        cache["x"][j] = x
        left = cache["x"][j - 1] if j > 0 else cache["zero"]
        gates = torch.addmm(cache["kss"][j], torch.cat([left, x], 1), cache["K_is"])  # (B, 4h)
        h, c = lstm_update(gates, cache["c_prev"][j], dim=1)  # (B, h)
        cache["h"][j], cache["c"][j] = h, c
        return cache["out"](h)  # (B, 2h)
