"""W&B for a recipe run: its logger (:func:`wandb_logger`), and its local record files read back. W&B flushes
``<save_dir>/wandb/[offline-]run-<time>-<id>/run-<id>.wandb`` only every so often, so a kill -9 loses the rows
since (docs/reliability.md): a re-run logs again the rows of logs/metrics.csv that its earlier files lack."""

from __future__ import annotations

import json
import netrc
import os
import struct
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from pixel_lightning.atomic import atomic_write
from pixel_lightning.runfolder import RunFolder, leaves

if TYPE_CHECKING:
    from pixel_lightning.config import RunConfig
    from pixel_lightning.reliability.checkpoints import HistoryLogger

STEP_KEY = "trainer/global_step"  # Lightning's WandbLogger logs the step under this key
MIN_SUMMARY = ("val/bits_per_dim", "val/nll_nats", "test/bits_per_dim", "test/nll_nats")
Row = tuple[int, frozenset[str]]  # (step, the metric names of one logged row)


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


def wandb_group(cfg: RunConfig) -> str | None:
    """The group that one panel compares: the configured one (recipes/sweep.py sets ``<sweep>-<recipe>``),
    else the sweep of a ``wandb agent`` run, else the recipe."""
    if cfg.logger.group:
        return cfg.logger.group
    if os.environ.get("WANDB_SWEEP_ID"):  # set by `wandb agent` for each run of a sweep
        return f"sweep-{os.environ['WANDB_SWEEP_ID']}"
    return cfg.recipe or None


def wandb_run_id(run_dir: Path) -> str:
    """The run directory's W&B id, created once (rank 0) so a resumed run continues the same W&B run."""
    path = RunFolder(run_dir).wandb_id_file
    if os.environ.get("WANDB_RUN_ID"):  # set by `wandb agent` for a sweep run
        return os.environ["WANDB_RUN_ID"]
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]  # W&B ids: lowercase letters and digits
    if rank_zero_only.rank == 0:
        atomic_write(path, run_id)  # a kill mid-write must not leave an empty id: the next start reads it
    return run_id


def wandb_logger(cfg: RunConfig, history: HistoryLogger) -> RunWandbLogger:
    """The run's logger: online when logged in, else offline (never waits on a network; WANDB_MODE wins);
    tagged and grouped so a workspace compares models with no manual setup."""
    import wandb

    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode == "dryrun":
        mode = "offline"
    elif mode not in ("online", "offline", "disabled"):
        mode = "offline" if cfg.logger.offline or not wandb_logged_in() else "online"
    wandb_dir = RunFolder(cfg.run_dir).wandb_dir
    if mode == "offline" and rank_zero_only.rank == 0:
        upload = f"upload later with `wandb sync {wandb_dir}/offline-run-*`"
        print(f"W&B: not logged in (or offline): logging offline to {wandb_dir}; {upload}", flush=True)
    m = cfg.model
    tags = [m.arch, cfg.data.name, f"residual={m.residual}", f"skip={m.skip}"]
    if m.arch == "multiscale" and m.base:
        tags.append(f"base={m.base}")
    return RunWandbLogger(
        name=cfg.logger.name or cfg.run_dir.name,
        save_dir=str(cfg.run_dir),
        id=wandb_run_id(cfg.run_dir) if mode != "disabled" else None,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=wandb_group(cfg),
        tags=tags + list(cfg.logger.tags),
        job_type="train",
        mode=mode,
        config={k: v for k, v in leaves(cfg.to_dict()) if v != {}},  # flat: W&B's config holds no dict
        log_model=cfg.logger.log_model,  # checkpoints as W&B artifacts at the end of fit
        settings=wandb.Settings(init_timeout=60, console="off", silent=True),
        history=history,
    )


class RunWandbLogger(WandbLogger):
    """Lightning's WandbLogger with the flat config given at init, the NLLs' minimum as their summaries
    (tests/test_recipes.py::test_offline_wandb_record_compares_runs); a re-run logs the rows of ``history``
    (the CSV log) that its earlier record files lack, none twice
    (tests/test_journeys.py::test_kill_9_loses_no_wandb_row)."""

    def __init__(self, *args: Any, history: HistoryLogger | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._history, self._summaries_defined = history, False
        self._recorded: Counter[Row] = Counter()  # rows of this W&B run's earlier record files, to skip
        # Lightning passes wandb.init(anonymous=None), which wandb 0.31 answers with "The anonymous setting
        # has no effect" on every run; no public way to leave it out (private _wandb_init, forced by
        # tests/test_bad_inputs.py::test_wandb_is_not_given_the_anonymous_setting)
        self._wandb_init.pop("anonymous", None)

    @property
    def experiment(self) -> Any:
        if self._summaries_defined:
            return super().experiment
        self._summaries_defined = True
        replay = self._history is not None and self.version and rank_zero_only.rank == 0
        if replay:  # read before this run's record file exists
            wandb_dir, run_id = RunFolder(str(self.save_dir)).wandb_dir, self.version
            paths = sorted(wandb_dir.glob(f"*run-*-{run_id}/run-{run_id}.wandb"))
            rows = [r for path in paths for r in history_rows(wandb_records(path))]
            self._recorded = Counter(row_id(r[STEP_KEY], r) for r in rows if STEP_KEY in r)
        run = super().experiment  # a no-op stand-in on ranks > 0
        for key in MIN_SUMMARY:
            run.define_metric(key, summary="min")
        if replay:
            for row in self._history.kept_rows():  # log_metrics skips those the earlier files hold
                metrics = {k: float(v) for k, v in row.items() if k != "step" and v not in ("", None)}
                self.log_metrics(metrics, int(float(row["step"])))
        return run

    @rank_zero_only
    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self.experiment  # noqa: B018 (reads the earlier records first)
        key = row_id(step, metrics) if step is not None else None
        if key is not None and self._recorded[key] > 0:
            self._recorded[key] -= 1  # an earlier record of this run holds it already
            return
        super().log_metrics(metrics, step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: Lightning would add the model's hparams again as top-level keys (``hidden``)."""


def wandb_records(path: Path) -> list[Any]:
    """The ``wandb.proto`` Records of a record file: a ``:W&B`` header, LevelDB-log chunks (crc32, length,
    type) in 32 KiB blocks; a cut file ends at its last whole record. wandb 0.31 ships no reader."""
    from google.protobuf.message import DecodeError
    from wandb.proto.wandb_internal_pb2 import Record

    data, block, head = path.read_bytes(), 32768, 7
    if data[:4] != b":W&B":
        return []
    pos, pending, records = head, b"", []
    while pos + head <= len(data):
        if block - pos % block < head:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + head])
        if kind == 0 or pos + head + length > len(data):  # zeros or a cut chunk: the end of the data
            break
        chunk, pos = data[pos + head : pos + head + length], pos + head + length
        pending = chunk if kind in (1, 2) else pending + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            try:
                records.append(Record.FromString(pending))
            except DecodeError:
                break
    return records


def history_rows(records: Iterable[Any]) -> list[dict[str, Any]]:
    """The history rows of ``records`` (W&B's own ``_step``, ``_runtime``... left out)."""
    rows = []
    for r in (r for r in records if r.WhichOneof("record_type") == "history"):
        items = {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        rows.append({k: v for k, v in items.items() if not k.startswith("_")})
    return rows


def row_id(step: int, metrics: Mapping[str, Any]) -> Row:
    return int(step), frozenset(k for k in metrics if k not in (STEP_KEY, "step") and not k.startswith("_"))
