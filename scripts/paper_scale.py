"""What the paper's recipes would cost on GPUs: a training step's FLOPs and operator calls counted, then
GPU time per epoch estimated with the model of benchmarks/README.md ("GPU-time estimate").

    python -m scripts.paper_scale [--recipes NAME ...] [--tflops 67] [--utilization 0.5]
                                  [--us-per-call 8] [--out FILE]

Each recipe's model is built as it would run on CUDA (``model.wavefront=true`` for a Row LSTM: the CUDA
default, ``ModelConfig.wavefront=None``), and one training step's forward and backward is counted by
``benchmarks/launches.py``'s ``step_counts``: FLOPs with the project's one counter
(``benchmarks/common.py``: ``flop_counter``, which also counts the in-place products ``addmm_`` /
``baddbmm_`` that torch's table misses) and leaf operator calls (about one kernel launch each on a GPU).
The optimizer step is left out of both, as in ``launches.py`` (RMSProp is elementwise: no products).

A step's FLOPs are affine in its batch (weight-only products, e.g. the composed skip matrices, do not grow
with it), so steps of 1 and 2 images give the FLOPs at the recipe's batch exactly; the calls do not depend
on the batch. Then, with every assumption on the command line and in the JSON:

    t_step = calls x us_per_call + FLOPs(batch) / (tflops x utilization)
    epoch  = t_step x ceil(train images / batch)

Defaults as benchmarks/README.md: 8 us of host time per operator in eager PyTorch (the two terms added,
not overlapped) and half of the GPU's peak for the products. The peak follows the recipe's
``trainer.matmul_precision``: ``high`` (the default) switches TF32 on for CUDA runs, so an H100's dense
TF32 peak (495 TFLOP/s), also taken for ``medium`` (which may use bf16 passes: faster, so an upper bound);
``highest`` keeps fp32 (67 TFLOP/s). Each row also gives the fp32
figure, for comparison. An estimate, not a GPU measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

TRAIN_IMAGES = {  # images per epoch of each data set as the recipes split it
    "cifar10": 45_000,  # 50,000 less val_size 5,000
    "imagenet32": 1_281_167,
    "imagenet64": 1_281_167,
}
RECIPES = [
    "cifar10_pixelcnn",
    "cifar10_row_lstm",
    "cifar10_diagonal_bilstm",
    "imagenet32_row_lstm",
    "imagenet64_row_lstm",
]


def step_cost(model: Any, batch: int) -> dict[str, Any]:
    """Operator calls and FLOPs of one training step (forward + backward) on ``batch`` images, from steps
    of 1 and 2 images (the FLOPs are affine in the batch). Each step starts without gradients, as a
    training step does after the optimizer's ``zero_grad``. The calls are those of the 2-image step, as
    ``benchmarks/launches.py --batch 2`` counts them (a 1-image step takes a few different ones)."""
    from benchmarks.common import images
    from benchmarks.launches import step_counts

    counts = []
    for b in (1, 2):
        model.zero_grad(set_to_none=True)
        counts.append(step_counts(model, images(model, b)))
    (calls1, flops1), (calls2, flops2) = counts
    return {
        "batch": batch,
        "calls": sum(calls2.values()),
        "calls_batch1": sum(calls1.values()),
        "flops_batch1": flops1,
        "flops_batch2": flops2,
        "flops": flops1 + (batch - 1) * (flops2 - flops1),
    }


# trainer.matmul_precision values under which CUDA matmuls run as TF32 (config.TrainerConfig)
TF32_PRECISIONS = ("high", "medium")


def estimate(
    recipe: str,
    tflops: float,
    utilization: float,
    us_per_call: float,
    tflops_tf32: float,
    overrides: list[str] = (),
) -> dict[str, Any]:
    """One recipe's counts and its estimated GPU time per step, per epoch and for the recipe's epochs, at
    the peak its ``trainer.matmul_precision`` selects (``fp32_*``: the same at the fp32 peak)."""
    from benchmarks.common import cuda_model

    cfg, model = cuda_model(recipe, overrides)
    cost = step_cost(model, cfg.data.batch_size)
    images = TRAIN_IMAGES[cfg.data.name]
    steps = math.ceil(images / cfg.data.batch_size)
    peak = tflops_tf32 if cfg.trainer.matmul_precision in TF32_PRECISIONS else tflops
    launch_s = cost["calls"] * us_per_call * 1e-6
    flop_s = cost["flops"] / (peak * 1e12 * utilization)
    fp32_flop_s = cost["flops"] / (tflops * 1e12 * utilization)
    epochs = cfg.trainer.max_epochs
    # DDP on 8 GPUs, each its recipe batch (global 8x: 1/8 of the steps), or the recipe's global batch
    # split 8 ways (the same steps, each with the same calls and 1/8 of the FLOPs; all-reduce not counted)
    per_gpu_8 = steps / 8 * (launch_s + flop_s)
    split_8 = steps * (launch_s + flop_s / 8)
    return {
        "recipe": recipe,
        "wavefront": cfg.model.wavefront,
        "matmul_precision": cfg.trainer.matmul_precision,
        "peak_tflops": peak,
        "images_per_epoch": images,
        "epochs": epochs,
        "steps_per_epoch": steps,
        **cost,
        "gflop_per_image": cost["flops"] / cfg.data.batch_size / 1e9,
        "gflop_per_image_batch2": cost["flops_batch2"] / 2 / 1e9,  # as benchmarks/launches.py --batch 2
        "step_ms": {"launch": launch_s * 1e3, "flop": flop_s * 1e3},
        "epoch_hours_1gpu": steps * (launch_s + flop_s) / 3600,
        "recipe_hours_1gpu": epochs * steps * (launch_s + flop_s) / 3600,
        "recipe_hours_8gpu_batch_per_gpu": epochs * per_gpu_8 / 3600,
        "recipe_hours_8gpu_global_batch": epochs * split_8 / 3600,
        "fp32_step_ms": {"launch": launch_s * 1e3, "flop": fp32_flop_s * 1e3},
        "fp32_recipe_hours_1gpu": epochs * steps * (launch_s + fp32_flop_s) / 3600,
    }


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=RECIPES)
    p.add_argument("--tflops", type=float, default=67.0, help="GPU fp32 peak, TFLOP/s (default: H100)")
    p.add_argument("--tflops-tf32", type=float, default=495.0, help="dense TF32 peak (default: H100)")
    p.add_argument("--utilization", type=float, default=0.5, help="achieved fraction of the peak")
    p.add_argument("--us-per-call", type=float, default=8.0, help="host microseconds per operator call")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the counting steps")
    p.add_argument("--out", help="also write the assumptions and rows as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(
        "| recipe | batch | GFLOP/img (batch 2) | calls/step | precision | step: launches + FLOPs | h/epoch, "
        "1 GPU | recipe h, 1 GPU (fp32) | recipe h, 8 GPUs (batch per GPU / global batch) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for recipe in args.recipes:
        r = estimate(recipe, args.tflops, args.utilization, args.us_per_call, args.tflops_tf32)
        rows.append(r)
        print(
            f"| {recipe} | {r['batch']} | {r['gflop_per_image']:.2f} ({r['gflop_per_image_batch2']:.2f}) | "
            f"{r['calls']:,} | {r['matmul_precision']} | {r['step_ms']['launch']:.1f} + "
            f"{r['step_ms']['flop']:.1f} ms | {r['epoch_hours_1gpu']:.3g} | {r['recipe_hours_1gpu']:.3g} "
            f"({r['fp32_recipe_hours_1gpu']:.3g}; {r['epochs']} ep.) | "
            f"{r['recipe_hours_8gpu_batch_per_gpu']:.3g} / {r['recipe_hours_8gpu_global_batch']:.3g} |",
            flush=True,
        )
    assumptions = {
        "tflops_fp32": args.tflops,
        "tflops_tf32": args.tflops_tf32,
        "peak": "TF32 where the recipe's trainer.matmul_precision is high or medium, else fp32",
        "utilization": args.utilization,
        "us_per_call": args.us_per_call,
        "counted": "forward + backward of one training step (no optimizer step); Row LSTM as on CUDA",
        "torch": torch.__version__,
    }
    print("assumptions:", json.dumps(assumptions))
    if args.out:
        Path(args.out).write_text(json.dumps({"assumptions": assumptions, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
