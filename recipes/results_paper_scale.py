"""What the paper's recipes would cost on GPUs: FLOPs per image counted, then GPU hours per epoch estimated.

    python recipes/results_paper_scale.py [--recipes NAME ...] [--tflops 400] [--utilization 0.1 0.3]

For each recipe, one training step (forward, backward, RMSProp) on one image is counted with
``torch.utils.flop_counter.FlopCounterMode``, as ``benchmarks/throughput.py`` does (matmuls and convolutions
only). GPU hours per epoch = FLOPs/image x training images / (peak x utilization); on 8 GPUs with DDP the
same work is split 8 ways (perfect scaling assumed: an upper bound on the speed-up). The peak and the
utilization range are assumptions, given on the command line and printed beside the result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def train_flops_per_image(recipe: str) -> tuple[float, int, str]:
    """(FLOPs of one training step on one image, training images per epoch, data set) of a recipe."""
    from pixel_lightning.config import load_config
    from pixel_lightning.runner import build_model_for

    cfg = load_config(recipe, ["threads=1"])
    model = build_model_for(cfg)
    x = torch.randint(0, cfg.model.levels, (1, *cfg.model.image_shape))
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-5)
    with FlopCounterMode(display=False) as fc:
        loss = -model.log_prob(x).mean()
        loss.backward()
        opt.step()
    return fc.get_total_flops(), TRAIN_IMAGES[cfg.data.name], cfg.data.name


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=RECIPES)
    p.add_argument(
        "--tflops", type=float, default=400.0, help="GPU peak, TFLOP/s (default: TF32 dense, H100)"
    )
    p.add_argument(
        "--utilization", type=float, nargs=2, default=[0.1, 0.3], help="achieved fraction, low high"
    )
    p.add_argument("--out", help="also write the rows as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    torch.set_num_threads(1)
    low, high = args.utilization
    rows = []
    print("| recipe | GFLOP/img (train step) | images/epoch | GPU h/epoch, 1 GPU | GPU h/epoch on 8 (DDP) |")
    print("|---|---|---|---|---|")
    for recipe in args.recipes:
        flops, images, data = train_flops_per_image(recipe)
        hours = [flops * images / (args.tflops * 1e12 * u) / 3600 for u in (high, low)]  # fast, slow
        rows.append({"recipe": recipe, "gflop_per_image": flops / 1e9, "images": images, "hours_1gpu": hours})
        print(
            f"| {recipe} | {flops / 1e9:.1f} | {images:,} | {hours[0]:.3g}-{hours[1]:.3g} | "
            f"{hours[0] / 8:.3g}-{hours[1] / 8:.3g} |",
            flush=True,
        )
    print(
        f"assumptions: peak {args.tflops:g} TFLOP/s, utilization {low:g}-{high:g}, perfect 8-way DDP scaling"
    )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"tflops": args.tflops, "utilization": [low, high], "rows": rows})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
