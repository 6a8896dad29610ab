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

from pixel_lightning.nn.amp import apply_autocast_free, autocast_free_backward
from pixel_lightning.nn.lstm_cell import lstm_factors
from pixel_lightning.nn.masked_conv import pointwise_sum, require_cond
from pixel_lightning.nn.row_lstm import RowLSTMLayer, from_chwb, to_chwb
from pixel_lightning.nn.stack import LayerStack


class RowLSTMStack(LayerStack):
    """:class:`LayerStack` of Row LSTM layers; ``wavefront=True`` runs :func:`row_lstm_wavefront`,
    False the layer-by-layer loop (the reference), None chooses at run time: the wavefront for CUDA
    maps (a step is a few kernel launches, and it has L times fewer steps), layer by layer on CPU (where
    the wavefront measured slower: benchmarks/README.md). Cached sampling is the inherited one."""

    def __init__(
        self, layers: Sequence[RowLSTMLayer], width: int, colours: int, residual: bool, skip: bool,
        wavefront: bool | None = None,
    ) -> None:  # fmt: skip
        super().__init__(layers, width, colours, residual, skip)
        self.wavefront = wavefront

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        use = x.is_cuda if self.wavefront is None else self.wavefront
        if use and self.layers:
            return row_lstm_wavefront(self, x, cond)
        # layer by layer: every map channels-outermost (RowLSTMLayer.pre_output), one copy in and one
        # out (the head's softmax wants the levels innermost, as channels-last has them)
        x = from_chwb(to_chwb(x), x.shape)  # (B, 2h, H, W), memory order (2h, H, W, B)
        return super().forward(x, cond).contiguous(memory_format=torch.channels_last)


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
    ys, x_last = apply_autocast_free(
        RowLSTMWavefront, "float32",
        x.permute(1, 2, 3, 0), W_c, W_l, W_r, bias, s_cond, W_out, b_out, h0, c0, stack.residual,
    )  # (L, H*W*B, 2h), (2h, H, W, B); a recurrence: fp32 under autocast (nn/amp.py)  # fmt: skip
    if not stack.skip:
        return x_last.permute(3, 0, 1, 2).contiguous(memory_format=torch.channels_last)
    # sum_l S_l y_l: each y_l is an (H*W*B, 2h) matrix, i.e. a map with channels innermost in the
    # position order (H, W, B), so pointwise_sum accumulates the products into one such map; the head's
    # 1x1 convolutions and the likelihood take that position order.
    maps = [y.view(H, W, B, 2 * d).permute(2, 3, 0, 1) for y in ys.unbind(0)]  # (B, 2h, H, W) views
    bias = torch.stack([s.bias for s in stack.skips]).sum(0)
    return pointwise_sum(maps, [s.matrix() for s in stack.skips], bias)  # (B, 2h, H, W)


class _Rows:
    """The padded row layout of a (..., R) buffer: rows r = 0 .. H, row r at columns B + r*P .. + M,
    each followed by B zero columns (P = M + B), so the column taps j-1 and j+1 are the same buffer
    shifted by -B and +B columns."""

    def __init__(self, H: int, W: int, B: int, L: int) -> None:
        self.H, self.W, self.B, self.L = H, W, B, L
        self.T = H + L - 1  # wavefront steps
        self.M = W * B  # positions of a row
        self.P = self.M + B
        self.R = 2 * B + (H + 1) * self.P

    def rows(self, buf: torch.Tensor, shift: int = 0) -> torch.Tensor:
        """(L, F, R) -> (L, H + 1, F, M) view of every row, its columns shifted by ``shift`` positions."""
        start = self.B + shift * self.B
        v = buf[..., start : start + (self.H + 1) * self.P].unflatten(-1, (self.H + 1, self.P))
        return v[..., : self.M].transpose(1, 2)

    def empty(self, like: torch.Tensor, *lead: int) -> torch.Tensor:
        """An uninitialised (*lead, R) buffer whose gaps and last row (r = H) are zero: the rows
        r < H are written before they are read."""
        buf = like.new_empty(*lead, self.R)
        B, P, M, H = self.B, self.P, self.M, self.H
        buf[..., :B].zero_()
        rows = buf[..., B : B + (H + 1) * P].unflatten(-1, (H + 1, P))
        rows[..., M:].zero_()  # the gap after every row
        rows[..., H, :M].zero_()
        buf[..., B + (H + 1) * P :].zero_()
        return buf

    def active(self, t: int) -> slice:
        """Layers that process a row at step t: l with 0 <= t - l < H."""
        return slice(max(0, t - self.H + 1), min(self.L - 1, t) + 1)


def diag(v: torch.Tensor, t: int, a: slice) -> torch.Tensor:
    """The wavefront's slice of a (L, rows, ...) view: (n, ...) entries (l, t - l) for l in ``a``.
    One ``as_strided`` (the layer stride exceeds the row stride in every buffer here)."""
    sL, sR = v.stride(0), v.stride(1)
    offset = v.storage_offset() + a.start * sL + (t - a.start) * sR
    return v.as_strided((a.stop - a.start, *v.shape[2:]), (sL - sR, *v.stride()[2:]), offset)


class RowLSTMWavefront(torch.autograd.Function):
    """Forward and backward of the Row LSTM stack's recurrence on the wavefront (module docstring).

    forward(x0 (2h, H, W, B), W_c (L, 4h, 3h), W_l (L, 4h, 3h), W_r (L, 4h, h), bias (L, 4h),
            s_cond (L, 4h, H, W, B) or None, W_out (L, 2h, h), b_out (L, 2h), h0 (L, h), c0 (L, h),
            residual) -> (y (L, H*W*B, 2h) every layer's residual branch, x_L (2h, H, W, B))

    Per step forward: three ``baddbmm`` (taps j, j-1, j+1), the six-kernel LSTM update, one
    ``baddbmm_`` for the 1x1 output convolution and the residual add, each over the active layers.
    Backward runs the same steps in reverse with the gradient factors precomputed for every row
    (:func:`~pixel_lightning.nn.lstm_cell.lstm_factors`); the weight gradients are one GEMM per tap
    over every row. Buffers are stored per (layer, row), layer-major; a step's slice is the diagonal
    (:func:`diag`). Saved: the inputs [x; h] (3h), the activations (4h) and c (h) per position.
    """

    @staticmethod
    def forward(ctx, x0, W_c, W_l, W_r, bias, s_cond, W_out, b_out, h0, c0, residual):
        ctx.set_materialize_grads(False)
        C2, H, W, B = x0.shape
        L, d4, _ = W_c.shape
        d = d4 // 4
        k = _Rows(H, W, B, L)
        inp = k.empty(x0, L + 1, 3 * d)  # row r of layer l: [x_l[r]; h_l[r-1]]; slot L: x_L
        centre, left, right = k.rows(inp), k.rows(inp, -1), k.rows(inp, 1)  # (L+1, H+1, 3h, M)
        centre[0, :H, :C2].unflatten(-1, (W, B)).copy_(x0.transpose(0, 1))
        centre[:L, 0, C2:].copy_(h0[:, :, None].expand(L, d, k.M))
        cs = x0.new_empty(L, H + 1, d, k.M)  # c_l[r - 1]
        cs[:, 0] = c0[:, :, None]
        act = x0.new_empty(L, H, d4, k.M)  # gates, then activations
        base = None
        if s_cond is not None:  # bias + conditioning, written into the gates before the steps
            torch.add(s_cond.transpose(1, 2), bias[:, None, :, None, None], out=act.unflatten(-1, (W, B)))
        else:
            base = bias[:, :, None]  # (L, 4h, 1)
        ys = x0.new_empty(L, H, k.M, C2)  # y_l[i], position-major: a (H*M, 2h) matrix per layer
        ys.copy_(b_out[:, None, None].expand_as(ys))
        tc = x0.new_empty(L, d, k.M)
        W_outT = W_out.transpose(1, 2)
        for t in range(k.T):
            a = k.active(t)
            n = a.stop - a.start
            g = diag(act, t, a)  # (n, 4h, M)
            torch.baddbmm(g if base is None else base[a], W_c[a], diag(centre, t, a), out=g)
            g.baddbmm_(W_l[a], diag(left, t, a))
            g.baddbmm_(W_r[a], diag(right, t, a)[:, C2:])
            g[:, : 3 * d].sigmoid_()  # o, f, i
            g[:, 3 * d :].tanh_()  # g
            c = diag(cs[:, 1:], t, a)
            torch.mul(g[:, d : 2 * d], diag(cs, t, a), out=c)
            c.addcmul_(g[:, 2 * d : 3 * d], g[:, 3 * d :])
            torch.tanh(c, out=tc[:n])
            h = diag(centre[:, 1:], t, a)[:, C2:]  # h_l[i], read by the next row
            torch.mul(g[:, :d], tc[:n], out=h)
            y = diag(ys, t, a)  # (n, M, 2h)
            y.baddbmm_(h.transpose(1, 2), W_outT[a])  # 1x1 output convolution, onto its bias
            x_next = diag(centre[1:], t, a)[:, :C2]  # x_{l+1}[i]
            if residual:
                torch.add(diag(centre, t, a)[:, :C2], y.transpose(1, 2), out=x_next)
            else:
                x_next.copy_(y.transpose(1, 2))
        ctx.save_for_backward(W_c, W_l, W_r, W_out, inp, act, cs)
        ctx.residual, ctx.shape, ctx.cond = residual, (H, W, B), s_cond is not None
        x_last = centre[L, :H, :C2].transpose(0, 1).unflatten(-1, (W, B))  # (2h, H, W, B)
        return ys.view(L, H * k.M, C2), x_last

    @staticmethod
    @autocast_free_backward
    def backward(ctx, d_ys, d_x_last):
        W_c, W_l, W_r, W_out, inp, act, cs = ctx.saved_tensors
        H, W, B = ctx.shape
        L, d4, _ = W_c.shape
        d, C2 = d4 // 4, W_out.shape[1]
        k = _Rows(H, W, B, L)
        dc_from_h, fac_o, fac_fig, _ = lstm_factors(act, cs[:, :-1], cs[:, 1:])  # every row at once
        f = act[:, :, d : 2 * d]
        d_inp = torch.zeros_like(inp)
        d_centre, d_left, d_right = k.rows(d_inp), k.rows(d_inp, -1), k.rows(d_inp, 1)
        d_gates = k.empty(inp, L, d4)  # padded like inp: zero between rows
        d_g = k.rows(d_gates)
        if d_ys is None:  # total gradient of y_l[i]
            d_y = inp.new_zeros(L, H, k.M, C2)
        else:
            d_y = d_ys.reshape(L, H, k.M, C2).clone(memory_format=torch.contiguous_format)
        if d_x_last is not None:
            d_centre[L, :H, :C2].unflatten(-1, (W, B)).copy_(d_x_last.transpose(0, 1))
        dc = inp.new_zeros(L, d, k.M)  # dL/dc_l of the row after the current one
        dh = inp.new_empty(L, d, k.M)
        W_cT, W_lT, W_rT, W_outT = (w.transpose(1, 2) for w in (W_c, W_l, W_r, W_out))
        for t in reversed(range(k.T)):
            a = k.active(t)
            n = a.stop - a.start
            dy = diag(d_y, t, a).transpose(1, 2)  # (n, 2h, M)
            dx_next = diag(d_centre[1:], t, a)[:, :C2]  # dL/dx_{l+1}[i], complete
            dy.add_(dx_next)
            dh_t = dh[:n]
            torch.baddbmm(diag(d_centre[:, 1:], t, a)[:, C2:], W_outT[a], dy, out=dh_t)  # dL/dh_l[i]
            dc_t = dc[a]
            dc_t.addcmul_(dh_t, diag(dc_from_h, t, a))
            dg = diag(d_g, t, a)  # (n, 4h, M)
            torch.mul(dh_t, diag(fac_o, t, a), out=dg[:, :d])
            torch.mul(dc_t.unsqueeze(1), diag(fac_fig, t, a), out=dg[:, d:].unflatten(1, (3, d)))
            dc_t.mul_(diag(f, t, a))  # dL/dc_l[i-1]
            diag(d_centre, t, a).baddbmm_(W_cT[a], dg)  # dL/d[x_l[i]; h_l[i-1]], the three taps
            diag(d_left, t, a).baddbmm_(W_lT[a], dg)
            diag(d_right, t, a)[:, C2:].baddbmm_(W_rT[a], dg)
            if ctx.residual:
                diag(d_centre, t, a)[:, :C2].add_(dx_next)
        # weight gradients, every row at once: d_gates and inp are aligned column for column
        R, B_ = k.R, k.B
        g_c = torch.bmm(d_gates, inp[:L].transpose(1, 2))
        g_l = torch.bmm(d_gates[..., B_:], inp[:L, :, : R - B_].transpose(1, 2))
        g_r = torch.bmm(d_gates[..., : R - B_], inp[:L, C2:, B_:].transpose(1, 2))
        h = k.rows(inp)[:L, 1:, C2:].transpose(2, 3).reshape(L, H * k.M, d)  # h_l[i] (L, H*M, h)
        g_out = torch.bmm(d_y.view(L, H * k.M, C2).transpose(1, 2), h)
        g_cond = None
        if ctx.cond and ctx.needs_input_grad[5]:
            g_cond = d_g[:, :H].transpose(1, 2).unflatten(-1, (W, B))  # (L, 4h, H, W, B)
        d_x0 = d_centre[0, :H, :C2].transpose(0, 1).unflatten(-1, (W, B))
        d_h0 = d_centre[:L, 0, C2:].sum(-1)  # (L, h)
        return (
            d_x0, g_c, g_l, g_r, d_gates.sum(-1), g_cond, g_out, d_y.sum((1, 2)), d_h0, dc.sum(-1), None
        )  # fmt: skip
