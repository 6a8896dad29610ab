"""The metric history of a run, ``<run>/logs/metrics.csv``: every logged (step, metric) exactly once after
any interruption (a resumed run keeps the rows its checkpoint counted and logs the rest again)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from pixel_lightning.atomic import atomic_write
from pixel_lightning.runfolder import RunFolder


class HistoryLogger(Logger):
    """CSVLogger's format (``step`` and every key, sorted), appended row by row (CSVLogger deletes an old
    file and rewrites it in place for a new key: a kill lost the history). ``keep``: the rows of an existing
    file kept (0: none; None: all); a half-written last line is dropped. The same row twice in a row is
    written once (checkpoints.write_step_row writes it before Lightning does)."""

    def __init__(self, save_dir: str | Path, keep: int | None = 0) -> None:
        super().__init__()
        self.folder = RunFolder(save_dir)
        self.path = self.folder.history_file
        self.keep, self.rows = keep, 0
        self._keys: list[str] | None = None  # None: the kept rows are not read yet
        self._last: str | None = None

    name = property(lambda self: self.path.parent.name)
    version = property(lambda self: "")
    save_dir = property(lambda self: str(self.folder.path))
    log_dir = property(lambda self: str(self.path.parent))

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: the settings are in ``<run>/config.yaml``."""

    def kept_rows(self) -> list[dict[str, str]]:
        """The rows kept from before this run started (rank 0)."""
        self._continue()
        return self.folder.read_history()[: self.rows]

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
        row["step"] = self.rows if step is None else step
        if repr(row) == self._last:  # repr: a NaN (a step the guard skipped) equals itself
            return
        self._last = repr(row)
        self._continue()
        if set(row) - set(self._keys):  # a new column: the whole file again, replaced atomically
            self._keys = sorted(set(self._keys) | set(row))
            self._write([*self.folder.read_history(), row])
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._keys, lineterminator="\n").writerow(row)
        self.rows += 1

    def _continue(self) -> None:
        """Once: keep the first ``keep`` rows of an existing file."""
        if self._keys is not None:
            return
        rows = self.folder.read_history()[: self.keep]  # keep=None: all
        self._keys, self.rows = sorted(set().union(*rows)) if rows else [], len(rows)
        if rows or self.path.is_file():
            self._write(rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        text = io.StringIO()
        if self._keys:
            writer = csv.DictWriter(text, fieldnames=self._keys, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        atomic_write(self.path, text.getvalue())
