"""Whole journeys through ``python recipes/run.py`` (issue 11), with the loggers users get (the CSV log, and
W&B offline): re-run a finished run (epoch-, step- and time-bounded), extend one, kill -9 at a random moment
and at an epoch boundary then re-run, SIGTERM then re-run. Each interrupted journey ends with exit 0, the
complete metric history in logs/metrics.csv (every logged (step, metric) exactly once), one best
checkpoint, and the parameters and metrics of the uninterrupted run (1e-6).

One uninterrupted reference run (W&B offline, which also writes the CSV log) is shared by the module.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EPOCH = 10  # training batches per epoch
ARGS = [
    "--recipe", "quickstart", "model.hidden=4", "model.layers=1", "model.head_channels=8",
    "data.batch_size=8", f"trainer.limit_train_batches={EPOCH}", "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2", "trainer.log_every_n_steps=2", "trainer.enable_progress_bar=false",
    "checkpoint.every_n_steps=3", "sample.n=0", "threads=1",
]  # fmt: skip
EPOCHS = 6
TIMING = ("train/images_per_sec", "seconds", "test_checkpoint", "samples_png")
LOGGERS = ["csv", pytest.param("wandb", marks=pytest.mark.slow)]


def command(out: Path, logger: str, *extra: str) -> list[str]:
    return [sys.executable, "recipes/run.py", *ARGS, f"logger={logger}", "--out", str(out), *extra]


def env() -> dict[str, str]:
    e = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    e.pop("SLURM_JOB_ID", None)
    return e


def run(out: Path, logger: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = command(out, logger, f"trainer.max_epochs={EPOCHS}", *extra)
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=400)


def start(out: Path, logger: str, *extra: str) -> subprocess.Popen:
    cmd = command(out, logger, f"trainer.max_epochs={EPOCHS}", *extra)
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def kill_9(proc: subprocess.Popen) -> None:
    """SIGKILL to the run's whole process group, as a job kill (scancel, a lost node) does: W&B's service
    process dies with it. (Killing the Python process alone leaves that service holding the run id for a
    while, and an immediate re-run can then be refused by W&B with "run ID ... is in use".)"""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(proc: subprocess.Popen, path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before {path.name} appeared"


def history(run_dir: Path) -> list[tuple[int, str, float]]:
    """Every (step, metric, value) of logs/metrics.csv, sorted; timing columns left out."""
    with (run_dir / "logs" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return sorted(
        (int(r["step"]), k, round(float(v), 5))
        for r in rows
        for k, v in r.items()
        if v not in ("", None) and k not in ("step", *TIMING)
    )


def wandb_history(run_dir: Path) -> list[tuple[int, str, float]]:
    """Every (step, metric, value) of the run's W&B record files together (all runs of its id), sorted."""
    from pixel_lightning.wandb_record import STEP_KEY, history_rows, wandb_records

    rows = [
        r for p in sorted((run_dir / "wandb").glob("*run-*/*.wandb")) for r in history_rows(wandb_records(p))
    ]
    return sorted(
        (int(r[STEP_KEY]), k, round(float(v), 5))
        for r in rows
        for k, v in r.items()
        if k not in (STEP_KEY, *TIMING) and isinstance(v, int | float)
    )


def numbers(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING and isinstance(v, int | float)}


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def assert_same_run(got: Path, ref: Path) -> None:
    """Exit state of ``got`` equals the uninterrupted ``ref``: history, one best, parameters, metrics."""
    assert history(got) == history(ref)
    assert len(list((got / "checkpoints").glob("best-*.ckpt"))) == 1
    a, b = params(got), params(ref)
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-6
    assert numbers(got) == pytest.approx(numbers(ref), abs=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run, W&B offline (the CSV log is always written too)."""
    out = tmp_path_factory.mktemp("journeys") / "ref"
    result = run(out, "wandb")
    assert result.returncode == 0, result.stdout + result.stderr
    (out.parent / "ref-output.txt").write_text(result.stdout + result.stderr)
    return out


# Notices our own defaults used to cause, and carriage-return progress bars in a log file.
NOISE = ("was configured so", "could not find the monitored key", "litlogger", "LeafSpec", "split:", "\r")


def test_a_default_run_prints_no_lightning_notices(reference):
    """Piped output (as under SLURM): no notice caused by our defaults, no progress bars, and one
    readable line per validation instead."""
    output = (reference.parent / "ref-output.txt").read_text()
    assert [n for n in NOISE if n in output] == []
    assert output.count("[val] step") == EPOCHS


def copy_of(reference: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    return out


# ----------------------------------------------------------------------------- re-run, extend


def test_rerun_of_a_finished_epoch_bounded_run_prints_its_result_without_training(reference, tmp_path):
    out = copy_of(reference, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()}
    result = run(out, "wandb")
    assert result.returncode == 0, result.stderr
    assert "[done] this run already finished" in result.stdout and "[quickstart] test:" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()} == before
    assert history(out) == history(reference)


@pytest.mark.parametrize("logger", LOGGERS)
@pytest.mark.parametrize(
    "bound", [pytest.param("trainer.max_steps=15", marks=pytest.mark.slow), "trainer.max_time=00:00:00:02"]
)  # the step bound takes the epoch bound's path (test above); the time bound is its own
def test_rerun_of_a_finished_step_or_time_bounded_run(bound, logger, tmp_path):
    out = tmp_path / "run"
    first = run(out, logger, bound, "trainer.max_epochs=1000")
    assert first.returncode == 0, first.stderr
    rows = history(out)
    again = run(out, logger, bound, "trainer.max_epochs=1000")
    assert again.returncode == 0, again.stderr
    assert "[done] this run already finished" in again.stdout and "Trainer.fit" not in again.stderr
    assert history(out) == rows and len(list((out / "checkpoints").glob("best-*.ckpt"))) == 1


@pytest.mark.parametrize("logger", LOGGERS)
def test_extend_a_finished_run(reference, logger, tmp_path):
    """Trained for 4 epochs, then the budget raised to 6: the 6-epoch run, history included."""
    out = tmp_path / "run"
    assert run(out, logger, "trainer.max_epochs=4").returncode == 0
    result = run(out, logger)
    assert result.returncode == 0, result.stderr
    assert "[resume] resuming from" in result.stdout
    assert_same_run(out, reference)


# ----------------------------------------------------------------------------- interruptions


# a random moment (the matrix, tests/test_journey_matrix.py, kills at chosen ones in the default run)
@pytest.mark.slow
@pytest.mark.parametrize("logger", LOGGERS)
def test_kill_9_at_a_random_moment_then_rerun(reference, logger, tmp_path):
    out = tmp_path / "run"
    rng = random.Random()
    proc = start(out, logger)
    wait_for(proc, out / "checkpoints" / f"step={3 * rng.randint(1, 12):09d}.ckpt")
    time.sleep(rng.uniform(0, 0.5))  # anywhere: a step, a validation, a checkpoint write
    kill_9(proc)
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    result = run(out, logger)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_same_run(out, reference)
    if logger == "wandb":  # the same W&B run, resumed: its id in both offline records
        run_id = (out / "wandb_id.txt").read_text().strip()
        records = sorted((out / "wandb").glob("offline-run-*"))
        assert len(records) >= 2 and all(r.name.endswith(run_id) for r in records)
        assert wandb_history(out) == wandb_history(reference)  # every row once, whenever W&B flushed


def test_a_cut_wandb_record_file_reads_to_its_last_whole_record(reference, tmp_path):
    """A record file cut by a kill (mid-chunk) is read up to its last whole record, without an error."""
    from pixel_lightning.wandb_record import wandb_records

    (path,) = (reference / "wandb").glob("offline-run-*/*.wandb")
    cut = tmp_path / path.name
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2 + 3])
    assert 0 < len(wandb_records(cut)) < len(wandb_records(path))


@pytest.mark.slow  # the journey matrix's W&B cases check the same in the default run
def test_kill_9_loses_no_wandb_row(reference, tmp_path):
    """Killed at step 9, before W&B flushed its record file (it does every 15 s): the re-run completes the
    W&B run from the CSV log, so both hold every (step, metric) of the uninterrupted run exactly once."""
    out = tmp_path / "run"
    proc = start(out, "wandb")
    wait_for(proc, out / "checkpoints" / f"step={9:09d}.ckpt")
    kill_9(proc)
    result = run(out, "wandb")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_same_run(out, reference)
    assert wandb_history(out) == wandb_history(reference)


# the reference's budget, or the same end as a step budget (Lightning restores the loops of an
# iteration-based run (max_steps) by other paths)
BUDGETS = {"epochs": (), "steps": (f"trainer.max_steps={EPOCHS * EPOCH}", "trainer.max_epochs=1000")}


@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("logger", LOGGERS)
def test_kill_9_at_an_epoch_boundary_then_rerun(reference, logger, budget, tmp_path):
    """Killed after the epoch-end checkpoint of epoch 1 (checkpoints at epoch ends only, each taken at the
    next epoch's first step, so the re-run resumes from an epoch boundary, whatever the kill's moment): the
    re-run trains epochs 2.. on their own data order, so it ends as the uninterrupted run."""
    out = tmp_path / "run"
    extra = ("checkpoint.every_n_steps=1000", *BUDGETS[budget])  # checkpoints at epoch ends only
    proc = start(out, logger, *extra)
    wait_for(proc, out / "checkpoints" / f"step={2 * EPOCH + 1:09d}.ckpt")  # due at the end of epoch 1
    kill_9(proc)
    result = run(out, logger, *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[resume] resuming from" in result.stdout
    assert_same_run(out, reference)


@pytest.mark.slow  # the matrix's sigterm case covers it in the default run
@pytest.mark.parametrize("logger", LOGGERS)
def test_sigterm_then_rerun(reference, logger, tmp_path):
    out = tmp_path / "run"
    proc = start(out, logger)
    wait_for(proc, out / "checkpoints" / f"step={9:09d}.ckpt")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    result = run(out, logger)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_same_run(out, reference)


# ----------------------------------------------------------------------------- --config


def test_a_runs_saved_config_reproduces_it(reference, tmp_path):
    """``--config <run>/config.yaml`` (and nothing else but a new --out) trains the same run again."""
    out = tmp_path / "again"
    cmd = [sys.executable, "recipes/run.py", "--config", str(reference / "config.yaml"), "--out", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[quickstart] test:" in result.stdout
    assert_same_run(out, reference)
