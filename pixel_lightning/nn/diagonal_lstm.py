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

from pixel_lightning.nn.amp import apply_autocast_free, autocast_free_backward
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


# The backward direction's output is shifted down this many rows (Section 3.2). A constant only so that
# a control test can set it to 0 and watch the causality test fail.
BACKWARD_SHIFT = 1


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W): row i takes row i - BACKWARD_SHIFT; the top rows get zeros."""
    return F.pad(x, (0, 0, BACKWARD_SHIFT, 0))[:, :, : x.shape[2]]


def _step_view(buf: torch.Tensor, direction: int, width: int) -> torch.Tensor:
    """The image-layout view (B, C, H, W) of one direction of a step-major map (2, C, T, H, B): pixel
    (r, j) sits at skewed column (step) t = r + j, so the view's row stride is one step plus one row.
    No copy: this is the skew, done by strides."""
    _, C, _, H, B = buf.shape
    s_dir, s_c, s_t, s_h, s_b = buf.stride()
    offset = buf.storage_offset() + direction * s_dir
    return buf.as_strided((B, C, H, width), (s_b, s_c, s_t + s_h, s_t), offset)


def skew_steps(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) -> step-major skewed maps of both directions (2, C + 2, T, H, B), T = W + H - 1.

    Direction 0 holds x, direction 1 the mirrored x (columns reversed). Two constant channels follow:
    ``C`` is 1 on pixels and 0 on the skew padding (it carries the input-to-state bias), ``C + 1`` is 1
    everywhere (it carries K_ss's bias, which acts on padding columns too). One strided copy per
    direction, straight into the layout the scan reads.
    """
    B, C, H, W = x.shape
    xs = x.new_zeros(2, C + 2, W + H - 1, H, B)
    for direction, image in enumerate((x, x.flip(3))):
        v = _step_view(xs, direction, W)
        v[:, :C].copy_(image)
        v[:, C].fill_(1)
    xs[:, C + 1].fill_(1)
    return xs


class SkewInputToState(torch.autograd.Function):
    """s = K_ext @ skew_steps(x) per direction: (B, C, H, W), (2, 4h, C + 2) -> (2, 4h, T*H*B).

    The skewed input is 4x the size of x (two directions, half of each skewed column is padding), so
    it is not kept for backward: x is, and the skew is redone there (a copy, against 4x the memory
    in every layer until backward reaches it)."""

    @staticmethod
    def forward(ctx, x, K_ext):
        ctx.save_for_backward(x, K_ext)
        return torch.bmm(K_ext, skew_steps(x).flatten(2))

    @staticmethod
    @autocast_free_backward
    def backward(ctx, ds):
        x, K_ext = ctx.saved_tensors
        B, C, H, W = x.shape
        xs = skew_steps(x).flatten(2)  # (2, C + 2, T*H*B)
        dK = torch.bmm(ds, xs.transpose(1, 2))
        del xs
        dxs = torch.bmm(K_ext.transpose(1, 2), ds).view(2, C + 2, W + H - 1, H, B)
        return _step_view(dxs, 0, W)[:, :C] + _step_view(dxs, 1, W)[:, :C].flip(3), dK


class UnskewMerge(torch.autograd.Function):
    """Scan output (T, 2, h, H, B) -> forward h + backward h mirrored back and shifted down one row,
    (B, h, H, W) channels-last: the layer's two directions combined (Section 3.2)."""

    @staticmethod
    def forward(ctx, hs, width):
        k, H = BACKWARD_SHIFT, hs.shape[3]
        v = hs.permute(1, 2, 0, 3, 4)  # (2, h, T, H, B) view
        out = _step_view(v, 0, width).clone(memory_format=torch.channels_last)
        out[:, :, k:] += _step_view(v, 1, width)[:, :, : H - k].flip(3)
        ctx.shape, ctx.W, ctx.k = hs.shape, width, k
        return out

    @staticmethod
    def backward(ctx, dout):
        k, H = ctx.k, ctx.shape[3]
        dhs = dout.new_zeros(ctx.shape)
        v = dhs.permute(1, 2, 0, 3, 4)
        _step_view(v, 0, ctx.W).copy_(dout)
        _step_view(v, 1, ctx.W)[:, :, : H - k].copy_(dout[:, :, k:].flip(3))
        return dhs, None


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
        return self.out(self.pre_output(x, cond))  # (B, 2h, H, W)

    @property
    def output_conv(self) -> MaskedConv2d:
        return self.out

    def pre_output(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The merged state maps (B, h, H, W), the input of the 1x1 output convolution.

        Same function as :meth:`forward_reference`, laid out for speed: the input (2h maps, plus the
        conditioning map if any; not the 8h gate maps) is skewed by :func:`skew_steps` straight into
        the scan's step-major layout, K_is (with the conditioning 1x1 and both biases folded in as extra
        columns) is one GEMM per direction there, both directions share one :func:`lstm_scan`, and
        :class:`UnskewMerge` reads the result back by strides."""
        B, _, H, W = x.shape
        hd, T = self.hidden, W + H - 1
        K_is = (self.K_is.weight * self.K_is.mask)[:, :, 0, 0]  # (8h, 2h): [forward 4h; backward 4h]
        b_is = self.K_is.bias
        if self.cond is not None:
            x = torch.cat([x, require_cond(cond)], 1)  # the conditioning 1x1 acts like K_is
            K_is = torch.cat([K_is, self.cond.weight[:, :, 0, 0]], 1)
            b_is = b_is + self.cond.bias
        K_ext = torch.cat([K_is, b_is[:, None], self.K_ss.bias[:, None]], 1)  # (8h, C + 2)
        s = apply_autocast_free(SkewInputToState, "autocast", x, K_ext.view(2, 4 * hd, -1))  # (2, 4h, T*H*B)
        s = s.view(2, 4 * hd, T, H, B).permute(2, 0, 1, 3, 4)  # (T, 2, 4h, H, B) view
        w = self.K_ss.weight.view(2, 4 * hd, hd, 2)  # per direction (4h, h, taps)
        K_ss = w.permute(0, 1, 3, 2).reshape(2, 4 * hd, 2 * hd)  # columns: [row r-1; row r]
        h0 = self.h0.view(2, hd, 1, 1).expand(2, hd, H, B)
        c0 = self.c0.view(2, hd, 1, 1).expand(2, hd, H, B)
        hs = lstm_scan(s, K_ss, h0, c0, (-1, 0))  # (T, 2, h, H, B)
        return apply_autocast_free(UnskewMerge, None, hs, W)  # (B, h, H, W)

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
