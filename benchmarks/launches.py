"""Operator calls per training step (forward + backward), the model of GPU cost at small batch (issue 14).

    python -m benchmarks.launches --quick                               # tiny config (tests)
    python -m benchmarks.launches --out benchmarks/results/launches.json
    python -m benchmarks.launches --root /tmp/old --out benchmarks/results/launches_bc02ecb.json

One training step's forward and backward (no optimizer step) of each architecture, after a warm-up
step, is recorded with ``torch.profiler``. A *call* is a leaf ATen operator (one with no ATen operator
under it) that does work: metadata-only operators (views, reshapes, ``empty``) are not counted. On a
GPU each call is about one kernel launch, so at small batch, where a kernel's work is shorter than
its launch, the step costs about calls x launch overhead; the FLOPs (``FlopCounterMode``) give the
arithmetic term. ``--root`` counts another source tree (e.g. main at bc02ecb in a git worktree).
``--overrides '{"compile": true}'`` counts a compiled step (issue 20, :func:`count_compiled`): inductor's
generated kernels plus the ATen operators the graph still calls.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # this tree: benchmarks/ is imported from it

# operators that only make a new view or an uninitialised allocation, or answer a query about dtypes or
# shapes: no kernel on a GPU
METADATA = {
    "aten::view", "aten::_unsafe_view", "aten::reshape", "aten::as_strided", "aten::select",
    "aten::slice", "aten::unbind", "aten::permute", "aten::transpose", "aten::t", "aten::expand",
    "aten::expand_as", "aten::unsqueeze", "aten::squeeze", "aten::narrow", "aten::split",
    "aten::split_with_sizes", "aten::chunk", "aten::unflatten", "aten::flatten", "aten::alias",
    "aten::detach", "aten::detach_", "aten::diagonal", "aten::empty", "aten::empty_like",
    "aten::empty_strided", "aten::new_empty", "aten::new_empty_strided", "aten::resolve_conj",
    "aten::resolve_neg", "aten::lift_fresh", "aten::set_", "aten::resize_", "aten::to",
    "aten::contiguous", "aten::numpy_T", "aten::movedim", "aten::view_as", "aten::_reshape_alias",
    "aten::result_type", "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense",
    "aten::_has_compatible_shallow_copy_type", "aten::size", "aten::stride", "aten::numel",
    "aten::is_same_size", "aten::_nnz", "aten::as_strided_", "aten::unsqueeze_", "aten::squeeze_",
    "aten::t_", "aten::transpose_", "aten::_to_copy_meta", "aten::promote_types",
}  # fmt: skip


def step_counts(model, x) -> tuple[collections.Counter, int]:
    """Leaf operator calls (by name) and FLOPs (common.py's counter) of one training step's forward and
    backward on the images ``x``; scripts/paper_scale.py counts with it too."""
    from benchmarks.common import flop_counter, forward_backward

    with flop_counter() as fc:
        calls = calls_of(lambda: forward_backward(model, x))
    return calls, fc.get_total_flops()


def count(arch: str, config: str, batch: int, threads: int, overrides: dict | None = None) -> dict:
    """Calls and FLOPs of one training step (forward + backward) in this process. The calls do not
    depend on the batch size (every loop runs over rows, layers or sub-pixels, never over images)."""
    import torch

    from benchmarks.common import build, images

    torch.set_num_threads(threads)
    model = build(arch, config, **(overrides or {}))
    calls, flops = step_counts(model, images(model, batch))
    return {
        "arch": arch,
        "config": config,
        "batch": batch,
        "overrides": overrides or {},
        "calls": sum(calls.values()),
        "gflop_per_image": flops / 1e9 / batch,
        "top": calls.most_common(12),
    }


def calls_of(fn) -> collections.Counter:
    """Kernels that ``fn()`` runs, by name: leaf ATen operators that do work (module docstring), plus,
    for a compiled network, inductor's generated kernels (``graph_0_cpp_fused_*`` on the CPU, each one
    fused loop nest: one launch on a GPU; they record events only if compiled after
    ``torch._inductor.config.cpp.enable_kernel_profile = True``: :func:`profile_compiled_kernels`).
    Operators the compiled graph calls (matmuls, the opaque LSTM operators' bodies) are ATen operators
    and counted as such."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    calls = collections.Counter()
    for e in prof.events():
        if "cpp_fused" in e.name or e.name.startswith("triton_"):  # graph_0_cpp_fused_mul_..._0
            calls["inductor_fused_kernel"] += 1
            continue
        if not e.name.startswith("aten::") or e.name in METADATA:
            continue
        if any(c.name.startswith("aten::") for c in e.cpu_children):
            continue  # a composite: its leaves are counted
        calls[e.name] += 1
    return calls


def profile_compiled_kernels() -> None:
    """Make inductor's generated CPU kernels record profiler events: set before the first compile."""
    import torch._inductor.config as inductor

    inductor.cpp.enable_kernel_profile = True


def count_compiled(arch: str, config: str, batch: int, threads: int, overrides: dict) -> dict:
    """:func:`count` of a compiled model (``overrides["compile"]``): kernels of one training step's
    forward and backward after a compiling warm-up step (no FLOPs: the same as eager)."""
    import torch

    from benchmarks.common import build, forward_backward, images

    torch.set_num_threads(threads)
    profile_compiled_kernels()
    model = build(arch, config, **overrides)
    x = images(model, batch)

    def step():
        forward_backward(model, x)

    step()  # compiles
    calls = calls_of(step)
    return {
        "arch": arch, "config": config, "batch": batch, "overrides": overrides,
        "calls": sum(calls.values()), "gflop_per_image": None, "top": calls.most_common(12),
    }  # fmt: skip


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny config, in-process")
    p.add_argument("--root", default=str(ROOT), help="source tree to count (default: this one)")
    p.add_argument("--configs", nargs="+", default=["mnist", "cifar10"])
    p.add_argument("--archs", nargs="+", default=["pixelcnn", "row_lstm", "diagonal_bilstm"])
    p.add_argument("--batch", type=int, default=4, help="images per step (the calls do not depend on it)")
    p.add_argument("--overrides", default="{}", help='JSON ModelConfig overrides, e.g. {"wavefront": true}')
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    from benchmarks.compare import use_tree

    if a.child or a.quick:
        use_tree(a.root)
    counter = count_compiled if json.loads(a.overrides).get("compile") else count
    if a.child:
        print(json.dumps(counter(a.archs[0], a.configs[0], a.batch, a.threads, json.loads(a.overrides))))
        return []
    from benchmarks.common import machine, save_rows

    print(f"# machine: {machine()}; tree: {a.root}", flush=True)
    rows = []
    for config in ["quick"] if a.quick else a.configs:
        for arch in a.archs:
            if a.quick:
                row = counter(arch, config, 2, 1, json.loads(a.overrides))
            else:  # a fresh process per row, importing the tree at --root
                cmd = [sys.executable, "-m", "benchmarks.launches", "--child", "--root", a.root]
                cmd += ["--archs", arch, "--configs", config, "--batch", str(a.batch)]
                cmd += ["--threads", str(a.threads), "--overrides", a.overrides]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
                row = json.loads(out.strip().splitlines()[-1])
            row["tree"] = a.root
            rows.append(row)
            gf = row["gflop_per_image"]
            gf_text = f"{gf:8.3f} GFLOP/img" if gf is not None else "(compiled)"
            print(f"{config:8s} {arch:16s} {row['calls']:7d} calls  {gf_text}", flush=True)
    save_rows(a.out, rows)
    return rows


if __name__ == "__main__":
    main()
