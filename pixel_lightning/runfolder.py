"""The run folder: the one place that knows what a run writes where, which run a folder holds, and how to
read it back (``pixel-lightning test``, the model card, report, sweep). Standard library and yaml only.

    <run>/config.yaml        the resolved config + data_resolved (callbacks.RunRecord)
    <run>/metrics.json       the result (runner.run, at the end): METRICS_KEYS and the last scalar figures
    <run>/checkpoints/       best-*.ckpt, last.ckpt and periodic ones (pixel_lightning.reliability)
    <run>/logs/metrics.csv   the metric history, exact across resumes (reliability.HistoryLogger)
    <run>/samples/           sample grids; <run>/wandb/ W&B's files, <run>/wandb_id.txt the run's W&B id
    <run>/run.lock           held by the process writing the folder (reliability.RunLock)
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pixel_lightning.atomic import atomic_write
from pixel_lightning.errors import OtherRunError, RunDirError, one_line

if TYPE_CHECKING:
    from pixel_lightning.config import RunConfig

BUDGET = ("max_epochs", "max_steps", "max_time")  # trainer.*: how long a run trains (raised: it continues)
SAVED_ONLY = ("data_resolved",)  # keys config.yaml adds to the run's config

# What a run may change from one start to the next (besides the model's RESUMABLE_CHANGES): every other
# setting is the run's identity, and another identity into the same --out is refused (docs/reliability.md).
NOT_IDENTITY = (
    "out", *(f"trainer.{k}" for k in BUDGET), "logger", "trainer.enable_progress_bar",
    "trainer.log_every_n_steps", "checkpoint.every_n_steps", "checkpoint.every_n_minutes",
    "checkpoint.keep_last_k", "checkpoint.requeue", "guard", "threads", "imports",
)  # fmt: skip

# metrics.json's keys besides the run's last scalar figures (floats) by their logged names
METRICS_KEYS = (
    "recipe", "arch", "dataset", "variant", "residual", "skip", "params", "global_step", "epochs",
    "world_size", "model", "budget", "test_checkpoint", "test_batches", "paper", "seconds", "samples_png",
    "host",  # where the last process ran: seconds and img/s mean nothing without it
)  # fmt: skip

NATS, BITS = "nats", "bits/dim"
NATS_DATASETS = ("mnist", "binarized_mnist")  # binary images: the paper gives NLL in nats (Tables 2, 4)


def drop_retired(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config without ``model.extra`` (removed in issue 21), so that older runs resume and load."""
    if not isinstance(config.get("model"), dict):
        return config
    return {**config, "model": {k: v for k, v in config["model"].items() if k != "extra"}}


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
    """metrics.json's ``host``: the CPU, its cores and the torch threads the run used."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads}


def unit(dataset: str | None, paper_unit: str | None = None) -> str:
    """The unit of a run's likelihood, as the paper reports it (Section 5.1): nats for binarized MNIST (by
    its data set, or a recipe whose paper figure is in nats), else bits per dimension."""
    return NATS if dataset in NATS_DATASETS or paper_unit == NATS else BITS


def unit_of(record: Mapping[str, Any]) -> str:
    """:func:`unit` of a metrics.json or a model's ``run_info``."""
    return unit(record.get("dataset"), (record.get("paper") or {}).get("unit"))


def metric_key(unit_name: str, split: str = "test") -> str:
    return f"{split}/nll_nats" if unit_name == NATS else f"{split}/bits_per_dim"


def figure_text(figures: Mapping[str, Any], unit_name: str, split: str = "test") -> str | None:
    """``80.1234 nats (0.1470 bits/dim)``; None when ``figures`` lacks the figure."""
    ours, other_unit = figures.get(metric_key(unit_name, split)), BITS if unit_name == NATS else NATS
    if ours is None:
        return None
    other = figures.get(metric_key(other_unit, split))
    return f"{ours:.4f} {unit_name}" + (f" ({other:.4f} {other_unit})" if other is not None else "")


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
    """``key=A there, key=B here`` for each identity setting (not NOT_IDENTITY, nor a ``resumable`` model
    field) that differs between two configs in ``RunConfig.to_dict`` form (``saved``: config.yaml)."""
    ignore = (*NOT_IDENTITY, *(f"model.{k}" for k in resumable))

    def identity(config: Mapping[str, Any]) -> dict[str, Any]:
        config = {k: v for k, v in drop_retired(dict(config)).items() if k not in SAVED_ONLY}
        return {k: v for k, v in leaves(config) if not any(k == x or k.startswith(x + ".") for x in ignore)}

    def text(config: dict[str, Any], key: str) -> str:  # as in a recipe: false, null, [1, 28, 28]
        if key not in config:
            return "(unset)"
        return yaml.safe_dump(config[key], default_flow_style=True).removesuffix("...\n").strip()

    a, b = identity(saved), identity(current)
    differ = [k for k in sorted(a.keys() | b.keys()) if k not in a or k not in b or a[k] != b[k]]
    return [f"{k}={text(a, k)} there, {k}={text(b, k)} here" for k in differ]


def budget(cfg: RunConfig) -> dict[str, Any]:
    """What bounds training: a finished run re-run with the same budget is not trained again."""
    return {k: getattr(cfg.trainer, k) for k in BUDGET}


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
        """The finished runs (with metrics.json) at or under ``paths``, each once, in the order given."""
        runs: list[Path] = []
        for p in map(Path, paths):
            found = [p] if (p / cls.METRICS).is_file() else sorted(m.parent for m in p.rglob(cls.METRICS))
            runs.extend(r for r in found if r not in runs)
        return [cls(r) for r in runs]

    def _read(self, path: Path, parse: Callable[[str], Any]) -> dict[str, Any] | None:
        """The mapping in ``path`` ({} when empty, None when missing); RunDirError naming a damaged file."""
        try:
            data = parse(path.read_text())
            if not isinstance(data, dict | None):
                raise ValueError(f"it holds a {type(data).__name__}, not a mapping")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, yaml.YAMLError) as e:  # UnicodeDecodeError is a ValueError
            why = one_line(f"{type(e).__name__}: {e}")
            raise RunDirError(
                f"cannot read {path} ({why}), the record of the run in {self.path}",
                "restore that file, or choose another --out",
            ) from e
        return data or {}

    def read_config(self) -> dict[str, Any]:
        return self._read(self.config_file, yaml.safe_load) or {}

    def read_metrics(self) -> dict[str, Any] | None:
        """metrics.json; None before the run finished."""
        return self._read(self.metrics_file, json.loads)

    def read_history(self) -> list[dict[str, str]]:
        """The rows of logs/metrics.csv, values as text; a half-written last line (a kill) left out."""
        try:
            text = self.history_file.read_text()
        except FileNotFoundError:
            return []
        return list(csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1])))

    def about_checkpoint(self, checkpoint: str | Path) -> dict[str, Any]:
        """What this finished run says about one of its checkpoints ({} before it finished): its data and
        recipe, and its test figures, step and epoch only for the checkpoint they were measured on."""
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
        if source := (self.read_config().get("data") or {}).get("source"):
            info["data_source"] = source
        return info

    def write_config(self, config: Mapping[str, Any]) -> Path:
        return atomic_write(self.config_file, yaml.safe_dump(dict(config), sort_keys=False))

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """metrics.json, atomically; a key neither in METRICS_KEYS nor a figure (a float) is a bug."""
        unknown = [k for k, v in metrics.items() if k not in METRICS_KEYS and type(v) is not float]
        if unknown:
            raise ValueError(f"metrics.json keys {unknown} are not declared in runfolder.METRICS_KEYS")
        return atomic_write(self.metrics_file, json.dumps(dict(metrics), indent=1, default=str) + "\n")

    def finished(self, cfg: RunConfig) -> dict[str, Any] | None:
        """metrics.json when the run finished with the same budget (a larger one continues; a damaged
        metrics.json is written again at the end), else None."""
        try:
            metrics = self.read_metrics()
        except RunDirError:
            return None
        return metrics if metrics is not None and metrics.get("budget") == budget(cfg) else None

    def check_same_run(self, cfg: RunConfig) -> None:
        """OtherRunError (exit 2) when config.yaml records a run of another identity that left a result or
        a checkpoint; nothing is changed (tests/test_run_folder.py::test_another_run_into_the_same_*)."""
        has_state = self.metrics_file.is_file() or any(self.checkpoints.glob("*.ckpt"))
        if not has_state or not self.config_file.is_file():
            return
        differ = identity_differences(self.read_config(), cfg.to_dict(), cfg.model.RESUMABLE_CHANGES)
        if differ:
            more = f"; and {len(differ) - 8} more" if len(differ) > 8 else ""
            raise OtherRunError(
                f"the run directory {self.path} holds another run (its config.yaml); these settings differ: "
                f"{'; '.join(differ[:8])}{more}. Nothing in it was changed",
                f"choose another --out for this run, or continue that one with its settings "
                f"(--config {self.config_file})",
            )
