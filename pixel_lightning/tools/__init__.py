"""Tools over finished runs and batches of runs: ``report`` (tables and curves) and ``sweep`` (a batch).

Each module has ``add_arguments(parser)`` and ``main(args) -> int``: the ``pixel-lightning`` command adds
the arguments to its subcommand (pixel_lightning/cli.py); :func:`parser` is that subcommand's parser
(``python -m pixel_lightning.tools.NAME``, the tests).
"""

from __future__ import annotations

import argparse


def parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``pixel-lightning NAME`` (``report`` or ``sweep``)."""
    from pixel_lightning.cli import build_parser

    return build_parser(tool=name)[1][name]
