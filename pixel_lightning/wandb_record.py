"""What a W&B run's local record files hold, read back so that a resumed run completes its W&B history.

W&B flushes ``<save_dir>/wandb/[offline-]run-<time>-<id>/run-<id>.wandb`` (what ``wandb sync`` uploads) only
every so often, so a kill -9 loses the rows since (docs/reliability.md). A resumed run reads the earlier files
of its run id, logs again the rows of logs/metrics.csv that they lack, and skips the rows they have.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

STEP_KEY = "trainer/global_step"  # Lightning's WandbLogger logs the step under this key

Row = tuple[int, frozenset[str]]  # (step, the metric names of one logged row)


def wandb_records(path: Path) -> list[Any]:
    """The records of a record file: a ``:W&B`` header, then LevelDB-log chunks (crc32, length, type) in
    32 KiB blocks, each record a ``wandb.proto`` Record. A file cut by a kill ends at its last whole record.
    (wandb 0.31 ships no Python reader.)"""
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


def recorded(wandb_dir: Path, run_id: str) -> Counter[Row]:
    """The rows (step, metric names) that the record files of W&B run ``run_id`` in ``wandb_dir`` hold."""
    paths = sorted(wandb_dir.glob(f"*run-*-{run_id}/run-{run_id}.wandb"))
    rows = [r for path in paths for r in history_rows(wandb_records(path))]
    return Counter(row_id(r[STEP_KEY], r) for r in rows if STEP_KEY in r)


def missing(csv_rows: Iterable[Mapping[str, str]], have: Counter[Row]) -> list[tuple[int, dict[str, float]]]:
    """The rows of metrics.csv (``csv_rows``) that ``have`` lacks, as (step, metrics); ``have`` is
    consumed for those it holds."""
    out = []
    for row in csv_rows:
        metrics = {k: float(v) for k, v in row.items() if k != "step" and v not in ("", None)}
        key = row_id(int(float(row["step"])), metrics)
        if have[key] > 0:
            have[key] -= 1
        else:
            out.append((key[0], metrics))
    return out
