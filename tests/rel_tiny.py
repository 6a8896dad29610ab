"""A tiny training program on the runner's Trainer factory (its reliability callbacks and plugins, the
resumable loader, CLI error handling; benchmarks/tiny.py), for the reliability tests: in-process through
:func:`fit`, or as a real process.

    python tests/rel_tiny.py --out DIR [--steps 30] [--every 5] [--sleep 0.05] [--nan-at 7,9] ...

Prints ``STEP n`` after every optimizer step (flushed) so a test can kill it at a chosen step; writes
``final.pt`` (parameters) and ``metrics.json`` (val and test NLL) into ``--out`` when it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from benchmarks.tiny import TinyData, tiny_model, tiny_trainer
from pixel_lightning import reliability
from pixel_lightning.errors import cli_errors


class StepPrinter(L.Callback):
    """``STEP n`` after each step; optional sleep (time for a test to send a signal); NaN injection;
    ``noise``: the training batch gets pixels flipped by draws from torch's, numpy's and python's global
    generators (as dropout or augmentation would draw), so a resume is exact only with their states."""

    def __init__(self, sleep: float = 0.0, nan_at: tuple[int, ...] = (), noise: bool = False) -> None:
        self.sleep, self.nan_at, self.noise = sleep, set(nan_at), noise

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, *args
    ) -> None:
        if self.noise:
            x = batch[0]  # (B, 1, 8, 8) uint8 in {0, 1}
            flip = (torch.rand(x.shape) < 0.1).to(x.dtype)
            x.copy_((x ^ flip).roll(int(np.random.randint(3)) + random.randint(0, 2), dims=-1))

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        print(f"STEP {trainer.global_step}", flush=True)
        if self.sleep:
            time.sleep(self.sleep)

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        if trainer.global_step in self.nan_at:
            loss.data.fill_(float("nan"))  # a NaN loss: backward then gives NaN gradients


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--keep", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--nan-at", default="")
    p.add_argument("--max-skips", type=int, default=2)
    p.add_argument("--scheduler", default="cosine")
    p.add_argument("--arch", default="pixelcnn")
    p.add_argument("--hidden", type=int, default=4)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--noise", action="store_true")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--csv", action="store_true", help="log every step to <out>/logs/metrics.csv")
    p.add_argument("--debug", action="store_true")
    return p.parse_args(argv)


def seeded_model(args: argparse.Namespace) -> L.LightningModule:
    """Seed everything with ``--seed``, then build the model (its initial weights depend on the seed)."""
    return tiny_model(args.arch, args.hidden, args.scheduler, args.seed)


def fit(args: argparse.Namespace) -> dict[str, float]:
    """Train (resuming from ``--out`` when it holds checkpoints), test, write final.pt + metrics.json."""
    torch.set_num_threads(1)  # a tiny model on shared CPUs: one thread is several times faster
    out = Path(args.out)
    model = seeded_model(args)
    data = TinyData(seed=args.seed, num_workers=args.workers)
    resume = reliability.prepare_resume(out, model)
    nan_at = tuple(int(s) for s in args.nan_at.split(",") if s)
    trainer = tiny_trainer(
        out, args.steps, args.every, args.keep, args.max_skips, args.devices,
        callbacks=[StepPrinter(args.sleep, nan_at, args.noise)],
        loggers=reliability.HistoryLogger(out, resume.history_rows if resume else 0) if args.csv else False,
    )  # fmt: skip
    trainer.fit(model, datamodule=data, ckpt_path=resume and str(resume.path))
    fitted = {
        k: float(trainer.callback_metrics.get(k, float("nan"))) for k in ("val/nll_nats", "train/nll_nats")
    }
    test = trainer.test(model, datamodule=data, verbose=False)[0]
    metrics = {**fitted, **test}
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "final.pt")
    (out / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    with cli_errors(debug=args.debug):
        fit(args)


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "disabled")
    main()
