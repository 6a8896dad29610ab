"""A run directory holds one run, written by one process (issue 19, items 2, 3, 4, 6): a second process on
the same --out is refused while the first lives and takes over after a kill -9; another run's settings are
refused and change nothing; weight averaging (EMA) reaches the test figure; the guard's recovery trains on.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_cli_errors import ForkServer

from pixel_lightning.errors import NonFiniteError, RunLockedError
from pixel_lightning.models.base import ModelConfig
from pixel_lightning.reliability import rundir
from pixel_lightning.reliability.guard import NonFiniteGuard, set_aside_diverged
from pixel_lightning.runfolder import RunFolder, identity_differences

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--recipe", "quickstart", "model.hidden=4", "model.layers=1", "model.head_channels=8",
    "data.batch_size=8", "trainer.limit_train_batches=10", "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2", "trainer.log_every_n_steps=2", "trainer.enable_progress_bar=false",
    "checkpoint.every_n_steps=3", "sample.n=0", "threads=1", "logger=csv",
]  # fmt: skip
EMA = "callbacks=[{class_path: lightning.pytorch.callbacks.EMAWeightAveraging, init_args: {decay: 0.5}}]"


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


def run(server: ForkServer, out: Path, *extra: str) -> tuple[int, str, str]:
    logs = out.parent / f"logs-{time.monotonic_ns()}"
    logs.mkdir(parents=True)
    return server.run([*TINY, *extra, "--out", str(out)], logs)


def start(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "recipes/run.py", *TINY, *extra, "--out", str(out)]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(proc: subprocess.Popen, path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.exists(), f"{path.name} did not appear"


def rows(out: Path) -> collections.Counter:
    """How often each (step, metric) is in logs/metrics.csv (epoch, timing left out)."""
    with (out / "logs" / "metrics.csv").open(newline="") as f:
        return collections.Counter(
            (int(r["step"]), k)
            for r in csv.DictReader(f)
            for k, v in r.items()
            if v not in ("", None) and k not in ("step", "epoch", "train/images_per_sec")
        )


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def assert_whole(out: Path, steps: int) -> None:
    counts = rows(out)
    assert [key for key, n in counts.items() if n > 1] == []
    assert sorted(s for s, k in counts if k == "train/loss") == list(range(1, steps, 2))


# ----------------------------------------------------------------------------- one writer (item 2)


def test_a_second_process_on_one_folder_is_refused(server, tmp_path):
    """The first run is paused (SIGSTOP) after a checkpoint: the same command on the same --out is refused
    (exit 2, naming the holder) and changes nothing there. Then the first is killed with -9: its lock is
    stale, the re-run takes it over, resumes, and the record holds every (step, metric) once."""
    out = tmp_path / "run"
    first = start(out, "trainer.max_steps=20")
    wait_for(first, out / "checkpoints" / "step=000000006.ckpt")
    first.send_signal(signal.SIGSTOP)
    try:
        time.sleep(0.5)  # a checkpoint's rename is followed by fsyncs and the log row
        before = snapshot(out)
        code, stdout, stderr = run(server, out, "trainer.max_steps=20")
        assert code == 2, stdout + stderr
        assert f"pid {first.pid}" in stderr and socket.gethostname() in stderr and "another --out" in stderr
        assert snapshot(out) == before
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    code, stdout, stderr = run(server, out, "trainer.max_steps=20")
    assert code == 0, stdout + stderr
    assert "[lock] taking over the stale lock" in stdout and "[resume] resuming from" in stdout
    assert_whole(out, 20)
    assert not RunFolder(out).lock_file.exists()


def lock_of_another_host(path: Path) -> None:
    """The lock of pid 1 on host ``elsewhere``, in the format filelock's SoftFileLease writes (protocol 2)."""
    duration = f"duration={rundir.STALE_AFTER_S!r}"  # every holder of a lease agrees on its duration
    lines = ["filelock/2", "pid=1", "host=elsewhere", "mode=lease", f"token={'0' * 32}", duration]
    path.write_text("".join(f"{line}\n" for line in lines))


@pytest.fixture
def short_lease(monkeypatch):
    monkeypatch.setattr(rundir, "STALE_AFTER_S", 1.0)
    monkeypatch.setattr(rundir, "HEARTBEAT_S", 0.2)


def test_lock_of_another_host_is_stale_only_when_its_heartbeat_stops(tmp_path, short_lease):
    """Another host's pid means nothing here: its lock is stale once its heartbeat (mtime) stops. Taken over,
    the lock is this process's (live: refused at once) and beats; released at the end."""
    lock, said = RunFolder(tmp_path).lock_file, []
    lock_of_another_host(lock)
    start = time.monotonic()
    with rundir.RunLock(tmp_path, report=said.append):  # no heartbeat: stale, taken over
        assert time.monotonic() - start >= 1.0
        assert said == [f"[lock] taking over the stale lock {lock} of elsewhere pid 1: that process is gone"]
        assert f"pid={os.getpid()}" in lock.read_text()
        beat = lock.stat().st_mtime_ns
        time.sleep(0.5)
        assert lock.stat().st_mtime_ns != beat
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            rundir.RunLock(tmp_path).__enter__()
    assert not lock.exists()


def test_lock_of_a_live_process_elsewhere_is_refused(tmp_path, short_lease):
    """Its heartbeat moves (as another host's holder refreshes it): refused, naming it; the lock is kept.
    Written long ago (mtime 100 s back, beating from 0.3 s on), it is watched on this host's clock, not broken
    at first sight, as filelock before 4.1.0 did (pyproject.toml's lower bound; docs/reliability.md)."""
    lock, stop = RunFolder(tmp_path).lock_file, threading.Event()
    lock_of_another_host(lock)
    text, then = lock.read_text(), time.time() - 100
    os.utime(lock, (then, then))

    def beat() -> None:
        stop.wait(0.3)
        while not stop.wait(0.1):
            os.utime(lock)

    threading.Thread(target=beat, daemon=True).start()
    try:
        with pytest.raises(RunLockedError, match="elsewhere pid 1"):
            rundir.RunLock(tmp_path).__enter__()
    finally:
        stop.set()
    assert lock.read_text() == text


# ----------------------------------------------------------------------------- one run per folder (item 6)


@pytest.fixture(scope="module")
def finished(server, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("identity") / "run"
    code, stdout, stderr = run(server, out, "trainer.max_steps=6")
    assert code == 0, stdout + stderr
    return out


@pytest.mark.parametrize(
    "state, change",
    [
        ("unfinished", "seed=1"),
        ("unfinished", "data.batch_size=4"),
        ("unfinished", "data.binarization=stochastic"),
        ("finished", "seed=1"),  # main printed the old result as this run's
    ],
)
def test_another_run_into_the_same_folder_is_refused(server, finished, state, change, tmp_path):
    """Refused with exit 2 naming the setting and the fix; nothing in the folder changes."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    if state == "unfinished":
        (out / "metrics.json").unlink()
    before = snapshot(out)
    code, stdout, stderr = run(server, out, "trainer.max_steps=6", change)
    assert code == 2, stdout + stderr
    assert f"{change} here" in stderr and "another --out" in stderr
    assert snapshot(out) == before


def test_identity_ignores_budget_output_logging_and_resumable_changes():
    saved = {
        "seed": 0, "out": "a", "trainer": {"max_steps": 5, "log_every_n_steps": 2, "devices": 1},
        "logger": {"kind": "wandb"}, "model": {"lr": 0.1, "hidden": 4}, "data_resolved": {"x": 1},
    }  # fmt: skip
    same = {
        "seed": 0, "out": "b", "trainer": {"max_steps": 9, "log_every_n_steps": 5, "devices": 1},
        "logger": {"kind": "csv"}, "model": {"lr": 0.01, "hidden": 4},
    }  # fmt: skip
    resumable = ModelConfig.RESUMABLE_CHANGES  # the model's own (RunFolder.check_same_run passes them)
    assert identity_differences(saved, same, resumable) == []
    other = {**same, "trainer": {**same["trainer"], "devices": 2}, "model": {"lr": 0.01, "hidden": 8}}
    assert identity_differences(saved, other, resumable) == [
        "model.hidden=4 there, model.hidden=8 here",
        "trainer.devices=1 there, trainer.devices=2 here",
    ]


# ----------------------------------------------------------------------------- EMA (item 3)


def test_ema_reaches_the_test_figure(server, tmp_path):
    """With EMAWeightAveraging the printed and saved test figure is the one `pixel-lightning test` gives
    on the best checkpoint (its averaged weights), and not the figure of the run without EMA."""
    figures = {}
    for name, extra in (("plain", ()), ("ema", (EMA,))):
        out = tmp_path / name
        code, stdout, stderr = run(server, out, "trainer.max_epochs=2", *extra)
        assert code == 0, stdout + stderr
        figures[name] = json.loads((out / "metrics.json").read_text())["test/nll_nats"]
    (best,) = (tmp_path / "ema" / "checkpoints").glob("best-*.ckpt")
    logs = tmp_path / "test-logs"
    logs.mkdir()
    code, stdout, stderr = server.run(["test", "--ckpt", str(best)], logs, program="pixel-lightning")
    assert code == 0, stdout + stderr
    assert json.loads(stdout)["test/nll_nats"] == pytest.approx(figures["ema"], abs=1e-4)
    assert figures["ema"] != pytest.approx(figures["plain"], abs=1e-3)


# ----------------------------------------------------------------------------- guard recovery (item 4)


def test_guard_recovery_trains_on_from_a_sane_checkpoint(server, tmp_path):
    """lr=1e9 diverges at once (every checkpoint holds exploded weights); the guard stops it (exit 3) and
    sets those checkpoints aside; the same command with a lower model.lr then trains the run from its
    last sane state (here: the start) to the end, equal to a fresh run with that lr."""
    out, fresh = tmp_path / "run", tmp_path / "fresh"
    budget = ("trainer.max_steps=30", "checkpoint.every_n_steps=5")
    code, stdout, stderr = run(server, out, *budget, "model.lr=1e9")
    assert code == 3, stdout + stderr
    assert "model.lr=1e+08" in stderr and "starts over" in stderr
    assert list(out.glob("diverged-after-step-0/step=*.ckpt"))
    code, stdout, stderr = run(server, out, *budget, "model.lr=1e-3")
    assert code == 0, stdout + stderr
    assert "[guard]" not in stdout
    assert run(server, fresh, *budget, "model.lr=1e-3")[0] == 0
    assert rows(out) == rows(fresh)
    assert_whole(out, 30)
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=False) for d in (out, fresh))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    guard_state = next(v for k, v in a["callbacks"].items() if "NonFiniteGuard" in k)
    assert guard_state["skipped"] == []


def test_guard_keeps_the_newest_sane_step_and_sets_later_checkpoints_aside(tmp_path):
    """Losses 4, 3, 2, then 25 (> 10 x the lowest: diverged, finite), then NaN: the last sane step is 2;
    the checkpoints of steps 3 and 4 are moved aside, those of steps 0..2 stay."""
    guard = NonFiniteGuard(max_skips=0)
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = SimpleNamespace(param_groups=[{"params": [weight]}])
    module = SimpleNamespace(log=lambda *a, **k: None)
    for step, loss in enumerate([4.0, 3.0, 2.0, 25.0, float("nan")]):
        trainer = SimpleNamespace(
            global_step=step,
            current_epoch=0,
            fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_idx=step)),
        )
        weight.grad = torch.ones(2)
        guard.on_before_backward(trainer, module, torch.tensor(loss))
        if step < 4:
            guard.on_before_optimizer_step(trainer, module, optimizer)
        else:
            with pytest.raises(NonFiniteError) as stop:
                guard.on_before_optimizer_step(trainer, module, optimizer)
    assert guard.sane_step == 2 and stop.value.sane_step == 2
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()

    def saved(step: int) -> dict:  # what the guard reads of a pixel-lightning checkpoint
        return {"global_step": step, "pixel_lightning": {"arch": "pixelcnn"}, "state_dict": {}}

    for step in range(5):
        torch.save(saved(step), ckpts / f"step={step:09d}.ckpt")
    torch.save(saved(4), ckpts / "last.ckpt")
    folder, resume_step = set_aside_diverged(ckpts, 2)
    assert resume_step == 2 and folder == tmp_path / "diverged-after-step-2"
    assert sorted(p.name for p in folder.iterdir()) == [
        "last.ckpt",
        "step=000000003.ckpt",
        "step=000000004.ckpt",
    ]
    assert sorted(p.name for p in ckpts.iterdir()) == [f"step={s:09d}.ckpt" for s in range(3)]
