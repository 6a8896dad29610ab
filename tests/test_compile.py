"""``model.compile=true`` (issue 20): one graph per stage over a whole run through the CLI, no graph break
in the network (``torch._dynamo.explain``; none counted over a run), and the compiled network is the
same function.

The default run traces with the ``aot_eager`` backend: Dynamo's graphs, guards and recompiles and
AOTAutograd's joint graph (the opaque operators' fake and autograd rules, nn/opaque.py) are all the
same as with inductor, without minutes of C++ code generation on a 2-core host; the inductor runs are
marked slow."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch._dynamo.utils import counters

import pixel_lightning
from pixel_lightning.models import network
from pixel_lightning.runner import main as run_main

CASES = [(arch, []) for arch in sorted(pixel_lightning.ARCHITECTURES)]
CASES.append(("row_lstm", ["model.wavefront=true"]))
IDS = [arch + "-".join(["", *extra]) for arch, extra in CASES]
RUN = [
    "model.hidden=4",
    "model.layers=2",
    "model.head_channels=8",
    "model.compile=true",
    "trainer.max_steps=6",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "data.batch_size=2",
    "logger=none",
    "threads=1",
    "sample.n=2",
]


def graphs_of_a_run(arch: str, extra: list[str], out) -> int:
    """Graphs Dynamo compiled over a run: sanity validation, 6 training steps, a validation, a test on
    the best checkpoint and a cached sample grid (which does not call the network)."""
    torch._dynamo.reset()
    counters.clear()
    ms = ["model.cond_maps=4"] if arch == "multiscale" else []
    assert (
        run_main(["--recipe", "quickstart", "--out", str(out), f"model.arch={arch}", *RUN, *ms, *extra]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and math.isfinite(metrics["test/bits_per_dim"])
    assert not counters["graph_break"], dict(counters["graph_break"])
    return counters["stats"]["unique_graphs"]


# a run costs 4-12 s of tracing with aot_eager on the 2-core host: every architecture in the default run, the
# wavefront variant of the Row LSTM marked slow (its network traces without a break below, in the default run)
STAGE_CASES = [
    pytest.param(arch, extra, id=i, marks=pytest.mark.slow if extra else ())
    for (arch, extra), i in zip(CASES, IDS, strict=True)
]


@pytest.mark.parametrize("arch,extra", STAGE_CASES)
def test_one_graph_per_stage_over_a_run(arch, extra, tmp_path, monkeypatch):
    """Training compiles once, validation once (Lightning runs it under no_grad) and the test once (under
    inference_mode: other tensors, other guards): 3 graphs per compiled network (the multi-scale model
    has two), whatever the number of steps and batches. On the old code every step recompiled (43
    recompiles in 20 steps for PixelCNN) and the network broke into pieces."""
    monkeypatch.setitem(network.COMPILE_OPTIONS, "backend", "aot_eager")
    networks = 2 if arch == "multiscale" else 1
    assert graphs_of_a_run(arch, extra, tmp_path / "run") == 3 * networks


@pytest.mark.slow
@pytest.mark.parametrize("arch,extra", CASES, ids=IDS)
def test_one_graph_per_stage_with_inductor(arch, extra, tmp_path):
    """The same with the real backend (inductor's C++ code generation: tens of seconds per graph)."""
    networks = 2 if arch == "multiscale" else 1
    assert graphs_of_a_run(arch, extra, tmp_path / "run") == 3 * networks


@pytest.mark.parametrize("arch,extra", CASES, ids=IDS)
def test_whole_network_traces_without_a_break(arch, extra, monkeypatch):
    """``torch._dynamo.explain`` of the network forward and backward: one graph, no break."""
    kw = {"wavefront": True} if extra else {}
    if arch == "multiscale":
        kw.update(low_res=4, cond_maps=3)
    torch.manual_seed(0)
    model = pixel_lightning.build_model(arch, image_shape=(1, 8, 8), levels=2, hidden=3, layers=2, **kw)
    x = torch.randint(0, 2, (2, 1, 8, 8))
    parts = [model.low, model.full] if arch == "multiscale" else [model.net]
    for part in parts:
        xf = part.scale(x if part is not getattr(model, "low", None) else model.subsample(x))
        cond = model.conditioning(model.scale(x)).detach() if part is getattr(model, "full", None) else None
        report = torch._dynamo.explain(part)(xf, cond)
        assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


@pytest.mark.slow
@pytest.mark.parametrize("arch,extra", CASES, ids=IDS)
def test_compiled_network_is_the_same_function_bf16_and_fp32(arch, extra):
    """Compiled (inductor) against eager on the same weights: fp32 log p(x) and gradients agree to
    float rounding; under bf16 autocast both stay within 0.05 bits/dim of fp32."""
    torch._dynamo.reset()  # the models of earlier tests share the network's code object (recompile_limit)
    kw = {"wavefront": True} if extra else {}
    if arch == "multiscale":
        kw.update(low_res=4, cond_maps=3)
    torch.manual_seed(0)
    eager = pixel_lightning.build_model(arch, image_shape=(1, 8, 8), levels=2, hidden=4, layers=2, **kw)
    compiled = pixel_lightning.build_model(
        arch, image_shape=(1, 8, 8), levels=2, hidden=4, layers=2, compile=True, **kw
    )
    compiled.load_state_dict(eager.state_dict())
    x = torch.randint(0, 2, (3, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    a, b = eager.log_prob(x), compiled.log_prob(x)
    assert (a - b).abs().max() < 1e-3
    ga = torch.autograd.grad(a.sum(), list(eager.parameters()), allow_unused=True)
    gb = torch.autograd.grad(b.sum(), list(compiled.parameters()), allow_unused=True)
    for p, q in zip(ga, gb, strict=True):
        assert (p is None and q is None) or (p - q).abs().max() <= 1e-3 * (1 + p.abs().max())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        c = compiled.log_prob(x)
    assert (c - a).abs().max() / (eager.dims * math.log(2)) < 0.05


@pytest.mark.slow
def test_compile_speed_benchmark_quick(tmp_path):
    """benchmarks/compile_speed.py --quick: both timed, kernels counted, the JSON written."""
    from benchmarks import compile_speed

    n = torch.get_num_threads()
    try:
        rows = compile_speed.main(["--quick", "--archs", "pixelcnn", "--out", str(tmp_path / "c.json")])
    finally:
        torch.set_num_threads(n)
        network.COMPILE_OPTIONS.pop("backend", None)
    (row,) = rows
    assert row["compile_first_step_s"] > 0 and row["eager_median"] > 0 and row["compiled_median"] > 0
    assert row["eager_kernels_per_step"] > 0 and row["compiled_kernels_per_step"] > 0
    assert json.loads((tmp_path / "c.json").read_text())["rows"][0]["arch"] == "pixelcnn"
