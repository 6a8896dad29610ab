"""The LSTM recurrence alone (issue 6): microseconds per step of ``lstm_scan``, forward and
forward + backward, at the shapes one layer of each LSTM body runs in the MNIST and CIFAR-10 configs.

    python -m benchmarks.scan --quick      # tiny shapes, in the tests
    python -m benchmarks.scan              # MNIST and CIFAR-10 layer shapes, batch 16

It shows what bounds the LSTM bodies: at the MNIST sizes a step costs about the same however few
FLOPs it has (per-kernel overhead), at the CIFAR-10 sizes it grows with the work.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine, save_rows, timed
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


def pointwise_step(config: str, arch: str, repeats: int) -> dict:
    """The LSTM update of one step (gates -> activations, c, h) eager, as the scan runs it (six kernels
    on preallocated buffers), against one torch.compile'd fused function (inductor C++), over T steps."""
    T, G, d, N, B, _ = SHAPES[config][arch]
    M = N * B
    g = torch.randn(T, G, 4 * d, M)
    act, cs, hs = torch.empty(T, G, 4 * d, M), torch.zeros(T + 1, G, d, M), torch.empty(T, G, d, M)

    def update(gates, c_prev):
        ofi, gg = torch.sigmoid(gates[:, : 3 * d]), torch.tanh(gates[:, 3 * d :])
        c = ofi[:, d : 2 * d] * c_prev + ofi[:, 2 * d :] * gg
        return torch.cat([ofi, gg], 1), c, ofi[:, :d] * torch.tanh(c)

    fused = torch.compile(update, dynamic=False, fullgraph=True)

    def eager():
        tc = torch.empty(G, d, M)
        for t in range(T):
            a = act[t]
            a.copy_(g[t])  # stands for the baddbmm that writes the gates in the scan
            a[:, : 3 * d].sigmoid_()
            a[:, 3 * d :].tanh_()
            torch.mul(a[:, d : 2 * d], cs[t], out=cs[t + 1])
            cs[t + 1].addcmul_(a[:, 2 * d : 3 * d], a[:, 3 * d :])
            torch.tanh(cs[t + 1], out=tc)
            torch.mul(a[:, :d], tc, out=hs[t])

    def compiled():
        for t in range(T):
            fused(g[t], cs[t])  # outputs not even stored: a lower bound on its cost

    e, c = timed(eager, repeats, warmup=2), timed(compiled, repeats, warmup=2)
    return {
        "config": config,
        "arch": arch,
        "eager_pointwise_us_per_step": 1e6 * e["wall_s"] / T,
        "compiled_pointwise_us_per_step": 1e6 * c["wall_s"] / T,
    }


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--configs", nargs="+", default=["mnist", "cifar10"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--compiled-step", action="store_true", help="instead: the LSTM update eager vs torch.compile'd"
    )
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"# machine: {machine(a.device)}")
    rows = []
    for config in [] if a.compiled_step else ["quick"] if a.quick else a.configs:
        for arch in SHAPES[config]:
            r = measure(config, arch, 2 if a.quick else a.repeats, a.device)
            rows.append(r)
            print(
                f"{config:8s} {arch:16s} forward {r['forward_us_per_step']:8.0f} us/step"
                f"  forward+backward {r['train_us_per_step']:8.0f} us/step"
                f" = {r['train_ms_per_layer']:7.1f} ms/layer",
                flush=True,
            )
    if a.compiled_step:
        for config in ["quick"] if a.quick else a.configs:
            for arch in SHAPES[config]:
                r = pointwise_step(config, arch, 2 if a.quick else a.repeats)
                rows.append(r)
                print(
                    f"{config:8s} {arch:16s} LSTM update: eager"
                    f" {r['eager_pointwise_us_per_step']:6.0f} us/step,"
                    f" torch.compile'd {r['compiled_pointwise_us_per_step']:6.0f} us/step",
                    flush=True,
                )
    save_rows(a.out, rows, a.device)
    return rows


if __name__ == "__main__":
    main()
