"""The LSTM update shared by Row LSTM and Diagonal BiLSTM (paper Equation 3)."""

from __future__ import annotations

import torch


def lstm_update(gates: torch.Tensor, c_prev: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from pre-activations ``gates`` = [o, f, i, g] stacked along ``dim`` (4h there).

    o, f, i pass through a sigmoid, g through a tanh (not a sigmoid: a known bug of public versions):
        c = f * c_prev + i * g,   h = o * tanh(c)
    Returns (h, c), each shaped like ``c_prev``.
    """
    o, f, i, g = gates.chunk(4, dim=dim)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c
