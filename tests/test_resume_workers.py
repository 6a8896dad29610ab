"""Exact resume with data-loader worker processes and with random draws in the training step (issue 19).

torch's multi-process DataLoader iterator reads its sampler twice when it is made and prefetches indices
ahead of the training step; the loader's position must count only the batches handed to the step. The
in-process runs are tests/rel_tiny.py's (a tiny PixelCNN, 40 8x8 images, 10 batches an epoch).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rel_tiny
import torch

from pixel_lightning.data.base import BatchLoader, ImageBatches, ShardedBatchSampler
from pixel_lightning.reliability import checkpoints as ck
from pixel_lightning.reliability.resume import RNGState

STEPS = 20


def loader(workers: int) -> BatchLoader:
    data = ImageBatches(rel_tiny.MemoryStore(np.arange(40, dtype=np.uint8)[:, None]), np.arange(40))
    return BatchLoader(data, ShardedBatchSampler(40, 3, shuffle=True, seed=7), workers)


def firsts(batches) -> list[list[int]]:
    return [x[:, 0].tolist() for x, _ in batches]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_position_is_the_batches_handed_over(workers):
    """3 batches of epoch 1 handed over (workers have prefetched more): a new loader restored from that
    state gives exactly the other 11; its next epoch is whole; the first epoch's order is unchanged."""
    first = loader(workers)
    first.sampler.set_epoch(1)
    it = iter(first)
    seen = [next(it) for _ in range(3)]
    state = first.state_dict()
    rest = firsts(it)
    assert state == {"epoch": 1, "batches": 3} and len(seen) + len(rest) == len(first) == 14

    second = loader(workers)
    second.load_state_dict(state)
    second.sampler.set_epoch(1)
    assert firsts(second) == rest
    second.sampler.set_epoch(2)
    assert len(firsts(second)) == 14  # persistent workers: the same iterator, a whole epoch
    second.sampler.set_epoch(1)
    assert firsts(second)[3:] == rest  # the restored position served its pass only


def fit(out: Path, *extra: str) -> dict[str, float]:
    return rel_tiny.fit(rel_tiny.parse(["--out", str(out), "--steps", str(STEPS), "--noise", *extra]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """Uninterrupted, no workers, random pixel flips in every training step; every checkpoint kept."""
    out = tmp_path_factory.mktemp("noisy")
    return out, fit(out, "--keep", "100")


def resume_from(reference: Path, step: int, out: Path, *extra: str) -> dict[str, float]:
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(reference / "checkpoints" / ck.step_name(step), out / "checkpoints")
    return fit(out, *extra)


def max_diff(a: Path, b: Path) -> float:
    pa, pb = torch.load(a / "final.pt"), torch.load(b / "final.pt")
    return max(float((pa[k].double() - pb[k].double()).abs().max()) for k in pa if pa[k].is_floating_point())


def test_resume_is_exact_with_random_draws_in_the_step_and_two_workers(reference, tmp_path):
    """Resumed at step 15 (mid-epoch 1) with 2 persistent workers: the same parameters and metrics (the
    data order does not depend on the number of workers; the train NLL is the interrupted epoch's)."""
    ref, ref_metrics = reference
    metrics = resume_from(ref, 15, tmp_path / "resumed", "--workers", "2")
    assert max_diff(ref, tmp_path / "resumed") <= 1e-6
    assert metrics == ref_metrics


def test_resume_without_rng_state_differs(reference, tmp_path, monkeypatch):
    """The control for RNGState: the steps after the resume flip other pixels."""
    monkeypatch.setattr(RNGState, "on_train_start", lambda *args: None)
    resume_from(reference[0], 15, tmp_path / "r15")
    assert max_diff(reference[0], tmp_path / "r15") > 1e-4
