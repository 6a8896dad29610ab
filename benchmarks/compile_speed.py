"""Compiled against eager training, alternated in one process (issue 20).

    python -m benchmarks.compile_speed --configs mnist --steps 20 --out benchmarks/results/compile_mnist.json
    python -m benchmarks.compile_speed --quick          # tiny config, aot_eager backend (seconds)

For each architecture: two models with the same weights, one with ``compile=True`` (models/network.py:
fullgraph, static shapes; the LSTM recurrences are opaque operators, nn/opaque.py). The compiled
model's first training step is timed alone: that is the compile time a run pays before its first step.
Then one warm-up step each, and single timed steps alternate eager/compiled/compiled/eager/... (as
benchmarks/compare.py does: on a shared host the speed of a whole process drifts, the paired ratio
much less). Reported: median img/s of each, the ratio of medians and the quartiles of the per-pair
ratios, and the kernels per training step (forward + backward) of each (benchmarks/launches.py's
``calls_of``: eager ATen calls against inductor's fused kernels plus the ATen calls left in the graph).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import (
    ARCHS,
    alternated,
    build,
    forward_backward,
    images,
    machine,
    paired,
    paired_text,
    save_rows,
    train_step,
)
from benchmarks.launches import calls_of, profile_compiled_kernels
from pixel_lightning.models import network


def measure(arch: str, config: str, batch: int, steps: int) -> dict:
    eager = build(arch, config)
    compiled = build(arch, config, compile=True)
    compiled.load_state_dict(eager.state_dict())
    x = images(eager, batch)
    run = {"eager": train_step(eager, x), "compiled": train_step(compiled, x)}
    t = time.perf_counter()
    run["compiled"]()  # compiles the training graph
    compile_s = time.perf_counter() - t
    for step in run.values():
        step()
    img_s = alternated(run, steps, batch)

    kernels = {
        name: sum(calls_of(lambda m=m: forward_backward(m, x)).values())
        for name, m in (("eager", eager), ("compiled", compiled))
    }
    return {
        "arch": arch, "config": config, "batch": batch, "steps": steps,
        "compile_first_step_s": compile_s,
        "eager_median": statistics.median(img_s["eager"]),
        "compiled_median": statistics.median(img_s["compiled"]),
        **paired(img_s["compiled"], img_s["eager"]),
        "eager_kernels_per_step": kernels["eager"], "compiled_kernels_per_step": kernels["compiled"],
        "eager_img_s": img_s["eager"], "compiled_img_s": img_s["compiled"],
        "backend": network.COMPILE_OPTIONS.get("backend", "inductor"),
    }  # fmt: skip


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny config, aot_eager backend")
    p.add_argument("--configs", nargs="+", default=["mnist"])
    p.add_argument("--archs", nargs="+", default=list(ARCHS))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed steps of each")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(1 if a.quick else a.threads)
    profile_compiled_kernels()  # before the first compile: calls_of sees inductor's kernels
    if a.quick:
        network.COMPILE_OPTIONS["backend"] = "aot_eager"
    print(f"# machine: {machine()}", flush=True)
    rows = []
    for config in ["quick"] if a.quick else a.configs:
        for arch in a.archs:
            r = measure(arch, config, 2 if a.quick else a.batch, 2 if a.quick else a.steps)
            rows.append(r)
            print(
                f"{config:8s} {arch:16s} compile {r['compile_first_step_s']:6.1f} s  eager "
                f"{r['eager_median']:7.1f}  compiled {r['compiled_median']:7.1f} img/s  {paired_text(r)}"
                f"  kernels/step {r['eager_kernels_per_step']} -> {r['compiled_kernels_per_step']}",
                flush=True,
            )
    save_rows(a.out, rows)
    return rows


if __name__ == "__main__":
    main()
