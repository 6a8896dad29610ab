"""The one FLOP counter (benchmarks/common.py) and the paper-scale estimate that counts with it."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks import common, launches
from scripts import paper_scale

TINY_ROW_LSTM = ["model.arch=row_lstm", "model.hidden=4", "model.layers=2", "model.head_channels=8"]


class MatrixProducts(TorchDispatchMode):
    """2 m k n for every matrix product the step dispatches, in place or not, counted from the shapes
    alone (an independent count: no torch FLOP table). A dispatch mode (torch.utils._python_dispatch, a
    private module) because only it sees the operators of the backward pass."""

    PRODUCTS = {"mm": 0, "bmm": 0, "mv": 0, "addmm": 1, "addmm_": 1, "baddbmm": 1, "baddbmm_": 1}

    def __init__(self) -> None:
        super().__init__()
        self.flops, self.others = 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.PRODUCTS:
            a, b = args[self.PRODUCTS[name] : self.PRODUCTS[name] + 2]
            self.flops += 2 * a.numel() * (b.shape[-1] if b.dim() > 1 else 1)
        elif "conv" in name or "mm" in name or "mv" in name:
            self.others.add(name)
        return func(*args, **(kwargs or {}))


def test_flop_counter_counts_in_place_and_matrix_vector_products():
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    with common.flop_counter() as fc:
        torch.zeros(3, 5).addmm_(a, b)  # 2 x 3 x 4 x 5
        torch.zeros(2, 3, 5).baddbmm_(a.expand(2, 3, 4), b.expand(2, 4, 5))  # 2 x (2 x 3 x 4 x 5)
        torch.mv(a, torch.randn(4))  # 2 x 3 x 4
    assert fc.get_total_flops() == 120 + 240 + 24


def test_paper_scale_estimate_counts_every_product_of_a_step_as_launches_does():
    """The estimate's FLOPs (affine in the batch, from steps of 1 and 2 images) equal an independent count
    of every matrix product of a real step at the recipe's batch, and its FLOPs and calls at 2 images equal
    benchmarks/launches.py's: a tiny Row LSTM as on CUDA (the wavefront, whose products are in-place
    ``baddbmm_``, which torch's plain FlopCounterMode misses)."""
    cfg, model = common.cuda_model("quickstart", [*TINY_ROW_LSTM, "data.batch_size=3"])
    assert cfg.model.wavefront is True
    cost = paper_scale.step_cost(model, cfg.data.batch_size)
    model.zero_grad(set_to_none=True)
    with MatrixProducts() as products:
        common.forward_backward(model, common.images(model, 3))
    assert products.others == set()  # no convolution or other product left uncounted
    assert cost["flops"] == products.flops > 0

    model.zero_grad(set_to_none=True)
    calls, flops = launches.step_counts(model, common.images(model, 2))
    assert (cost["flops_batch2"], cost["calls"]) == (flops, sum(calls.values()))


def test_the_estimate_runs_at_the_peak_the_recipes_matmul_precision_selects():
    """Issue 22: the recipes switch TF32 on for CUDA runs (trainer.matmul_precision=high, issue 20), so the
    estimate's products run at the TF32 peak; with ``highest`` at the fp32 peak. The calls do not change."""
    tiny = ["model.hidden=4", "model.layers=1", "model.head_channels=8"]
    peaks = dict(tflops=67.0, utilization=0.5, us_per_call=8.0, tflops_tf32=495.0)
    default = paper_scale.estimate("cifar10_row_lstm", **peaks, overrides=tiny)
    fp32 = paper_scale.estimate(
        "cifar10_row_lstm", **peaks, overrides=[*tiny, "trainer.matmul_precision=highest"]
    )
    assert (default["matmul_precision"], default["peak_tflops"]) == ("high", 495.0)
    assert (fp32["matmul_precision"], fp32["peak_tflops"]) == ("highest", 67.0)
    assert default["calls"] == fp32["calls"] and default["flops"] == fp32["flops"] > 0
    assert default["step_ms"]["flop"] * 495 == pytest.approx(fp32["step_ms"]["flop"] * 67)
    assert default["fp32_step_ms"] == fp32["step_ms"]
