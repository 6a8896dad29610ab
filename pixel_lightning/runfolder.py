"""The run folder: the one place that knows what a run writes where, which run a folder holds, and how to
read it back (``pixel-lightning test``, the model card, report, sweep, figures).

    <run>/config.yaml        the resolved config + data_resolved (callbacks.RunRecord, once data is set up)
    <run>/metrics.json       the result (runner.run, at the end): METRICS_KEYS
    <run>/checkpoints/       best-*.ckpt, last.ckpt and periodic ones (pixel_lightning.reliability)
    <run>/logs/metrics.csv   the metric history, kept exact across resumes (reliability.HistoryLogger)
    <run>/samples/           sample grids: epoch_XXXX.png, final.png
    <run>/wandb/             W&B's record files; <run>/wandb_id.txt: the run's W&B id (a resume continues it)
    <run>/run.lock           held by the process writing the folder (reliability.RunLock)

Only the standard library and yaml are imported, so the command line and the tools read runs cheaply.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pixel_lightning.atomic import atomic_write
from pixel_lightning.errors import OtherRunError, RunDirError

if TYPE_CHECKING:
    from pixel_lightning.config import RunConfig

BUDGET = ("max_epochs", "max_steps", "max_time")  # trainer.*: how long a run trains (raised: it continues)
SAVED_ONLY = ("data_resolved",)  # keys config.yaml adds to the run's config (what the data turned out to be)


def drop_retired(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config.yaml without the keys earlier versions wrote that no longer exist: ``model.extra``
    (read by no architecture; removed in issue 21), so older runs still resume and load."""
    if not isinstance(config.get("model"), dict):
        return config
    return {**config, "model": {k: v for k, v in config["model"].items() if k != "extra"}}


# What a run folder's run may change from one start to the next, besides the model's RESUMABLE_CHANGES (lr:
# a guard's recovery); every other setting is the run's identity, and another identity into the same --out
# is refused (RunFolder.check_same_run, docs/reliability.md).
NOT_IDENTITY = (
    "out", *(f"trainer.{k}" for k in BUDGET),  # where it is written, how long it trains
    "logger", "trainer.enable_progress_bar", "trainer.log_every_n_steps",  # what is shown and logged
    "checkpoint.every_n_steps", "checkpoint.every_n_minutes", "checkpoint.keep_last_k",  # how it is kept
    "checkpoint.requeue", "guard", "threads",  # how it is protected and how fast it runs
    "imports",  # where the architectures come from (model.arch and its fields are the identity)
)  # fmt: skip

# ----------------------------------------------------------------------------- metrics.json and its unit


# metrics.json, written once by runner.run at the end of a run: these keys, plus the run's last scalar figures
# (floats) by their logged names (train/loss, val/nll_nats, test/bits_per_dim, lr-RMSprop, ...)
METRICS_KEYS = (
    "recipe", "arch", "dataset", "variant", "residual", "skip", "params",  # variant: the data actually used
    "global_step", "epochs", "world_size", "model", "budget",  # world_size: processes that trained it
    "test_checkpoint", "test_batches",  # the file the test figures were measured on; batches of all ranks
    "paper", "seconds", "samples_png",  # the paper's figure; of the last process only; the final grid
    "host",  # where the last process ran (:func:`host`): seconds and img/s mean nothing without it
)  # fmt: skip


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what :mod:`platform` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def host(threads: int) -> dict[str, Any]:
    """metrics.json's ``host``: the CPU, its cores and the torch threads a run used (report.py prints it
    beside every wall-clock figure)."""
    import os

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads}


NATS, BITS = "nats", "bits/dim"
NATS_DATASETS = ("mnist", "binarized_mnist")  # binary images: the paper gives NLL in nats (Tables 2, 4)


def unit(dataset: str | None, paper_unit: str | None = None) -> str:
    """The unit a run's likelihood is reported in, as the paper does (Section 5.1): nats for binarized
    MNIST (by its data set, or a recipe whose paper figure is in nats), else bits per dimension."""
    return NATS if dataset in NATS_DATASETS or paper_unit == NATS else BITS


def unit_of(record: Mapping[str, Any]) -> str:
    """:func:`unit` of a metrics.json or a model's ``run_info`` (by their ``dataset`` and ``paper``)."""
    return unit(record.get("dataset"), (record.get("paper") or {}).get("unit"))


def metric_key(unit_name: str, split: str = "test") -> str:
    """The logged figure of ``split`` in ``unit_name``: ``test/nll_nats`` or ``test/bits_per_dim``."""
    return f"{split}/nll_nats" if unit_name == NATS else f"{split}/bits_per_dim"


def figure_text(figures: Mapping[str, Any], unit_name: str, split: str = "test") -> str | None:
    """``80.1234 nats (0.1470 bits/dim)``: the figure of ``split`` in ``unit_name``, the other unit's in
    parentheses; None when ``figures`` (metrics.json, ``run_info``) lacks it."""
    ours, other_unit = figures.get(metric_key(unit_name, split)), BITS if unit_name == NATS else NATS
    if ours is None:
        return None
    other = figures.get(metric_key(other_unit, split))
    return f"{ours:.4f} {unit_name}" + (f" ({other:.4f} {other_unit})" if other is not None else "")


# ----------------------------------------------------------------------------- the run's identity


def leaves(layer: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a nested config dict (an empty dict is a leaf)."""
    for key, value in layer.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def identity_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], resumable: Iterable[str] = ()
) -> list[str]:
    """``key=A there, key=B here`` for each identity setting (not in NOT_IDENTITY, nor a ``resumable``
    model field) that differs between two configs in ``RunConfig.to_dict`` form (``saved``: config.yaml)."""
    ignore = (*NOT_IDENTITY, *(f"model.{k}" for k in resumable))

    def identity(config: Mapping[str, Any]) -> dict[str, Any]:
        config = {k: v for k, v in drop_retired(dict(config)).items() if k not in SAVED_ONLY}
        keep = lambda k: not any(k == x or k.startswith(x + ".") for x in ignore)  # noqa: E731
        return {k: v for k, v in leaves(config) if keep(k)}

    def text(value: Any) -> str:  # as written in a recipe or on the command line: false, null, [1, 28, 28]
        return yaml.safe_dump(value, default_flow_style=True).removesuffix("...\n").strip()

    a, b = identity(saved), identity(current)
    missing = object()
    return [
        f"{k}={text(a[k]) if k in a else '(unset)'} there, {k}={text(b[k]) if k in b else '(unset)'} here"
        for k in sorted(a.keys() | b.keys())
        if a.get(k, missing) != b.get(k, missing)
    ]


def budget(cfg: RunConfig) -> dict[str, Any]:
    """What bounds training: a finished run re-run with the same budget is not trained again."""
    return {k: getattr(cfg.trainer, k) for k in BUDGET}


# ----------------------------------------------------------------------------- the folder


class RunFolder:
    """One run's folder (``--out``): its files' paths, reading and writing its records, and its identity."""

    CONFIG, METRICS, WANDB_ID, LOCK = "config.yaml", "metrics.json", "wandb_id.txt", "run.lock"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_file = property(lambda self: self.path / self.CONFIG)
    metrics_file = property(lambda self: self.path / self.METRICS)
    checkpoints = property(lambda self: self.path / "checkpoints")
    history_file = property(lambda self: self.path / "logs" / "metrics.csv")
    samples = property(lambda self: self.path / "samples")
    wandb_dir = property(lambda self: self.path / "wandb")  # where wandb.init(dir=<run>) writes
    wandb_id_file = property(lambda self: self.path / self.WANDB_ID)
    lock_file = property(lambda self: self.path / self.LOCK)

    @classmethod
    def of_checkpoint(cls, path: str | Path) -> RunFolder | None:
        """The run of a checkpoint file ``<run>/checkpoints/x.ckpt``; None for a file elsewhere."""
        path = Path(path).resolve()
        return cls(path.parent.parent) if path.parent.name == "checkpoints" else None

    @classmethod
    def find(cls, paths: Iterable[str | Path]) -> list[RunFolder]:
        """The finished runs (holding metrics.json) given directly or anywhere under the folders ``paths``
        (a sweep's), each once, in the order given (sorted under each folder)."""
        runs: list[Path] = []
        for p in map(Path, paths):
            found = [p] if (p / cls.METRICS).is_file() else sorted(m.parent for m in p.rglob(cls.METRICS))
            runs.extend(r for r in found if r not in runs)
        return [cls(r) for r in runs]

    # ------------------------------------------------------------------------- reading it back

    def _read(self, path: Path, parse: Callable[[str], Any]) -> dict[str, Any] | None:
        """The mapping in ``path`` ({} for an empty file); None when there is no file. RunDirError naming it
        when it is damaged (UnicodeDecodeError is a ValueError)."""
        try:
            data = parse(path.read_text())
            if not isinstance(data, dict | None):
                raise ValueError(f"it holds a {type(data).__name__}, not a mapping")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, yaml.YAMLError) as e:
            why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            raise RunDirError(
                f"cannot read {path} ({why}), the record of the run in {self.path}",
                "restore that file, or choose another --out",
            ) from e
        return data or {}

    def read_config(self) -> dict[str, Any]:
        """config.yaml as a dict ({} when the run wrote none yet); RunDirError when it is damaged."""
        return self._read(self.config_file, yaml.safe_load) or {}

    def read_metrics(self) -> dict[str, Any] | None:
        """metrics.json (METRICS_KEYS and figures); None before the run finished; RunDirError: damaged."""
        return self._read(self.metrics_file, json.loads)

    def read_history(self) -> list[dict[str, str]]:
        """The rows of logs/metrics.csv (every value text, '' where a row lacks a key); [] without a log.
        A half-written last line (a kill mid-write) is left out."""
        try:
            text = self.history_file.read_text()
        except FileNotFoundError:
            return []
        return list(csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1])))

    def about_checkpoint(self, checkpoint: str | Path) -> dict[str, Any]:
        """What this finished run says about the weights of one of its checkpoints (empty before it
        finished): the run's data and recipe; the run's test figures, step and epoch only for the checkpoint
        they were measured on (metrics.json ``test_checkpoint``), else that checkpoint's name."""
        metrics = self.read_metrics()
        if metrics is None:
            return {}
        keep = ("recipe", "dataset", "variant", "params", "paper")
        info = {k: metrics[k] for k in keep if metrics.get(k) is not None}
        tested, name = metrics.get("test_checkpoint"), Path(checkpoint).name
        if tested and Path(tested).name == name:
            info.update({k: v for k, v in metrics.items() if k.startswith("test/")})
            info.update({k: metrics[k] for k in ("global_step", "epochs") if metrics.get(k) is not None})
        elif tested:
            info["tested_checkpoint"] = Path(tested).name  # the run's test figure belongs to that file
        info["checkpoint"] = name
        source = (self.read_config().get("data") or {}).get("source")
        if source:
            info["data_source"] = source
        return info

    # ------------------------------------------------------------------------- writing it

    def write_config(self, config: Mapping[str, Any]) -> Path:
        return atomic_write(self.config_file, yaml.safe_dump(dict(config), sort_keys=False))

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """metrics.json, atomically; a key neither in METRICS_KEYS nor a figure (a float) is a bug."""
        unknown = [k for k, v in metrics.items() if k not in METRICS_KEYS and type(v) is not float]
        if unknown:
            raise ValueError(f"metrics.json keys {unknown} are not declared in runfolder.METRICS_KEYS")
        return atomic_write(self.metrics_file, json.dumps(dict(metrics), indent=1, default=str) + "\n")

    # ------------------------------------------------------------------------- one run per folder

    def finished(self, cfg: RunConfig) -> dict[str, Any] | None:
        """metrics.json when the run finished with the same budget, else None (a larger budget continues;
        a damaged metrics.json is written again at the end). That it is this run is checked before, by
        :meth:`check_same_run`."""
        try:
            metrics = self.read_metrics()
        except RunDirError:
            return None
        return metrics if metrics is not None and metrics.get("budget") == budget(cfg) else None

    def check_same_run(self, cfg: RunConfig) -> None:
        """Refuse (OtherRunError, exit 2) a config whose identity (every setting but NOT_IDENTITY and the
        model's RESUMABLE_CHANGES) differs from the run recorded in config.yaml (RunDirError: damaged), when
        that run left a result or a checkpoint to resume: nothing here is changed. A folder with no
        checkpoint and no result (a start that failed before its first checkpoint) holds nothing to mix up.
        tests/test_run_folder.py::test_another_run_into_the_same_folder_is_refused."""
        has_state = self.metrics_file.is_file() or any(self.checkpoints.glob("*.ckpt"))  # a result, a resume
        if not has_state or not self.config_file.is_file():
            return
        differ = identity_differences(self.read_config(), cfg.to_dict(), cfg.model.RESUMABLE_CHANGES)
        if differ:
            raise OtherRunError(
                f"the run directory {self.path} holds another run (its config.yaml); these settings differ: "
                + "; ".join(differ[:8])
                + (f"; and {len(differ) - 8} more" if len(differ) > 8 else "")
                + ". Nothing in it was changed",
                f"choose another --out for this run, or continue that one with its settings "
                f"(--config {self.config_file})",
            )
