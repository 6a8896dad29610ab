"""The LSTM update shared by Row LSTM and Diagonal BiLSTM (paper Equation 3)."""

from __future__ import annotations

import torch


def lstm_update(gates: torch.Tensor, c_prev: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from pre-activations ``gates`` = [o, f, i, g] stacked along ``dim`` (4h there).

    o, f, i pass through a sigmoid, g through a tanh (not a sigmoid: a known bug of public versions):
        c = f * c_prev + i * g,   h = o * tanh(c)
    Returns (h, c), each shaped like ``c_prev``. Six kernels: one sigmoid over the contiguous o, f, i
    block, one tanh, f * c_prev, addcmul, tanh, mul (slices are views; this runs 385 times per layer
    and pass in a 28x28 Diagonal BiLSTM, so the kernel count is the cost).
    """
    n = gates.shape[dim] // 4
    ofi = torch.sigmoid(gates.narrow(dim, 0, 3 * n))
    g = torch.tanh(gates.narrow(dim, 3 * n, n))
    c = torch.addcmul(ofi.narrow(dim, n, n) * c_prev, ofi.narrow(dim, 2 * n, n), g)
    h = ofi.narrow(dim, 0, n) * torch.tanh(c)
    return h, c


def lstm_scan(
    s: torch.Tensor, K_ss: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, taps: tuple[int, ...]
) -> torch.Tensor:
    """Run an LSTM whose state-to-state map K_ss is a 1D convolution along a slice of N positions.

    Shared by Row LSTM (a step is a row, N = W, taps (-1, 0, 1)) and Diagonal BiLSTM (a step is a skewed
    column, N = H, taps (-1, 0): rows r-1 and r; G = 2 directions batched in one matmul). Per step:

        gates_t = s_t + K_ss @ [h_{t-1}(n + o) for o in taps]       (zero outside the slice)
        h_t, c_t = lstm_update(gates_t, c_{t-1})                     (paper Equation 3)

    A custom autograd Function (:class:`LSTMScan`) on preallocated, feature-major buffers (every gate
    block is one contiguous slice): per step one ``baddbmm`` and seven elementwise kernels forward,
    about fifteen backward, and the K_ss gradient of all steps as one matmul after the loop. Equal to
    autograd through the plain loop (tests/test_speed_exact.py).

    Args:
        s: (T, G, 4h, B, N) input-to-state pre-activations, every bias included; gates [o, f, i, g].
        K_ss: (G, 4h, len(taps) * h) state-to-state weights, columns tap-major.
        h0, c0: (G, h, B, N) initial states.
    Returns:
        (T, G, h, B, N) hidden states of every step.
    """
    return LSTMScan.apply(s, K_ss, h0, c0, tuple(taps))


def _tap_ranges(N: int, o: int) -> tuple[slice, slice]:
    """Destination and source positions along N of tap o: inp[n] = h[n + o] for 0 <= n + o < N."""
    return slice(max(0, -o), N - max(0, o)), slice(max(0, o), N + min(0, o))


class LSTMScan(torch.autograd.Function):
    """Forward and backward of :func:`lstm_scan` (backpropagation through time written out)."""

    @staticmethod
    def forward(ctx, s, K_ss, h0, c0, taps):
        T, G, d4, B, N = s.shape
        d, k, M = d4 // 4, len(taps), B * N
        inp = s.new_zeros(T, G, k, d, B, N)  # taps(h_{t-1}); zero where a tap leaves the slice
        act = s.new_empty(T, G, d4, M)  # sigmoid(o, f, i), tanh(g)
        cs = s.new_empty(T + 1, G, d, M)  # c_{-1} .. c_{T-1}
        tc = s.new_empty(T, G, d, M)  # tanh(c_t)
        hs = s.new_empty(T, G, d, B, N)
        cs[0] = c0.reshape(G, d, M)
        ranges = [_tap_ranges(N, o) for o in taps]
        h = h0
        for t in range(T):
            x = inp[t]  # (G, k, h, B, N)
            for q, (dst, src) in enumerate(ranges):
                x[:, q, :, :, dst] = h[..., src]
            a = act[t]
            torch.baddbmm(s[t].view(G, d4, M), K_ss, x.view(G, k * d, M), out=a)  # gates (G, 4h, M)
            a[:, : 3 * d].sigmoid_()
            a[:, 3 * d :].tanh_()
            c = cs[t + 1]
            torch.mul(a[:, d : 2 * d], cs[t], out=c)
            c.addcmul_(a[:, 2 * d : 3 * d], a[:, 3 * d :])
            torch.tanh(c, out=tc[t])
            h = hs[t]
            torch.mul(a[:, :d], tc[t], out=h.view(G, d, M))
        ctx.save_for_backward(K_ss, inp, act, cs, tc)
        ctx.taps = taps
        return hs

    @staticmethod
    def backward(ctx, dhs):
        K_ss, inp, act, cs, tc = ctx.saved_tensors
        dhs = dhs.contiguous()
        T, G, k, d, B, N = inp.shape
        M = B * N
        ranges = [_tap_ranges(N, o) for o in taps] if (taps := ctx.taps) else []
        dgates = act.new_empty(T, G, 4 * d, M)
        dh_next = act.new_zeros(G, d, B, N)
        dc = act.new_zeros(G, d, M)
        K_t = K_ss.transpose(1, 2)  # (G, k*h, 4h)
        for t in range(T - 1, -1, -1):
            dh = (dhs[t] + dh_next).view(G, d, M)
            a, tct = act[t], tc[t]
            o, f, i, g = a[:, :d], a[:, d : 2 * d], a[:, 2 * d : 3 * d], a[:, 3 * d :]
            dc = dc.addcmul_(dh * o, 1 - tct * tct)  # through h = o * tanh(c)
            dg = dgates[t]
            torch.mul(dh, tct, out=dg[:, :d])  # d o
            torch.mul(dc, cs[t], out=dg[:, d : 2 * d])  # d f
            torch.mul(dc, g, out=dg[:, 2 * d : 3 * d])  # d i
            torch.mul(dc, i, out=dg[:, 3 * d :])  # d g
            ofi = a[:, : 3 * d]
            dg[:, : 3 * d].mul_(ofi - ofi * ofi)  # sigmoid' = s (1 - s)
            dg[:, 3 * d :].mul_(1 - g * g)  # tanh' = 1 - tanh^2
            dc = dc * f
            dx = torch.bmm(K_t, dg).view(G, k, d, B, N)  # d taps(h_{t-1})
            dh_next = act.new_zeros(G, d, B, N)
            for q, (dst, src) in enumerate(ranges):
                dh_next[..., src] += dx[:, q, :, :, dst]
        # K_ss gradient of every step at once: sum_t dgates_t @ taps_t^T
        dK = torch.einsum("tgam,tgbm->gab", dgates, inp.view(T, G, k * d, M))
        ds = dgates.view(T, G, 4 * d, B, N)
        return ds, dK, dh_next, dc.view(G, d, B, N), None
