"""The run configuration: defaults (the dataclasses below) <- recipes/<name>.yaml <- --config FILE <-
key=value overrides -> RunConfig, or ConfigError. OmegaConf 2.4 merges the layers and checks names and
types (unions too); this file words its errors and checks values. Not jsonargparse: no key=value overrides."""

from __future__ import annotations

import functools
import inspect
import os
import re
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from pixel_lightning.errors import ConfigError  # ValueError subclass: one paragraph, problem and fix
from pixel_lightning.recipebook import RECIPES_DIR, list_recipes, read_yaml
from pixel_lightning.runfolder import SAVED_ONLY, drop_retired, leaves

__all__ = ["ConfigError", "RunConfig", "list_recipes", "load_config"]


@dataclass
class ModelSection:
    """The ``model`` section: :func:`model_section` adds the fields of the architecture's config class
    (ModelConfig, models/base.py, or a subclass), which checks them in ``RunConfig.validate``."""

    config_class: ClassVar[type]
    arch: str = "pixelcnn"  # a registered architecture (pixel_lightning/models/registry.py)
    image_shape: tuple[int, int, int] | None = None  # (C, H, W); None: the dataset's
    levels: int | None = None  # values per sub-pixel; None: the dataset's (2 for MNIST, else 256)

    def __post_init__(self) -> None:  # replaces the config class's: its checks need the dataset's shape
        pass

    def build_kwargs(self) -> dict[str, Any]:  # for pixel_lightning.build_model(self.arch, **kwargs)
        return {f.name: getattr(self, f.name) for f in fields(self.config_class)}

    def __reduce__(self) -> tuple[Any, ...]:  # the class is made at run time: pickle it by its config class
        return (_new_section, (self.config_class,), self.__dict__)


@functools.cache
def model_section(config_class: type) -> type[ModelSection]:  # the model section of an architecture
    return dataclass(type("ModelSection", (ModelSection, config_class), {"config_class": config_class}))


def _new_section(config_class: type) -> ModelSection:
    return model_section(config_class).__new__(model_section(config_class))


def model_config_class(arch: str, imports: list[str] | tuple[str, ...] = ()) -> type:
    """The config class of ``arch`` once the modules ``imports`` (a user's architectures) are imported."""
    from pixel_lightning.models import registry

    for module in imports:
        try:
            registry.import_module(module)
        except ImportError as e:
            raise ConfigError(f"imports: {e}", "install it, or put its folder on PYTHONPATH") from e
    if arch not in registry.names():
        raise ConfigError(f"model.arch={arch!r} is unknown; choose one of {registry.names()}")
    return registry.get(arch).config_class


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

    def datamodule_kwargs(self, seed: int) -> dict[str, Any]:  # every field but the name; None: its default
        return {k: v for k, v in asdict(self).items() if k != "name" and v is not None} | {"seed": seed}


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
    # None, not 1.0: no Lightning notice (test_journeys.py::test_a_default_run_prints_no_lightning_notices)
    val_check_interval: float | int | None = None  # validate every fraction of an epoch (float) or k batches
    check_val_every_n_epoch: int | None = 1  # validate every k epochs (None with an int val_check_interval)
    limit_train_batches: float | int | None = None  # fraction (float) or number (int) of training batches
    limit_val_batches: float | int | None = None  # same, validation
    limit_test_batches: float | int | None = None  # same, test
    log_every_n_steps: int = 50  # how often step metrics are written
    deterministic: bool = False  # deterministic kernels (slower on GPU)
    enable_progress_bar: bool = True  # Lightning's progress bars (training, evaluation, sampling)
    matmul_precision: str = "high"  # CUDA fp32 matmuls (no Trainer argument): highest | high (TF32) | medium
    extra: dict[str, Any] = field(default_factory=dict)  # any other lightning.Trainer argument, by name

    def kwargs(self) -> dict[str, Any]:  # of lightning.Trainer
        return {k: v for k, v in asdict(self).items() if k not in ("extra", "matmul_precision")} | self.extra

    def apply_matmul_precision(self) -> bool:
        """Whether ``torch.set_float32_matmul_precision`` was called: on CUDA runs only (on the CPU "medium"
        would let oneDNN round fp32 matmuls to bf16)."""
        import torch

        if self.accelerator not in ("auto", "gpu", "cuda") or not torch.cuda.is_available():
            return False
        torch.set_float32_matmul_precision(self.matmul_precision)
        return True


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
class CheckpointConfig:
    """Checkpoints in <out>/checkpoints/ (best, last.ckpt, periodic); re-running the same command resumes
    from the newest valid one (docs/reliability.md)."""

    monitor: str = "val/nll_nats"  # metric that picks the best checkpoint (lower is better)
    every_n_steps: int | None = None  # save every N optimizer steps (None: every_n_minutes)
    every_n_minutes: float | None = 30.0  # save every N minutes of training (when every_n_steps is None)
    keep_last_k: int = 3  # periodic checkpoints kept (older ones are deleted)
    requeue: bool = True  # under SLURM, requeue the job on SIGTERM/SIGUSR1


@dataclass
class GuardConfig:
    """The non-finite guard: a step with a NaN/inf loss or gradient is skipped (no weight changes)."""

    max_skips: int = 5  # skipped steps allowed per run; the next non-finite step stops the run (exit 3)


@dataclass
class RunConfig:
    """One experiment: model, data, trainer, logging, samples, checkpoints."""

    recipe: str = ""  # the recipe's name (set by the loader)
    description: str = ""  # one line: what this experiment is
    paper: PaperConfig = field(default_factory=PaperConfig)
    seed: int = 0  # seeds the model init, data order and everything else
    threads: int | None = None  # torch CPU threads per process; None: torch's default (1: busy CPUs)
    out: str | None = None  # run directory; None: runs/<recipe>
    # model_section(<config class of model.arch>); load_config picks the class from the layers' model.arch
    model: Any = field(default_factory=lambda: model_section(model_config_class("pixelcnn"))())
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # Lightning callbacks: [{class_path: ...}]
    imports: list[str] = field(default_factory=list)  # modules that register a user's architectures (plugins)

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
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self) -> RunConfig:
        """Check every value, each by its owner (the DataModule class, the architecture's config class, the
        guard; the rest here); fill the dataset's shape and levels into the model. Builds nothing."""
        from pixel_lightning.data import DataError, datamodule_class
        from pixel_lightning.reliability.guard import NonFiniteGuard

        try:
            data = datamodule_class(self.data.name, prefix="data.name=")
            data.check_args(prefix="data.", **self.data.datamodule_kwargs(self.seed))
        except DataError as e:
            raise ConfigError(str(e)) from None
        NonFiniteGuard.check(self.guard.max_skips)
        self._check_values()
        shape, levels, m = data.image_shape, data.levels, self.model
        m.image_shape = tuple(m.image_shape) if m.image_shape is not None else shape
        m.levels = m.levels if m.levels is not None else levels
        if (m.image_shape, m.levels) != (shape, levels):
            raise ConfigError(
                f"model.image_shape={list(m.image_shape)}, model.levels={m.levels} do not match data.name="
                f"{self.data.name} ({list(shape)}, {levels} levels); drop them to use the dataset's"
            )
        try:
            m.head_channels = m.config_class(**m.build_kwargs()).head_channels  # None -> the paper's
        except ValueError as e:
            raise ConfigError(f"{e}; fix it under model.* in the recipe or with model.<key>=<value>") from e
        return self

    def _check_values(self) -> None:
        t = self.trainer
        at_least = [  # (lowest value, keys) in the order checked; None (unset) and "auto" pass
            (1, "trainer.num_nodes trainer.accumulate_grad_batches trainer.log_every_n_steps"),
            (1, "trainer.devices"),
            (0, "trainer.gradient_clip_val sample.every_n_epochs sample.n"),
            (1, "threads checkpoint.keep_last_k checkpoint.every_n_steps"),
        ]
        for low, keys in at_least:
            for key in keys.split():
                value = functools.reduce(getattr, key.split("."), self)
                if isinstance(value, (int, float)) and value < low:
                    raise ConfigError(f"{key}={value} is impossible: it must be >= {low}")
        if t.max_epochs < -1 or t.max_steps < -1:
            raise ConfigError("trainer.max_epochs and trainer.max_steps must be >= 1, or -1 for no limit")
        for key in ("max_steps", "max_epochs", "limit_train_batches"):  # a budget that trains nothing
            if getattr(t, key) == 0:
                raise ConfigError(
                    f"trainer.{key}=0 trains nothing: the run would test an untrained model as its result",
                    f"set trainer.{key} >= 1 (to score a checkpoint: pixel-lightning test --ckpt FILE)",
                )
        if t.max_time is not None and not re.fullmatch(r"\d+:\d\d:\d\d:\d\d", t.max_time):
            raise ConfigError(f"trainer.max_time={t.max_time!r} is not DD:HH:MM:SS; write e.g. 00:02:30:00")
        minutes = self.checkpoint.every_n_minutes
        if minutes is not None and not minutes > 0:
            raise ConfigError(f"checkpoint.every_n_minutes={minutes} must be > 0")
        for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "val_check_interval"):
            value = getattr(t, key)
            if value is not None and (value < 0 or (isinstance(value, float) and value > 1.0)):
                raise ConfigError(
                    f"trainer.{key}={value} is impossible: a fraction in [0, 1] or a number of batches"
                )
        for key, value, choices in [
            ("logger", self.logger.kind, ("wandb", "csv", "tensorboard", "none")),
            ("trainer.matmul_precision", t.matmul_precision, ("highest", "high", "medium")),
        ]:
            if value not in choices:
                raise ConfigError(f"{key}={value!r} is unknown; choose one of {', '.join(choices)}")


def _declared_type(key: str, model: type | None = None) -> Any:
    """The annotation of dotted ``key`` in RunConfig (list indices ignored; None: unknown key); ``model``:
    the model section's class (None: the model's keys are unknown)."""
    hint: Any = RunConfig
    for part in re.sub(r"\[\d+\]", "", key).split("."):
        if is_dataclass(hint):
            hint = model if (hint, part) == (RunConfig, "model") else typing.get_type_hints(hint).get(part)
    return hint


def overrides_layer(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["model.hidden=32", ...]`` -> ``{"model": {"hidden": 32}}``: values parsed as YAML (OmegaConf's
    dotlist), except that a str field takes its text verbatim (YAML reads 0123 as 83, 1e3 as 1000.0)."""
    layer = OmegaConf.create()
    for text in overrides:  # one at a time, so that logger.name=x logger=none keeps the name
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {text!r} is not key=value; write e.g. trainer.max_steps=200")
        hint, single = _declared_type(key), OmegaConf.create()
        if (hint is str or set(typing.get_args(hint)) == {str, type(None)}) and raw not in ("", "null", "~"):
            OmegaConf.update(single, key, raw.strip())
        else:
            single.merge_with_dotlist([text])
        layer = OmegaConf.merge(layer, _shorthands(typing.cast(dict, OmegaConf.to_container(single))))
    return typing.cast(dict, OmegaConf.to_container(layer))


def _shorthands(layer: dict[str, Any]) -> dict[str, Any]:
    """``logger: none`` -> ``logger: {kind: none}``; a lightning.Trainer argument TrainerConfig does not
    declare -> ``trainer.extra`` (Lightning checks it)."""
    if isinstance(layer.get("logger"), str):
        layer["logger"] = {"kind": layer["logger"]}
    trainer = layer.get("trainer")
    declared = {f.name for f in fields(TrainerConfig)}
    if isinstance(trainer, dict) and not declared.issuperset(trainer):
        import lightning as L

        # the run sets these itself (docs/reliability.md)
        owned = {"self", "logger", "callbacks", "plugins", "default_root_dir", "use_distributed_sampler"}
        allowed = set(inspect.signature(L.Trainer.__init__).parameters) - owned - declared
        extra = {k: trainer.pop(k) for k in list(trainer) if k in allowed}
        trainer["extra"] = {**(trainer.get("extra") or {}), **extra}
    return layer


def _config_error(
    e: OmegaConfBaseException, cfg: DictConfig, layer: dict[str, Any], source: str
) -> ConfigError:
    """OmegaConf's error as one paragraph: the key, what is valid there, and the fix."""
    from pixel_lightning.models import registry

    def rejects(key: str, value: Any) -> bool:  # whether merging ``key: value`` alone into cfg fails
        single = OmegaConf.create()
        OmegaConf.update(single, key, value)
        try:
            OmegaConf.merge(cfg, single)
        except OmegaConfBaseException:
            return True
        return False

    model = OmegaConf.get_type(cfg, "model")
    if isinstance(e, ConfigKeyError) and is_dataclass(e.object_type):
        names = [f.name for f in fields(e.object_type)]
        archs = sorted(registry.architectures().items())
        owners = [n for n, a in archs if e.key in {f.name for f in fields(a.config_class)}]
        if e.object_type is model and owners:
            return ConfigError(f"model.{e.key} is for model.arch={' or '.join(owners)} only; remove it")
        if e.object_type is TrainerConfig:
            names = [n for n in names if n != "extra"] + ["any other lightning.Trainer argument"]
        return ConfigError(f"unknown key {e.full_key!r} {source}; valid keys: {', '.join(names)}")
    key = getattr(e, "full_key", None) or ""
    if not key:  # OmegaConf names no key for a section given a value or a bad list item: find it
        key = next((k for k, v in leaves(layer) if rejects(k, v)), "")
    key = re.sub(r"\[\d+\]$", "", key)  # a list item: name the list
    hint = _declared_type(key, model) if key else None
    if is_dataclass(hint):
        return ConfigError(f"{key} is a section: set its keys, e.g. {key}.<key>=<value>")
    if isinstance(e, ValidationError) and key:
        value = OmegaConf.select(OmegaConf.create(layer), key)
        expected = (hint.__name__ if isinstance(hint, type) else str(hint)).replace("None", "null")
        return ConfigError(
            f"{key}={value!r} ({source}) has the wrong type: expected {expected}; "
            f"fix it {source}: {key}=<{expected}>"
        )
    return ConfigError(f"{str(e).splitlines()[0]} ({source}); fix {key or 'the config'}")


def load_config(
    recipe: str | None,
    overrides: list[str] | tuple[str, ...] = (),
    recipes_dir: Path = RECIPES_DIR,
    config_path: str | Path | None = None,
) -> RunConfig:
    """Defaults <- recipe file <- ``config_path`` (any YAML, e.g. a run's config.yaml) <- ``key=value``
    overrides, validated. No recipe and no file: the defaults."""
    layers: list[tuple[dict[str, Any], str]] = []  # (mapping, where it came from, for errors)
    if recipe is not None:
        path = recipes_dir / f"{recipe}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown recipe {recipe!r}; valid recipes: {', '.join(list_recipes(recipes_dir))} "
                "(python recipes/run.py --list describes them)"
            )
        layers.append((read_yaml(path, ConfigError), f"in {path}"))
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise ConfigError(
                f"--config {path}: no such file; give a YAML file such as <run dir>/config.yaml"
            )
        data = {k: v for k, v in drop_retired(read_yaml(path, ConfigError)).items() if k not in SAVED_ONLY}
        layers.append((data, f"in --config {path}"))
    layers.append((overrides_layer(overrides), "on the command line"))
    models = [d["model"] for d, _ in layers if isinstance(d.get("model"), dict)]
    arch = next((m["arch"] for m in reversed(models) if "arch" in m), "pixelcnn")  # the last one given
    imports = next((d["imports"] for d, _ in reversed(layers) if isinstance(d.get("imports"), list)), [])
    cfg = OmegaConf.structured(RunConfig)
    cfg.model = OmegaConf.structured(model_section(model_config_class(arch, imports)))
    for data, source in layers:  # each checked against the dataclasses (OmegaConf struct mode)
        data = _shorthands(data)
        try:
            cfg = typing.cast(DictConfig, OmegaConf.merge(cfg, data))
        except OmegaConfBaseException as e:
            raise _config_error(e, cfg, data, source) from None
    try:
        run = typing.cast(RunConfig, OmegaConf.to_object(cfg))
    except OmegaConfBaseException as e:  # e.g. a ${...} interpolation that does not resolve
        raise _config_error(e, cfg, {}, "in the config") from None
    run.recipe = recipe or run.recipe  # a saved config.yaml names the recipe it came from
    return run.validate()
