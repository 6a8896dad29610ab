"""Peak training memory of each recipe at paper scale, and the largest batch that fits a GPU (issue 20).

    python -m benchmarks.memory --out benchmarks/results/memory.json           # every recipe (minutes)
    python -m benchmarks.memory --recipes cifar10_row_lstm --batches 2 4 --check-batch 16
    python -m benchmarks.memory --quick                                         # tiny, for the tests

For each recipe its model is built as it would train on CUDA (``common.cuda_model``: a Row LSTM as one
wavefront), and one training step (``common.train_step``: forward, backward, RMSProp) runs after a
warm-up step under ``torch.profiler`` with ``profile_memory``: every tensor allocation and free of the
step, in order, gives the live bytes over time, exactly (the allocator's slack and cached blocks are not
in it). The peak is the live bytes when the step starts (weights, RMSProp's state, the batch) plus
the highest rise above them during the step (gradients included).

Memory is affine in the batch: ``peak(b) = fixed + b x per_image``; two batches give the line and a
third checks it (``--check-batch``; default the recipe's batch, up to 16 and up to a predicted
``--max-check-gib`` of 8, so that the check fits this machine): the columns ``predicted`` and
``measured``. ``fits`` is the largest batch whose peak stays under a GPU's memory less ``--reserve-gib``
(default 1 GiB for the CUDA context, cuDNN/cuBLAS workspaces and the caching allocator's slack). Counted
on the CPU with the CUDA code path selected, not measured on a GPU: ``benchmarks/gpu_check.py`` reads
CUDA's own peak.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks import common

GIB = 2**30
GPUS_GIB = (24, 40, 80)
RECIPES = [
    "mnist_pixelcnn",
    "mnist_row_lstm",
    "mnist_diagonal_bilstm_7l",
    "cifar10_pixelcnn",
    "cifar10_row_lstm",
    "cifar10_diagonal_bilstm",
    "cifar10_multiscale_row_lstm",
    "imagenet32_row_lstm",
    "imagenet64_row_lstm",
    "imagenet64_multiscale_row_lstm",
]
QUICK = ["model.hidden=4", "model.layers=1", "model.head_channels=8"]


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def step_peak(recipe: str, batch: int, overrides: list[str]) -> dict[str, Any]:
    """Peak live tensor bytes of one training step of ``recipe`` at ``batch`` (after a warm-up step)."""
    from torch.profiler import ProfilerActivity, profile

    cfg, model = common.cuda_model(recipe, overrides)
    x = common.images(model, batch)
    step = common.train_step(model, x)
    step()  # RMSProp's state exists from here on, as in every later step
    step.optimizer.zero_grad(set_to_none=True)  # as the step begins (so the profiler sees every free)
    params = list(model.parameters())
    state = [v for s in step.optimizer.state.values() for v in s.values()]
    at_start = tensor_bytes(params) + tensor_bytes(state) + tensor_bytes([x])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    live = rise = 0
    for e in events:  # allocations positive, frees negative
        live += e.nbytes()
        rise = max(rise, live)
    return {
        "recipe": recipe,
        "batch": batch,
        "params_bytes": tensor_bytes(params),
        "peak_bytes": at_start + rise,
    }


def recipe_row(
    recipe: str,
    batches: list[int],
    check: int,
    overrides: list[str],
    threads: int,
    reserve: float,
    max_check_gib: float = 8.0,
) -> dict[str, Any]:
    """The line through the peaks at the two smallest ``batches``, checked at ``check`` (0: the recipe's
    own batch up to 16 and to ``max_check_gib`` predicted; -1: no check), and the largest batch for each
    GPU size."""
    from pixel_lightning.config import load_config

    torch.set_num_threads(threads)
    recipe_batch = load_config(recipe, overrides).data.batch_size
    runs = {b: step_peak(recipe, b, overrides) for b in sorted(batches)[:2]}
    (b1, r1), (b2, r2) = runs.items()
    per_image = (r2["peak_bytes"] - r1["peak_bytes"]) / (b2 - b1)
    fixed = r1["peak_bytes"] - b1 * per_image
    if check == 0:  # the recipe's batch, up to 16 and to what this machine holds
        check = min(recipe_batch, 16, int((max_check_gib * GIB - fixed) // per_image))
    if check > b2:
        runs[check] = step_peak(recipe, check, overrides)
    row = {
        "recipe": recipe,
        "recipe_batch": recipe_batch,
        "params_bytes": r1["params_bytes"],
        "peaks_mib": {b: round(r["peak_bytes"] / 2**20, 3) for b, r in runs.items()},
        "per_image_gib": per_image / GIB,
        "fixed_gib": fixed / GIB,
        "at_recipe_batch_gib": (fixed + recipe_batch * per_image) / GIB,
        "fits": {f"{m} GiB": int(((m - reserve) * GIB - fixed) // per_image) for m in GPUS_GIB},
    }
    if check > b2:
        row["check"] = {
            "batch": check,
            "predicted_gib": (fixed + check * per_image) / GIB,
            "measured_gib": runs[check]["peak_bytes"] / GIB,
        }
    return row


def fmt(r: dict[str, Any]) -> str:
    check = r.get("check")
    checked = "no check"
    if check:
        checked = f"batch {check['batch']}: predicted {check['predicted_gib']:.2f}, measured "
        checked += f"{check['measured_gib']:.2f} GiB"
    fits = ", ".join(f"{k}: {v}" for k, v in r["fits"].items())
    per_image, fixed = r["per_image_gib"] * 1024, r["fixed_gib"] * 1024
    return (
        f"{r['recipe']:32s} per image {per_image:8.1f} MiB  fixed {fixed:7.1f} MiB  at batch "
        f"{r['recipe_batch']}: {r['at_recipe_batch_gib']:6.2f} GiB  ({checked})  largest batch {fits}"
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=RECIPES)
    p.add_argument("--batches", nargs="+", type=int, default=[2, 4], help="the line's batches")
    p.add_argument("--check-batch", type=int, default=0, help="0: the recipe's batch up to 16; -1: none")
    p.add_argument("--max-check-gib", type=float, default=8.0, help="largest predicted peak to check")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reserve-gib", type=float, default=1.0, help="GPU memory kept for the CUDA context")
    p.add_argument("--overrides", nargs="*", default=[], help="key=value settings of every recipe")
    p.add_argument("--quick", action="store_true", help="tiny models of two recipes (seconds)")
    p.add_argument("--out", help="write the rows as JSON here")
    a = p.parse_args(argv)
    if a.quick:
        a.recipes, a.overrides, a.check_batch = ["quickstart", "cifar10_row_lstm"], QUICK, 8
    rows = []
    for recipe in a.recipes:
        row = recipe_row(
            recipe, a.batches, a.check_batch, a.overrides, a.threads, a.reserve_gib, a.max_check_gib
        )
        rows.append(row)
        print(fmt(rows[-1]), flush=True)
    common.save_rows(a.out, rows)
    return rows


if __name__ == "__main__":
    main()
