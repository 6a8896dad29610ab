"""Mixed precision (``torch.autocast``) for the custom autograd functions: the one place that knows the
policy.

Autocast only rewrites the out-of-place operators it lists (matmuls, convolutions); in-place ones
(``addmm_``, ``baddbmm_``, ``out=``) keep their arguments' dtypes and refuse a mix. Our fast paths
accumulate in place into preallocated buffers, so each custom function runs with autocast *off* and its
floating inputs cast to one dtype, chosen by its caller:

* whole-map matmuls (K_is over the map, the 1x1 convolutions of the stack and head): the autocast dtype
  (bf16 / fp16), as autocast would run them;
* recurrences (:class:`~pixel_lightning.nn.lstm_cell.LSTMScan`, the wavefront): float32. The cell state
  c is a running sum over up to W + H - 1 steps, and 8 bits of mantissa lose it; in fp32 a step is also
  what it is without autocast (the recurrence at small batch is bound by launches, not by FLOPs).

Without autocast nothing is cast and nothing is wrapped: the fp32 paths are the same operations, bit for
bit. The loss, the softmax/sigmoid and the likelihood are fp32 (:func:`~pixel_lightning.models.base.
log_likelihood` casts the logits); sampling runs with autocast off (``AutoregressiveImageModel.sample``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast computes matmuls in on ``x``'s device, or None when autocast is off there."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def cast(args: tuple[Any, ...], dtype: torch.dtype) -> list[Any]:
    """Floating tensors of ``args`` cast to ``dtype`` (differentiable casts); everything else as is."""
    return [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]


def apply_autocast_free(fn: type[torch.autograd.Function], dtype: str | None, *args: Any) -> Any:
    """``fn.apply(*args)``, or under autocast: with autocast off and the floating inputs cast to the
    autocast dtype (``dtype="autocast"``, whole-map matmuls), to float32 (``"float32"``, recurrences)
    or left as they are (None, layout only). The first argument must be a tensor (it names the device).
    Under torch.compile the Functions Dynamo cannot trace run as opaque operators (nn/opaque.py)."""
    amp = autocast_dtype(args[0])
    if amp is not None and dtype is not None:
        args = tuple(cast(args, amp if dtype == "autocast" else torch.float32))
    if torch.compiler.is_compiling():
        from pixel_lightning.nn.opaque import replacement

        op = replacement(fn)
        if op is not None:
            return op(*args)
    if amp is None:
        return fn.apply(*args)
    with torch.autocast(args[0].device.type, enabled=False):
        return fn.apply(*args)


def autocast_free_backward(backward: Callable[..., Any]) -> Callable[..., Any]:
    """A custom function's ``backward`` with autocast off on its gradients' device: it accumulates in
    place into buffers of the forward's dtype, whatever autocast state the caller's ``backward()`` runs
    in (Lightning calls it outside autocast; a user's loop on the CPU may not)."""

    @functools.wraps(backward)
    def run(ctx: Any, *grads: Any) -> Any:
        devices = [g.device.type for g in grads if g is not None]
        if not devices:  # no gradient reached the outputs (materialize_grads off)
            return backward(ctx, *grads)
        with torch.autocast(devices[0], enabled=False):
            return backward(ctx, *grads)

    return run
