"""The fast training paths compute the same function and gradients as the straightforward definitions
they replace (issue 6): the custom-autograd LSTM scan, the Row LSTM layer, the Diagonal BiLSTM layer."""

import pytest
import torch

from pixel_lightning.nn.diagonal_lstm import DiagonalBiLSTMLayer
from pixel_lightning.nn.lstm_cell import lstm_scan
from pixel_lightning.nn.row_lstm import RowLSTMLayer


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


@pytest.mark.parametrize("taps,G", [((-1, 0), 2), ((-1, 0, 1), 1)])
def test_lstm_scan_gradcheck(taps, G):
    T, B, N, d = 4, 2, 3, 2
    g = torch.Generator().manual_seed(0)
    args = [
        torch.randn(T, G, 4 * d, B, N, generator=g, dtype=torch.float64).requires_grad_(),
        torch.randn(G, 4 * d, len(taps) * d, generator=g, dtype=torch.float64).requires_grad_(),
        torch.randn(G, d, B, N, generator=g, dtype=torch.float64).requires_grad_(),
        torch.randn(G, d, B, N, generator=g, dtype=torch.float64).requires_grad_(),
    ]
    assert torch.autograd.gradcheck(lambda *a: lstm_scan(*a, taps), args)


@pytest.mark.parametrize(
    "layer,shape",
    [
        (lambda: RowLSTMLayer(6, 3), (3, 12, 4, 7)),
        (lambda: RowLSTMLayer(4, 1, cond_channels=2), (2, 8, 5, 3)),
        (lambda: DiagonalBiLSTMLayer(5, 1), (3, 10, 4, 6)),
        (lambda: DiagonalBiLSTMLayer(6, 3, cond_channels=2), (2, 12, 5, 3)),
    ],
)
def test_fast_layer_equals_reference(layer, shape):
    L = _randomize(layer().double())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_()
    cond = None
    if L.cond is not None:
        cond = torch.randn(shape[0], 2, *shape[2:], generator=g, dtype=torch.float64)
    fast, ref = L(x, cond), L.forward_reference(x, cond)
    assert (fast - ref).abs().max() < 1e-12
    w = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    params = [x, *L.parameters()]
    for a, b in zip(
        torch.autograd.grad((fast * w).sum(), params),
        torch.autograd.grad((ref * w).sum(), params),
        strict=True,
    ):
        assert (a - b).abs().max() < 1e-10
