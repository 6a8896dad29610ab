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


@pytest.mark.parametrize("kernel", [3, 5, 7, (1, 3), (1, 5), (3, 1)])
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("colours", [1, 3])
def test_masked_conv_causal_rows_equal_full_kernel(kernel, mask_type, colours):
    """MaskedConv2d convolves with the causal kernel rows only; the output equals the full masked
    kernel's, for every size, mask and colour split, in both memory formats."""
    from pixel_lightning.nn.masked_conv import MaskedConv2d

    torch.manual_seed(0)
    conv = _randomize(MaskedConv2d(6, 9, kernel, mask_type, colours).double())
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    full = torch.nn.functional.conv2d(x, conv.weight * conv.mask, conv.bias, padding=(kh // 2, kw // 2))
    assert torch.allclose(conv(x), full, atol=1e-12, rtol=0)
    xc = x.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(conv(xc), full, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kernel", [3, 5, (3, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_causal_conv_gradient_equals_full_kernel(kernel, channels_last):
    """The causal-rows convolution's gradients (input, weight, bias) equal the full masked kernel's,
    through :class:`~pixel_lightning.nn.masked_conv.FirstRows`, whose backward pads the gradient in
    the convolution's own memory format (checked: it is what it claims to be)."""
    from pixel_lightning.nn.masked_conv import FirstRows, MaskedConv2d

    torch.manual_seed(0)
    conv = _randomize(MaskedConv2d(6, 9, kernel, "B", 3).double())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    w = torch.randn(2, 9, 5, 7, dtype=torch.float64)
    full = torch.nn.functional.conv2d(x, conv.weight * conv.mask, conv.bias, padding=(kh // 2, kw // 2))
    params = [x, conv.weight, conv.bias]
    for a, b in zip(
        torch.autograd.grad((conv(x) * w).sum(), params),
        torch.autograd.grad((full * w).sum(), params),
        strict=True,
    ):
        assert (a - b).abs().max() < 1e-12
    y = torch.randn(2, 9, 7, 7, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    (dy,) = torch.autograd.grad((FirstRows.apply(y, 5) * w).sum(), [y])
    assert dy.is_contiguous(memory_format=fmt)
    assert torch.equal(dy[:, :, :5], w) and not dy[:, :, 5:].any()


@pytest.mark.parametrize("arch", ["pixelcnn", "row_lstm", "diagonal_bilstm"])
def test_channels_last_is_the_same_function(arch):
    """``channels_last`` changes only the memory layout: log p(x) and every gradient agree."""
    from helpers import tiny_model

    shape = (3, 5, 4)
    x = torch.randint(0, 4, (3, *shape), generator=torch.Generator().manual_seed(2))
    results = []
    for channels_last in (True, False):
        m = tiny_model(arch, shape, 4, layers=2, hidden=6)
        m.config.channels_last = channels_last
        lp = m.log_prob(x)
        grads = torch.autograd.grad(lp.sum(), list(m.parameters()), allow_unused=True)
        results.append((lp, grads))
    (lp1, g1), (lp2, g2) = results
    assert (lp1 - lp2).abs().max() < 1e-10
    for a, b in zip(g1, g2, strict=True):
        assert (a is None and b is None) or (a - b).abs().max() < 1e-9


@pytest.mark.parametrize(
    "arch",
    [
        "pixelcnn",
        pytest.param("row_lstm", marks=pytest.mark.slow),
        pytest.param("diagonal_bilstm", marks=pytest.mark.slow),
    ],
)
def test_compile_option_is_the_same_function(arch):
    """``compile=True`` wraps the network in torch.compile (about 30-45 s to compile here, so the LSTM
    cases are marked slow): log p(x) and the gradients equal the eager model's."""
    from helpers import tiny_model

    shape = (3, 4, 5)
    x = torch.randint(0, 4, (2, *shape), generator=torch.Generator().manual_seed(0))
    eager, compiled = tiny_model(arch, shape, 4), tiny_model(arch, shape, 4, compile=True)
    assert "forward" in vars(compiled.net) and "forward" not in vars(eager.net)  # really wrapped
    a, b = eager.log_prob(x), compiled.log_prob(x)
    assert (a - b).abs().max() < 1e-10
    ga = torch.autograd.grad(a.sum(), list(eager.parameters()), allow_unused=True)
    gb = torch.autograd.grad(b.sum(), list(compiled.parameters()), allow_unused=True)
    for p, q in zip(ga, gb, strict=True):
        assert (p is None and q is None) or (p - q).abs().max() < 1e-9


@pytest.mark.parametrize("layout", ["contiguous", "channels_last_head"])
def test_log_likelihood_equals_cross_entropy_in_any_layout(layout):
    """log_likelihood reads the K scores in the logits' memory order; the value is -cross-entropy."""
    from pixel_lightning.models.base import log_likelihood

    g = torch.Generator().manual_seed(0)
    B, K, C, H, W = 3, 7, 3, 4, 5
    if layout == "contiguous":
        logits = torch.randn(B, K, C, H, W, generator=g, dtype=torch.float64)
    else:  # what a channels-last head gives: (B, H, W, C, K) in memory, viewed (B, K, C, H, W)
        logits = torch.randn(B, H, W, C, K, generator=g, dtype=torch.float64).permute(0, 4, 3, 1, 2)
    x = torch.randint(0, K, (B, C, H, W), generator=g)
    expected = -torch.nn.functional.cross_entropy(logits, x, reduction="none").flatten(1).sum(1)
    assert (log_likelihood(logits, x, K) - expected).abs().max() < 1e-12


@pytest.mark.parametrize("arch", ["pixelcnn", "row_lstm", "diagonal_bilstm"])
@pytest.mark.parametrize("residual,skip", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("colours,cond", [(1, 0), (3, 2)])
def test_layer_stack_equals_its_definition(arch, residual, skip, colours, cond):
    """LayerStack computes the skip terms from each layer's pre-output maps with the product of the two
    1x1 matrices and drops the unused last residual; log p's body and every gradient equal the term-by-
    term wiring (forward_reference), in float64, with and without a conditioning map, grey and RGB."""
    from pixel_lightning import build_model

    m = build_model(
        arch, image_shape=(colours, 5, 4), levels=4, hidden=6, layers=3, head_channels=6,
        residual=residual, skip=skip, cond_channels=cond,
    ).double()  # fmt: skip
    _randomize(m)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 12, 5, 4, generator=g, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    c = torch.randn(2, cond, 5, 4, generator=g, dtype=torch.float64) if cond else None
    stack = m.net.stack
    fast, ref = stack(x, c), stack.forward_reference(x, c)
    assert (fast - ref).abs().max() < 1e-10
    w = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    params = [x, *stack.parameters()]
    ga = torch.autograd.grad((fast * w).sum(), params, allow_unused=True)
    gb = torch.autograd.grad((ref * w).sum(), params, allow_unused=True)
    for a, b in zip(ga, gb, strict=True):
        assert (a is None and b is None) or (a - b).abs().max() < 1e-9


@pytest.mark.parametrize("width,batch", [(5, 2), (1, 3), (4, 1)])
def test_row_input_to_state_gradcheck(width, batch):
    """The two-tap K_is of the channels-outermost Row LSTM (a per-row strided product for the j-1
    tap): gradcheck in float64, including one-column rows (no j-1 tap at all) and batch 1."""
    from pixel_lightning.nn.row_lstm import RowInputToState

    H, C, O = 3, 2, 4
    g = torch.Generator().manual_seed(0)
    args = [
        torch.randn(C, H * width * batch, generator=g, dtype=torch.float64).requires_grad_(),
        torch.randn(O, C, generator=g, dtype=torch.float64).requires_grad_(),
        torch.randn(O, C, generator=g, dtype=torch.float64).requires_grad_(),
        torch.randn(O, generator=g, dtype=torch.float64).requires_grad_(),
    ]
    assert torch.autograd.gradcheck(lambda *a: RowInputToState.apply(*a, width, batch), args)
    # the j-1 tap really reads column j-1 of the same row: compare with the 1x3 convolution
    x, K_c, K_l, b = (a.detach() for a in args)
    img = x.view(C, H, width, batch).permute(3, 0, 1, 2)  # (B, C, H, W)
    w = torch.stack([K_l, K_c, torch.zeros_like(K_c)], -1)[:, :, None]  # (O, C, 1, 3): taps j-1, j, j+1
    ref = torch.nn.functional.conv2d(img, w, b, padding=(0, 1))  # (B, O, H, W)
    out = RowInputToState.apply(x, K_c, K_l, b, width, batch).view(O, H, width, batch).permute(3, 0, 1, 2)
    assert (out - ref).abs().max() < 1e-12
