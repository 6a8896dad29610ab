"""The LSTM recurrence alone (issue 6): microseconds per step of ``lstm_scan``, forward and
forward + backward, at the shapes one layer of each LSTM body runs in the MNIST and CIFAR-10 configs.

    python benchmarks/scan.py --quick      # tiny shapes, in the tests
    python benchmarks/scan.py              # MNIST and CIFAR-10 layer shapes, batch 16

It shows what bounds the LSTM bodies: at the MNIST sizes a step costs about the same however few
FLOPs it has (per-kernel overhead), at the CIFAR-10 sizes it grows with the work.
"""

from __future__ import annotations

import argparse
import json

import torch
from common import machine, timed

from pixel_lightning.nn.lstm_cell import lstm_scan

# (T steps, G directions, h, N positions per step, B batch, taps): one layer of each body
SHAPES = {
    "mnist": {"row_lstm": (28, 1, 16, 28, 16, (-1, 0, 1)), "diagonal_bilstm": (55, 2, 16, 28, 16, (-1, 0))},
    "cifar10": {
        "row_lstm": (32, 1, 128, 32, 16, (-1, 0, 1)),
        "diagonal_bilstm": (63, 2, 128, 32, 16, (-1, 0)),
    },
    "quick": {"row_lstm": (4, 1, 4, 5, 2, (-1, 0, 1)), "diagonal_bilstm": (6, 2, 4, 3, 2, (-1, 0))},
}


def measure(config: str, arch: str, repeats: int, device: str = "cpu") -> dict:
    T, G, d, N, B, taps = SHAPES[config][arch]
    g = torch.Generator().manual_seed(0)
    s = torch.randn(T, G, 4 * d, N, B, generator=g).to(device).requires_grad_()
    K = (0.1 * torch.randn(G, 4 * d, len(taps) * d, generator=g)).to(device).requires_grad_()
    h0, c0 = torch.zeros(G, d, N, B, device=device), torch.zeros(G, d, N, B, device=device)

    def forward():
        with torch.no_grad():
            lstm_scan(s, K, h0, c0, taps)

    def forward_backward():
        lstm_scan(s, K, h0, c0, taps).sum().backward()

    fwd, both = timed(forward, repeats, warmup=2), timed(forward_backward, repeats, warmup=2)
    flops = 3 * 2 * T * G * 4 * d * len(taps) * d * N * B  # K_ss matmuls: forward 1, backward 2 (d taps, dK)
    return {
        "config": config,
        "arch": arch,
        "shape": {"T": T, "G": G, "h": d, "N": N, "B": B, "taps": list(taps)},
        "forward_us_per_step": 1e6 * fwd["wall_s"] / T,
        "train_us_per_step": 1e6 * both["wall_s"] / T,
        "train_ms_per_layer": 1e3 * both["wall_s"],
        "k_ss_gflop_per_s": flops / both["wall_s"] / 1e9,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--configs", nargs="+", default=["mnist", "cifar10"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"# machine: {machine(a.device)}")
    rows = []
    for config in ["quick"] if a.quick else a.configs:
        for arch in SHAPES[config]:
            r = measure(config, arch, 2 if a.quick else a.repeats, a.device)
            rows.append(r)
            print(
                f"{config:8s} {arch:16s} forward {r['forward_us_per_step']:8.0f} us/step"
                f"  forward+backward {r['train_us_per_step']:8.0f} us/step"
                f" = {r['train_ms_per_layer']:7.1f} ms/layer",
                flush=True,
            )
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"machine": machine(a.device), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
