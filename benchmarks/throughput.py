"""Training and evaluation throughput, FLOPs, achieved FLOP rate and peak memory (issue 6).

    python -m benchmarks.throughput --quick        # tiny config, in-process, a few seconds (tests)
    python -m benchmarks.throughput                # MNIST and CIFAR-10 configs, batch 16

Each (architecture, config) runs in a fresh subprocess (full mode) so that its peak memory is its own:
peak memory = ru_maxrss at the end minus ru_maxrss after building the model and the batch (resident
set, so it includes activations, gradients, optimizer state and allocator slack). FLOPs per image are
counted with common.py's ``flop_counter`` on one training step (forward + backward;
matmuls and convolutions, the optimizer's elementwise work is not counted), and the achieved rate is
divided by a 2048^3 fp32 matmul's rate measured in the same process just before.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.common import (
    ARCHS,
    build,
    flop_counter,
    images,
    machine,
    matmul_gflops,
    save_rows,
    timed,
    train_step,
)

ROOT = Path(__file__).resolve().parents[1]  # where ``python -m benchmarks.throughput`` runs


def peak_bytes(device: str) -> int:
    """Peak memory so far: CUDA allocator peak on a GPU, resident set (ru_maxrss, KiB on Linux) on CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(
    arch: str,
    config: str,
    batch: int,
    repeats: int,
    compile: bool = False,
    nchw: bool = False,
    mm: int = 2048,
    device: str = "cpu",
) -> dict:
    model = build(arch, config, device=device, compile=compile, channels_last=not nchw)
    x = images(model, batch)
    step = train_step(model, x)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    mem0 = peak_bytes(device)
    with flop_counter() as fc:
        step()
    train_flops = fc.get_total_flops() / batch
    with flop_counter() as fc, torch.no_grad():
        model.log_prob(x)
    eval_flops = fc.get_total_flops() / batch
    peak = matmul_gflops(mm, device=device)
    tr = timed(step, repeats)
    with torch.no_grad():
        ev = timed(lambda: model.log_prob(x), repeats)
    mem1 = peak_bytes(device)
    return {
        "arch": arch,
        "config": config,
        "device": str(device),
        "batch": batch,
        "compile": compile,
        "channels_last": not nchw,
        "params": sum(p.numel() for p in model.parameters()),
        "train_images_per_s": batch / tr["wall_s"],
        "train_images_per_cpu_s": batch / tr["cpu_s"],
        "eval_images_per_s": batch / ev["wall_s"],
        "train_gflop_per_image": train_flops / 1e9,
        "eval_gflop_per_image": eval_flops / 1e9,
        "matmul_gflops": peak,
        "achieved_gflops": train_flops * batch / tr["wall_s"] / 1e9,
        "fraction_of_matmul": train_flops * batch / tr["wall_s"] / 1e9 / peak,
        "peak_rss_delta_mib": (mem1 - mem0) / 2**20,  # GPU: allocator peak over the model and batch
        "repeats": repeats,
        "threads": torch.get_num_threads(),
    }


def fmt(r: dict) -> str:
    return (
        f"{r['config']:8s} {r['arch']:16s} train {r['train_images_per_s']:8.1f} img/s"
        f" ({r['train_images_per_cpu_s']:7.1f} img/cpu-s)  eval {r['eval_images_per_s']:8.1f} img/s"
        f"  {r['train_gflop_per_image']:7.3f} GFLOP/img  {r['achieved_gflops']:6.1f} GFLOP/s ="
        f" {100 * r['fraction_of_matmul']:5.1f}% of matmul {r['matmul_gflops']:5.1f}"
        f"  peak +{r['peak_rss_delta_mib']:7.1f} MiB"
        + ("  [compiled]" if r["compile"] else "")
        + ("" if r.get("channels_last", True) else "  [NCHW]")
    )


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny config, in-process, a few seconds")
    p.add_argument("--configs", nargs="+", default=["mnist", "cifar10"])
    p.add_argument("--archs", nargs="+", default=list(ARCHS))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5, help="timed steps after one warm-up; median")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (model.compile)")
    p.add_argument("--nchw", action="store_true", help="contiguous NCHW maps (model.channels_last=False)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (a GPU session runs the same script)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    if a.quick:
        a.threads = 1  # tiny tensors: a second thread only adds synchronisation
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.child:  # one config in this fresh process: print its row as JSON
        row = measure(a.archs[0], a.configs[0], a.batch, a.repeats, a.compile, a.nchw, device=a.device)
        print(json.dumps(row))
        return []
    print(f"# machine: {machine(a.device)}")
    rows = []
    for config in ["quick"] if a.quick else a.configs:
        for arch in a.archs:
            if a.quick:
                row = measure(arch, config, 4, 2, mm=512, device=a.device)
            else:
                cmd = [sys.executable, "-m", "benchmarks.throughput", "--child", "--configs", config]
                cmd += ["--archs", arch, "--batch", str(a.batch), "--repeats", str(a.repeats)]
                cmd += ["--threads", str(a.threads)] if a.threads else []
                cmd += ["--device", a.device]
                cmd += (["--compile"] if a.compile else []) + (["--nchw"] if a.nchw else [])
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
                row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(fmt(row), flush=True)
    save_rows(a.out, rows, a.device)
    return rows


if __name__ == "__main__":
    main()
