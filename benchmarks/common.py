"""Shared by the benchmark scripts (``python -m benchmarks.NAME`` from the repository root) and
scripts/paper_scale.py: the paper's configurations, the one training step, the one FLOP counter, timers,
the matmul reference rate."""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import pixel_lightning

ARCHS = ("pixelcnn", "row_lstm", "diagonal_bilstm")

# issue 6: MNIST config (PixelCNN h=32, 7 blocks; LSTMs h=16, 7 layers; head 32) and the paper's CIFAR-10
# config (LSTMs 12 layers h=128; PixelCNN 15 layers h=128; head 1024); "quick" is a tiny one for tests.
CONFIGS = {
    "mnist": dict(image_shape=(1, 28, 28), levels=2, head_channels=32),
    "cifar10": dict(image_shape=(3, 32, 32), levels=256, head_channels=1024),
    "quick": dict(image_shape=(1, 6, 6), levels=2, head_channels=8),
}
SIZES = {
    "mnist": {"pixelcnn": (32, 7), "row_lstm": (16, 7), "diagonal_bilstm": (16, 7)},
    "cifar10": {"pixelcnn": (128, 15), "row_lstm": (128, 12), "diagonal_bilstm": (128, 12)},
    "quick": {"pixelcnn": (8, 2), "row_lstm": (8, 2), "diagonal_bilstm": (8, 2)},
}


def build(
    arch: str, config: str, seed: int = 0, device: str = "cpu", **overrides
) -> pixel_lightning.AutoregressiveImageModel:
    torch.manual_seed(seed)
    hidden, layers = SIZES[config][arch]
    model = pixel_lightning.build_model(
        arch, hidden=hidden, layers=layers, **{**CONFIGS[config], **overrides}
    )
    return model.to(device)


def cuda_model(recipe: str, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Any, Any]:
    """(config, model) of a recipe as it would train on CUDA, built on the CPU: a Row LSTM (alone or as
    a multi-scale base) runs as one wavefront there (``model.wavefront=None`` is the CUDA default)."""
    from pixel_lightning.config import load_config
    from pixel_lightning.runner import build_model_for

    cfg = load_config(recipe, ["threads=1", *overrides])
    base = getattr(cfg.model, "base", cfg.model.arch)
    if base == "row_lstm" and cfg.model.wavefront is None:
        cfg = load_config(recipe, ["threads=1", *overrides, "model.wavefront=true"])
    return cfg, build_model_for(cfg)


def images(model, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.levels, (batch, *model.image_shape), generator=g).to(model.device)


def forward_backward(model, x: torch.Tensor, autocast=None) -> None:
    """The gradients of one training step on the images ``x``: the mean negative log-likelihood's forward
    (under ``autocast``, e.g. ``torch.autocast("cuda", dtype=torch.bfloat16)``) and backward."""
    with autocast or contextlib.nullcontext():
        loss = -model.log_prob(x).mean()
    loss.backward()


def train_step(model, x: torch.Tensor, autocast=None, lr: float = 1e-5) -> Callable[[], None]:
    """One training step on the batch ``x`` as a closure: :func:`forward_backward`, then RMSProp (the
    paper's optimizer; a small rate, so repeated steps stay near the initial weights). The step every
    benchmark times."""
    opt = torch.optim.RMSprop(model.parameters(), lr=lr)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        forward_backward(model, x, autocast)
        opt.step()

    step.optimizer = opt  # type: ignore[attr-defined]  # its state's size: benchmarks/memory.py
    return step


def sync() -> None:
    """Wait for queued GPU work, so wall-clock timers measure it (no-op without CUDA)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn, repeats: int, warmup: int = 1) -> dict:
    """Median wall and process-CPU seconds of ``fn()`` over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        sync()
        w, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "repeats": repeats}


def alternated(steps: dict[str, Callable[[], None]], repeats: int, batch: int) -> dict[str, list[float]]:
    """Images per second of each of two steps, timed one step at a time in the order A B, B A, A B, ...
    (on a shared host a whole process's speed drifts; the ratio of steps paired in time much less)."""
    first, second = steps
    out: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats):
        for name in (first, second) if i % 2 == 0 else (second, first):
            sync()
            t = time.perf_counter()
            steps[name]()
            sync()
            out[name].append(batch / (time.perf_counter() - t))
    return out


def paired(new: list[float], old: list[float]) -> dict[str, float]:
    """``new`` against ``old`` (rates of steps paired in time): the ratio of their medians, and the median,
    quartiles and range of the per-pair ratios."""
    ratios = sorted(n / o for n, o in zip(new, old, strict=True))
    return {
        "ratio_of_medians": statistics.median(new) / statistics.median(old),
        "pair_ratio_median": statistics.median(ratios),
        "pair_ratio_q1": ratios[len(ratios) // 4],
        "pair_ratio_q3": ratios[(3 * len(ratios)) // 4],
        "pair_ratio_min": ratios[0],
        "pair_ratio_max": ratios[-1],
    }


def paired_text(row: dict) -> str:
    """:func:`paired`'s figures on one line: ``ratio 1.02 (pairs: median 1.01, quartiles 0.98-1.05, ...)``."""
    return (
        f"ratio {row['ratio_of_medians']:.2f} (pairs: median {row['pair_ratio_median']:.2f}, quartiles"
        f" {row['pair_ratio_q1']:.2f}-{row['pair_ratio_q3']:.2f}, range {row['pair_ratio_min']:.2f}-"
        f"{row['pair_ratio_max']:.2f})"
    )


def matmul_gflops(n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """fp32 rate of a large (n x n) @ (n x n) matmul in this process, GFLOP/s (median). TF32 is off on
    CUDA (torch's default for matmuls), so this is the true fp32 rate, like the models'."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = timed(lambda: a @ b, repeats, warmup=2)
    return 2 * n**3 / t["wall_s"] / 1e9


def flop_counter():
    """``FlopCounterMode`` that also counts the in-place products ``addmm_`` and ``baddbmm_`` (the
    skip sum and the wavefront Row LSTM accumulate into their outputs; torch's table has only the
    out-of-place forms) and matrix-vector products ``mv`` (the composed skip bias). The one FLOP counter
    of this project: the benchmarks and scripts/paper_scale.py count with it."""
    from torch.utils.flop_counter import FlopCounterMode

    def product(self_shape, a_shape, b_shape, *args, **kwargs) -> int:  # (..., m, k) @ (..., k, n)
        return 2 * math.prod(a_shape) * b_shape[-1]

    def matrix_vector(a_shape, b_shape, *args, **kwargs) -> int:  # (m, k) @ (k,)
        return 2 * math.prod(a_shape)

    aten = torch.ops.aten
    mapping = {aten.addmm_: product, aten.baddbmm_: product, aten.mv: matrix_vector}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def machine(device: str = "cpu") -> str:
    import os

    from pixel_lightning.runfolder import cpu_model

    cpu = cpu_model()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if torch.device(device).type == "cuda":
        cpu = f"{torch.cuda.get_device_name(device)} (host: {cpu})"
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load:.1f}"
    )


def save_rows(path: str | None, rows: list[dict], device: str = "cpu") -> None:
    """Write a benchmark's rows to ``path`` as JSON, with the machine line (nothing if path is None)."""
    if path:
        with open(path, "w") as f:
            json.dump({"machine": machine(device), "rows": rows}, f, indent=1)
