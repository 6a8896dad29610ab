"""Seconds per batch of 16 samples, cached vs naive, for every architecture (issue 6).

    python -m benchmarks.sampling --quick          # tiny config, seconds; checks cached == naive
    python -m benchmarks.sampling                  # MNIST and CIFAR-10 configs of the paper

Naive sampling re-runs the network once per sub-pixel, so its cost is (number of sub-pixels) x (one full
forward pass). In the full mode it is timed on the first ``--naive-steps`` sub-pixels of a real naive run
and scaled to all of them (labelled "extrapolated"); ``--naive-steps 0`` runs it to the end. Ratios come
from one process. Both wall and process-CPU seconds are given: on a shared machine the CPU seconds are
the cost without the other processes' interference.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from benchmarks.common import ARCHS, build, machine, save_rows, sync
from pixel_lightning.sampling import draw_uniforms, inverse_cdf, raster_order


def naive_prefix(model, n: int, steps: int) -> dict:
    """Wall and CPU seconds of the first ``steps`` sub-pixel steps of the naive sampler."""
    C, H, W = model.image_shape
    u = draw_uniforms(n, model.image_shape, torch.Generator().manual_seed(0)).to(model.device)
    x = torch.zeros((n, C, H, W), dtype=torch.long, device=model.device)
    sync()
    w, c = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for k, (ch, i, j) in enumerate(raster_order(model.image_shape)):
            if k == steps:
                break
            x[:, ch, i, j] = inverse_cdf(model(x)[:, :, ch, i, j], u[:, ch, i, j], model.levels)
    sync()
    return {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c}


def run(arch: str, config: str, n: int, repeats: int, naive_steps: int, device: str = "cpu") -> dict:
    model = build(arch, config, device=device).eval()
    total = math.prod(model.image_shape)
    row = {"arch": arch, "config": config, "device": str(device), "n": n, "sub_pixels": total}
    runs = []
    for r in range(repeats):
        sync()
        w, c = time.perf_counter(), time.process_time()
        xs = model.sample(n, generator=torch.Generator().manual_seed(r), cache=True)
        sync()
        runs.append((time.perf_counter() - w, time.process_time() - c))
    row["cached_wall_s"] = sorted(t[0] for t in runs)[len(runs) // 2]
    row["cached_cpu_s"] = sorted(t[1] for t in runs)[len(runs) // 2]
    steps = total if naive_steps <= 0 else min(naive_steps, total)
    if steps == total:  # a real naive run: also check it returns the same images
        sync()
        w, c = time.perf_counter(), time.process_time()
        naive = model.sample(n, generator=torch.Generator().manual_seed(repeats - 1), cache=False)
        sync()
        t = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c}
        row["identical"] = bool(torch.equal(naive, xs))
    else:
        t = naive_prefix(model, n, steps)
    scale = total / steps
    row["naive_wall_s"], row["naive_cpu_s"] = t["wall_s"] * scale, t["cpu_s"] * scale
    row["naive_timing"] = "full run" if steps == total else f"extrapolated from {steps} of {total} steps"
    row["speedup_wall"] = row["naive_wall_s"] / row["cached_wall_s"]
    row["speedup_cpu"] = row["naive_cpu_s"] / row["cached_cpu_s"]
    row["cached_images_per_s"] = n / row["cached_wall_s"]
    return row


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny config, a few seconds (used by the tests)")
    p.add_argument("--configs", nargs="+", default=["mnist", "cifar10"])
    p.add_argument("--archs", nargs="+", default=list(ARCHS))
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="cached runs; the median is reported")
    p.add_argument("--naive-steps", type=int, default=48, help="0: run the naive sampler to the end")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (a GPU session runs the same script)")
    a = p.parse_args(argv)
    if a.quick:
        a.configs, a.n, a.repeats, a.naive_steps, a.threads = ["quick"], 2, 1, 0, 1
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"# machine: {machine(a.device)}")
    rows = []
    for config in a.configs:
        for arch in a.archs:
            row = run(arch, config, a.n, a.repeats, a.naive_steps, a.device)
            rows.append(row)
            r = row
            print(
                f"{config:8s} {arch:16s} cached {r['cached_wall_s']:8.2f} s ({r['cached_cpu_s']:7.2f} cpu-s)"
                f"  naive {r['naive_wall_s']:9.1f} s ({r['naive_cpu_s']:8.1f} cpu-s, {r['naive_timing']})"
                f"  speed-up {row['speedup_wall']:7.1f}x wall {row['speedup_cpu']:7.1f}x cpu"
                + (f"  identical={row['identical']}" if "identical" in row else ""),
                flush=True,
            )
    save_rows(a.out, rows, a.device)
    return rows


if __name__ == "__main__":
    main()
