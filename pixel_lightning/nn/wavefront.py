"""The whole Row LSTM stack advanced as a wavefront across layers (issue 14; paper Sections 3.1, 3.3).

Row LSTM layer l at row i needs only layer l-1 at row i (its input x_l[i]) and itself at row i-1 (its
state h_l[i-1], c_l[i-1]). So every layer can advance together: at step t, layer l processes row
i = t - l. That is T = H + L - 1 dependent steps instead of H * L, and each step runs the active layers'
matmuls as one batched matmul (``baddbmm`` over layers):

    gates_l[i] = b_l + cond_l[i] + K_is,l (*) x_l[i] + K_ss,l (*) h_l[i-1]     (paper Equation 3)
    h_l[i], c_l[i] = lstm_update(gates_l[i], c_l[i-1])
    y_l[i] = W_out,l h_l[i] + b_out,l                                            (1x1 mask B, 2h maps)
    x_{l+1}[i] = x_l[i] + y_l[i]  (residual)   or   y_l[i]

The skip connections (sum_l S_l y_l) read y only, so they run after the wavefront as one matmul.
:class:`RowLSTMStack` is the same function as :class:`~pixel_lightning.nn.stack.LayerStack` over
:class:`~pixel_lightning.nn.row_lstm.RowLSTMLayer` layers (tests/test_wavefront.py), and keeps the
layer-by-layer path selectable (``ModelConfig.wavefront``).

Layout. Every per-(layer, row) map is stored feature-major with its (column, batch) positions in one
axis of M = W * B (column-major, batch inner), "skewed": the slot of step t holds row t - l of layer l.
The inputs of a step, [x_l[i]; h_l[i-1]] (3h rows), live in one buffer whose steps are separated by B
zero columns, so the column taps j-1 and j+1 of K_is and K_ss are the same buffer shifted by -B and
+B columns: views, not copies. The weight gradients are then one GEMM per tap over every step at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixel_lightning.nn.lstm_cell import lstm_factors
from pixel_lightning.nn.masked_conv import require_cond
from pixel_lightning.nn.row_lstm import RowLSTMLayer
from pixel_lightning.nn.stack import LayerStack


class RowLSTMStack(LayerStack):
    """:class:`LayerStack` of Row LSTM layers; ``wavefront=True`` runs :func:`row_lstm_wavefront`,
    False the layer-by-layer loop (the reference). Cached sampling is the inherited one."""

    def __init__(
        self, layers: Sequence[RowLSTMLayer], width: int, colours: int, residual: bool, skip: bool,
        wavefront: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(layers, width, colours, residual, skip)
        self.wavefront = wavefront

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if not self.wavefront or not self.layers:
            return super().forward(x, cond)
        return row_lstm_wavefront(self, x, cond)


def row_lstm_wavefront(stack: RowLSTMStack, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """:meth:`LayerStack.forward` of ``stack`` (Row LSTM layers) by :class:`RowLSTMWavefront`:
    (B, 2h, H, W) -> (B, 2h, H, W), channels-last."""
    layers: list[RowLSTMLayer] = list(stack.layers)
    B, _, H, W = x.shape
    L, d = len(layers), layers[0].hidden
    K_is = torch.stack([ly.K_is.weight * ly.K_is.mask for ly in layers])[:, :, :, 0]  # (L, 4h, 2h, 3)
    K_ss = torch.stack([ly.K_ss.weight for ly in layers])  # (L, 4h, h, 3), taps (j-1, j, j+1)
    W_c = torch.cat([K_is[..., 1], K_ss[..., 1]], 2)  # on [x(j); h(j)]: (L, 4h, 3h)
    W_l = torch.cat([K_is[..., 0], K_ss[..., 0]], 2)  # on [x(j-1); h(j-1)]: (L, 4h, 3h)
    W_r = K_ss[..., 2]  # on h(j+1) (x(j+1) is masked): (L, 4h, h)
    bias = torch.stack([ly.K_is.bias + ly.K_ss.bias for ly in layers])  # (L, 4h)
    s_cond = None
    if layers[0].cond is not None:  # every layer's 1x1 conditioning convolution at once
        w = torch.cat([ly.cond.weight for ly in layers])  # (L*4h, c, 1, 1)
        sc = F.conv2d(require_cond(cond), w, torch.cat([ly.cond.bias for ly in layers]))
        s_cond = sc.view(B, L, 4 * d, H, W).permute(1, 2, 3, 4, 0)  # (L, 4h, H, W, B)
    W_out = torch.stack([ly.out.matrix() for ly in layers])  # (L, 2h, h)
    b_out = torch.stack([ly.out.bias for ly in layers])  # (L, 2h)
    h0 = torch.stack([ly.h0 for ly in layers])  # (L, h)
    c0 = torch.stack([ly.c0 for ly in layers])
    ys, x_last = RowLSTMWavefront.apply(
        x.permute(1, 2, 3, 0), W_c, W_l, W_r, bias, s_cond, W_out, b_out, h0, c0, stack.residual
    )  # (L, 2h, H, W, B), (2h, H, W, B)
    if not stack.skip:
        return x_last.permute(3, 0, 1, 2).contiguous(memory_format=torch.channels_last)
    skips: Sequence[nn.Module] = stack.skips
    ycat = ys.permute(4, 2, 3, 0, 1).reshape(B * H * W, L * 2 * d)  # (BHW, L*2h): [y_0 .. y_{L-1}]
    W_skip = torch.cat([s.matrix() for s in skips], 1)  # (2h, L*2h)
    b_skip = torch.stack([s.bias for s in skips]).sum(0)  # (2h,)
    out = torch.addmm(b_skip, ycat, W_skip.t())  # sum_l S_l y_l: (BHW, 2h)
    return out.view(B, H, W, 2 * d).permute(0, 3, 1, 2)  # (B, 2h, H, W), channels-last


class _Skewed:
    """Index arithmetic of one skewed, padded buffer (..., R) holding steps t = 0 .. T (inclusive)."""

    def __init__(self, H: int, W: int, B: int, L: int) -> None:
        self.H, self.W, self.B, self.L = H, W, B, L
        self.T = H + L - 1  # wavefront steps
        self.M = W * B  # positions of a row
        self.P = self.M + B  # a step's columns plus the zero gap after it
        self.R = 2 * B + (self.T + 1) * self.P  # step t's row starts at column B + t * P

    def steps(self, buf: torch.Tensor, shift: int = 0) -> torch.Tensor:
        """(..., R) -> (..., T + 1, M) view of every step's row, its columns shifted by ``shift``
        positions (-1: column j-1, the zero gap outside the row)."""
        start = self.B + shift * self.B
        return buf[..., start : start + (self.T + 1) * self.P].unflatten(-1, (self.T + 1, self.P))[
            ..., : self.M
        ]

    def rows(self, buf: torch.Tensor, first: int = 0) -> torch.Tensor:
        """(L, F, R) -> (L, F, H, W, B) view of every layer's rows in image order: layer l's row i is
        step i + l + first."""
        L, Fd = buf.shape[:2]
        s0, s1 = buf.stride(0), buf.stride(1)
        return buf.as_strided(
            (L, Fd, self.H, self.W, self.B),
            (s0 + self.P, s1, self.P, self.B, 1),
            buf.storage_offset() + self.B + first * self.P,
        )

    def active(self, t: int) -> slice:
        """Layers that process a row at step t: l with 0 <= t - l < H."""
        return slice(max(0, t - self.H + 1), min(self.L - 1, t) + 1)


def _unskew(buf: torch.Tensor, H: int, W: int, B: int) -> torch.Tensor:
    """(T, L, F, M) step-major buffer -> (L, F, H, W, B) view: layer l's row i is step i + l."""
    T, L, Fd, M = buf.shape
    s = buf.stride()
    return buf.as_strided((L, Fd, H, W, B), (s[0] + s[1], s[2], s[0], B, 1), buf.storage_offset())


class RowLSTMWavefront(torch.autograd.Function):
    """Forward and backward of the Row LSTM stack's recurrence on the wavefront (module docstring).

    forward(x0 (2h, H, W, B), W_c (L, 4h, 3h), W_l (L, 4h, 3h), W_r (L, 4h, h), bias (L, 4h),
            s_cond (L, 4h, H, W, B) or None, W_out (L, 2h, h), b_out (L, 2h), h0 (L, h), c0 (L, h),
            residual) -> (y (L, 2h, H, W, B) every layer's residual branch, x_L (2h, H, W, B))

    Per step forward: three ``baddbmm_`` (taps j, j-1, j+1), the six-kernel LSTM update, one
    ``baddbmm`` for the 1x1 output convolution and the residual add, each over the active layers.
    Backward runs the same steps in reverse with the gradient factors precomputed for every step
    (:func:`~pixel_lightning.nn.lstm_cell.lstm_factors`); the weight gradients are one GEMM per tap
    over every step. Saved: the step inputs [x; h] (3h), the activations (4h) and c (h) per position.
    """

    @staticmethod
    def forward(ctx, x0, W_c, W_l, W_r, bias, s_cond, W_out, b_out, h0, c0, residual):
        ctx.set_materialize_grads(False)
        C2, H, W, B = x0.shape
        L, d4, _ = W_c.shape
        d = d4 // 4
        k = _Skewed(H, W, B, L)
        T = k.T
        inp = x0.new_zeros(L + 1, 3 * d, k.R)  # [x_l; h_l[i-1]] of every step; slot L: x_L
        centre, left, right = k.steps(inp), k.steps(inp, -1), k.steps(inp, 1)  # (L+1, 3h, T+1, M)
        k.rows(inp[:1, :C2]).squeeze(0).copy_(x0)  # layer 0's input, row i at step i
        torch.diagonal(centre[:L, C2:], 0, 0, 2).copy_(h0.t()[:, None])  # h_l[-1] at step l
        cs = x0.new_zeros(T + 1, L, d, k.M)  # c_l[i - 1] at step t = i + l
        torch.diagonal(cs, 0, 0, 1).copy_(c0.t()[:, None])
        act = x0.new_zeros(T, L, d4, k.M)  # gates, then activations
        act_rows = _unskew(act, H, W, B)  # (L, 4h, H, W, B)
        act_rows.copy_(bias[:, :, None, None, None].expand_as(act_rows))
        if s_cond is not None:
            act_rows.add_(s_cond)
        ys = x0.new_empty(T, L, C2, k.M)  # y_l[i] at step i + l
        tc = x0.new_empty(L, d, k.M)
        b_out3 = b_out[:, :, None]
        for t in range(T):
            a, n = k.active(t), k.active(t).stop - k.active(t).start
            g = act[t, a]  # (n, 4h, M)
            g.baddbmm_(W_c[a], centre[a, :, t])
            g.baddbmm_(W_l[a], left[a, :, t])
            g.baddbmm_(W_r[a], right[a, C2:, t])
            g[:, : 3 * d].sigmoid_()  # o, f, i
            g[:, 3 * d :].tanh_()  # g
            c = cs[t + 1, a]
            torch.mul(g[:, d : 2 * d], cs[t, a], out=c)
            c.addcmul_(g[:, 2 * d : 3 * d], g[:, 3 * d :])
            torch.tanh(c, out=tc[:n])
            h = centre[a, C2:, t + 1]  # h_l[i], read by step t + 1
            torch.mul(g[:, :d], tc[:n], out=h)
            y = ys[t, a]
            torch.baddbmm(b_out3[a], W_out[a], h, out=y)  # 1x1 output convolution: (n, 2h, M)
            x_next = centre[a.start + 1 : a.stop + 1, :C2, t + 1]  # x_{l+1}[i]
            if residual:
                torch.add(centre[a, :C2, t], y, out=x_next)
            else:
                x_next.copy_(y)
        ctx.save_for_backward(W_c, W_l, W_r, W_out, inp, act, cs)
        ctx.residual, ctx.shape, ctx.cond = residual, (H, W, B), s_cond is not None
        return _unskew(ys, H, W, B), k.rows(inp[L:, :C2], L).squeeze(0)

    @staticmethod
    def backward(ctx, d_ys, d_x_last):
        W_c, W_l, W_r, W_out, inp, act, cs = ctx.saved_tensors
        H, W, B = ctx.shape
        L, d4, _ = W_c.shape
        d, C2 = d4 // 4, W_out.shape[1]
        k = _Skewed(H, W, B, L)
        dc_from_h, fac_o, fac_fig, _ = lstm_factors(act, cs)  # (T, L, ...): every step at once
        f = act[:, :, d : 2 * d]
        del act
        d_inp = torch.zeros_like(inp)
        d_centre, d_left, d_right = k.steps(d_inp), k.steps(d_inp, -1), k.steps(d_inp, 1)
        d_gates = inp.new_zeros(L, d4, k.R)  # skewed and padded like inp: zero off the steps
        d_g = k.steps(d_gates)
        d_y = inp.new_zeros(L, C2, k.R)  # total gradient of y_l[i], at step i + l
        d_y_steps = k.steps(d_y)
        if d_ys is not None:
            k.rows(d_y).copy_(d_ys)
        if d_x_last is not None:
            k.rows(d_inp[L:, :C2], L).squeeze(0).copy_(d_x_last)
        dc = inp.new_zeros(L, d, k.M)  # dL/dc_l of the row after the current one
        dh = inp.new_empty(L, d, k.M)
        W_cT, W_lT, W_rT, W_outT = (w.transpose(1, 2) for w in (W_c, W_l, W_r, W_out))
        for t in reversed(range(k.T)):
            a = k.active(t)
            n, nxt = a.stop - a.start, slice(a.start + 1, a.stop + 1)
            dy = d_y_steps[a, :, t]
            dy.add_(d_centre[nxt, :C2, t + 1])  # + dL/dx_{l+1}[i]
            dh_t = dh[:n]
            torch.baddbmm(d_centre[a, C2:, t + 1], W_outT[a], dy, out=dh_t)  # dL/dh_l[i]
            dc_t = dc[a]
            dc_t.addcmul_(dh_t, dc_from_h[t, a])
            dg = d_g[a, :, t]  # (n, 4h, M)
            torch.mul(dh_t, fac_o[t, a], out=dg[:, :d])
            torch.mul(dc_t.unsqueeze(1), fac_fig[t, a], out=dg[:, d:].unflatten(1, (3, d)))
            dc_t.mul_(f[t, a])  # dL/dc_l[i-1]
            d_centre[a, :, t].baddbmm_(W_cT[a], dg)  # dL/d[x_l[i]; h_l[i-1]], the three taps
            d_left[a, :, t].baddbmm_(W_lT[a], dg)
            d_right[a, C2:, t].baddbmm_(W_rT[a], dg)
            if ctx.residual:
                d_centre[a, :C2, t].add_(d_centre[nxt, :C2, t + 1])
        # weight gradients, every step at once: d_gates and inp are aligned column for column
        R, B_, P = k.R, k.B, k.P
        g_c = torch.bmm(d_gates, inp[:L].transpose(1, 2))
        g_l = torch.bmm(d_gates[..., B_:], inp[:L, :, : R - B_].transpose(1, 2))
        g_r = torch.bmm(d_gates[..., : R - B_], inp[:L, C2:, B_:].transpose(1, 2))
        g_out = torch.bmm(d_y[..., : R - P], inp[:L, C2:, P:].transpose(1, 2))  # h_l[i] is a step later
        g_cond = k.rows(d_gates) if ctx.cond and ctx.needs_input_grad[5] else None
        d_x0 = k.rows(d_inp[:1, :C2]).squeeze(0)
        d_h0 = torch.diagonal(d_centre[:L, C2:], 0, 0, 2).sum(1).t()  # (L, h)
        return (
            d_x0, g_c, g_l, g_r, d_gates.sum(-1), g_cond, g_out, d_y.sum(-1), d_h0, dc.sum(-1), None
        )  # fmt: skip
