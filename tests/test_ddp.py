"""DDP on 2 CPU processes (gloo), launched the way users launch it: recipes' runner re-run by each rank.

Checks that parameters are identical on both ranks after training, and that the test metric of the run
equals a single-process evaluation of the same checkpoint (1e-6). The resume test runs tests/rel_tiny.py
in-process (Lightning's ``ddp_fork``: seconds, not a re-launched interpreter per rank).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import rel_tiny
import torch

from pixel_lightning import cli
from pixel_lightning.reliability import checkpoints as ck

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys
    import lightning as L
    import torch
    from pixel_lightning.config import load_config
    from pixel_lightning.runner import run

    class DumpParams(L.Callback):
        def on_train_end(self, trainer, pl_module):
            state = {{k: v.detach().clone() for k, v in pl_module.state_dict().items()}}
            torch.save(state, f"{{sys.argv[1]}}/params_rank{{trainer.global_rank}}.pt")

    if __name__ == "__main__":  # each rank re-runs this file: nothing may run at import
        run(load_config("quickstart", sys.argv[2:]), extra_callbacks=[DumpParams()])
    """
)


def single_process_nll(checkpoint: str, data_dir: Path, n: int) -> tuple[float, int]:
    """Mean test NLL (nats, float64 sum) of ``checkpoint``, first ``n`` test images, in one process."""
    from pixel_lightning import load_model
    from pixel_lightning.data import build_datamodule

    model = load_model(checkpoint).eval()
    dm = build_datamodule("mnist", data_dir=data_dir, source="embedded", batch_size=7)
    dm.setup()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, _ in dm.test_dataloader():
            x = x[: n - count]
            total -= model.log_prob(x.long()).double().sum().item()
            count += x.shape[0]
    return total / count, count


@pytest.mark.timeout(300)
def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT.format())
    out, data_dir = tmp_path / "run", tmp_path / "data"
    overrides = [
        f"out={out}",
        f"data.data_dir={data_dir}",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.max_steps=4",
        "trainer.max_time=null",
        "trainer.val_check_interval=2",
        "trainer.check_val_every_n_epoch=null",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=5",  # per process: 2 x 5 batches of 4 images
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "model.hidden=4",
        "model.layers=1",
        "model.head_channels=8",
        "data.batch_size=4",
        "sample.n=0",
        "logger=none",
        "threads=1",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    rank0 = torch.load(tmp_path / "params_rank0.pt")
    rank1 = torch.load(tmp_path / "params_rank1.pt")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"{key} differs between ranks"

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 4
    assert metrics["test_checkpoint"].endswith(".ckpt"), metrics["test_checkpoint"]
    assert metrics["test_batches"] == 10  # the figure covers the first 10 batches (40 images), once each
    nll, count = single_process_nll(metrics["test_checkpoint"], data_dir, n=40)
    assert count == 40
    assert metrics["test/nll_nats"] == pytest.approx(nll, rel=1e-6, abs=1e-6)
    assert metrics["test/bits_per_dim"] == pytest.approx(nll / (784 * math.log(2)), abs=1e-6)

    # `pixel-lightning test` on the best checkpoint, in one process: the figure in metrics.json
    assert cli.main(["test", "--ckpt", metrics["test_checkpoint"], "--out", str(tmp_path / "test.json")]) == 0
    tested = json.loads((tmp_path / "test.json").read_text())
    assert tested["test/nll_nats"] == pytest.approx(metrics["test/nll_nats"], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])  # 9 s, 12 s
def test_ddp_resume_is_exact(tmp_path, workers):
    """2 processes, 5 steps (one epoch: 20 images a rank, batches of 4); a run resumed from the step-2
    checkpoint ends with the uninterrupted run's parameters and metrics, the epoch's train NLL included
    (each rank's metric states come back to that rank, and each rank's loader position)."""
    args = ["--devices", "2", "--steps", "5", "--every", "2", "--keep", "100", "--workers", str(workers)]
    ref = rel_tiny.fit(rel_tiny.parse(["--out", str(tmp_path / "ref"), *args]))
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "ref" / "checkpoints" / ck.step_name(2), tmp_path / "resumed" / "checkpoints")
    resumed = rel_tiny.fit(rel_tiny.parse(["--out", str(tmp_path / "resumed"), *args]))
    assert resumed == ref
    a, b = (torch.load(tmp_path / run / "final.pt") for run in ("ref", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def logged(run_dir: Path) -> dict[tuple[str, str], str]:
    """Every logged (step, metric) of metrics.csv; throughput left out (it is timing)."""
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {(r["step"], k): v for r in rows for k, v in r.items() if v and k != "step" and "per_sec" not in k}


@pytest.mark.slow  # about 2 min on 2 cores: three 2-process runs of recipes/run.py
@pytest.mark.timeout(600)
def test_ddp_kill_9_then_the_same_command_equals_an_uninterrupted_run(tmp_path):
    """recipes/run.py on 2 processes with 2 loader workers each, killed with -9 (process group) after its
    step-15 checkpoint (mid-epoch 0), run again: every logged value (epoch 0's train NLL included) and the
    test figure equal the uninterrupted run's."""
    args = [
        "--recipe", "quickstart", f"data.data_dir={tmp_path / 'data'}", "data.num_workers=2",
        "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.max_epochs=2",
        "trainer.limit_train_batches=30", "trainer.limit_val_batches=5", "trainer.limit_test_batches=5",
        "trainer.max_time=null", "trainer.log_every_n_steps=5", "trainer.enable_progress_bar=false",
        "checkpoint.every_n_steps=15", "model.hidden=4", "model.layers=1", "model.head_channels=8",
        "sample.n=0", "logger=csv", "threads=1",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}

    def command(out: Path) -> list[str]:
        return [sys.executable, str(ROOT / "recipes" / "run.py"), *args, "--out", str(out)]

    subprocess.run(command(tmp_path / "ref"), cwd=ROOT, env=env, check=True, capture_output=True, timeout=280)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        command(out), cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL
    )
    target, deadline = out / "checkpoints" / ck.step_name(15), time.monotonic() + 240
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended before the kill"
    result = subprocess.run(command(out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "[resume] resuming from" in result.stdout

    ref, got = logged(tmp_path / "ref"), logged(out)
    assert ("29", "train/nll_nats") in ref  # epoch 0's, logged at its last step
    assert got == ref
    ref_metrics, got_metrics = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "ref", out))
    assert got_metrics["test/nll_nats"] == ref_metrics["test/nll_nats"]
