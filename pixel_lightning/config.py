"""The run configuration: typed dataclasses, recipe loading and dotted command-line overrides.

    defaults (the dataclasses below) <- recipes/<name>.yaml (overrides only) <- key=value overrides
      -> RunConfig, checked: unknown keys, wrong types and impossible values raise ConfigError

Every field a recipe can set is declared here with a default and a one-line comment. Values on the command
line are parsed as YAML (``model.skip=false``, ``trainer.max_steps=200``, ``model.image_shape=[1,8,8]``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pixel_lightning.errors import ConfigError  # ValueError subclass: one paragraph, problem and fix
from pixel_lightning.models.base import ModelConfig
from pixel_lightning.models.multiscale import MultiScaleConfig
from pixel_lightning.recipebook import RECIPES_DIR, describe_recipes, list_recipes, recipe_path
from pixel_lightning.recipebook import read_yaml as _read_yaml
from pixel_lightning.reliability import CheckpointConfig, GuardConfig  # their owner

LOGGERS = ("wandb", "csv", "tensorboard", "none")
STRING_KEYS = (  # overrides taken verbatim, never parsed as YAML
    "model.arch",
    "data.name",
    "data.source",
    "data.data_dir",
    "logger",
    "logger.kind",
    "out",
    "trainer.max_time",
    "trainer.precision",
    "trainer.strategy",
    "trainer.accelerator",
)
__all__ = ["ConfigError", "RunConfig", "describe_recipes", "list_recipes", "load_config"]


# ----------------------------------------------------------------------------- the sections


# keys only the multi-scale architecture takes: declared once, in its config class
MULTISCALE_KEYS = tuple(
    f.name for f in fields(MultiScaleConfig) if f.name not in {g.name for g in fields(ModelConfig)}
)


@dataclass
class ModelSection(MultiScaleConfig):
    """The model's fields, declared by their owners (ModelConfig, pixel_lightning/models/base.py, and
    MultiScaleConfig, models/multiscale.py: the multi-scale keys, for model.arch=multiscale only), plus
    the architecture. ``image_shape`` and ``levels`` default to the DataModule's."""

    arch: str = "pixelcnn"  # a key of pixel_lightning.ARCHITECTURES
    image_shape: tuple[int, int, int] | None = None  # (C, H, W); None: the dataset's
    levels: int | None = None  # values per sub-pixel; None: the dataset's (2 for MNIST, 256 otherwise)

    def __post_init__(self) -> None:  # checked in RunConfig.validate, once the dataset is known
        pass

    def given_multiscale_keys(self) -> list[str]:
        defaults = {f.name: f.default for f in fields(MultiScaleConfig)}
        return [k for k in MULTISCALE_KEYS if getattr(self, k) != defaults[k]]

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``pixel_lightning.build_model(self.arch, **kwargs)``."""
        keys = [f.name for f in fields(ModelConfig)] + (
            list(MULTISCALE_KEYS) if self.arch == "multiscale" else []
        )
        return {k: getattr(self, k) for k in keys}


@dataclass
class DataConfig:
    """Which data set, from where, in what batches (pixel_lightning.data.build_datamodule)."""

    name: str = "mnist"  # mnist | cifar10 | imagenet32 | imagenet64
    data_dir: str | None = None  # folder of the source files; None: data_cache/<name>
    source: str = "auto"  # auto | amat | idx | hub | embedded (MNIST) | python (CIFAR) | png | npz (ImageNet)
    batch_size: int = 16  # images per device per step (global batch = batch_size * devices * num_nodes)
    num_workers: int = 0  # loader worker processes per device
    strict: bool = True  # record counts and checksums must match the release (False: warn, for subsets)
    val_size: int | None = None  # training images held out for validation; None: the dataset's default
    binarization: str | None = None  # MNIST from grey sources: threshold | stochastic; None: threshold
    hub_id: str | None = None  # ImageNet only: Hub dataset id for source=hub
    cache_dir: str | None = None  # where the Arrow conversion goes; None: <data_dir>/arrow

    def datamodule_kwargs(self, seed: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "data_dir": self.data_dir,
            "source": self.source,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "seed": seed,
            "strict": self.strict,
        }
        for key in ("val_size", "binarization", "hub_id", "cache_dir"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        return kwargs


@dataclass
class TrainerConfig:
    """lightning.Trainer arguments (same names and meanings)."""

    max_epochs: int = 100  # stop after this many epochs (-1: no limit)
    max_steps: int = -1  # stop after this many optimizer steps (-1: no limit)
    max_time: str | None = None  # stop after this wall time, "DD:HH:MM:SS"
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: int | str = "auto"  # devices per node: an int, or "auto"
    num_nodes: int = 1  # machines
    strategy: str = "auto"  # auto | ddp | ddp_spawn | ...
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed
    gradient_clip_val: float | None = None  # clip the gradient norm to this (None: no clipping)
    accumulate_grad_batches: int = 1  # optimizer step every k batches
    val_check_interval: float | int = 1.0  # validate every fraction of an epoch (float) or k batches (int)
    check_val_every_n_epoch: int | None = 1  # validate every k epochs (None with an int val_check_interval)
    limit_train_batches: float | int = 1.0  # fraction (float) or number (int) of training batches per epoch
    limit_val_batches: float | int = 1.0  # same, validation
    limit_test_batches: float | int = 1.0  # same, test
    log_every_n_steps: int = 50  # how often step metrics are written
    deterministic: bool = False  # deterministic kernels (slower on GPU)
    enable_progress_bar: bool = True  # Lightning's progress bars (training, evaluation, sampling)
    extra: dict[str, Any] = field(default_factory=dict)  # any other lightning.Trainer argument, by name

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``lightning.Trainer``."""
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}, **self.extra}


TRAINER_OWNED = ("logger", "callbacks", "plugins", "default_root_dir", "use_distributed_sampler")


def trainer_arguments() -> list[str]:
    """lightning.Trainer's arguments a config may set (the run sets the others: TRAINER_OWNED)."""
    import inspect

    import lightning as L

    names = inspect.signature(L.Trainer.__init__).parameters
    return [n for n in names if n not in ("self", *TRAINER_OWNED)]


@dataclass
class LoggerConfig:
    """Experiment tracking. A local CSV log (<out>/logs/metrics.csv) is always written as well."""

    kind: str = "wandb"  # wandb | csv | tensorboard | none  (shorthand: logger=none)
    project: str = "pixel-lightning"  # W&B project
    entity: str | None = None  # W&B team or user; None: your default
    group: str | None = None  # W&B group; None: the recipe name
    tags: list[str] = field(default_factory=list)  # extra tags (arch, dataset, residual, skip are added)
    name: str | None = None  # run name; None: the run directory's name
    offline: bool = False  # force W&B offline even when logged in
    log_model: bool = False  # W&B: upload the checkpoints (best, last) as artifacts at the end of fit


@dataclass
class SampleConfig:
    """Sample grids written to <out>/samples/ and sent to the logger."""

    every_n_epochs: int = 1  # a grid every N training epochs (0: none during training)
    n: int = 16  # images per grid (0: no sampling at all)
    at_end: bool = True  # a final grid from the best checkpoint
    seed: int = 0  # generator seed for the grids (same noise every epoch)


@dataclass
class PaperConfig:
    """The paper's figure for this experiment, printed beside ours."""

    test: float | None = None  # the paper's test figure (validation for ImageNet)
    train: float | None = None  # the paper's training figure (in parentheses in its tables)
    unit: str = "bits/dim"  # bits/dim | nats
    where: str = ""  # table / section of the paper


@dataclass
class RunConfig:
    """One experiment: model, data, trainer, logging, samples, checkpoints."""

    recipe: str = ""  # the recipe's name (set by the loader)
    description: str = ""  # one line: what this experiment is
    paper: PaperConfig = field(default_factory=PaperConfig)
    seed: int = 0  # seeds the model init, data order and everything else
    threads: int | None = None  # torch CPU threads per process; None: torch's default (1: busy CPUs)
    out: str | None = None  # run directory; None: runs/<recipe>
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    # extra Lightning callbacks: [{class_path: lightning.pytorch.callbacks.EMAWeightAveraging, init_args: {}}]
    callbacks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        """``out``; else runs/<recipe>, or runs/<recipe>/sweep-<id>/<run id> under a ``wandb agent``."""
        if self.out:
            return Path(self.out)
        base = Path("runs") / (self.recipe or "run")
        if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
            return base / f"sweep-{os.environ['WANDB_SWEEP_ID']}" / os.environ["WANDB_RUN_ID"]
        return base

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["model"]["image_shape"] is not None:
            d["model"]["image_shape"] = list(d["model"]["image_shape"])
        if self.model.arch != "multiscale":
            for key in MULTISCALE_KEYS:
                d["model"].pop(key)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self) -> RunConfig:
        """Fill the dataset's shape and levels into the model, then check every impossible value."""
        from pixel_lightning import ARCHITECTURES
        from pixel_lightning.data import DATASETS, build_datamodule

        if self.data.name not in DATASETS:
            raise ConfigError(f"data.name={self.data.name!r} is unknown; choose one of {list(DATASETS)}")
        self._check_positive()
        if self.logger.kind not in LOGGERS:
            raise ConfigError(f"logger={self.logger.kind!r} is unknown; choose one of {list(LOGGERS)}")
        dm = build_datamodule(self.data.name, **self.data.datamodule_kwargs(self.seed))  # owns shape, levels
        shape, levels = tuple(dm.image_shape), dm.levels
        m = self.model
        m.image_shape = tuple(m.image_shape) if m.image_shape is not None else shape
        m.levels = m.levels if m.levels is not None else levels
        if (tuple(m.image_shape), m.levels) != (shape, levels):
            raise ConfigError(
                f"model.image_shape={list(m.image_shape)}, model.levels={m.levels} do not match data.name="
                f"{self.data.name} ({list(shape)}, {levels} levels); drop them to use the dataset's"
            )
        if m.arch not in ARCHITECTURES and m.arch != "multiscale":
            raise ConfigError(f"model.arch={m.arch!r} is unknown; choose one of {sorted(ARCHITECTURES)}")
        if m.arch != "multiscale":
            given = m.given_multiscale_keys()
            if given:
                raise ConfigError(f"model.{given[0]} is for model.arch=multiscale only; remove it")
        try:
            cls = MultiScaleConfig if m.arch == "multiscale" else ModelConfig  # the owner checks its fields
            resolved = cls(**{f.name: getattr(m, f.name) for f in fields(cls)})
            m.head_channels = resolved.head_channels  # None -> the paper's 32 (binary) or 1024
        except ValueError as e:
            raise ConfigError(f"{e}; fix it under model.* in the recipe or with model.<key>=<value>") from e
        return self

    def _check_positive(self) -> None:
        rules = [
            ("data.batch_size", self.data.batch_size, 1),
            ("data.num_workers", self.data.num_workers, 0),
            ("trainer.num_nodes", self.trainer.num_nodes, 1),
            ("trainer.accumulate_grad_batches", self.trainer.accumulate_grad_batches, 1),
            ("trainer.log_every_n_steps", self.trainer.log_every_n_steps, 1),
            ("sample.every_n_epochs", self.sample.every_n_epochs, 0),
            ("sample.n", self.sample.n, 0),
            ("threads", self.threads if self.threads is not None else 1, 1),
            ("checkpoint.keep_last_k", self.checkpoint.keep_last_k, 1),
            ("guard.max_skips", self.guard.max_skips, 0),
        ]
        if isinstance(self.trainer.devices, int):
            rules.append(("trainer.devices", self.trainer.devices, 1))
        if self.data.val_size is not None:
            rules.append(("data.val_size", self.data.val_size, 0))
        if self.checkpoint.every_n_steps is not None:
            rules.append(("checkpoint.every_n_steps", self.checkpoint.every_n_steps, 1))
        if self.trainer.gradient_clip_val is not None:
            rules.append(("trainer.gradient_clip_val", self.trainer.gradient_clip_val, 0))
        for key, value, low in rules:
            if value < low:
                raise ConfigError(f"{key}={value} is impossible: it must be >= {low}")
        if self.trainer.max_epochs < -1 or self.trainer.max_steps < -1:
            raise ConfigError("trainer.max_epochs and trainer.max_steps must be >= 0, or -1 for no limit")
        if self.trainer.max_time is not None and not re.fullmatch(
            r"\d+:\d\d:\d\d:\d\d", self.trainer.max_time
        ):
            raise ConfigError(
                f"trainer.max_time={self.trainer.max_time!r} is not DD:HH:MM:SS; write e.g. 00:02:30:00"
            )
        if self.checkpoint.every_n_minutes is not None and not self.checkpoint.every_n_minutes > 0:
            raise ConfigError(f"checkpoint.every_n_minutes={self.checkpoint.every_n_minutes} must be > 0")
        for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "val_check_interval"):
            value = getattr(self.trainer, key)
            if value < 0 or (isinstance(value, float) and value > 1.0):
                raise ConfigError(
                    f"trainer.{key}={value} is impossible: a fraction in [0, 1] or a number of batches"
                )


# ----------------------------------------------------------------------------- types


def _check_type(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to ``hint`` (int -> float, list -> tuple), or ConfigError naming the key."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if isinstance(value, int) and not isinstance(value, bool) and int in options:
            return value  # float | int: a whole number stays an int (a count of batches, not a fraction)
        for option in options:
            try:
                return _check_type(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}={value!r} has the wrong type: expected {_type_name(hint)}")
    if hint is type(None):
        if value is None:
            return None
    elif hint is Any:
        return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            args = typing.get_args(hint)
            inner = args[0] if args else Any
            items = [_check_type(v, inner, key) for v in value]
            return tuple(items) if origin is tuple else items
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    raise ConfigError(f"{key}={value!r} has the wrong type: expected {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint)).replace("NoneType", "null")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _set(obj: Any, key: str, value: Any, where: str) -> None:
    """Set dotted ``key`` (relative to ``obj``) to ``value``, checking the name and the type."""
    head, _, rest = key.partition(".")
    names = [f.name for f in fields(obj)]
    full = f"{where}{head}"
    if isinstance(obj, TrainerConfig) and head not in names and not rest and head in trainer_arguments():
        obj.extra = {**obj.extra, head: value}  # checked by lightning.Trainer itself
        return
    if isinstance(obj, TrainerConfig) and head not in names:
        names = [n for n in names if n != "extra"] + ["any other lightning.Trainer argument"]
    if head not in names:
        raise ConfigError(f"unknown key {full!r}{_from_where(where)}; valid keys: {', '.join(names)}")
    hint = _hints(type(obj))[head]
    current = getattr(obj, head)
    if dataclasses.is_dataclass(current):
        if rest:
            _set(current, rest, value, f"{full}.")
        elif isinstance(value, dict):
            for k, v in value.items():
                _set(current, str(k), v, f"{full}.")
        elif head == "logger" and isinstance(value, str):  # shorthand: logger=none
            _set(current, "kind", value, f"{full}.")
        else:
            raise ConfigError(f"{full} is a section: set its keys, e.g. {full}.<key>=<value>")
        return
    if rest:
        if typing.get_origin(hint) is dict or head == "extra":
            d = dict(current)
            d[rest] = value
            setattr(obj, head, d)
            return
        raise ConfigError(f"{full} is a value, not a section; set it with {full}=<value>")
    setattr(obj, head, _check_type(value, hint, full))


def _from_where(where: str) -> str:
    return f" in section {where.rstrip('.')!r}" if where else ""


# ----------------------------------------------------------------------------- recipes


def parse_override(text: str) -> tuple[str, Any]:
    """``"model.hidden=32"`` -> ``("model.hidden", 32)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not key=value; write e.g. trainer.max_steps=200")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if key.strip() in STRING_KEYS and raw.strip() not in ("", "null", "~"):
        value = raw.strip()  # YAML would read 01:00:00:00 as a base-60 integer and 32 as an int
    return key.strip(), value


def read_yaml(path: Path) -> dict[str, Any]:
    return _read_yaml(path, ConfigError)


SAVED_ONLY = ("data_resolved",)  # keys a run's saved config.yaml adds (what the data turned out to be)


def load_config(
    recipe: str | None,
    overrides: list[str] | tuple[str, ...] = (),
    recipes_dir: Path = RECIPES_DIR,
    config_path: str | Path | None = None,
) -> RunConfig:
    """Defaults <- recipe file <- ``config_path`` (any YAML, e.g. a run's config.yaml) <- ``key=value``
    overrides, validated. No recipe and no file: the defaults."""
    cfg = RunConfig()
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise ConfigError(
                f"--config {path}: no such file; give a YAML file such as <run dir>/config.yaml"
            )
        data = read_yaml(path)
        for key in SAVED_ONLY:
            data.pop(key, None)
        recipe_name = data.pop("recipe", None) or ""
        if recipe is not None:
            cfg = load_config(recipe, (), recipes_dir)
        for key, value in data.items():
            _set(cfg, key, value, "")
        cfg.recipe = recipe or recipe_name
    elif recipe is not None:
        path = recipe_path(recipe, recipes_dir)
        if not path.is_file():
            raise ConfigError(
                f"unknown recipe {recipe!r}; valid recipes: {', '.join(list_recipes(recipes_dir))} "
                "(python recipes/run.py --list describes them)"
            )
        data = read_yaml(path)
        data.pop("recipe", None)
        for key, value in data.items():
            _set(cfg, key, value, "")
        cfg.recipe = recipe
    for text in overrides:
        key, value = parse_override(text)
        _set(cfg, key, value, "")
    return cfg.validate()
