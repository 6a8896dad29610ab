"""Reliability mechanisms in-process (issue 7): exact mid-epoch resume, determinism, atomic checkpoints,
validated resume discovery, checkpoint compatibility, the non-finite guard, error reporting.

One uninterrupted reference run (30 steps of a tiny PixelCNN on 40 8x8 images, 10 batches an epoch,
cosine schedule, a checkpoint every 5 steps, all kept) is shared by the tests of this module; a second
one draws random numbers in every step, for resumes with loader workers and RNGState's control (issue 19).
"""

from __future__ import annotations

import csv
import io
import random
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rel_tiny
import torch

from benchmarks.tiny import MemoryStore
from pixel_lightning import reliability
from pixel_lightning.data.base import BatchLoader, ImageBatches, ShardedBatchSampler
from pixel_lightning.errors import (
    CheckpointError,
    ConfigError,
    NonFiniteError,
    Preempted,
    cli_errors,
)
from pixel_lightning.reliability import checkpoints as ck
from pixel_lightning.reliability.checkpoints import RNGState

STEPS = 30


def params(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "final.pt")


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def fit(out: Path, *extra: str) -> dict[str, float]:
    return rel_tiny.fit(rel_tiny.parse(["--out", str(out), "--steps", str(STEPS), *extra]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """The uninterrupted run: every checkpoint kept (steps 5, 10, ..., 30)."""
    out = tmp_path_factory.mktemp("reference")
    return out, fit(out, "--keep", "100")


def resume_from(reference: Path, step: int, out: Path, *extra: str) -> dict[str, float]:
    """A new run directory holding only the reference's checkpoint of ``step``, run to the end."""
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(reference / "checkpoints" / ck.step_name(step), out / "checkpoints")
    return fit(out, *extra)


# ----------------------------------------------------------------------------- exact resume, determinism


# batch 5 of epoch 1, of epoch 2 (the last); the saves due at the ends of epochs 0 and 1, taken at the next
# epoch's first step: 10 batches an epoch (max_steps)
@pytest.mark.parametrize("step", [15, 25, 11, 21])
def test_resume_is_exact(reference, tmp_path, step):
    """Parameters, and the metrics: val/test NLL, and train NLL of the last epoch, which for step 25 is
    the interrupted epoch (its accumulated metric state comes back from the checkpoint). A save due at an
    epoch end (10, 20) is taken at the next plain batch end (11, 21): Lightning resumes one taken at the
    epoch end or after its validation without the epoch-end metrics (train NLL then differs)."""
    ref, ref_metrics = reference
    metrics = resume_from(ref, step, tmp_path / "resumed")
    assert max_diff(params(ref), params(tmp_path / "resumed")) <= 1e-6
    assert metrics == ref_metrics


def test_resume_without_loader_state_differs(reference, tmp_path, monkeypatch):
    """The control: if the loader's position is not restored, the resumed run is NOT the same run, so the
    test above can fail."""
    monkeypatch.setattr(BatchLoader, "load_state_dict", lambda self, state: None)
    resume_from(reference[0], 15, tmp_path / "r15")
    assert max_diff(params(reference[0]), params(tmp_path / "r15")) > 1e-4


def test_resume_without_metric_state_differs(reference, tmp_path, monkeypatch):
    """The control for the metrics: without the saved metric states the interrupted epoch's train NLL
    covers only the batches after the resume."""
    from pixel_lightning.reliability.checkpoints import MetricState

    monkeypatch.setattr(MetricState, "on_train_start", lambda *args: None)
    metrics = resume_from(reference[0], 25, tmp_path / "r25")
    assert metrics["train/nll_nats"] != reference[1]["train/nll_nats"]


def test_same_seed_same_metrics_other_seed_differs(reference, tmp_path):
    ref, ref_metrics = reference
    assert fit(tmp_path / "again") == ref_metrics
    assert max_diff(params(ref), params(tmp_path / "again")) == 0.0
    assert fit(tmp_path / "seed1", "--seed", "1") != ref_metrics


@pytest.mark.parametrize("first", [13, 10])
def test_a_larger_budget_continues_mid_epoch_exactly(tmp_path, first):
    """Run 13 steps (stops mid-epoch 1) or 10 (the end of epoch 0: saved when training ends), then the
    same run dir with 24: equals a fresh 24-step run. (No cosine schedule here: its length depends on the
    budget.)"""
    fixed = ["--scheduler", "none", "--every", "100"]
    fit(tmp_path / "grow", *fixed, "--steps", str(first))
    assert (tmp_path / "grow" / "checkpoints" / ck.step_name(first)).is_file()  # saved at the final step
    grown = fit(tmp_path / "grow", *fixed, "--steps", "24")
    assert fit(tmp_path / "fresh", *fixed, "--steps", "24") == grown
    assert max_diff(params(tmp_path / "fresh"), params(tmp_path / "grow")) <= 1e-6


@pytest.fixture(scope="module")
def noisy_reference(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """Uninterrupted, no loader workers, random pixel flips in every training step (``--noise``: draws
    from torch's, numpy's and python's generators); every checkpoint kept."""
    out = tmp_path_factory.mktemp("noisy")
    return out, fit(out, "--noise", "--keep", "100")


def test_resume_is_exact_with_random_draws_in_the_step_and_two_workers(noisy_reference, tmp_path):
    """Resumed at step 15 (mid-epoch 1) with 2 persistent loader workers (the data order does not depend
    on their number): the same parameters and metrics, the interrupted epoch's train NLL included."""
    ref, ref_metrics = noisy_reference
    metrics = resume_from(ref, 15, tmp_path / "resumed", "--noise", "--workers", "2")
    assert max_diff(params(ref), params(tmp_path / "resumed")) <= 1e-6
    assert metrics == ref_metrics


def test_resume_without_rng_state_differs(noisy_reference, tmp_path, monkeypatch):
    """The control for RNGState: without the saved generator states the steps after the resume flip other
    pixels."""
    monkeypatch.setattr(RNGState, "on_train_start", lambda *args: None)
    resume_from(noisy_reference[0], 15, tmp_path / "r15", "--noise")
    assert max_diff(params(noisy_reference[0]), params(tmp_path / "r15")) > 1e-4


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.mark.parametrize("layout", ["ranks", "flat, before issue 19", "flat, control"])
def test_rng_state_restores_todays_and_older_checkpoints(layout, monkeypatch):
    """A checkpoint holds the generator states of every rank (``ranks``); one written before issue 19 held
    rank 0's alone, flat, with the python state as a list. Both restore the draws after the save; the
    control, reading the flat one as today's layout, restores nothing (the draws differ)."""
    seed_all(0)
    mine = RNGState().mine()
    expected = (torch.rand(3), np.random.rand(3).tolist(), random.random())
    if layout != "ranks":
        version, internal, gauss_next = mine["python"]
        mine["python"] = [version, list(internal), gauss_next]
    buffer = io.BytesIO()
    torch.save({"ranks": [mine]} if layout == "ranks" else mine, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # as Lightning reads a checkpoint
    if layout == "flat, control":
        monkeypatch.setattr(RNGState, "FLAT_BEFORE_ISSUE_19", False)
    seed_all(1)
    loader = RNGState()
    loader.load_state_dict(state)
    loader.on_train_start(SimpleNamespace(world_size=1, global_rank=0), None)
    drawn = (torch.rand(3), np.random.rand(3).tolist(), random.random())
    same = torch.equal(drawn[0], expected[0]) and drawn[1:] == expected[1:]
    assert same == (layout != "flat, control")


def batch_loader(workers: int) -> BatchLoader:
    data = ImageBatches(MemoryStore(np.arange(40, dtype=np.uint8)[:, None]), np.arange(40))
    return BatchLoader(data, ShardedBatchSampler(40, 3, shuffle=True, seed=7), workers)


def first_pixels(batches) -> list[list[int]]:
    return [x[:, 0].tolist() for x, _ in batches]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_position_is_the_batches_handed_over(workers):
    """3 batches of epoch 1 handed over (workers have read indices further ahead; torch's multi-process
    iterator even iterates its sampler twice when it is made): a new loader restored from that state gives
    exactly the other 11; its next epoch is whole; the restored position served its own pass only."""
    first = batch_loader(workers)
    first.sampler.set_epoch(1)
    it = iter(first)
    seen = [next(it) for _ in range(3)]
    state = first.state_dict()
    rest = first_pixels(it)
    assert state == {"epoch": 1, "batches": 3} and len(seen) + len(rest) == len(first) == 14

    second = batch_loader(workers)
    second.load_state_dict(state)
    second.sampler.set_epoch(1)
    assert first_pixels(second) == rest
    second.sampler.set_epoch(2)
    assert len(first_pixels(second)) == 14  # persistent workers: the same iterator, a whole epoch
    second.sampler.set_epoch(1)
    assert first_pixels(second)[3:] == rest


# ----------------------------------------------------------------------------- checkpoint files


def test_history_is_bounded_and_last_is_the_newest(tmp_path):
    """Step 10 is the last batch of epoch 0: saved at the next plain batch end (11); 12 is the final step."""
    out = tmp_path / "run"
    fit(out, "--steps", "12", "--every", "2", "--keep", "3")  # later --steps wins in argparse
    ckpts = out / "checkpoints"
    names = sorted(p.name for p in ckpts.iterdir() if not p.name.startswith("best-"))
    assert names == ["last.ckpt", ck.step_name(8), ck.step_name(11), ck.step_name(12)]
    assert len(list(ckpts.glob("best-*.ckpt"))) == 1
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 12


def csv_history(out: Path) -> list[tuple[int, str, str]]:
    with (out / "logs" / "metrics.csv").open(newline="") as f:
        return sorted(
            (int(r["step"]), k, v) for r in csv.DictReader(f) for k, v in r.items() if v and k != "step"
        )


class Killed(RuntimeError):
    """A kill -9 stand-in, raised right after a checkpoint write."""


def test_a_kill_right_after_a_batch_end_checkpoint_keeps_the_step_row(reference, tmp_path, monkeypatch):
    """Killed right after the checkpoint of step 15 (a plain batch end), before Lightning logs that step's
    row: the re-run resumes at step 16 and never logs row 15, so the checkpoint writes it first
    (checkpoints.write_step_row). The history then equals an uninterrupted run's."""
    fit(tmp_path / "whole", "--csv")
    save_now = ck.PeriodicCheckpoint.save_now

    def killed_after(self, trainer, batch_end=False):
        path = save_now(self, trainer, batch_end)
        if trainer.global_step == 15:
            raise Killed
        return path

    monkeypatch.setattr(ck.PeriodicCheckpoint, "save_now", killed_after)
    with pytest.raises(Killed):
        fit(tmp_path / "killed", "--csv")
    monkeypatch.undo()
    fit(tmp_path / "killed", "--csv")
    assert csv_history(tmp_path / "killed") == csv_history(tmp_path / "whole")
    assert max_diff(params(tmp_path / "whole"), params(tmp_path / "killed")) <= 1e-6


def test_history_logger_continues_the_rows_before_the_checkpoint(tmp_path):
    """A resumed run keeps the rows its checkpoint counted (a half-written last line is dropped), writes a
    row repeated by a batch-end checkpoint once (NaN included) and rewrites the header for a new key."""
    first = reliability.HistoryLogger(tmp_path)
    for step, loss in ((0, 1.0), (1, float("nan")), (1, float("nan")), (2, 0.5)):
        first.log_metrics({"train/loss": torch.tensor(loss)}, step)
    assert first.rows == 3
    with (tmp_path / "logs" / "metrics.csv").open("a") as f:
        f.write("3,0.2")  # cut by a kill
    resumed = reliability.HistoryLogger(tmp_path, keep=2)  # the checkpoint was taken after 2 rows
    resumed.log_metrics({"val/nll_nats": 7.0}, 2)
    assert csv_history(tmp_path) == [
        (0, "train/loss", "1.0"),
        (1, "train/loss", "nan"),
        (2, "val/nll_nats", "7.0"),
    ]


def test_a_moved_run_folder_keeps_its_bookkeeping(tmp_path):
    """Trained to step 12, the folder moved, then extended to 34: the same checkpoints (keep_last_k step
    files, one best file) and the same best checkpoint state as the run extended where it was."""
    args = ["--every", "2", "--keep", "3", "--scheduler", "none"]
    for name in ("stay", "moved"):
        fit(tmp_path / name, *args, "--steps", "12")
    shutil.move(tmp_path / "moved", tmp_path / "elsewhere")
    for name in ("stay", "elsewhere"):
        fit(tmp_path / name, *args, "--steps", "34")

    def bookkeeping(out: Path) -> tuple[list[str], float, str]:
        ckpts = out / "checkpoints"
        states = torch.load(ckpts / "last.ckpt", weights_only=False)["callbacks"]
        (best,) = [v for k, v in states.items() if "'monitor': 'val/nll_nats'" in k]
        assert Path(best["best_model_path"]).parent == ckpts
        return (
            sorted(p.name for p in ckpts.iterdir()),
            float(best["best_model_score"]),
            best["best_model_path"],
        )

    stay, moved = bookkeeping(tmp_path / "stay"), bookkeeping(tmp_path / "elsewhere")
    assert moved[:2] == stay[:2] and Path(moved[2]).name == Path(stay[2]).name
    assert len([n for n in moved[0] if n.startswith("step=")]) == 3


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "step=000000010.ckpt"
    target.write_bytes(b"previous checkpoint")

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped in the middle of the write

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        ck.AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, target)
    assert target.read_bytes() == b"previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp file left


def test_stale_temp_of_a_killed_writer_is_removed(tmp_path):
    dead = tmp_path / ".step=000000010.ckpt.tmp-999999999-0123abcd"
    dead.write_bytes(b"partial")
    assert reliability.find_resume_checkpoint(tmp_path) is None
    assert not dead.exists()


def test_checkpoint_io_refuses_non_finite_weights(tmp_path):
    with pytest.raises(NonFiniteError, match="non-finite values in w"):
        ck.AtomicCheckpointIO().save_checkpoint(
            {"state_dict": {"w": torch.tensor([1.0, np.nan])}}, tmp_path / "x"
        )
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def run_copy(reference, tmp_path) -> Path:
    """A copy of the reference's checkpoints (steps 5..30; last.ckpt a copy of step 30)."""
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(reference[0] / "checkpoints", ckpts)
    return ckpts


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "nan"])
def test_corrupt_newest_checkpoint_falls_back_to_previous(run_copy, damage):
    for name in ("last.ckpt", ck.step_name(30)):
        path = run_copy / name
        data = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(data[: len(data) // 2])
        elif damage == "garbage":
            path.write_bytes(bytes(range(256)) * 40)
        elif damage == "empty":
            path.write_bytes(b"")
        else:
            ckpt = torch.load(io.BytesIO(data), weights_only=False)
            ckpt["state_dict"]["net.first.weight"][0] = float("nan")
            torch.save(ckpt, path)
    said: list[str] = []
    info = reliability.find_resume_checkpoint(run_copy, said.append)
    assert info is not None and info.step == 25
    assert any("skipping unusable checkpoint" in s and ck.step_name(30) in s for s in said)
    assert any("using the previous valid checkpoint" in s and ck.step_name(25) in s for s in said)


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    (tmp_path / ck.step_name(5)).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        reliability.find_resume_checkpoint(tmp_path, lambda s: None)


def test_checkpoint_of_another_model_names_both(reference, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(reference[0] / "checkpoints" / ck.step_name(30), tmp_path / "checkpoints")
    before = sorted((tmp_path / "checkpoints").iterdir())
    with pytest.raises(CheckpointError) as err:
        fit(tmp_path, "--hidden", "6")
    text = str(err.value)
    assert "another model" in text and "pixelcnn (hidden=4)" in text and "pixelcnn (hidden=6)" in text
    with pytest.raises(
        CheckpointError, match=r"it holds pixelcnn \(image_shape=.*this run builds row_lstm \("
    ):
        fit(tmp_path, "--arch", "row_lstm")
    assert sorted((tmp_path / "checkpoints").iterdir()) == before


# ----------------------------------------------------------------------------- non-finite guard


def test_nan_steps_are_skipped_then_the_run_stops_naming_the_step(tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteError) as err:
        fit(out, "--nan-at", "7,9,12", "--max-skips", "2")
    assert "training step 12" in str(err.value) and "7, 9, 12" in str(err.value)
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert saved[-1] == ck.step_name(11)  # due at 10 (an epoch's last batch), saved at 11; none after
    for path in (out / "checkpoints").iterdir():  # every checkpoint has finite weights
        assert not ck.non_finite_tensors(torch.load(path, weights_only=False)["state_dict"])


def test_a_skipped_step_changes_no_weight(tmp_path):
    """NaN at step 0 of a 1-step run: the final weights are the initial ones; without NaN they move."""
    args = ["--steps", "1", "--scheduler", "none"]
    init = rel_tiny.seeded_model(rel_tiny.parse(["--out", "x", *args])).state_dict()
    fit(tmp_path / "a", *args, "--nan-at", "0")
    fit(tmp_path / "b", *args)
    assert max_diff(init, params(tmp_path / "a")) == 0.0
    assert max_diff(init, params(tmp_path / "b")) > 0
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["callbacks"]["NonFiniteGuard"]["skipped"] == [0]


# ----------------------------------------------------------------------------- error reporting


def run_cli(error: BaseException, debug: bool = False) -> tuple[int, str]:
    stream = io.StringIO()
    with pytest.raises(SystemExit) as exit_info, cli_errors(debug=debug, stream=stream):
        raise error
    return exit_info.value.code, stream.getvalue()


def test_user_errors_are_one_paragraph_without_traceback():
    from pixel_lightning.data import DataError

    for error in (
        ConfigError("batch size 0 is impossible", "set data.batch_size >= 1"),
        DataError("no 'amat' files in data/. Download them from ..."),
    ):
        code, text = run_cli(error)
        assert code == 2
        first = text.splitlines()[0]
        assert first.startswith("error: ") and "Traceback" not in text and len(text.splitlines()) == 2


@pytest.mark.parametrize("bug", [ZeroDivisionError(), ValueError("x"), PermissionError(13, "x", "/r")])
def test_debug_shows_the_traceback_and_bugs_are_not_hidden(bug):
    """Only our errors are the user's: a ValueError from inside the code is a bug (exit 1, traceback)."""
    with pytest.raises(ConfigError), cli_errors(debug=True):
        raise ConfigError("bad")
    with pytest.raises(type(bug)), cli_errors():
        raise bug  # a bug: its traceback is kept (Python exits 1)


def test_exit_codes_of_preemption_and_guard():
    code, text = run_cli(Preempted(signal.SIGTERM, 17, "ck/step=17.ckpt", requeued=False))
    assert code == 143 and "step 17" in text and "re-run the same command" in text
    assert run_cli(Preempted(signal.SIGUSR1, 3, None, requeued=True))[0] == 138
    assert run_cli(NonFiniteError("nan at step 4", "lower the lr"))[0] == 3
