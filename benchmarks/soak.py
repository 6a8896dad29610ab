"""Soak: a tiny model for 10,000 steps with a checkpoint every 100, through the reliability wiring.

Measures the process's resident memory (RSS, from /proc/self/statm) every 100 steps, and the run
directory's size and file count after every checkpoint. Pass: RSS growth after warm-up < 5% and a bounded
run directory (keep_last step files + last.ckpt). Writes the figures as JSON (``--json``).

    nice python -m benchmarks.soak --steps 10000 --every 100 --out /tmp/soak --json benchmarks/soak.json

from the repository root: the model, data and Trainer of benchmarks/tiny.py (the runner's Trainer factory,
with fit's reliability wiring; the reliability tests train the same).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from benchmarks.tiny import TinyData, tiny_model, tiny_trainer
from pixel_lightning import reliability


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def dir_stats(path: Path) -> tuple[int, float]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files) / 2**20


class Probe(L.Callback):
    """RSS every ``every`` steps; run-dir files and MiB after each checkpoint step."""

    def __init__(self, out: Path, every: int) -> None:
        self.out, self.every = out, every
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every == 0:
            files, mib = dir_stats(self.out)
            self.rows.append({"step": step, "rss_mib": rss_mib(), "files": files, "dir_mib": mib})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--keep", type=int, default=3)
    p.add_argument("--out", default="/tmp/pixel_lightning_soak")
    p.add_argument("--warmup", type=int, default=1000, help="steps before the RSS baseline")
    p.add_argument(
        "--n-train", type=int, default=2000, help="training images (batch 4; validation each epoch)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: a tiny model on busy CPUs)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    if out.exists():
        raise SystemExit(f"{out} exists: choose a new --out (the soak starts from scratch)")
    model, data = tiny_model(), TinyData(seed=0, n_train=a.n_train)
    reliability.prepare_resume(out, model)
    probe = Probe(out, a.every)
    trainer = tiny_trainer(out, a.steps, a.every, a.keep, callbacks=[probe])
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - t0
    rows = probe.rows
    base = next(r for r in rows if r["step"] >= a.warmup)["rss_mib"]
    after = [r["rss_mib"] for r in rows if r["step"] >= a.warmup]
    files, mib = dir_stats(out)
    result = {
        "command": "nice python -m benchmarks.soak " + " ".join(sys.argv[1:]),
        "steps": a.steps,
        "checkpoint_every": a.every,
        "keep_last": a.keep,
        "seconds": round(seconds, 1),
        "rss_mib_at_warmup": round(base, 1),
        "rss_mib_final": round(rows[-1]["rss_mib"], 1),
        "rss_mib_max_after_warmup": round(max(after), 1),
        "rss_growth_after_warmup_pct": round(100 * (max(after) - base) / base, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "run_dir_files_max": max(r["files"] for r in rows),
        "run_dir_mib_max": round(max(r["dir_mib"] for r in rows), 3),
        "run_dir_files_final": files,
        "run_dir_mib_final": round(mib, 3),
        "rss_every_1000_steps": [round(r["rss_mib"], 1) for r in rows if r["step"] % 1000 == 0],
    }
    print(json.dumps(result, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
