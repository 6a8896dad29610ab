"""The architectures, each registered where it is defined: the one list everything else asks.

    @register("row_lstm", title="Row LSTM")
    class RowLSTM(AutoregressiveImageModel): ...

``build_model``, the config's ``model.arch`` check, hub loading and model cards, the multi-scale model's
bases, the benchmarks and the tests parametrized over architectures all read :func:`architectures`.
Adding an architecture touches its own file plus one import (``pixel_lightning/models/__init__.py``); a
user's own architecture lives in any importable module, named by the run config's ``imports`` (and
recorded in checkpoints and ``config.json``, so that loading them imports it again: :func:`import_module`).

Standard library only at module level: the config and the command line can import this file cheaply.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Architecture:
    """One registered architecture.

    ``network_class`` builds a network of it from a ModelConfig (``network_class(config)``: first layer,
    body, head; called as ``network(xf, cond)``): what the multi-scale model composes. None for an
    architecture that is not a single network (multi-scale itself), which therefore is no base.
    """

    name: str  # model.arch, the checkpoint's and config.json's "arch"
    title: str  # for model cards and docs, e.g. "Row LSTM"
    model_class: type  # the LightningModule (on the loss base, pixel_lightning/models/base.py)
    config_class: type  # its ModelConfig (sub)class
    module: str  # the defining module, imported again before a saved model of it is rebuilt
    network_class: type | None = None

    @property
    def is_base(self) -> bool:
        """Can the multi-scale model build its two networks of this architecture?"""
        return self.network_class is not None


_REGISTRY: dict[str, Architecture] = {}


def register(name: str, title: str) -> Callable[[type], type]:
    """Class decorator: register a LightningModule of the loss base as architecture ``name``. Its
    ``config_class`` and ``network_class`` (None: not a multi-scale base) come from the class; its
    ``arch`` is set to ``name``. Registering another class under a taken name is an error (re-importing
    the same module, e.g. a reloaded plugin, replaces its own entry)."""

    def add(cls: type) -> type:
        old = _REGISTRY.get(name)
        where = f"{cls.__module__}.{cls.__qualname__}"
        if old is not None and f"{old.module}.{old.model_class.__qualname__}" != where:
            raise ValueError(f"architecture {name!r} is already registered by {old.module}, not {where}")
        cls.arch = name
        _REGISTRY[name] = Architecture(
            name=name,
            title=title,
            model_class=cls,
            config_class=cls.config_class,
            module=cls.__module__,
            network_class=getattr(cls, "network_class", None),
        )
        return cls

    return add


def architectures() -> dict[str, Architecture]:
    """Every registered architecture by name (the built-in ones are registered on first use)."""
    importlib.import_module("pixel_lightning.models")  # the built-in architectures register on import
    return dict(_REGISTRY)


def names() -> list[str]:
    return sorted(architectures())


def bases() -> list[str]:
    """Architectures the multi-scale model can be built of: every single-network one."""
    return sorted(n for n, a in architectures().items() if a.is_base)


def get(name: str) -> Architecture:
    """The architecture ``name``; KeyError naming the registered ones otherwise."""
    found = architectures().get(name)
    if found is None:
        raise KeyError(f"unknown architecture {name!r}; choose one of {names()}")
    return found


class ModelClasses(Mapping[str, type]):
    """Read-only and live: name -> LightningModule class of every registered architecture
    (``pixel_lightning.ARCHITECTURES``)."""

    def __getitem__(self, name: str) -> type:
        return get(name).model_class

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __len__(self) -> int:
        return len(architectures())


def build_model(name: str, **kwargs: Any) -> Any:
    """Build architecture ``name`` (see :func:`names`) from its config class's fields as keywords;
    ValueError naming the valid names or fields otherwise."""
    try:
        cls = get(name).model_class
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    unknown = set(kwargs) - set(cls.config_fields())
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for {name!r}; valid: {cls.config_fields()}")
    return cls(**kwargs)


def import_module(module: str) -> Any:
    """Import ``module`` (a dotted name) so that the architectures it defines register themselves.

    Only a module that is installed or on ``sys.path`` (``PYTHONPATH``) is imported, by its name: nothing
    is read from a checkpoint or a run folder but the name. Raises ImportError naming the module."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"cannot import {module!r} ({type(e).__name__}: {e})", name=module) from e
