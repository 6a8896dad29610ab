"""A prepared check for a new GPU (issue 20): correctness that can differ on a new device, then throughput
and peak memory at the paper's CIFAR-10 config in fp32, TF32, bf16-mixed and compiled. One JSON out.

    python -m benchmarks.gpu_check                    # CUDA: sized for < 8 minutes (--budget-s)
    python -m benchmarks.gpu_check --device cpu       # the smallest version, on the CPU (seconds)

Correctness (float64, tiny sizes, on the device): every model sums to 1 over all images (normalization);
no logit depends on its own or a later sub-pixel (causality, by gradients); cached sampling draws the
same images as naive sampling; the wavefront Row LSTM equals the layer-by-layer one (values and
gradients); bf16 autocast stays within 0.05 bits/dim of fp32. Throughput: training steps (forward,
backward, RMSProp) at batch 16, median and quartiles of the step time after warm-up, peak CUDA memory
of the step, and for ``compiled`` the time of the first (compiling) step. Modes: fp32 (matmul precision
highest), tf32 (high; CUDA only), bf16 (bf16-mixed autocast, matmuls otherwise highest), compiled
(model.compile=true, fp32 highest). On the CPU the smallest version uses the tiny ``quick`` config and
compiles with the ``aot_eager`` backend (graph capture only: inductor's C++ build takes minutes on a
small host). Without CUDA and without ``--device cpu`` it says so and exits 0.

Exit status: 0 when every correctness check holds, 1 otherwise (the JSON says which).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

import pixel_lightning
from benchmarks.common import ARCHS, build, images, machine, train_step
from pixel_lightning.models import network

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("fp32", "tf32", "bf16", "compiled")


# ----------------------------------------------------------------------------- correctness


def tiny(
    arch: str, shape, levels: int, device: str, seed: int = 0, **kw
) -> pixel_lightning.AutoregressiveImageModel:
    """A float64 model with random weights large enough that its conditionals are far from uniform."""
    torch.manual_seed(seed)
    if arch == "multiscale":
        kw = {"low_res": 1, "cond_maps": 3, **kw}
    kw = {"hidden": 3, "layers": 2, "head_channels": 8, **kw}
    model = pixel_lightning.build_model(arch, image_shape=shape, levels=levels, **kw).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return model.to(device).eval()


def all_images(shape, levels: int, device: str) -> torch.Tensor:
    C, H, W = shape
    grid = torch.tensor(list(itertools.product(range(levels), repeat=C * H * W)), dtype=torch.long)
    return grid.view(-1, C, H, W).to(device)


def check_normalization(arch: str, device: str) -> tuple[bool, str]:
    worst = 0.0
    for shape, levels in (((1, 2, 2), 2), ((3, 1, 1), 4) if arch != "multiscale" else ((1, 2, 2), 3)):
        model = tiny(arch, shape, levels, device)
        with torch.no_grad():
            total = torch.logsumexp(model.log_prob(all_images(shape, levels, device)), 0).exp().item()
        worst = max(worst, abs(total - 1))
    return worst < 1e-9, f"max |sum p(x) - 1| = {worst:.2e}"


def check_causality(arch: str, device: str) -> tuple[bool, str]:
    """d logit(c, i, j) / d input is zero at (c', i', j') unless (i', j') precedes (i, j) in raster
    order, or it is (i, j) itself and c' < c (R -> G -> B)."""
    shape, levels = (3, 3, 3), 4
    model = tiny(arch, shape, levels, device)
    x = torch.randint(0, levels, (1, *shape), generator=torch.Generator().manual_seed(1)).to(device)
    xf = model.scale(x).requires_grad_()
    logits = model.network(xf)  # (1, K, C, H, W)
    C, H, W = shape
    leaks = 0
    for c, i, j in itertools.product(range(C), range(H), range(W)):
        (g,) = torch.autograd.grad(logits[0, :, c, i, j].sum(), xf, retain_graph=True)
        allowed = torch.zeros(shape, dtype=torch.bool, device=device)
        allowed.view(C, -1)[:, : i * W + j] = True
        allowed[:c, i, j] = True
        leaks += int((g[0].abs() > 0)[~allowed].sum())
    return leaks == 0, f"{leaks} dependencies on the present or future"


def check_cached_sampling(arch: str, device: str) -> tuple[bool, str]:
    model = (
        tiny(arch, (3, 3, 3) if arch != "multiscale" else (3, 4, 4), 4, device, low_res=2)
        if (arch == "multiscale")
        else tiny(arch, (3, 3, 3), 4, device)
    )
    a = model.sample(3, generator=torch.Generator().manual_seed(2), cache=True)
    b = model.sample(3, generator=torch.Generator().manual_seed(2), cache=False)
    return bool(torch.equal(a, b)), "cached == naive" if torch.equal(a, b) else "cached != naive"


def check_wavefront(device: str) -> tuple[bool, str]:
    model = tiny("row_lstm", (3, 4, 5), 4, device, layers=3, wavefront=True)
    ref = tiny("row_lstm", (3, 4, 5), 4, device, layers=3, wavefront=False)
    x = torch.randint(0, 4, (2, 3, 4, 5), generator=torch.Generator().manual_seed(3)).to(device)
    a, b = model.log_prob(x), ref.log_prob(x)
    ga = torch.autograd.grad(a.sum(), list(model.parameters()))
    gb = torch.autograd.grad(b.sum(), list(ref.parameters()))
    err = max(
        [(a - b).abs().max().item()] + [(p - q).abs().max().item() for p, q in zip(ga, gb, strict=True)]
    )
    return err < 1e-9, f"max difference of log p and gradients {err:.1e}"


def check_bf16(arch: str, device: str) -> tuple[bool, str]:
    if torch.device(device).type == "cuda" and not torch.cuda.is_bf16_supported():
        return True, "bf16 not supported on this GPU: skipped"
    model = tiny(arch, (1, 8, 8), 2, device, **({"low_res": 4} if arch == "multiscale" else {})).float()
    x = torch.randint(0, 2, (4, 1, 8, 8), generator=torch.Generator().manual_seed(4)).to(device)
    with torch.no_grad():
        full = model.log_prob(x)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            mixed = model.log_prob(x)
    gap = ((mixed - full).abs().max() / (model.dims * math.log(2))).item()
    return gap < 0.05, f"max |bits/dim bf16 - fp32| = {gap:.4f}"


def correctness(device: str) -> list[dict]:
    rows = []

    def record(name: str, arch: str, fn) -> None:
        t = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as e:  # a crash on a new device is a finding, not the end of the check
            ok, detail = False, f"{type(e).__name__}: {str(e)[:300]}"
        rows.append(
            {"check": name, "arch": arch, "ok": ok, "detail": detail, "s": round(time.perf_counter() - t, 2)}
        )
        print(f"  {'ok  ' if ok else 'FAIL'} {name:<16} {arch:<16} {detail}", flush=True)

    from pixel_lightning.models import registry

    for arch in registry.names():
        record("normalization", arch, lambda a=arch: check_normalization(a, device))
        if registry.get(arch).is_base:  # multi-scale: low-res positions first (tests/test_multiscale.py)
            record("causality", arch, lambda a=arch: check_causality(a, device))
        record("cached_sampling", arch, lambda a=arch: check_cached_sampling(a, device))
        record("bf16_vs_fp32", arch, lambda a=arch: check_bf16(a, device))
    record("wavefront", "row_lstm", lambda: check_wavefront(device))
    return rows


# ----------------------------------------------------------------------------- throughput


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def mode_context(mode: str, device: str):
    torch.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
    if mode == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def throughput(arch: str, config: str, mode: str, device: str, batch: int, steps: int) -> dict:
    model = build(arch, config, device=device, compile=mode == "compiled")
    step = train_step(model, images(model, batch), autocast=mode_context(mode, device))
    cuda = torch.device(device).type == "cuda"

    t = time.perf_counter()
    step()  # the first step compiles (compiled mode)
    sync(device)
    first_s = time.perf_counter() - t
    step()
    if cuda:
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    torch.set_float32_matmul_precision("highest")
    return {
        "arch": arch, "config": config, "mode": mode, "batch": batch, "steps": steps,
        "img_s": batch / statistics.median(times), "step_ms_median": 1e3 * statistics.median(times),
        "step_ms_q1": 1e3 * q[0], "step_ms_q3": 1e3 * q[2],
        "first_step_s": first_s,  # compile time included in compiled mode
        "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
    }  # fmt: skip


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (the smallest version)")
    p.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/gpu_check_<device>.json)"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="timed steps per case (default 10 on CUDA, 2 on CPU)"
    )
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="throughput modes")
    p.add_argument("--budget-s", type=float, default=300.0, help="start no timing case after this")
    args = p.parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here: nothing to check (--device cpu runs the smallest version)")
        return 0
    start = time.perf_counter()
    config, batch = ("cifar10", 16) if cuda else ("quick", 4)
    steps = args.steps or (10 if cuda else 2)
    if not cuda:
        network.COMPILE_OPTIONS["backend"] = "aot_eager"  # graph capture only (module docstring)
    print(f"gpu_check on {machine(args.device)}", flush=True)
    print("correctness (float64, tiny sizes):", flush=True)
    checks = correctness(args.device)
    print(f"throughput ({config} config, batch {batch}, {steps} timed steps):", flush=True)
    rows, skipped = [], []
    for arch, mode in itertools.product(ARCHS, args.modes):
        if mode == "tf32" and not cuda:
            skipped.append({"arch": arch, "mode": mode, "why": "TF32 exists on CUDA only"})
            continue
        if mode == "bf16" and cuda and not torch.cuda.is_bf16_supported():
            skipped.append({"arch": arch, "mode": mode, "why": "bf16 not supported on this GPU"})
            continue
        if time.perf_counter() - start > args.budget_s:
            skipped.append({"arch": arch, "mode": mode, "why": f"past the {args.budget_s:.0f} s budget"})
            continue
        try:
            r = throughput(arch, config, mode, args.device, batch, steps)
        except Exception as e:
            skipped.append({"arch": arch, "mode": mode, "why": f"{type(e).__name__}: {str(e)[:300]}"})
            print(f"  {arch:<16} {mode:<9} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
            continue
        rows.append(r)
        mem = f"{r['peak_mem_mb']:.0f} MiB" if r["peak_mem_mb"] is not None else "-"
        print(
            f"  {arch:<16} {mode:<9} {r['img_s']:8.1f} img/s  step {r['step_ms_median']:.1f} ms "
            f"[{r['step_ms_q1']:.1f}, {r['step_ms_q3']:.1f}]  first step {r['first_step_s']:.1f} s  "
            f"peak {mem}",
            flush=True,
        )
    ok = all(c["ok"] for c in checks)
    out = Path(args.out) if args.out else RESULTS / f"gpu_check_{torch.device(args.device).type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine(args.device), "device": args.device, "config": config, "ok": ok,
        "checks": checks, "throughput": rows, "skipped": skipped,
        "compile_backend": network.COMPILE_OPTIONS.get("backend", "inductor"),
        "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"gpu_check: {'all checks hold' if ok else 'SOME CHECKS FAILED'}; {result['seconds']} s; wrote {out}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
