"""The hand-written recurrences as opaque operators for ``torch.compile`` (issue 20).

:class:`~pixel_lightning.nn.lstm_cell.LSTMScan` and :class:`~pixel_lightning.nn.wavefront.RowLSTMWavefront`
are autograd Functions whose loops accumulate in place into strided views of preallocated buffers: fast
in eager, and not traceable by Dynamo (``out=`` on non-contiguous views). Tracing them would not be
wanted anyway: their loops unroll into one graph node per kernel of every step (a CIFAR-10 Row LSTM step
is thousands), and compile time grows with them. So under ``torch.compile`` each runs as a pair of custom
operators (``torch.library.custom_op``): the forward, which also returns what the backward needs, and the
backward, each one node of the network's graph running the same eager code. The rest of the network (the
first layer, the whole-map matmuls, the residual/skip sums, the head, the likelihood) is traced and
fused around them: one graph per step, no graph break. Eager runs call the Functions directly.

A custom operator's fake (shape) implementation is its real body run on fake tensors: the loops only
allocate and view, so the outputs' strides are exactly the real ones (inductor lays out what follows by
them). That needs static shapes: the model compiles with ``dynamic=False`` (models/base.py).
"""

from typing import Any

import torch
from torch import Tensor


class ReplayContext:
    """A stand-in for an autograd ``ctx``: holds what a Function's forward saves and sets, so its
    ``forward`` and ``backward`` static methods can run inside custom operators."""

    def __init__(self, saved: tuple[Tensor, ...] = (), **attrs: Any) -> None:
        self.saved_tensors = saved
        self.needs_input_grad = attrs.pop("needs_input_grad", ())
        self.__dict__.update(attrs)

    def save_for_backward(self, *tensors: Tensor) -> None:
        self.saved_tensors = tensors

    def set_materialize_grads(self, value: bool) -> None:
        pass


def no_autocast(x: Tensor) -> torch.autocast:
    """Autocast off on ``x``'s device: an operator body accumulates in place in its inputs' dtype."""
    return torch.autocast(x.device.type, enabled=False)


def opaque_op(name: str, body: Any) -> Any:
    """``body`` as the custom operator ``pixel_lightning::name``, its fake implementation the same
    ``body`` run on fake tensors (module docstring)."""
    op = torch.library.custom_op(f"pixel_lightning::{name}", body, mutates_args=())
    op.register_fake(body)
    return op


# ----------------------------------------------------------------------------- LSTMScan


def _scan(s: Tensor, K_ss: Tensor, h0: Tensor, c0: Tensor, taps: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """LSTMScan.forward: (hs, act, cs); act and cs are what the backward reads."""
    from pixel_lightning.nn.lstm_cell import LSTMScan

    ctx = ReplayContext()
    with no_autocast(s):
        hs = LSTMScan.forward(ctx, s, K_ss, h0, c0, tuple(taps))
    _, _, act, cs = ctx.saved_tensors
    return hs, act, cs


def _scan_grad(
    dhs: Tensor, K_ss: Tensor, h0: Tensor, act: Tensor, cs: Tensor, taps: list[int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """LSTMScan.backward: the gradients of s, K_ss, h0, c0."""
    from pixel_lightning.nn.lstm_cell import LSTMScan

    ds, dK, dh0, dc0, _ = LSTMScan.backward(ReplayContext((K_ss, h0, act, cs), taps=tuple(taps)), dhs)
    return ds, dK, dh0, dc0


scan_op, scan_grad_op = opaque_op("lstm_scan", _scan), opaque_op("lstm_scan_grad", _scan_grad)


def _scan_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    _, K_ss, h0, _, taps = inputs
    _, act, cs = output
    ctx.save_for_backward(K_ss, h0, act, cs)
    ctx.taps = list(taps)
    ctx.mark_non_differentiable(act, cs)


def _scan_backward(ctx: Any, dhs: Tensor, *_: Tensor) -> tuple:
    K_ss, h0, act, cs = ctx.saved_tensors
    return (*scan_grad_op(dhs, K_ss, h0, act, cs, ctx.taps), None)


scan_op.register_autograd(_scan_backward, setup_context=_scan_setup)


def lstm_scan(s: Tensor, K_ss: Tensor, h0: Tensor, c0: Tensor, taps: tuple[int, ...]) -> Tensor:
    """``LSTMScan.apply`` under torch.compile."""
    return scan_op(s, K_ss, h0, c0, list(taps))[0]


# ----------------------------------------------------------------------------- RowLSTMWavefront


def _wave(
    x0: Tensor, W_c: Tensor, W_l: Tensor, W_r: Tensor, bias: Tensor, s_cond: Tensor | None,
    W_out: Tensor, b_out: Tensor, h0: Tensor, c0: Tensor, residual: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """RowLSTMWavefront.forward: (ys, x_last, inp, act, cs). x_last is a copy (an operator's outputs
    may not share memory; in the Function it is a view of inp)."""
    from pixel_lightning.nn.wavefront import RowLSTMWavefront

    ctx = ReplayContext()
    with no_autocast(x0):
        ys, x_last = RowLSTMWavefront.forward(
            ctx, x0, W_c, W_l, W_r, bias, s_cond, W_out, b_out, h0, c0, residual
        )
    *_, inp, act, cs = ctx.saved_tensors
    return ys, x_last.clone(), inp, act, cs


def _wave_grad(
    d_ys: Tensor, d_x_last: Tensor, W_c: Tensor, W_l: Tensor, W_r: Tensor, W_out: Tensor, inp: Tensor,
    act: Tensor, cs: Tensor, residual: bool, shape: list[int], cond: bool,
) -> list[Tensor]:  # fmt: skip
    """RowLSTMWavefront.backward: the gradients of x0 .. c0 (that of s_cond empty without one)."""
    from pixel_lightning.nn.wavefront import RowLSTMWavefront

    needs = (False,) * 5 + (cond,)
    ctx = ReplayContext((W_c, W_l, W_r, W_out, inp, act, cs), residual=residual, shape=tuple(shape),
                        cond=cond, needs_input_grad=needs)  # fmt: skip
    grads = RowLSTMWavefront.backward(ctx, d_ys, d_x_last)[:10]
    return [g if g is not None else d_ys.new_empty(0) for g in grads]


wave_op, wave_grad_op = (
    opaque_op("row_lstm_wavefront", _wave),
    opaque_op("row_lstm_wavefront_grad", _wave_grad),
)


def _wave_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    x0, W_c, W_l, W_r, _, s_cond, W_out, *_, residual = inputs
    _, _, inp, act, cs = output
    ctx.save_for_backward(W_c, W_l, W_r, W_out, inp, act, cs)
    ctx.residual, ctx.shape, ctx.cond = residual, list(x0.shape[1:]), s_cond is not None
    ctx.mark_non_differentiable(inp, act, cs)


def _wave_backward(ctx: Any, d_ys: Tensor, d_x_last: Tensor, *_: Tensor) -> tuple:
    grads = wave_grad_op(d_ys, d_x_last, *ctx.saved_tensors, ctx.residual, ctx.shape, ctx.cond)
    grads[5] = grads[5] if ctx.cond else None
    return (*grads, None)


wave_op.register_autograd(_wave_backward, setup_context=_wave_setup)


def row_lstm_wavefront(*args: Any) -> tuple[Tensor, Tensor]:
    """``RowLSTMWavefront.apply`` under torch.compile."""
    ys, x_last, *_ = wave_op(*args)
    return ys, x_last


# ----------------------------------------------------------------------------- Diagonal BiLSTM


def _skew(x: Tensor, K_ext: Tensor) -> Tensor:
    from pixel_lightning.nn.diagonal_lstm import SkewInputToState

    with no_autocast(x):
        return SkewInputToState.forward(ReplayContext(), x, K_ext)


def _skew_grad(ds: Tensor, x: Tensor, K_ext: Tensor) -> tuple[Tensor, Tensor]:
    from pixel_lightning.nn.diagonal_lstm import SkewInputToState

    return SkewInputToState.backward(ReplayContext((x, K_ext)), ds)


skew_op, skew_grad_op = (
    opaque_op("skew_input_to_state", _skew),
    opaque_op("skew_input_to_state_grad", _skew_grad),
)


def _skew_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _skew_backward(ctx: Any, ds: Tensor) -> tuple[Tensor, Tensor]:
    return tuple(skew_grad_op(ds, *ctx.saved_tensors))


skew_op.register_autograd(_skew_backward, setup_context=_skew_setup)


def _unskew(hs: Tensor, width: int) -> Tensor:
    from pixel_lightning.nn.diagonal_lstm import UnskewMerge

    return UnskewMerge.forward(ReplayContext(), hs, width)


def _unskew_grad(dout: Tensor, shape: list[int], width: int, shift: int) -> Tensor:
    from pixel_lightning.nn.diagonal_lstm import UnskewMerge

    return UnskewMerge.backward(ReplayContext(shape=torch.Size(shape), W=width, k=shift), dout)[0]


unskew_op, unskew_grad_op = opaque_op("unskew_merge", _unskew), opaque_op("unskew_merge_grad", _unskew_grad)


def _unskew_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    from pixel_lightning.nn.diagonal_lstm import BACKWARD_SHIFT

    hs, width = inputs
    ctx.shape, ctx.W, ctx.k = list(hs.shape), width, BACKWARD_SHIFT


def _unskew_backward(ctx: Any, dout: Tensor) -> tuple[Tensor, None]:
    return unskew_grad_op(dout, ctx.shape, ctx.W, ctx.k), None


unskew_op.register_autograd(_unskew_backward, setup_context=_unskew_setup)


def replacement(fn: type[torch.autograd.Function]) -> Any:
    """The operator form of ``fn`` under torch.compile, or None for a Function Dynamo traces itself."""
    from pixel_lightning.nn.diagonal_lstm import SkewInputToState, UnskewMerge
    from pixel_lightning.nn.lstm_cell import LSTMScan
    from pixel_lightning.nn.wavefront import RowLSTMWavefront

    ops = {LSTMScan: lstm_scan, RowLSTMWavefront: row_lstm_wavefront, SkewInputToState: skew_op,
           UnskewMerge: unskew_op}  # fmt: skip
    return ops.get(fn)
