"""Run a recipe: data, model, loggers, callbacks, Trainer; fit, test on the best checkpoint, write results.

    cfg (pixel_lightning.config.RunConfig)
      -> build_datamodule(cfg)   -> build_model_for(cfg)
      -> build_trainer(cfg, extra_callbacks, plugins): loggers, callbacks
      -> make_trainer(...)       the ONE place a Trainer is made (also for test, the tests, the soak)
      -> trainer.fit(ckpt_path=...) -> trainer.test(best checkpoint) -> final sample grid
      -> the run folder's files (pixel_lightning.runfolder: config.yaml, metrics.json, checkpoints/, ...)

Safe under DDP's re-launch: nothing runs at import, every rank builds the same objects from the same
config, and only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
import netrc
import os
import sys
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from pixel_lightning import reliability, wandb_record
from pixel_lightning.callbacks import (
    GradNorm,
    RunRecord,
    SampleGrid,
    Throughput,
    ValidationLine,
    draw_samples,
    log_image,
)
from pixel_lightning.config import CheckpointConfig, ConfigError, GuardConfig, RunConfig
from pixel_lightning.data.base import is_user_data
from pixel_lightning.errors import NonFiniteError
from pixel_lightning.recipebook import paper_figure
from pixel_lightning.runfolder import RunFolder, budget, figure_text, host, leaves, unit
from pixel_lightning.visual import save_grid

# ----------------------------------------------------------------------------- data and model


def build_datamodule(cfg: RunConfig) -> L.LightningDataModule:
    from pixel_lightning.data import build_datamodule as build

    return build(cfg.data.name, **cfg.data.datamodule_kwargs(cfg.seed))


def build_model_for(cfg: RunConfig) -> L.LightningModule:
    from pixel_lightning import build_model

    return build_model(cfg.model.arch, **cfg.model.build_kwargs())  # the config is checked: errors are bugs


# ----------------------------------------------------------------------------- loggers


def wandb_logged_in() -> bool:
    """An API key is available without asking the network: WANDB_API_KEY or a netrc entry for the host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(path).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def wandb_mode(cfg: RunConfig) -> str:
    """online when logged in, else offline (never waits on a network); WANDB_MODE, if set, wins."""
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    if cfg.logger.offline or not wandb_logged_in():
        return "offline"
    return "online"


def run_tags(cfg: RunConfig) -> list[str]:
    """Tags that let a W&B workspace compare models with no manual setup."""
    m = cfg.model
    tags = [m.arch, cfg.data.name, f"residual={m.residual}", f"skip={m.skip}"]
    if m.arch == "multiscale" and m.base:
        tags.append(f"base={m.base}")
    return tags + list(cfg.logger.tags)


def wandb_run_id(run_dir: Path) -> str:
    """The run directory's W&B id, created once (rank 0) so a resumed run continues the same W&B run."""
    path = RunFolder(run_dir).wandb_id_file
    if os.environ.get("WANDB_RUN_ID"):  # set by `wandb agent` for a sweep run
        return os.environ["WANDB_RUN_ID"]
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]  # W&B ids: lowercase letters and digits
    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id)
    return run_id


MIN_SUMMARY = ("val/bits_per_dim", "val/nll_nats", "test/bits_per_dim", "test/nll_nats")


class RunWandbLogger(WandbLogger):
    """Lightning's WandbLogger, set up for comparing runs: the run config is the flat dotted config
    given at init (``model.hidden``, ``data.variant``, ...: each setting once, filterable), and the W&B
    summaries of the validation and test NLLs are their minimum (``MIN_SUMMARY``), not their last value.
    tests/test_recipes.py::test_offline_wandb_record_compares_runs decodes the offline record.

    A re-run of a run directory (``history``: its CSV history) completes the W&B run: the rows kept in the
    CSV that the run's earlier record files lack (lost by a kill before W&B flushed them) are logged again,
    and the rows they hold are not logged twice (tests/test_journeys.py::test_kill_9_loses_no_wandb_row)."""

    def __init__(self, *args: Any, history: reliability.HistoryLogger | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._summaries_defined = False
        self._history, self._run_id = history, kwargs.get("id")
        self._wandb_dir = RunFolder(kwargs["save_dir"]).wandb_dir  # where wandb.init(dir=save_dir) writes
        self._recorded: Counter[wandb_record.Row] = Counter()
        # Lightning passes wandb.init(anonymous=None), which wandb 0.31 answers with "The anonymous setting
        # has no effect" on every run; no public way to leave it out (private _wandb_init, forced by
        # tests/test_bad_inputs.py::test_wandb_is_not_given_the_anonymous_setting)
        self._wandb_init.pop("anonymous", None)

    @property
    def experiment(self) -> Any:
        if self._summaries_defined:
            return super().experiment
        self._summaries_defined = True
        if rank_zero_only.rank == 0 and self._history is not None and self._run_id:
            self._recorded = wandb_record.recorded(self._wandb_dir, self._run_id)  # before this run's file
        run = super().experiment  # a no-op stand-in on ranks > 0
        for key in MIN_SUMMARY:
            run.define_metric(key, summary="min")
        if self._history is not None and rank_zero_only.rank == 0:
            for step, metrics in wandb_record.missing(self._history.kept_rows(), self._recorded):
                run.log({**metrics, wandb_record.STEP_KEY: step})
        return run

    @rank_zero_only
    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self.experiment  # noqa: B018 (reads the earlier records first)
        key = wandb_record.row_id(step, metrics) if step is not None else None
        if key is not None and self._recorded[key] > 0:
            self._recorded[key] -= 1  # an earlier record of this run holds it already
            return
        super().log_metrics(metrics, step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: Lightning would add the model's hparams a second time as top-level keys (``hidden``
        beside ``model.hidden``); the run config passed at init already holds them under ``model.``."""


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """The run config as one level of dotted keys (``model.hidden``, ``data.source``, ...); an empty
    section has no key (W&B's config holds no dict)."""
    return {k: v for k, v in leaves(cfg.to_dict()) if v != {}}


def wandb_group(cfg: RunConfig) -> str | None:
    """The W&B group, so one panel compares related runs: the configured one (recipes/sweep.py sets
    ``<sweep>-<recipe>``), else the sweep of a ``wandb agent`` run, else the recipe."""
    if cfg.logger.group:
        return cfg.logger.group
    if os.environ.get("WANDB_SWEEP_ID"):  # set by `wandb agent` for each run of a sweep
        return f"sweep-{os.environ['WANDB_SWEEP_ID']}"
    return cfg.recipe or None


def build_loggers(cfg: RunConfig, history_rows: int | None = 0) -> list[Logger]:
    """The local CSV log (always: the report reads it; its first ``history_rows`` rows kept on resume) plus
    the chosen tracker (W&B resumes the run directory's W&B run: same id, completed from the CSV log)."""
    run_dir = cfg.run_dir
    history = reliability.HistoryLogger(run_dir, keep=history_rows)
    loggers: list[Logger] = [history]
    kind = cfg.logger.kind
    name = cfg.logger.name or run_dir.name
    if kind == "tensorboard":
        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
    elif kind == "wandb":
        mode = wandb_mode(cfg)
        if mode == "offline":
            print_rank0(
                f"W&B: not logged in (or offline): logging offline to {RunFolder(run_dir).wandb_dir}; upload "
                f"later with `wandb sync {RunFolder(run_dir).wandb_dir}/offline-run-*`"
            )
        loggers.append(
            RunWandbLogger(
                name=name,
                save_dir=str(run_dir),
                id=wandb_run_id(run_dir) if mode != "disabled" else None,
                project=cfg.logger.project,
                entity=cfg.logger.entity,
                group=wandb_group(cfg),
                tags=run_tags(cfg),
                job_type="train",
                mode=mode,
                config=flat_config(cfg),
                log_model=cfg.logger.log_model,  # checkpoints as W&B artifacts at the end of fit
                settings=_wandb_settings(),
                history=history,  # a re-run completes the W&B run from the CSV log
            )
        )
    return loggers


def _wandb_settings() -> Any:
    import wandb

    return wandb.Settings(init_timeout=60, console="off", silent=True)


@rank_zero_only
def print_rank0(text: str) -> None:
    print(text, flush=True)


# ----------------------------------------------------------------------------- callbacks and Trainer


def progress_bars(cfg: RunConfig) -> bool:
    """Lightning's bars only on a terminal: in a log file (SLURM) one line per validation instead."""
    return cfg.trainer.enable_progress_bar and sys.stdout.isatty()


def _no_litlogger_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def quiet_lightning(bars: bool = True) -> None:
    """No notices caused by our own setup, each filtered by its exact text: the LeafSpec deprecation
    raised inside Lightning 2.6.6's own pytree code under torch 2.13, Lightning's litlogger tip, and the
    best checkpoint's "could not find the monitored key" when a run's final-step save comes before its
    first validation (our own monitor: a user's misspelt monitor elsewhere still warns). Without ``bars``
    (off a terminal: :func:`progress_bars`) no carriage-return bars of the data conversion either."""
    if not bars:
        import datasets

        datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    monitor = CheckpointConfig.monitor
    warnings.filterwarnings("ignore", message=rf"`ModelCheckpoint\(monitor='{monitor}'\)` could not find")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_litlogger_tip)  # once: a set


def instantiate(spec: dict[str, Any], key: str) -> Any:
    """``{class_path: package.module.Class, init_args: {...}}`` (LightningCLI's form) -> the object."""
    import importlib

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
    plugins: Sequence[Any] = (),
) -> L.Trainer:
    """The one place a Trainer is made (fit, ``pixel-lightning test``, tests/rel_tiny.py, the soak benchmark)
    from lightning.Trainer arguments ``trainer``. With a ``run_dir``, fit's wiring: ``callbacks``, the
    reliability ones (checkpoints, resume state, the non-finite guard, preemption: ``checkpoint``, ``guard``),
    ``later_callbacks``; atomic, finite-only checkpoint writes; the DataModules shard by rank themselves.
    Without: evaluation only (one device, no logger, no checkpoints)."""
    quiet_lightning(trainer.get("enable_progress_bar", True))
    if run_dir is None:
        off = {"devices": 1, "logger": False, "enable_checkpointing": False, "enable_model_summary": False}
        return L.Trainer(**{**trainer, **off}, callbacks=[*callbacks, *later_callbacks])
    wiring = reliability.callbacks(run_dir, checkpoint or CheckpointConfig(), guard or GuardConfig())
    return L.Trainer(
        default_root_dir=run_dir,
        logger=loggers,
        callbacks=[*callbacks, *wiring, *later_callbacks],
        plugins=[*plugins, reliability.AtomicCheckpointIO()],  # atomic, finite-only checkpoint writes
        use_distributed_sampler=False,  # the DataModules shard by rank themselves
        **trainer,
    )


def build_trainer(
    cfg: RunConfig,
    extra_callbacks: Sequence[Callback] = (),
    plugins: Sequence[Any] = (),
    history_rows: int | None = 0,
) -> L.Trainer:
    """fit's Trainer (:func:`make_trainer`): the config's trainer section, the run's loggers, its callbacks
    around the reliability ones (the guard sees the gradients after GradNorm has logged them), and
    ``extra_callbacks`` / ``plugins`` (a caller's hooks, e.g. the journey tests' faults)."""
    s, bars = cfg.sample, progress_bars(cfg)
    first = [RunRecord(cfg.run_dir, cfg.to_dict()), Throughput(), GradNorm(), LearningRateMonitor("step")]
    later = [instantiate(spec, "callbacks") for spec in cfg.callbacks]  # extra ones from the config
    if not bars:
        later.append(ValidationLine())
    if s.n > 0 and s.every_n_epochs > 0:
        later.append(SampleGrid(RunFolder(cfg.run_dir).samples, s.every_n_epochs, s.n, s.seed, bars))
    trainer = {**cfg.trainer.kwargs(), "enable_progress_bar": bars}
    later += extra_callbacks
    loggers = build_loggers(cfg, history_rows)
    return make_trainer(trainer, cfg.run_dir, cfg.checkpoint, cfg.guard, first, later, loggers, plugins)


# ----------------------------------------------------------------------------- the run


def best_checkpoint(trainer: L.Trainer, monitor: str) -> str | None:
    callbacks = [cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None) == monitor]
    paths = [cb.best_model_path for cb in callbacks]
    return next((p for p in paths if p and Path(p).is_file()), None)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            out[key] = v
    return out


def run(
    cfg: RunConfig,
    extra_callbacks: Sequence[Callback] = (),
    plugins: Sequence[Any] = (),
    ckpt_path: str | None = None,
) -> dict[str, Any]:
    """Fit, test on the best checkpoint, draw the final grid; write config.yaml and metrics.json.

    Returns the metrics dict (on every rank). ``ckpt_path`` resumes training from a checkpoint. The run
    directory is locked by rank 0 meanwhile (one writer: reliability.RunLock; the other ranks of a DDP run
    are the same run) and must hold this run or nothing (:meth:`RunFolder.check_same_run`).
    """
    if rank_zero_only.rank != 0:
        return _run(cfg, extra_callbacks, plugins, ckpt_path)
    reliability.ensure_writable(cfg.run_dir)
    with reliability.RunLock(cfg.run_dir, print_rank0):
        return _run(cfg, extra_callbacks, plugins, ckpt_path)


def _run(
    cfg: RunConfig, extra_callbacks: Sequence[Callback], plugins: Sequence[Any], ckpt_path: str | None
) -> dict[str, Any]:
    folder = RunFolder(cfg.run_dir)
    folder.check_same_run(cfg)
    done = folder.finished(cfg) if ckpt_path is None else None
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
    history_rows: int | None = 0
    resumed: dict[str, float] = {}  # the figures of the checkpoint resumed from (those not trained again)
    if ckpt_path is None:  # the newest valid checkpoint of this run directory, if any
        resume = reliability.prepare_resume(cfg.run_dir, model, print_rank0)
        if resume is not None:
            ckpt_path, history_rows, resumed = str(resume.path), resume.history_rows, resume.metrics
    trainer = build_trainer(cfg, extra_callbacks, plugins, history_rows=history_rows)
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    except NonFiniteError as e:
        if getattr(e, "sane_step", None) is None or not trainer.is_global_zero:
            raise
        raise diverged(cfg, e) from e
    fit_s = time.perf_counter() - start
    trained = {**scalar_metrics(resumed), **scalar_metrics(trainer.callback_metrics)}

    best = best_checkpoint(trainer, cfg.checkpoint.monitor)
    last = folder.checkpoints / reliability.LAST  # the final weights, when no best
    if best is not None or last.is_file():
        load_weights(model, best or last)  # what was saved, also when a re-run only tests (killed in test)
    t0 = time.perf_counter()
    (tested,) = trainer.test(model, datamodule=dm, verbose=False) or [{}]
    test_s = time.perf_counter() - t0
    # limit_test_batches counts per process: the test figure covers this many batches of all the ranks
    # together, the first ones in source order (the loaders deal batches round-robin); `pixel-lightning
    # test` evaluates the same ones
    covered = torch.tensor(float(sum(trainer.num_test_batches)), device=trainer.strategy.root_device)
    test_batches = int(trainer.strategy.reduce(covered, reduce_op="sum"))

    metrics: dict[str, Any] = {**{k: v for k, v in trained.items() if not k.startswith("test/")}}
    metrics.update(scalar_metrics(tested))
    metrics.update(
        {
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
    )
    if trainer.is_global_zero:
        if cfg.sample.n > 0 and cfg.sample.at_end:
            x, sample_s = draw_samples(model, cfg.sample.n, cfg.sample.seed, progress_bars(cfg))
            folder.samples.mkdir(parents=True, exist_ok=True)
            path = save_grid(folder.samples / "final.png", x, model.levels)
            log_image(trainer, "samples/final", x, model.levels, trainer.global_step)
            metrics["samples_png"] = str(path)
            metrics["seconds"]["sample"] = round(sample_s, 2)
        metrics["seconds"]["total"] = round(time.perf_counter() - start, 2)
        folder.write_metrics(metrics)
        print(summary(cfg, metrics), flush=True)
    finish_loggers(trainer)
    return metrics


def load_weights(model: L.LightningModule, path: str | Path) -> None:
    """The weights of checkpoint ``path`` as ``pixel-lightning test``, ``load_model`` and the Hub read them:
    its ``state_dict``. With a weight-averaging callback (EMAWeightAveraging, SWA) that is the averaged
    model, which Lightning's WeightAveraging saves there (the raw one under ``current_model_state``); the
    test, the final samples and metrics.json then all use it. ``trainer.test(ckpt_path=...)`` would not:
    the callback's ``on_load_checkpoint`` puts the raw weights back
    (tests/test_run_folder.py::test_ema_reaches_the_test_figure)."""
    model.load_state_dict(reliability.read_checkpoint(path)["state_dict"])


def diverged(cfg: RunConfig, error: NonFiniteError) -> NonFiniteError:
    """The guard's stop, after moving the checkpoints of diverged weights aside: the message says from
    where the recovery (a lower model.lr, the same command) trains on."""
    folder, resume_step = reliability.set_aside_diverged(RunFolder(cfg.run_dir).checkpoints, error.sane_step)
    moved = f"; the checkpoints after step {error.sane_step} were moved to {folder}" if folder else ""
    where = (
        f"resumes from step {resume_step}" if resume_step is not None else "starts over (no sane checkpoint)"
    )
    return NonFiniteError(
        error.problem + moved,
        f"add model.lr={cfg.model.lr / 10:g} (a tenth; or set trainer.gradient_clip_val) to the same command "
        f"and run it: it {where} in the same --out",
    )


def finish_loggers(trainer: L.Trainer) -> None:
    """Close the W&B run (flushes its offline record file) so the next run in this process is a new one."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            logger.experiment.finish()


def summary(cfg: RunConfig, metrics: dict[str, Any]) -> str:
    """The test figure beside the paper's, in the paper's unit."""
    ours_text = figure_text(metrics, unit(cfg.data.name, cfg.paper.unit)) or "n/a"
    paper = paper_figure(cfg.paper.test, cfg.paper.train, cfg.paper.unit)
    if cfg.paper.where:
        paper += f" ({cfg.paper.where})"
    if is_user_data(metrics.get("variant")):
        paper = "- (your own data, not the paper's)"
    return (
        f"[{cfg.recipe or 'run'}] test: {ours_text} | paper: {paper} | data: {metrics.get('variant')} | "
        f"steps {metrics['global_step']} | {metrics['seconds'].get('total', 0):.0f} s | "
        f"run dir: {cfg.run_dir}"
    )


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``pixel-lightning fit ARGS`` (:func:`pixel_lightning.cli.main`), for callers of the runner by name."""
    from pixel_lightning.cli import main as cli_main

    return cli_main(["fit", *(sys.argv[1:] if argv is None else argv)])
