"""Real processes, real signals (issue 7): ``python recipes/run.py`` killed with -9 at a random moment, then
the same command again, gives the uninterrupted run's parameters and metrics; SIGTERM checkpoints the
current step and exits cleanly within 30 s; SIGUSR1 under SLURM also requeues the job (a fake
``scontrol`` records the call). The signal tests run tests/rel_tiny.py (the same reliability wiring around
a tiny PixelCNN, with a per-step pause so the signal lands mid-run).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pixel_lightning.reliability import checkpoints as ck

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = [sys.executable, str(ROOT / "tests" / "rel_tiny.py")]


def env(**extra: str) -> dict[str, str]:
    e = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **extra}
    e.pop("SLURM_JOB_ID", None)
    e.update(extra)
    return e


def start(out: Path, *args: str, **env_extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*PROGRAM, "--out", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(**env_extra),
        cwd=ROOT,
    )


def read_until_step(proc: subprocess.Popen, step: int, timeout: float = 240) -> list[str]:
    """Lines of ``proc`` up to the first ``STEP n`` with n >= step."""
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line.rstrip())
        if line.startswith("STEP ") and int(line.split()[1]) >= step:
            return lines
        if time.monotonic() > deadline:
            break
    proc.kill()
    tail = "\n".join(lines[-30:])
    raise AssertionError(f"the run never reached step {step}:\n{tail}")


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, float]:
    t0 = time.monotonic()
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out, time.monotonic() - t0


def run(out: Path, *args: str, timeout: float = 300) -> tuple[int, str]:
    result = subprocess.run(
        [*PROGRAM, "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
        timeout=timeout,
    )
    return result.returncode, result.stdout + result.stderr


def final_params(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "final.pt")


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.slow  # > 10 s; the default run keeps its budget (journeys in test_journeys.py cover it)
def test_sigterm_checkpoints_the_current_step_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    proc = start(out, "--steps", "100000", "--every", "100000", "--sleep", "0.2")
    lines = read_until_step(proc, 4)
    step_at_signal = int(lines[-1].split()[1])
    proc.send_signal(signal.SIGTERM)
    code, text, seconds = finish(proc, timeout=60)
    assert seconds < 30
    assert code == 128 + signal.SIGTERM, text
    assert "Traceback" not in text
    saved = [p for p in (out / "checkpoints").iterdir() if ck.STEP_RE.match(p.name)]
    assert len(saved) == 1
    info = ck.inspect_checkpoint(saved[0])
    assert step_at_signal <= info.step <= step_at_signal + 1  # the step in progress when the signal came
    assert f"step {info.step}" in text and "re-run the same command" in text
    assert ck.inspect_checkpoint(out / "checkpoints" / "last.ckpt").step == info.step


@pytest.mark.slow  # 24 s: SLURM requeue end to end; SIGTERM's journey stays in the default run
def test_sigusr1_under_slurm_checkpoints_requeues_and_the_requeued_job_finishes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    fake = bin_dir / "scontrol"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    out = tmp_path / "run"
    slurm = {"SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = start(out, "--steps", "100000", "--every", "100000", "--sleep", "0.2", **slurm)
    read_until_step(proc, 3)
    proc.send_signal(signal.SIGUSR1)
    code, text, seconds = finish(proc, timeout=60)
    assert code == 128 + signal.SIGUSR1 and seconds < 30, text
    assert calls.read_text().split() == ["requeue", "4242"]
    assert "requeued" in text
    step = ck.inspect_checkpoint(out / "checkpoints" / "last.ckpt").step

    code, text = run(out, "--steps", str(step + 2), "--every", "100000")  # the requeued job starts again
    assert code == 0, text
    assert f"step {step}" in text and "[resume] resuming from" in text
    assert ck.inspect_checkpoint(out / "checkpoints" / "last.ckpt").step == step + 2


RECIPE_ARGS = [
    "--recipe", "quickstart", "model.hidden=4", "model.layers=1", "logger=none", "sample.n=0",
    "trainer.enable_progress_bar=false", "trainer.max_time=00:01:00:00", "trainer.max_steps=300",
    "trainer.limit_train_batches=40", "trainer.limit_val_batches=2", "trainer.limit_test_batches=4",
    "checkpoint.every_n_steps=10", "threads=1",
]  # fmt: skip
TIMING_KEYS = ("train/images_per_sec", "seconds", "test_checkpoint")


def comparable(metrics: dict) -> dict:
    """The numbers of metrics.json (timings and paths left out)."""
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS and isinstance(v, int | float)}


@pytest.mark.slow  # > 10 s; the default run keeps its budget (journeys in test_journeys.py cover it)
def test_kill_9_of_recipes_run_py_then_the_same_command_equals_an_uninterrupted_run(tmp_path):
    """The acceptance test through the real command line: kill -9 at a random moment (a random step,
    possibly during a checkpoint write), the same command again, then parameters and metrics equal."""
    from pixel_lightning.runner import main

    assert main([*RECIPE_ARGS, "--out", str(tmp_path / "ref")]) == 0  # the uninterrupted run, in-process
    out = tmp_path / "run"
    command = [sys.executable, "recipes/run.py", *RECIPE_ARGS, "--out", str(out)]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    rng = random.Random()
    # a step save at an epoch end (every 40 steps) is taken at the next plain batch end: not those steps
    target = out / "checkpoints" / ck.step_name(rng.choice([s for s in range(20, 130, 10) if s % 40]))
    deadline = time.monotonic() + 240
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0, 0.3))  # then somewhere between two checkpoints (>= 180 steps left)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill ({target.name})"
    assert not (out / "metrics.json").exists()

    result = subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[resume] resuming from" in result.stdout, result.stdout
    ref = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    got = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert max_diff(ref, got) <= 1e-6, target.name
    ref_metrics = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    got_metrics = json.loads((out / "metrics.json").read_text())
    assert comparable(got_metrics) == pytest.approx(comparable(ref_metrics), abs=1e-6), target.name
