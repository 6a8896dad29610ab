"""Diagonal BiLSTM layer (paper Section 3.2, Figure 3): skew, column-wise LSTM, unskew.

Skewing shifts row i right by i, so the (H, W) map becomes (H, W + H - 1) and both the left neighbour
(i, j-1) and the upper neighbour (i-1, j) of a pixel sit in the previous column:

    original          skewed
    a b c             a b c . .
    d e f      ->     . d e f .
    g h k             . . g h k

The input-to-state K_is is a 1x1 mask-B convolution; the state-to-state K_ss is a 2x1 (column)
unmasked convolution of the previous column's state. The second direction runs on the horizontally
mirrored map; its output is mirrored back and **shifted down one row** before being added to the first
direction, otherwise pixel (i, j) would see (i, j+1 ..) of its own row. After the shift the layer sees
the whole available context: all rows above and the left part of the current row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixel_lightning.nn.lstm_cell import lstm_scan, lstm_update
from pixel_lightning.nn.masked_conv import MaskedConv2d, position_major, require_cond
from pixel_lightning.nn.masks import channel_groups


def skew(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W + H - 1), row i shifted right by i, zeros elsewhere. No Python loop:
    pad H zero columns, flatten rows, drop the last H entries, re-fold with the shorter row length."""
    B, C, H, W = x.shape
    flat = F.pad(x, (0, H)).flatten(2)  # (B, C, H * (W + H))
    return flat[:, :, : H * (W + H - 1)].view(B, C, H, W + H - 1)


def unskew(x: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of :func:`skew`: (B, C, H, W + H - 1) -> (B, C, H, W)."""
    B, C, H, T = x.shape
    flat = F.pad(x.flatten(2), (0, H))  # (B, C, H * (T + 1))
    return flat.view(B, C, H, T + 1)[:, :, :, :width]


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W): row i takes row i-1, row 0 gets zeros."""
    return F.pad(x, (0, 0, 1, 0))[:, :, : x.shape[2]]


class DiagonalBiLSTMLayer(nn.Module):
    """One Diagonal BiLSTM layer: (B, 2h, H, W) -> residual branch (B, 2h, H, W).

    Both directions run in the same column loop: their K_is is one 1x1 convolution to 8h maps and their
    K_ss one grouped convolution (groups=2). Residual and skip wiring: see LayerStack.
    """

    def __init__(self, hidden: int, colours: int, cond_channels: int = 0) -> None:
        super().__init__()
        h = hidden
        self.hidden = h
        gate_groups = channel_groups(h, colours).repeat(8)  # 2 directions x (o, f, i, g)
        self.K_is = MaskedConv2d(2 * h, 8 * h, 1, "B", colours, out_groups=gate_groups)
        self.K_ss = nn.Conv1d(2 * h, 8 * h, 2, groups=2)  # per direction (4h, h, 2): taps rows r-1, r
        self.h0 = nn.Parameter(torch.zeros(2 * h))  # learned initial states, one per direction
        self.c0 = nn.Parameter(torch.zeros(2 * h))
        self.out = MaskedConv2d(h, 2 * h, 1, "B", colours)
        self.cond = nn.Conv2d(cond_channels, 8 * h, 1) if cond_channels else None

    def input_to_state(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """K_is of both directions (plus conditioning): (B, 8h, H, W), [forward 4h, backward 4h]."""
        s = self.K_is(x)
        if self.cond is not None:
            s = s + self.cond(require_cond(cond))
        return s

    def scan_reference(self, s: torch.Tensor) -> torch.Tensor:
        """Straightforward column loop with a grouped conv1d K_ss (the definition; tests compare
        :meth:`scan` with it): skewed (B, 8h, H, T) pre-activations (no K_ss bias) -> (B, 2h, H, T)."""
        B, _, H, T = s.shape
        h2 = 2 * self.hidden
        h = self.h0.view(1, h2, 1).expand(B, h2, H)  # (B, 2h, H): [forward h, backward h]
        c = self.c0.view(1, h2, 1).expand(B, h2, H).reshape(B, 2, self.hidden, H)
        cols = []
        for t in range(T):
            gates = s[:, :, :, t] + self.K_ss(F.pad(h, (1, 0)))  # (B, 8h, H); pad: row -1 is zero
            hd, c = lstm_update(gates.view(B, 2, 4 * self.hidden, H), c, dim=2)  # (B, 2, h, H)
            h = hd.reshape(B, h2, H)
            cols.append(h)
        return torch.stack(cols, dim=3)  # (B, 2h, H, T)

    def forward_reference(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The definition, step by step (tests compare :meth:`forward` with it)."""
        W = x.shape[3]
        s_fwd, s_bwd = self.input_to_state(x, cond).chunk(2, dim=1)  # (B, 4h, H, W) each
        s = skew(torch.cat([s_fwd, s_bwd.flip(3)], dim=1))  # (B, 8h, H, W + H - 1)
        h_fwd, h_bwd = unskew(self.scan_reference(s), W).chunk(2, dim=1)  # (B, h, H, W) each
        return self.out(h_fwd + shift_down(h_bwd.flip(3)))  # (B, h, H, W) -> (B, 2h, H, W)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Same function as :meth:`forward_reference`, laid out for speed: the input (2h maps, not the
        8h gate maps) is skewed, straight into the scan's step-major layout (T, direction, channel, B, H),
        and K_is is one batched matmul there. A ones channel carries K_is's bias, so skew padding stays
        exactly zero as in the definition. Both directions then share one :func:`lstm_scan`."""
        B, C2, H, W = x.shape
        hd, T = self.hidden, W + H - 1
        ones = x.new_ones(B, 1, H, W)
        xs = torch.stack([torch.cat([x, ones], 1), torch.cat([x.flip(3), ones], 1)], 1)  # (B, 2, 2h+1, H, W)
        xs = skew(xs.view(B, 2 * (C2 + 1), H, W)).view(B, 2, C2 + 1, H, T)
        xs = xs.permute(4, 1, 2, 0, 3).reshape(T, 2, C2 + 1, B * H)  # (T, 2, 2h+1, B*H)
        K_is = torch.cat([(self.K_is.weight * self.K_is.mask)[:, :, 0, 0], self.K_is.bias[:, None]], 1)
        s = torch.matmul(K_is.view(2, 4 * hd, C2 + 1), xs)  # (T, 2, 4h, B*H)
        if self.cond is not None:
            c_fwd, c_bwd = self.cond(require_cond(cond)).chunk(2, dim=1)  # (B, 4h, H, W) each
            c = skew(torch.cat([c_fwd, c_bwd.flip(3)], 1)).view(B, 2, 4 * hd, H, T)
            s = s + c.permute(4, 1, 2, 0, 3).reshape(T, 2, 4 * hd, B * H)
        s = s + self.K_ss.bias.view(1, 2, 4 * hd, 1)  # K_ss's bias acts on padding columns too
        w = self.K_ss.weight.view(2, 4 * hd, hd, 2)  # per direction (4h, h, taps)
        K_ss = w.permute(0, 1, 3, 2).reshape(2, 4 * hd, 2 * hd)  # columns: [row r-1; row r]
        h0 = self.h0.view(2, hd, 1, 1).expand(2, hd, B, H)
        c0 = self.c0.view(2, hd, 1, 1).expand(2, hd, B, H)
        hs = lstm_scan(s.view(T, 2, 4 * hd, B, H), K_ss, h0, c0, (-1, 0))  # (T, 2, h, B, H)
        h = unskew(hs.permute(3, 1, 2, 4, 0).reshape(B, 2 * hd, H, T), W)  # (B, 2h, H, W)
        h_fwd, h_bwd = h.chunk(2, dim=1)
        return self.out(h_fwd + shift_down(h_bwd.flip(3)))  # (B, h, H, W) -> (B, 2h, H, W)

    # -- cached sampling: one position at a time ---------------------------------------------
    def padding_states(self, H: int) -> tuple[torch.Tensor, torch.Tensor]:
        """States (H, 2h) h and c that each skewed row r holds just before its first real pixel, i.e.
        at skewed column r - 1 (column -1: the learned initial state). The skew pads zeros, so these
        come from running the recurrence over zero inputs: they depend on the weights only."""
        hd = self.hidden
        h = self.h0.view(1, 2 * hd, 1).expand(1, 2 * hd, H)  # (1, 2h, H)
        c = self.c0.view(1, 2, hd, 1).expand(1, 2, hd, H)
        hs, cs = [h[0, :, 0]], [c[0, :, :, 0].reshape(-1)]
        for r in range(1, H):  # after column r - 1, row r
            gates = self.K_ss(F.pad(h, (1, 0))).view(1, 2, 4 * hd, H)  # zero input: K_ss and bias only
            hh, c = lstm_update(gates, c, dim=2)
            h = hh.reshape(1, 2 * hd, H)
            hs.append(h[0, :, r])
            cs.append(c[0, :, :, r].reshape(-1))
        return torch.stack(hs), torch.stack(cs)  # (H, 2h) each, [forward h, backward h]

    def begin_cache(self, batch: int, H: int, W: int, cond: torch.Tensor | None) -> dict:
        """Per-sampling state. Forward direction: (i, j) reads (i-1, j) and (i, j-1), both cached.
        Backward direction: it reaches row i only through the one-row shift, so row i-1 is run once,
        right to left, when row i starts (its inputs are then final)."""
        hd = self.hidden
        K_is = self.K_is.point()  # (2h, 8h): [forward 4h, backward 4h]
        w = self.K_ss.weight  # (8h, h, 2): tap 0 = row r-1 (above), tap 1 = row r (left, once skewed)
        b = K_is.bias + self.K_ss.bias  # (8h,)
        pad_h, pad_c = self.padding_states(H)  # (H, 2h)
        zero = self.h0.new_zeros(batch, hd)
        # one matmul per step and direction on [x, h above, h left]: (2h + h + h, 4h)
        fwd = torch.cat([K_is.weight[:, : 4 * hd], w[: 4 * hd, :, 0].t(), w[: 4 * hd, :, 1].t()], 0)
        bwd = torch.cat([K_is.weight[:, 4 * hd :], w[4 * hd :, :, 0].t(), w[4 * hd :, :, 1].t()], 0)
        return {
            "fwd": fwd.contiguous(), "bf": b[: 4 * hd].expand(batch, -1),
            "bwd": bwd.contiguous(), "bb": b[4 * hd :].expand(batch, -1),
            "pad_h": pad_h.view(H, 2, hd), "pad_c": pad_c.view(H, 2, hd),
            "out": self.out.point(),
            "x": [],  # this row's layer inputs, (B, 2h) per column
            "hf_up": [zero] * W,  # forward h of row i-1 (zero above the image), (B, h) per column
            "hf": [], "cf": [],  # forward h, c of row i
            "hb": [zero] * W,  # backward h of row i-1 (zero above the image)
            "row": -1,
            "cond": None if self.cond is None else position_major(self.cond(require_cond(cond))),
        }  # fmt: skip

    def _backward_row(self, cache: dict, r: int) -> None:
        """Backward direction over the finished row r, right to left (its left neighbour is j + 1)."""
        W = len(cache["x"])
        bias = (
            cache["bb"] if cache["cond"] is None else cache["bb"] + cache["cond"][r, :, :, 4 * self.hidden :]
        )
        up = cache["hb"]  # row r-1's backward h, (B, h) per column
        B = up[0].shape[0]
        h, c = cache["pad_h"][r, 1].expand(B, -1), cache["pad_c"][r, 1].expand(B, -1)
        out = [None] * W
        for j in range(W - 1, -1, -1):
            b = bias if cache["cond"] is None else bias[j]
            gates = torch.addmm(b, torch.cat([cache["x"][j], up[j], h], 1), cache["bwd"])  # (B, 4h)
            h, c = lstm_update(gates, c, dim=1)
            out[j] = h
        cache["hb"] = out

    def step(self, cache: dict, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Residual branch (B, 2h) at (i, j) from the layer input x (B, 2h) at (i, j). Idempotent."""
        if cache["row"] != i:
            if i > 0:
                self._backward_row(cache, i - 1)
                cache["hf_up"] = cache["hf"]
            W = len(cache["hb"])
            cache["x"], cache["hf"], cache["cf"] = [None] * W, [None] * W, [None] * W
            cache["row"] = i
        cache["x"][j] = x
        if j > 0:
            h_left, c_left = cache["hf"][j - 1], cache["cf"][j - 1]
        else:
            B = x.shape[0]
            h_left, c_left = cache["pad_h"][i, 0].expand(B, -1), cache["pad_c"][i, 0].expand(B, -1)
        bias = (
            cache["bf"] if cache["cond"] is None else cache["bf"] + cache["cond"][i, j, :, : 4 * self.hidden]
        )
        gates = torch.addmm(bias, torch.cat([x, cache["hf_up"][j], h_left], 1), cache["fwd"])  # (B, 4h)
        h, c = lstm_update(gates, c_left, dim=1)  # (B, h)
        cache["hf"][j], cache["cf"][j] = h, c
        return cache["out"](h + cache["hb"][j])  # backward h of row i-1: the shift down
