"""Where a Row LSTM training step spends its time (issue 14): K_is and the scan, forward and backward.

    python -m benchmarks.row_lstm_breakdown --config mnist --steps 10

Wraps the forward and backward of the two custom autograd Functions of the layer-by-layer Row LSTM
(:class:`~pixel_lightning.nn.row_lstm.RowInputToState`, K_is; :class:`~pixel_lightning.nn.lstm_cell.LSTMScan`,
the recurrence) with wall-clock timers and runs whole training steps (forward, backward, RMSProp, as
``throughput.py``). Prints milliseconds per step for each part, summed over the layers; the rest is
everything else (output and skip 1x1s, residuals, first layer, head, loss, optimizer). On CPU every
kernel runs synchronously, so the timers measure the kernels themselves.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import build, images, machine, save_rows, train_step
from pixel_lightning.nn.lstm_cell import LSTMScan
from pixel_lightning.nn.row_lstm import RowInputToState


def timing(fn, totals: dict[str, float], name: str):
    """fn wrapped so that its wall time is added to totals[name]."""

    def wrapped(*args):
        t = time.perf_counter()
        out = fn(*args)
        totals[name] += time.perf_counter() - t
        return out

    return staticmethod(wrapped)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="mnist")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the row as JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    totals = dict.fromkeys(["K_is forward", "K_is backward", "scan forward", "scan backward"], 0.0)
    functions = [(RowInputToState, "K_is"), (LSTMScan, "scan")]
    saved = [(fn, fn.forward, fn.backward) for fn, _ in functions]
    for fn, name in functions:
        fn.forward = timing(fn.forward, totals, f"{name} forward")
        fn.backward = timing(fn.backward, totals, f"{name} backward")
    try:
        model = build("row_lstm", a.config, wavefront=False)
        step = train_step(model, images(model, a.batch))
        step(), step()
        totals.update(dict.fromkeys(totals, 0.0))
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        wall = (time.perf_counter() - t) / a.steps
    finally:
        for fn, forward, backward in saved:
            fn.forward, fn.backward = staticmethod(forward), staticmethod(backward)
    parts = {k: 1e3 * v / a.steps for k, v in totals.items()}  # ms per step
    row = {"config": a.config, "batch": a.batch, "threads": a.threads, "step_ms": 1e3 * wall, **parts}
    row["rest"] = row["step_ms"] - sum(parts.values())
    print(f"# machine: {machine()}")
    print(
        "  ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
        "(ms per step)",
    )
    save_rows(a.out, [row])
    return row


if __name__ == "__main__":
    main()
