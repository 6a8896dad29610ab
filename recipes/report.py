"""Compare runs like the paper's tables: a markdown table and learning curves.

    python recipes/report.py RUN_DIR_OR_SWEEP_DIR... [--out DIR]

Reads each run directory's ``metrics.json``, ``config.yaml`` and ``logs/metrics.csv`` (written by every
``recipes/run.py`` run, whatever the logger). Writes ``<out>/report.md`` (model, data variant, test and train
NLL, the paper's figure; nats for MNIST, bits/dim for natural images) and ``<out>/curves.png`` (bits/dim
against step, one line per run). When W&B is online, the table is also logged as a W&B Table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COLUMNS = ["run", "model", "data", "test", "train", "paper test (train)", "unit"]


def find_runs(paths: list[str]) -> list[Path]:
    """Run directories (those holding metrics.json) given directly or anywhere under a sweep directory."""
    runs: list[Path] = []
    for p in map(Path, paths):
        found = [p] if (p / "metrics.json").is_file() else sorted(m.parent for m in p.rglob("metrics.json"))
        runs.extend(r for r in found if r not in runs)
    return runs


def model_label(cfg: dict[str, Any]) -> str:
    m = cfg.get("model", {})
    parts = [f"{m.get('arch')} L={m.get('layers')} h={m.get('hidden')}"]
    parts.append("+".join(k for k in ("residual", "skip") if m.get(k)) or "no residual/skip")
    return ", ".join(parts)


def row(run: Path) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text())
    cfg_path = run / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
    paper = metrics.get("paper") or cfg.get("paper") or {}
    nats = paper.get("unit") == "nats" or metrics.get("dataset") == "mnist"
    key = "nll_nats" if nats else "bits_per_dim"
    digits = 2 if nats else 3
    paper_text = "-"
    if paper.get("test") is not None:
        paper_text = f"{paper['test']:.2f}" + (f" ({paper['train']:.2f})" if paper.get("train") else "")
    return {
        "run": run.name,
        "model": model_label(cfg) if cfg else metrics.get("arch", "?"),
        "data": metrics.get("variant") or metrics.get("dataset"),
        "test": fmt(metrics.get(f"test/{key}"), digits),
        "train": fmt(metrics.get(f"train/{key}"), digits),
        "paper test (train)": paper_text,
        "unit": "nats" if nats else "bits/dim",
    }


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def read_curve(run: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, bits/dim) of the training loss (per step) and of validation, from logs/metrics.csv."""
    curves: dict[str, list[tuple[int, float]]] = {"train": [], "val": []}
    path = run / "logs" / "metrics.csv"
    if not path.is_file():
        return curves
    with path.open() as f:
        for rec in csv.DictReader(f):
            for name, col in (("train", "train/loss"), ("val", "val/bits_per_dim")):
                if rec.get(col) and rec.get("step"):
                    curves[name].append((int(float(rec["step"])), float(rec[col])))
    return curves


def plot(runs: list[Path], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, run in enumerate(runs):
        curves, color = read_curve(run), f"C{k % 10}"
        if curves["train"]:
            ax.plot(*zip(*curves["train"], strict=True), color=color, alpha=0.8, label=f"{run.name} train")
        if curves["val"]:
            ax.plot(*zip(*curves["val"], strict=True), "o--", color=color, label=f"{run.name} val")
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim")
    ax.set_title("learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_to_wandb(rows: list[dict[str, Any]], plot_path: Path, project: str) -> bool:
    """The table (and plot) to W&B, only when online (logged in and WANDB_MODE not offline/disabled)."""
    import os

    from pixel_lightning.runner import wandb_logged_in

    if os.environ.get("WANDB_MODE", "online").lower() != "online" or not wandb_logged_in():
        return False
    import wandb

    run = wandb.init(project=project, job_type="report", name="report", settings=wandb.Settings(silent=True))
    run.log(
        {
            "report": wandb.Table(columns=COLUMNS, data=[[r[c] for c in COLUMNS] for r in rows]),
            "curves": wandb.Image(str(plot_path)),
        }
    )
    run.finish()
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", help="run directories, or sweep directories holding runs")
    p.add_argument("--out", help="where report.md and curves.png go (default: the only dir given, else .)")
    p.add_argument("--project", default="pixel-lightning", help="W&B project for the table (when online)")
    args = p.parse_args(argv)
    runs = find_runs(args.dirs)
    if not runs:
        print(f"error: no run directories (with metrics.json) under {', '.join(args.dirs)}", file=sys.stderr)
        return 2
    out = Path(args.out or (args.dirs[0] if len(args.dirs) == 1 else "."))
    out.mkdir(parents=True, exist_ok=True)
    rows = [row(r) for r in runs]
    table = markdown(rows)
    png = plot(runs, out / "curves.png")
    (out / "report.md").write_text(f"# pixel-lightning report\n\n{table}\n![learning curves]({png.name})\n")
    print(table, end="")
    print(f"wrote {out / 'report.md'} and {png}")
    if log_to_wandb(rows, png, args.project):
        print("logged the table to W&B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
