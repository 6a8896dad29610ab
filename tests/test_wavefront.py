"""The wavefront Row LSTM stack and the 1x1-as-matmul paths compute the same function and gradients
as the layer-by-layer code they replace (issue 14)."""

import pytest
import torch
import torch.nn.functional as F
from helpers import COMBOS, tiny_model

from pixel_lightning.nn.masked_conv import MaskedConv2d, channel_layout, pointwise, pointwise_sum
from pixel_lightning.nn.row_lstm import RowLSTMLayer
from pixel_lightning.nn.wavefront import RowLSTMStack, RowLSTMWavefront


def _both_paths(model, x, stack=None):
    """log p(x) and every parameter gradient, with the wavefront on and off."""
    stack = model.net.stack if stack is None else stack
    assert isinstance(stack, RowLSTMStack)
    out = []
    for wavefront in (True, False):
        stack.wavefront = wavefront
        lp = model.log_prob(x)
        grads = torch.autograd.grad(lp.sum(), list(model.parameters()), allow_unused=True)
        out.append((lp, grads))
    return out


def _assert_same(results, tol=1e-10):
    (lp1, g1), (lp2, g2) = results
    assert (lp1 - lp2).abs().max() < tol
    for a, b in zip(g1, g2, strict=True):
        assert (a is None) == (b is None)
        assert a is None or (a - b).abs().max() < tol


@pytest.mark.parametrize("residual,skip", COMBOS)
@pytest.mark.parametrize("shape,levels,layers", [((1, 5, 3), 2, 3), ((3, 4, 5), 4, 2), ((3, 2, 6), 256, 4)])
def test_wavefront_equals_layer_by_layer(shape, levels, layers, residual, skip):
    """Odd shapes (H < L too), binary and RGB, every residual/skip combination: same log p, same grads."""
    m = tiny_model("row_lstm", shape, levels, residual, skip, layers=layers, hidden=max(4, shape[0]))
    assert m.config.wavefront is None and m.net.stack.wavefront is None  # default: on CUDA, off on CPU
    x = torch.randint(0, levels, (3, *shape), generator=torch.Generator().manual_seed(1))
    _assert_same(_both_paths(m, x))


def test_wavefront_with_conditioning_map():
    """The multi-scale conditioning map (cond_channels > 0) enters every layer's gates the same way."""
    torch.manual_seed(0)
    layers = [RowLSTMLayer(4, 3, cond_channels=2) for _ in range(3)]
    stack = RowLSTMStack(layers, 8, 3, residual=True, skip=True).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in stack.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    x = torch.randn(2, 8, 5, 3, generator=g, dtype=torch.float64).requires_grad_()
    cond = torch.randn(2, 2, 5, 3, generator=g, dtype=torch.float64).requires_grad_()
    w = torch.randn(2, 8, 5, 3, generator=g, dtype=torch.float64)
    res = []
    for wavefront in (True, False):
        stack.wavefront = wavefront
        out = stack(x, cond)
        res.append((out, torch.autograd.grad((out * w).sum(), [x, cond, *stack.parameters()])))
    (a, ga), (b, gb) = res
    assert (a - b).abs().max() < 1e-12
    for p, q in zip(ga, gb, strict=True):
        assert (p - q).abs().max() < 1e-10


def test_wavefront_auto_follows_the_device(monkeypatch):
    """wavefront=None runs the wavefront for CUDA maps only (checked here on CPU: the reference path)."""
    import pixel_lightning.nn.wavefront as wf

    m = tiny_model("row_lstm", (1, 3, 3), 2)
    calls = []
    monkeypatch.setattr(wf, "row_lstm_wavefront", lambda *a: calls.append(1) or wf.LayerStack.forward(*a))
    m.log_prob(torch.zeros(1, 1, 3, 3, dtype=torch.long))
    assert not calls
    m.net.stack.wavefront = True
    m.log_prob(torch.zeros(1, 1, 3, 3, dtype=torch.long))
    assert calls


def test_wavefront_in_multiscale_model():
    """The multi-scale Row LSTM's conditional body runs the wavefront with its conditioning map."""
    from pixel_lightning import build_model

    torch.manual_seed(0)
    m = build_model("multiscale", base="row_lstm", image_shape=(1, 4, 4), levels=2, low_res=2, hidden=4,
                    layers=2, head_channels=8).double()  # fmt: skip
    assert isinstance(m.full.stack, RowLSTMStack) and m.full.stack.layers[0].cond is not None
    x = torch.randint(0, 2, (2, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    res = []
    for wavefront in (True, False):
        m.low.stack.wavefront = m.full.stack.wavefront = wavefront
        lp = m.log_prob(x)
        res.append((lp, torch.autograd.grad(lp.sum(), list(m.parameters()), allow_unused=True)))
    _assert_same(res)


def test_wavefront_gradcheck():
    """The hand-written backward of :class:`RowLSTMWavefront`, every input, float64, tiny size."""
    L, d, H, W, B = 2, 2, 3, 2, 2
    g = torch.Generator().manual_seed(0)

    def r(*s):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * 0.7).requires_grad_()

    args = [r(2 * d, H, W, B), r(L, 4 * d, 3 * d), r(L, 4 * d, 3 * d), r(L, 4 * d, d), r(L, 4 * d),
            r(L, 4 * d, H, W, B), r(L, 2 * d, d), r(L, 2 * d), r(L, d), r(L, d)]  # fmt: skip
    for residual in (True, False):
        assert torch.autograd.gradcheck(lambda *a, r=residual: RowLSTMWavefront.apply(*a, r), args)


def test_wavefront_cached_sampling_equals_naive():
    """Sampling reads the same layers: cached == naive with the wavefront used by the naive pass."""
    m = tiny_model("row_lstm", (3, 3, 4), 4, layers=3, wavefront=True)
    assert m.net.stack.wavefront
    a = m.sample(2, generator=torch.Generator().manual_seed(3), cache=True)
    b = m.sample(2, generator=torch.Generator().manual_seed(3), cache=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("layout", ["channels_last", "nchw", "hwbc"])
def test_pointwise_equals_conv(layout):
    """A 1x1 MaskedConv2d as a matmul (channels innermost, positions in any order) or conv2d (NCHW):
    same values and gradients as F.conv2d with the masked kernel; the output keeps the layout."""
    g = torch.Generator().manual_seed(0)
    conv = MaskedConv2d(6, 9, 1, "B", 3).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64))
    x = torch.randn(2, 6, 4, 5, generator=g, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "hwbc":  # what the wavefront's skip sum gives: (H, W, B, C) in memory
        x = x.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)
    x.requires_grad_()
    y = conv(x)
    ref = F.conv2d(x, conv.weight * conv.mask, conv.bias)
    assert (y - ref).abs().max() < 1e-12
    assert sorted(range(4), key=lambda d: -y.stride(d)) == sorted(range(4), key=lambda d: -x.stride(d))
    w = torch.randn(y.shape, generator=g, dtype=torch.float64)
    for a, b in zip(
        torch.autograd.grad((y * w).sum(), [x, conv.weight, conv.bias]),
        torch.autograd.grad((ref * w).sum(), [x, conv.weight, conv.bias]),
        strict=True,
    ):
        assert (a - b).abs().max() < 1e-12


@pytest.mark.parametrize("layout", ["channels_last", "nchw", "rows", "strided"])
def test_pointwise_sum_equals_sum_of_convs(layout):
    """The skip sum accumulated with addmm_/baddbmm_ equals the sum of separate 1x1 convolutions, in
    every memory layout (channels inner, outer, between position dims; a non-dense view)."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    if layout == "channels_last":
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    elif layout == "rows":  # memory order (H, C, W, B), as the Row LSTM stack keeps its maps
        xs = [x.permute(2, 1, 3, 0).contiguous().permute(3, 1, 0, 2) for x in xs]
        assert channel_layout(xs[0]) == ((2,), (3, 0))
    elif layout == "strided":
        xs = [torch.randn(2, 4, 3, 10, generator=g, dtype=torch.float64)[..., ::2] for _ in range(3)]
        assert channel_layout(xs[0]) is None
    xs = [x.requires_grad_() for x in xs]
    ws = [torch.randn(6, 4, generator=g, dtype=torch.float64).requires_grad_() for _ in xs]
    b = torch.randn(6, generator=g, dtype=torch.float64).requires_grad_()
    out = pointwise_sum(xs, ws, b)
    if layout != "strided":
        assert channel_layout(out) == channel_layout(xs[0])  # the output keeps the layout
    ref = sum(F.conv2d(x, w[:, :, None, None]) for x, w in zip(xs, ws, strict=True)) + b.view(1, -1, 1, 1)
    assert (out - ref).abs().max() < 1e-12
    assert (pointwise(xs[0], ws[0], b) - F.conv2d(xs[0], ws[0][:, :, None, None], b)).abs().max() < 1e-12
    v = torch.randn(out.shape, generator=g, dtype=torch.float64)
    for p, q in zip(
        torch.autograd.grad((out * v).sum(), [*xs, *ws, b]),
        torch.autograd.grad((ref * v).sum(), [*xs, *ws, b]),
        strict=True,
    ):
        assert (p - q).abs().max() < 1e-12
