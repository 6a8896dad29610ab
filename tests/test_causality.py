"""Causality per pixel and per colour channel, checked against the receptive field the paper gives.

For every output sub-pixel (c, p) we compute the Jacobian of its logits with respect to every input
sub-pixel (c', q) and compare its non-zero pattern, exactly, with the receptive field composed from the
paper's layer definitions (Table 1, Sections 3.1-3.4): no dependence on later pixels or on colours at
or after c of the same pixel (causality), and dependence on all the context the paper gives (Row LSTM:
the triangle above; Diagonal BiLSTM: everything above and to the left; PixelCNN: its growing window,
blind spot included).
"""

import pytest
import torch
from helpers import COMBOS, SINGLE_SCALE, observed_dependencies, tiny_model


def _first_layer(H, W, k):
    """mask A k x k: rows above within k//2, same row to the left within k//2, plus self."""
    r = k // 2

    def nbr(i, j):
        out = {(i, j)}
        for a in range(i - r, i + 1):
            for b in range(j - r, j + r + 1):
                if 0 <= a < H and 0 <= b < W and (a < i or b < j):
                    out.add((a, b))
        return out

    return nbr


def _layer(arch, H, W):
    """Input positions of one body layer that position (i, j) reads, itself included."""
    if arch == "pixelcnn":  # 3x3 mask B
        return _first_layer(H, W, 3)
    if arch == "row_lstm":  # triangle: row i-k, columns j-k-1 .. j+k (Section 3.1)
        return lambda i, j: {
            (i - k, b) for k in range(i + 1) for b in range(j - k - 1, j + k + 1) if 0 <= b < W
        }
    # diagonal BiLSTM: the whole available context (Section 3.2)
    return lambda i, j: {(a, b) for a in range(H) for b in range(W) if a < i or (a == i and b <= j)}


def predicted_dependencies(arch, shape, layers, first_kernel):
    """Input sub-pixels each output sub-pixel may and must depend on, composed layer by layer.

    dep[g][p] = the input sub-pixels (c', q) that feature group g at position p depends on. The first
    layer (mask A) reads every colour of the earlier positions in its kernel and colours < g at p;
    a body layer reads every group at the other positions of its neighbourhood and groups <= g at p
    (mask B); the head (1x1, mask B) gives colour c the dependencies of group c.
    """
    C, H, W = shape
    P = [(i, j) for i in range(H) for j in range(W)]
    first = _first_layer(H, W, first_kernel)
    dep = [
        {p: {(c, q) for q in first(*p) if q != p for c in range(C)} | {(c, p) for c in range(g)} for p in P}
        for g in range(C)
    ]
    layer = _layer(arch, H, W)
    for _ in range(layers):
        dep = [
            {p: set().union(dep[g][p], *(dep[C - 1][q] for q in layer(*p) if q != p)) for p in P}
            for g in range(C)
        ]
    pred = torch.zeros(C, H, W, C, H, W, dtype=torch.bool)
    for c in range(C):
        for (i, j), subpixels in dep[c].items():
            for c2, (a, b) in subpixels:
                pred[c, i, j, c2, a, b] = True
    return pred


@pytest.mark.parametrize("arch", SINGLE_SCALE)
@pytest.mark.parametrize("residual,skip", COMBOS)
def test_receptive_field_rgb(arch, residual, skip):
    shape = (3, 5, 5)
    model = tiny_model(
        arch, shape, 4, residual, skip, layers=2, first_kernel=3, hidden=12, head_channels=24, zero_bias=True
    )
    seen = observed_dependencies(model.network, shape, trials=6)
    pred = predicted_dependencies(arch, shape, 2, 3)
    leaks = (seen & ~pred).nonzero().tolist()
    assert not leaks, f"{arch}: depends on sub-pixels it must not see (c,i,j <- c',i',j'): {leaks[:5]}"
    missing = (pred & ~seen).nonzero().tolist()
    assert not missing, f"{arch}: ignores context the paper says it has: {missing[:5]}"


@pytest.mark.parametrize("arch", SINGLE_SCALE)
@pytest.mark.parametrize("shape", [(1, 4, 6), (3, 4, 3)])
def test_receptive_field_default_first_layer(arch, shape):
    model = tiny_model(
        arch,
        shape,
        2 if shape[0] == 1 else 3,
        layers=1,
        first_kernel=7,
        hidden=12,
        head_channels=24,
        zero_bias=True,
    )
    seen = observed_dependencies(model.network, shape, trials=6)
    assert torch.equal(seen, predicted_dependencies(arch, shape, 1, 7))


def test_diagonal_backward_direction_is_shifted_down():
    """Without the one-row shift the backward direction would see (i, j+1) of the same row: the
    prediction is then violated, so this test fails on that bug."""
    from pixel_lightning.nn import diagonal_lstm

    shape = (1, 3, 4)
    model = tiny_model("diagonal_bilstm", shape, 2, layers=1, first_kernel=3, zero_bias=True)
    original = diagonal_lstm.BACKWARD_SHIFT
    diagonal_lstm.BACKWARD_SHIFT = 0  # the training path (UnskewMerge) and the reference read it
    try:
        seen = observed_dependencies(model.network, shape, trials=6)
    finally:
        diagonal_lstm.BACKWARD_SHIFT = original
    assert (seen & ~predicted_dependencies("diagonal_bilstm", shape, 1, 3)).any()
