"""The journey matrix (issue 19): an interrupted run, re-run with the same command through the real
``recipes/run.py``, ends as the uninterrupted run, in every configuration users run.

Dimensions: the logger (csv, wandb offline), ``data.num_workers`` (0, 2), extra callbacks (none, EMA),
processes (1, 2 with DDP on CPU) and the interruption (kill -9 of the process group mid-training, during a
validation, right after a checkpoint write, during the final test, during the final sampling; SIGTERM), the
faults injected at exact moments by tests/journey_faults.py. Each case asserts exit 0, every logged
(step, metric) once in logs/metrics.csv (and in the offline W&B record) and equal to the uninterrupted run,
parameters and test metrics within 1e-6, and one best checkpoint.

The default run covers every value of every dimension (``DEFAULT``, 6 cases); ``-m slow`` runs the full
product. The uninterrupted reference depends only on (callbacks, processes): it runs with ``num_workers=0``
and W&B, so a case with workers also checks that workers change nothing. References are shared by the
test processes (pytest-xdist workers) through a file lock.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from journey_faults import MOMENTS
from test_journeys import history as csv_history  # every (step, metric, value) of metrics.csv
from test_recipes import wandb_records

ROOT = Path(__file__).resolve().parents[1]
EPOCH, EPOCHS = 8, 2  # training batches per epoch (per process), epochs
ARGS = [
    "--recipe", "quickstart", "model.hidden=4", "model.layers=1", "model.head_channels=8",
    "data.batch_size=8", f"trainer.limit_train_batches={EPOCH}", "trainer.limit_val_batches=3",
    "trainer.limit_test_batches=2", "trainer.log_every_n_steps=2", "trainer.enable_progress_bar=false",
    f"trainer.max_epochs={EPOCHS}", "trainer.max_time=null", "checkpoint.every_n_steps=3",
    "sample.n=2", "sample.every_n_epochs=0", "threads=1",
]  # fmt: skip
EMA = "{class_path: lightning.pytorch.callbacks.EMAWeightAveraging}"
STEP = {"training": 10, "validation": 8, "checkpoint": 12, "test": 0, "sampling": 0, "sigterm": 13}
TIMING = ("train/images_per_sec", "seconds", "test_checkpoint", "samples_png", "_runtime", "_timestamp")

LOGGERS, WORKERS, CALLBACKS, PROCESSES = ("csv", "wandb"), (0, 2), ("none", "ema"), (1, 2)
# every value of every dimension at least once: (interruption, logger, workers, callbacks, processes)
DEFAULT = {
    ("training", "csv", 0, "none", 1),
    ("validation", "wandb", 2, "ema", 1),
    ("checkpoint", "csv", 2, "none", 2),
    ("test", "wandb", 0, "ema", 2),
    ("sampling", "csv", 0, "ema", 1),
    ("sigterm", "wandb", 2, "none", 1),
}
CASES = [
    pytest.param(*case, marks=() if case in DEFAULT else pytest.mark.slow, id="-".join(map(str, case)))
    for case in itertools.product(MOMENTS, LOGGERS, WORKERS, CALLBACKS, PROCESSES)
]


def env() -> dict[str, str]:
    e = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), e.get("PYTHONPATH", "")])
    e.pop("SLURM_JOB_ID", None)
    return e


def command(out: Path, logger: str, workers: int, callbacks: list[str], processes: int) -> list[str]:
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"] if processes == 2 else []
    return [
        sys.executable, "recipes/run.py", *ARGS, *ddp, f"logger={logger}", f"data.num_workers={workers}",
        f"callbacks=[{', '.join(callbacks)}]", "--out", str(out),
    ]  # fmt: skip


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    """The command in its own process group (a fault kills that group), to its end."""
    return subprocess.run(
        cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=400, start_new_session=True
    )


# ----------------------------------------------------------------------------- what a run leaves


def wandb_history(run_dir: Path) -> list[tuple[int, str, float]]:
    """Every (trainer/global_step, metric, value) of the run's offline W&B records, in the order the
    records were written (``wandb sync`` uploads them in that order), timing keys left out."""
    logged = []
    for record_dir in sorted((run_dir / "wandb").glob("offline-run-*")):
        for path in record_dir.glob("*.wandb"):
            for r in wandb_records(path):
                if r.WhichOneof("record_type") != "history":
                    continue
                row = {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                step = row.pop("trainer/global_step", None)
                logged += [
                    (int(step), k, round(float(v), 5))
                    for k, v in row.items()
                    if step is not None and not k.startswith("_") and k not in TIMING
                    and isinstance(v, int | float)
                ]  # fmt: skip
    return logged


def assert_once(logged: list[tuple[int, str, float]], what: str) -> None:
    seen: dict[tuple[int, str], float] = {}
    twice = []
    for step, key, value in logged:
        if key == "epoch":  # Lightning adds it to every row: the training and validation rows of a step
            continue
        if (step, key) in seen:
            twice.append((step, key, seen[(step, key)], value))
        seen[(step, key)] = value
    assert not twice, f"{what}: (step, metric) logged more than once: {twice[:5]}"


def numbers(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING and isinstance(v, int | float)}


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


# ----------------------------------------------------------------------------- the reference


def reference(tmp_path_factory, callbacks: str, processes: int) -> Path:
    """The uninterrupted run of (callbacks, processes), W&B offline, ``num_workers=0``: built once for all
    test processes (their shared base folder, under a file lock)."""
    base = tmp_path_factory.getbasetemp()  # under xdist, <session>/popen-gwN: share the session's folder
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "journey-matrix"
    shared.mkdir(exist_ok=True)
    out = shared / f"ref-{callbacks}-{processes}"
    with FileLock(str(out) + ".lock"):
        if not (out / "metrics.json").is_file():
            cmd = command(out, "wandb", 0, [EMA] if callbacks == "ema" else [], processes)
            done = run(cmd)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


# ----------------------------------------------------------------------------- the matrix


@pytest.mark.timeout(600)
@pytest.mark.parametrize("moment, logger, workers, callbacks, processes", CASES)
def test_interrupted_run_rerun_ends_as_the_uninterrupted_run(
    moment, logger, workers, callbacks, processes, tmp_path, tmp_path_factory
):
    ref = reference(tmp_path_factory, callbacks, processes)
    out, marker = tmp_path / "run", tmp_path / "fault-fired"
    fault = (
        f"{{class_path: journey_faults.Fault, init_args: {{at: {moment}, marker: {marker}, "
        f"step: {STEP[moment]}, run_dir: {out}}}}}"
    )
    cmd = command(out, logger, workers, [EMA, fault] if callbacks == "ema" else [fault], processes)

    first = run(cmd)
    expected = 128 + signal.SIGTERM if moment == "sigterm" else -signal.SIGKILL
    assert marker.is_file(), f"the fault never fired: {first.stdout[-2000:]}{first.stderr[-3000:]}"
    assert first.returncode == expected, first.stdout[-2000:] + first.stderr[-3000:]
    assert not (out / "metrics.json").exists(), "killed after the run finished"

    again = run(cmd)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]

    got, want = csv_history(out), csv_history(ref)
    assert_once(got, "metrics.csv")
    assert got == want
    if logger == "wandb":
        logged = wandb_history(out)
        assert_once(logged, "W&B history")
        assert sorted(logged) == sorted(wandb_history(ref))
    assert len(list((out / "checkpoints").glob("best-*.ckpt"))) == 1
    a, b = params(out), params(ref)
    assert a.keys() == b.keys()
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-6
    assert numbers(out) == pytest.approx(numbers(ref), abs=1e-6)
