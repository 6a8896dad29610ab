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
