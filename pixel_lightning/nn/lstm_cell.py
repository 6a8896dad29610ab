"""The LSTM update shared by Row LSTM and Diagonal BiLSTM (paper Equation 3)."""

from __future__ import annotations

import torch

from pixel_lightning.nn.amp import apply_autocast_free, autocast_free_backward


def lstm_update(gates: torch.Tensor, c_prev: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from pre-activations ``gates`` = [o, f, i, g] stacked along ``dim`` (4h there).

    o, f, i pass through a sigmoid, g through a tanh (not a sigmoid: a known bug of public versions):
        c = f * c_prev + i * g,   h = o * tanh(c)
    Returns (h, c), each shaped like ``c_prev``. Six kernels: one sigmoid over the contiguous o, f, i
    block, one tanh, f * c_prev, addcmul, tanh, mul (slices are views). Used by the reference loops and
    the cached samplers; training runs the same update inside :func:`lstm_scan`.
    """
    n = gates.shape[dim] // 4
    ofi = torch.sigmoid(gates.narrow(dim, 0, 3 * n))
    g = torch.tanh(gates.narrow(dim, 3 * n, n))
    c = torch.addcmul(ofi.narrow(dim, n, n) * c_prev, ofi.narrow(dim, 2 * n, n), g)
    h = ofi.narrow(dim, 0, n) * torch.tanh(c)
    return h, c


def lstm_factors(
    act: torch.Tensor, c_prev: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The factors of backpropagation through :func:`lstm_update` that do not depend on the incoming
    gradients, for every step at once (sigmoid' = s (1 - s), tanh' = 1 - tanh^2):

        d o = dh * tanh(c) o'           dc += dh * o tanh'(c)
        d f = dc * c_prev f'   d i = dc * g i'   d g = dc * i g'      dc_prev = dc * f

    Written as x - x*y (one addcmul each) to keep the passes over these maps few.

    Args:
        act: (T, G, 4h, M) activations sigmoid(o, f, i), tanh(g) of every step (T, G: any batch dims).
        c_prev, c: (T, G, h, M) cell states before and after every step.
    Returns:
        (o tanh'(c), tanh(c) o', (c_prev f', g i', i g') stacked (T, G, 3, h, M), h = o tanh(c)).
    """
    T, G, d4, M = act.shape
    d = d4 // 4
    o, f, i, g = act.chunk(4, dim=2)
    tc = torch.tanh(c)
    h = o * tc
    dc_from_h = torch.addcmul(o, h, tc, value=-1)  # o (1 - tanh^2 c)
    fac_o = torch.addcmul(h, h, o, value=-1)  # tanh(c) o (1 - o)
    fac_fig = act.new_empty(T, G, 3, d, M)
    ff, fi, fg = fac_fig.unbind(2)
    torch.mul(c_prev, f, out=ff)
    ff.addcmul_(ff, f, value=-1)  # c_prev f (1 - f)
    torch.mul(g, i, out=fi)
    torch.addcmul(i, fi, g, value=-1, out=fg)  # i (1 - g^2)
    fi.addcmul_(fi, i, value=-1)  # g i (1 - i)
    return dc_from_h, fac_o, fac_fig, h


def lstm_scan(
    s: torch.Tensor, K_ss: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, taps: tuple[int, ...]
) -> torch.Tensor:
    """Run an LSTM whose state-to-state map K_ss is a 1D convolution along a slice of N positions.

    Shared by Row LSTM (a step is a row, N = W, taps (-1, 0, 1)) and Diagonal BiLSTM (a step is a skewed
    column, N = H, taps (-1, 0): rows r-1 and r; G = 2 directions batched in one matmul). Per step:

        gates_t = s_t + K_ss @ [h_{t-1}(n + o) for o in taps]       (zero outside the slice)
        h_t, c_t = lstm_update(gates_t, c_{t-1})                     (paper Equation 3)

    A custom autograd Function (:class:`LSTMScan`) on preallocated, feature-major buffers (every gate
    block is one contiguous slice). Per step: ``len(taps)`` tap copies, one ``baddbmm`` and six
    elementwise kernels forward; six kernels plus ``len(taps) - 1`` tap adds backward, because every
    factor that does not depend on the backward recursion (the activations' derivatives) is computed for
    all steps at once before the loop. Saved for backward: the activations and c only (5h per position);
    tanh(c), h and the tap inputs are recomputed vectorised. Equal to autograd through the plain loop
    (tests/test_speed_exact.py).

    Args:
        s: (T, G, 4h, N, B) input-to-state pre-activations, every bias included; gates [o, f, i, g].
            Position-major (N, B), so a tap (a shift along N) moves whole contiguous blocks.
        K_ss: (G, 4h, len(taps) * h) state-to-state weights, columns tap-major.
        h0, c0: (G, h, N, B) initial states.
    Returns:
        (T, G, h, N, B) hidden states of every step, stored feature-major (G, h, T, N, B) as the
        backward's gradient of ``s`` is: Row LSTM keeps its maps channels-outermost
        (:func:`pixel_lightning.nn.row_lstm.to_chwb`), so neither needs a copy there.
    """
    return apply_autocast_free(LSTMScan, "float32", s, K_ss, h0, c0, tuple(taps))  # fp32 recurrence


def _tap_ranges(N: int, B: int, o: int) -> tuple[slice, slice]:
    """Destination and source ranges of tap o in the flattened (N, B) axis: inp[n] = h[n + o] for
    0 <= n + o < N. Position-major (n outer, batch inner), so a tap is one contiguous block per row."""
    return slice(max(0, -o) * B, (N - max(0, o)) * B), slice(max(0, o) * B, (N + min(0, o)) * B)


def _taps(h: torch.Tensor, ranges: list[tuple[slice, slice]], out: torch.Tensor) -> torch.Tensor:
    """Write the tap inputs of h (..., d, N*B) into out (..., k, d, N*B); entries outside the slice
    are never written (they stay zero)."""
    for q, (dst, src) in enumerate(ranges):
        out[..., q, :, dst] = h[..., src]
    return out


class LSTMScan(torch.autograd.Function):
    """Forward and backward of :func:`lstm_scan` (backpropagation through time written out).

    Every per-step view (a step's gate blocks, states, tap slices) is made once before the loop with
    ``unbind``, so the loop body issues only the arithmetic kernels: at these sizes (a few thousand to
    a few hundred thousand elements) per-call overhead is a large part of a step (indexing the views
    inside the loop made the scan 1.7-1.8x slower; benchmarks/README.md).
    """

    @staticmethod
    def forward(ctx, s, K_ss, h0, c0, taps):
        T, G, d4, N, B = s.shape
        d, k, M = d4 // 4, len(taps), N * B
        ranges = [_tap_ranges(N, B, o) for o in taps]
        x = _taps(h0.reshape(G, d, M), ranges, s.new_zeros(G, k, d, M))  # taps(h_{t-1}), reused
        x_mat = x.view(G, k * d, M)
        x_dst = [x[:, q, :, dst] for q, (dst, _) in enumerate(ranges)]
        act = s.new_empty(T, G, d4, M)  # sigmoid(o, f, i), tanh(g)
        cs = s.new_empty(T + 1, G, d, M)  # c_{-1} .. c_{T-1}
        tc = s.new_empty(G, d, M)  # tanh(c_t), this step only
        hs = s.new_empty(G, d, T, M).permute(2, 0, 1, 3)  # (T, G, h, M) view, feature-major like s
        cs[0] = c0.reshape(G, d, M)
        h_src = [hs[..., src].unbind(0) for _, src in ranges]  # per tap, per step
        steps = zip(
            s.reshape(T, G, d4, M).unbind(0), act.unbind(0), act[:, :, : 3 * d].unbind(0),
            act[:, :, :d].unbind(0), act[:, :, d : 2 * d].unbind(0), act[:, :, 2 * d : 3 * d].unbind(0),
            act[:, :, 3 * d :].unbind(0), cs[:-1].unbind(0), cs[1:].unbind(0), hs.unbind(0),
            strict=True,
        )  # fmt: skip
        for t, (s_t, a, ofi, o, f, i, g, c_prev, c, h) in enumerate(steps):
            if t:
                for q in range(k):
                    x_dst[q].copy_(h_src[q][t - 1])
            torch.baddbmm(s_t, K_ss, x_mat, out=a)  # gates (G, 4h, M)
            ofi.sigmoid_()
            g.tanh_()
            torch.mul(f, c_prev, out=c)
            c.addcmul_(i, g)
            torch.tanh(c, out=tc)
            torch.mul(o, tc, out=h)
        ctx.save_for_backward(K_ss, h0, act, cs)
        ctx.taps = taps
        return hs.unflatten(3, (N, B))

    @staticmethod
    @autocast_free_backward
    def backward(ctx, dhs):
        K_ss, h0, act, cs = ctx.saved_tensors
        T, G, d4, M = act.shape
        d, k, (N, B) = d4 // 4, len(ctx.taps), h0.shape[-2:]
        dhs = dhs.reshape(T, G, d, M)
        ranges = [_tap_ranges(N, B, o) for o in ctx.taps]
        centre = ctx.taps.index(0)
        dc_from_h, fac_o, fac_fig, hs = lstm_factors(act, cs[:-1], cs[1:])  # hs: for the K_ss gradient
        f = act[:, :, d : 2 * d]
        dgates = act.new_empty(G, d4, T, M).permute(2, 0, 1, 3)  # (T, G, 4h, M) view, steps inner
        dx = act.new_empty(G, k, d, M)  # d taps(h_{t-1}) of the current step
        dx_mat = dx.view(G, k * d, M)
        dh_next = dx[:, centre]  # the other taps are added into it
        tap_adds = [
            (dh_next[..., src], dx[:, q, :, dst]) for q, (dst, src) in enumerate(ranges) if q != centre
        ]
        dc = act.new_zeros(G, d, M)
        K_t = K_ss.transpose(1, 2)  # (G, k*h, 4h)
        steps = zip(
            dhs.unbind(0), dc_from_h.unbind(0), fac_o.unbind(0), fac_fig.unbind(0),
            f.unbind(0), dgates.unbind(0), dgates[:, :, :d].unbind(0),
            dgates[:, :, d:].unflatten(2, (3, d)).unbind(0), strict=True,
        )  # fmt: skip
        dc3 = dc.unsqueeze(1)  # (G, 1, h, M) view, broadcast over f, i, g
        for t, (dh_t, dcf_t, fo_t, ffig_t, f_t, dg, dg_o, dg_fig) in enumerate(reversed(list(steps))):
            dh = dh_t if t == 0 else dh_t + dh_next
            dc.addcmul_(dh, dcf_t)  # through h = o * tanh(c)
            torch.mul(dh, fo_t, out=dg_o)
            torch.mul(dc3, ffig_t, out=dg_fig)
            dc.mul_(f_t)
            torch.bmm(K_t, dg, out=dx_mat)
            for dst, src in tap_adds:
                dst.add_(src)
        del dc_from_h, fac_o, fac_fig, dcf_t, fo_t, ffig_t  # free the factors before the next buffers
        # K_ss gradient of every step at once: sum_t dgates_t @ taps(h_{t-1})^T, taps rebuilt here
        # (both laid out (G, ., T, M), so this is one GEMM per group over all T*M columns)
        inp = act.new_zeros(G, k, d, T, M)
        for q, (dst, src) in enumerate(ranges):
            inp[:, q, :, 1:, dst] = hs[:-1, :, :, src].permute(1, 2, 0, 3)
            inp[:, q, :, 0, dst] = h0.reshape(G, d, M)[..., src]
        dg = dgates.permute(1, 2, 0, 3).reshape(G, d4, T * M)  # a view: dgates is stored (G, 4h, T, M)
        dK = torch.bmm(dg, inp.view(G, k * d, T * M).transpose(1, 2))
        shape = (G, d, N, B)
        return dgates.unflatten(3, (N, B)), dK, dh_next.reshape(shape), dc.view(shape), None
