"""Tools over finished runs and batches of runs: ``report`` (tables and curves) and ``sweep`` (a batch).

Each module has ``add_arguments(parser)`` and ``main(args) -> int``: the ``pixel-lightning`` command adds
the arguments to its subcommand; :func:`parser` makes the same parser on its own (``python -m
pixel_lightning.tools.NAME``, the tests).
"""

from __future__ import annotations

import argparse
import importlib


def parser(name: str) -> argparse.ArgumentParser:
    """The arguments of ``pixel-lightning NAME`` (``report`` or ``sweep``), in a parser of their own."""
    module = importlib.import_module(f"pixel_lightning.tools.{name}")
    p = argparse.ArgumentParser(
        prog=f"pixel-lightning {name}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(p)
    return p
