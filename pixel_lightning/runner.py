"""Run a recipe (a RunConfig): data, model, loggers, callbacks, the Trainer (:func:`make_trainer`, the one
factory); fit, test on the best checkpoint, final sample grid; write the run folder's files. Safe under DDP's
re-launch: nothing runs at import, every rank builds the same objects, only rank 0 writes files."""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from pixel_lightning import reliability
from pixel_lightning.callbacks import GradNorm, RunRecord, SampleGrid, Throughput, ValidationLine, sample_grid
from pixel_lightning.config import CheckpointConfig, ConfigError, GuardConfig, RunConfig
from pixel_lightning.data.base import is_user_data
from pixel_lightning.errors import NonFiniteError
from pixel_lightning.recipebook import paper_figure
from pixel_lightning.runfolder import RunFolder, budget, figure_text, host, unit
from pixel_lightning.wandb_record import wandb_logger


def build_datamodule(cfg: RunConfig) -> L.LightningDataModule:
    from pixel_lightning.data import build_datamodule as build

    return build(cfg.data.name, **cfg.data.datamodule_kwargs(cfg.seed))


def build_model_for(cfg: RunConfig) -> L.LightningModule:
    from pixel_lightning import build_model

    return build_model(cfg.model.arch, **cfg.model.build_kwargs())  # the config is checked: errors are bugs


@rank_zero_only
def print_rank0(text: str) -> None:
    print(text, flush=True)


def progress_bars(cfg: RunConfig) -> bool:
    """Lightning's bars only on a terminal: in a log file (SLURM) one line per validation instead."""
    return cfg.trainer.enable_progress_bar and sys.stdout.isatty()


def _no_litlogger_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def quiet_lightning(bars: bool = True) -> None:
    """No notices caused by our own setup, each filtered by its exact text: the LeafSpec deprecation inside
    Lightning 2.6.6's pytree code under torch 2.13, the litlogger tip, and "could not find the monitored
    key" when a final-step save comes before the first validation (our monitor only: a user's misspelt one
    still warns). Without ``bars`` (off a terminal) no carriage-return bars of the data conversion either."""
    if not bars:
        import datasets

        datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    monitor = CheckpointConfig.monitor
    warnings.filterwarnings("ignore", message=rf"`ModelCheckpoint\(monitor='{monitor}'\)` could not find")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_litlogger_tip)  # once: a set


def instantiate(spec: dict[str, Any], key: str) -> Any:
    """``{class_path: package.module.Class, init_args: {...}}`` (LightningCLI's form) -> the object."""
    path = spec.get("class_path", "") if isinstance(spec, dict) else ""
    module, _, name = str(path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(
            f"{key}: cannot import class_path={path!r} ({e}); write e.g. "
            "{class_path: lightning.pytorch.callbacks.EMAWeightAveraging, init_args: {decay: 0.999}}"
        ) from e
    try:
        return cls(**(spec.get("init_args") or {}))
    except TypeError as e:
        raise ConfigError(f"{key}: {path}(**init_args) failed: {e}; fix init_args") from e


def make_trainer(
    trainer: dict[str, Any],
    run_dir: str | Path | None = None,
    checkpoint: CheckpointConfig | None = None,
    guard: GuardConfig | None = None,
    callbacks: Sequence[Callback] = (),
    later_callbacks: Sequence[Callback] = (),
    loggers: list[Logger] | Logger | bool = False,
) -> L.Trainer:
    """The one place a Trainer is made (fit, ``pixel-lightning test``, tests/rel_tiny.py, the soak benchmark).
    With a ``run_dir``, fit's wiring: ``callbacks``, the reliability ones (``checkpoint``, ``guard``, resume
    state, preemption), ``later_callbacks``. Without: evaluation (one device, no logger or checkpoint)."""
    quiet_lightning(trainer.get("enable_progress_bar", True))
    if run_dir is None:
        off = {"devices": 1, "logger": False, "enable_checkpointing": False, "enable_model_summary": False}
        return L.Trainer(**{**trainer, **off}, callbacks=[*callbacks, *later_callbacks])
    wiring = reliability.callbacks(run_dir, checkpoint or CheckpointConfig(), guard or GuardConfig())
    return L.Trainer(
        default_root_dir=run_dir,
        logger=loggers,
        callbacks=[*callbacks, *wiring, *later_callbacks],
        plugins=[reliability.AtomicCheckpointIO()],  # atomic, finite-only checkpoint writes
        use_distributed_sampler=False,  # the DataModules shard by rank themselves
        **trainer,
    )


def build_trainer(cfg: RunConfig, extra_callbacks: Sequence[Callback], history_rows: int | None) -> L.Trainer:
    """fit's Trainer: the run's callbacks around the reliability ones (the guard sees the gradients after
    GradNorm logged them), then ``extra_callbacks``; the CSV log (its first ``history_rows`` rows kept on
    resume) and the chosen tracker (W&B continues the run directory's W&B run)."""
    s, bars = cfg.sample, progress_bars(cfg)
    first = [RunRecord(cfg.run_dir, cfg.to_dict()), Throughput(), GradNorm(), LearningRateMonitor("step")]
    later = [instantiate(spec, "callbacks") for spec in cfg.callbacks]  # extra ones from the config
    if not bars:
        later.append(ValidationLine())
    if s.n > 0 and s.every_n_epochs > 0:
        later.append(SampleGrid(RunFolder(cfg.run_dir).samples, s.every_n_epochs, s.n, s.seed, bars))
    loggers: list[Logger] = [reliability.HistoryLogger(cfg.run_dir, keep=history_rows)]
    if cfg.logger.kind == "tensorboard":
        loggers.append(TensorBoardLogger(cfg.run_dir, name="tensorboard", version=""))
    elif cfg.logger.kind == "wandb":
        loggers.append(wandb_logger(cfg, loggers[0]))  # a re-run completes the W&B run from the CSV log
    trainer = {**cfg.trainer.kwargs(), "enable_progress_bar": bars}
    later += extra_callbacks
    return make_trainer(trainer, cfg.run_dir, cfg.checkpoint, cfg.guard, first, later, loggers)


def best_checkpoint(trainer: L.Trainer, monitor: str) -> str | None:
    callbacks = [cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None) == monitor]
    paths = [cb.best_model_path for cb in callbacks]
    return next((p for p in paths if p and Path(p).is_file()), None)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among ``metrics``, as floats."""
    out = {}
    for key, value in metrics.items():
        with contextlib.suppress(TypeError, ValueError):
            out[key] = float(value)
    return {key: v for key, v in out.items() if math.isfinite(v)}


def run(cfg: RunConfig, extra_callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Fit (resuming from the run directory's newest valid checkpoint), test on the best checkpoint, draw the
    final grid; write config.yaml and metrics.json; return the metrics (every rank). Rank 0 locks the run
    directory meanwhile (reliability.RunLock); it must hold this run or nothing (RunFolder.check_same_run)."""
    if rank_zero_only.rank != 0:
        return _run(cfg, extra_callbacks)
    reliability.ensure_writable(cfg.run_dir)
    with reliability.RunLock(cfg.run_dir, print_rank0):
        return _run(cfg, extra_callbacks)


def _run(cfg: RunConfig, extra_callbacks: Sequence[Callback]) -> dict[str, Any]:
    folder = RunFolder(cfg.run_dir)
    folder.check_same_run(cfg)
    done = folder.finished(cfg)
    if done is not None:
        if rank_zero_only.rank == 0:
            print(f"[done] this run already finished; its result ({folder.metrics_file}):")
            print(summary(cfg, done), flush=True)
        return done
    start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    cfg.trainer.apply_matmul_precision()  # TF32 on CUDA (trainer.matmul_precision)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model_for(cfg)
    resume = reliability.prepare_resume(cfg.run_dir, model, print_rank0)  # None: a fresh start
    trainer = build_trainer(cfg, extra_callbacks, resume.history_rows if resume else 0)
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=str(resume.path) if resume else None)
    except NonFiniteError as e:
        if getattr(e, "sane_step", None) is None or not trainer.is_global_zero:
            raise
        raise diverged(cfg, e) from e
    fit_s = time.perf_counter() - start
    resumed = resume.metrics if resume else {}  # the figures of the checkpoint (those not trained again)
    trained = {**scalar_metrics(resumed), **scalar_metrics(trainer.callback_metrics)}

    best = best_checkpoint(trainer, cfg.checkpoint.monitor)
    last = folder.checkpoints / reliability.LAST  # the final weights, when no best
    if best is not None or last.is_file():
        load_weights(model, best or last)  # what was saved, also when a re-run only tests (killed in test)
    t0 = time.perf_counter()
    (tested,) = trainer.test(model, datamodule=dm, verbose=False) or [{}]
    test_s = time.perf_counter() - t0
    # limit_test_batches counts per process: the test figure covers this many batches of all the ranks
    # together, the first ones in source order (dealt round-robin); `pixel-lightning test` evaluates them
    covered = torch.tensor(float(sum(trainer.num_test_batches)), device=trainer.strategy.root_device)
    test_batches = int(trainer.strategy.reduce(covered, reduce_op="sum"))

    metrics: dict[str, Any] = {
        **{k: v for k, v in trained.items() if not k.startswith("test/")},
        **scalar_metrics(tested),
        "recipe": cfg.recipe,
        "arch": cfg.model.arch,
        "dataset": cfg.data.name,
        "variant": getattr(dm, "variant", None),
        "residual": cfg.model.residual,
        "skip": cfg.model.skip,
        "params": sum(p.numel() for p in model.parameters()),
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "world_size": trainer.world_size,
        "host": host(torch.get_num_threads()),
        "test_checkpoint": best or "final weights (no validation ran)",
        "test_batches": test_batches,
        "paper": {k: getattr(cfg.paper, k) for k in ("test", "train", "unit", "where")},
        "budget": budget(cfg),
        "model": cfg.to_dict()["model"],
        "seconds": {"fit": round(fit_s, 2), "test": round(test_s, 2)},
    }
    if trainer.is_global_zero:
        s = cfg.sample
        if s.n > 0 and s.at_end:
            path = folder.samples / "final.png"
            sample_s = sample_grid(trainer, model, path, "samples/final", s.n, s.seed, progress_bars(cfg))
            metrics["samples_png"] = str(path)
            metrics["seconds"]["sample"] = round(sample_s, 2)
        metrics["seconds"]["total"] = round(time.perf_counter() - start, 2)
        folder.write_metrics(metrics)
        print(summary(cfg, metrics), flush=True)
        for logger in trainer.loggers:  # closes the W&B run (flushes its record): the next one is a new run
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()
    return metrics


def load_weights(model: L.LightningModule, path: str | Path) -> None:
    """The checkpoint's ``state_dict`` (as ``pixel-lightning test`` and the Hub read it): with EMA / SWA the
    averaged model. Not ``trainer.test(ckpt_path=...)``: the callback's ``on_load_checkpoint`` puts the raw
    weights back (tests/test_run_folder.py::test_ema_reaches_the_test_figure)."""
    model.load_state_dict(reliability.read_checkpoint(path)["state_dict"])


def diverged(cfg: RunConfig, error: NonFiniteError) -> NonFiniteError:
    """The guard's stop, after moving diverged checkpoints aside; it says where the recovery starts."""
    folder, resume_step = reliability.set_aside_diverged(RunFolder(cfg.run_dir).checkpoints, error.sane_step)
    moved = f"; the checkpoints after step {error.sane_step} were moved to {folder}" if folder else ""
    where = "starts over (no sane checkpoint)" if resume_step is None else f"resumes from step {resume_step}"
    return NonFiniteError(
        error.problem + moved,
        f"add model.lr={cfg.model.lr / 10:g} (a tenth; or set trainer.gradient_clip_val) to the same command "
        f"and run it: it {where} in the same --out",
    )


def summary(cfg: RunConfig, metrics: dict[str, Any]) -> str:
    """The test figure beside the paper's, in the paper's unit."""
    ours_text = figure_text(metrics, unit(cfg.data.name, cfg.paper.unit)) or "n/a"
    paper = paper_figure(cfg.paper.test, cfg.paper.train, cfg.paper.unit)
    if cfg.paper.where:
        paper += f" ({cfg.paper.where})"
    if is_user_data(metrics.get("variant")):
        paper = "- (your own data, not the paper's)"
    seconds = metrics["seconds"].get("total", 0)
    return (
        f"[{cfg.recipe or 'run'}] test: {ours_text} | paper: {paper} | data: {metrics.get('variant')} | "
        f"steps {metrics['global_step']} | {seconds:.0f} s | run dir: {cfg.run_dir}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``pixel-lightning fit ARGS`` (:func:`pixel_lightning.cli.main`), for callers of the runner by name."""
    from pixel_lightning.cli import main as cli_main

    return cli_main(["fit", *(sys.argv[1:] if argv is None else argv)])
