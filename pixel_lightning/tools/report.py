"""Compare runs like the paper's tables: markdown tables (per model over seeds, per run) and learning curves.

    pixel-lightning report RUN_DIR_OR_SWEEP_DIR... [--out DIR] [--title TEXT] [--by KEY]

Reads each run directory's ``metrics.json``, ``config.yaml`` and ``logs/metrics.csv`` (written by every
``pixel-lightning fit`` run, whatever the logger). Writes into ``--out``:

- ``report.md``: one row per model (runs that differ only in ``seed`` are one model): test and train NLL as
  mean +- sample standard deviation and min..max over the seeds, steps, training seconds, training images/s,
  parameters and the paper's figure (labelled not comparable: other data, other scale); then one row per run.
  Runs are one model only when every setting but the seed is equal: config.yaml (less where the run writes
  and how it logs: :data:`NOT_MODEL_SETTINGS`) and the world size in metrics.json. Runs that look like one
  model (same architecture, size, connections and data) but differ in anything else, the budget or the
  learning rate say, are refused (exit 2, naming the settings and the runs) unless ``--by KEY`` names the
  settings meant to differ: each value then gets its own row.
  Nats for binarized MNIST, bits/dim for natural images. Multi-scale runs add their bits/dim split into the
  low-resolution image and the full image given it (``test/bits_per_dim_low`` / ``_cond``).
- ``curves.png``: the validation metric against optimizer steps (left) and against wall-clock seconds of
  training (right), one colour per model, one line per seed. Seconds are the per-step times the Throughput
  callback logs (``train/images_per_sec``, which spans the validation passes too), summed: the fit's wall
  clock without its set-up. The tables' "train s" is the same sum over the whole of ``logs/metrics.csv``,
  which a resumed run continues, so it spans every segment of a run; metrics.json's ``seconds.fit`` covers
  only the last process (shown as "last fit s").

When W&B is online, the per-run table is also logged as a W&B Table.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pixel_lightning.errors import cli_errors
from pixel_lightning.runfolder import NATS, RunFolder, drop_retired, leaves, metric_key, unit_of

COLUMNS = [
    "run",
    "model",
    "data",
    "seed",
    "test",
    "train",
    "steps",
    "train s",
    "last fit s",
    "img/s",
    "paper test (train)",
    "unit",
]
MODEL_COLUMNS = [
    "model",
    "seeds",
    "test (mean ± sd)",
    "test min..max",
    "train (mean ± sd)",
    "steps",
    "train s",
    "img/s",
    "params",
    "paper test (train), not comparable",
    "unit",
]
# config.yaml settings that change neither what a run trains nor how it is measured: where it writes, how it
# logs, how often it checkpoints (resume is exact), the final samples, and the seed itself. Every other
# setting (and the world size) is part of a run's identity: runs of one model differ in these alone. Not
# runfolder.NOT_IDENTITY (what one run may change when it resumes): the budget, which a run may raise, is
# part of a result, and the seed, which a run keeps, is what the seeds of one model differ in.
NOT_MODEL_SETTINGS = (
    "seed",
    "out",
    "imports",  # where the architecture's class is found; model.arch and its fields are the model
    "description",
    "logger",
    "data.data_dir",
    "data.cache_dir",
    "data_resolved.data_dir",
    "data_resolved.seed",  # the run's seed again
    "trainer.enable_progress_bar",
    "checkpoint.every_n_steps",
    "checkpoint.every_n_minutes",
    "checkpoint.keep_last_k",
    "checkpoint.requeue",
    "sample.n",
    "sample.at_end",
    "sample.seed",
)


class MixedGroupError(ValueError):
    """Runs that would be averaged as one model differ in more than their seed (a user error: exit 2)."""


@dataclass
class Run:
    """One run directory: its metrics.json, config.yaml and learning curves."""

    path: Path
    metrics: dict[str, Any]
    cfg: dict[str, Any]
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def unit(self) -> str:
        """``nats`` or ``bits/dim``: the run folder's rule (runfolder.unit_of) on its metrics.json."""
        return unit_of(self.metrics)

    @property
    def nats(self) -> bool:
        return self.unit == NATS

    def figure(self, split: str = "test") -> float | None:
        """The run's final NLL on ``split`` in its unit (``test/nll_nats`` or ``test/bits_per_dim``)."""
        return self.metrics.get(metric_key(self.unit, split))

    @property
    def seed(self) -> int | None:
        return self.cfg.get("seed")

    @property
    def identity(self) -> dict[str, str]:
        """Every setting but the seed, flattened (``trainer.max_steps``), values as YAML text: config.yaml
        less :data:`NOT_MODEL_SETTINGS`, plus metrics.json's ``world_size`` (the processes that trained it).
        Keys earlier versions wrote and no longer mean anything (runfolder.drop_retired) are not settings.
        Without a config.yaml, metrics.json's recipe, data, model and budget stand in."""
        source = (
            drop_retired(self.cfg)
            if self.cfg
            else {k: self.metrics.get(k) for k in ("recipe", "dataset", "variant", "model", "budget")}
        )
        flat = {k: v for k, v in leaves(source) if not ignored(k)}
        flat["world_size"] = self.metrics.get("world_size", 1)
        return {k: yaml_text(v) for k, v in flat.items()}

    @property
    def train_seconds(self) -> float | None:
        """Training seconds of the whole run, every resumed segment included: the step times of
        logs/metrics.csv summed (:func:`elapsed_seconds`); None where the log has no rate."""
        seconds = self.curves.get("seconds") or []
        return seconds[-1][1] if seconds else None


def yaml_text(value: object) -> str:
    """A value as the YAML text an override takes (``False`` -> ``false``, ``[1, 28, 28]``)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in NOT_MODEL_SETTINGS)


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """The finished runs given directly or anywhere under the folders ``paths`` (RunFolder.find)."""
    return [load_run(folder.path) for folder in RunFolder.find(paths)]


def load_run(path: Path) -> Run:
    folder = RunFolder(path)
    run = Run(folder.path, folder.read_metrics() or {}, folder.read_config())
    run.curves = read_curve(folder.path, metric_key(run.unit, "val"), images_per_step(run))
    return run


def images_per_step(run: Run) -> int:
    data = run.cfg.get("data") or {}
    return int(data.get("batch_size") or 16) * int(run.metrics.get("world_size") or 1)


# the settings model_label names (a --by naming one of them adds nothing to the label)
LABEL_KEYS = (
    "model.arch",
    "model.base",
    "model.low_res",
    "model.layers",
    "model.hidden",
    "model.residual",
    "model.skip",
)


def model_label(cfg: dict[str, Any]) -> str:
    m = cfg.get("model", {})
    arch = m.get("arch")
    if arch == "multiscale":
        arch = f"multiscale({m.get('base')}, s={m.get('low_res')})"
    parts = [f"{arch} L={m.get('layers')} h={m.get('hidden')}"]
    parts.append("+".join(k for k in ("residual", "skip") if m.get(k)) or "no residual/skip")
    return ", ".join(parts)


def model_order(run: Run) -> tuple:
    m = run.cfg.get("model", {})
    arch = str(m.get("arch") or "")  # by name: a report reads runs of any architecture, registered or not
    return (arch, m.get("layers") or 0, m.get("hidden") or 0, bool(m.get("residual")), bool(m.get("skip")))


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def paper_text(run: Run) -> str:
    paper = run.metrics.get("paper") or run.cfg.get("paper") or {}
    if paper.get("test") is None:
        return "-"
    return f"{paper['test']:.2f}" + (f" ({paper['train']:.2f})" if paper.get("train") else "")


def median_images_per_sec(run: Run) -> float | None:
    rates = [r for _, r in run.curves.get("images_per_sec", [])]
    return statistics.median(rates) if rates else None


def row(run: Run | Path) -> dict[str, Any]:
    """One run's line of the per-run table."""
    run = run if isinstance(run, Run) else load_run(run)
    m, digits = run.metrics, 2 if run.nats else 3
    return {
        "run": run.path.name,
        "model": model_label(run.cfg) if run.cfg else m.get("arch", "?"),
        "data": m.get("variant") or m.get("dataset"),
        "seed": run.seed if run.seed is not None else "-",
        "test": fmt(run.figure("test"), digits) + split_text(run),
        "train": fmt(run.figure("train"), digits),
        "steps": m.get("global_step", "-"),
        "train s": fmt(run.train_seconds, 0),
        "last fit s": fmt((m.get("seconds") or {}).get("fit"), 0),
        "img/s": fmt(median_images_per_sec(run), 1),
        "paper test (train)": paper_text(run),
        "unit": run.unit,
    }


def split_text(run: Run) -> str:
    """`` (low 5.1 / cond 4.9)`` for a multi-scale run's test bits/dim split, else empty."""
    low, cond = (run.metrics.get(f"test/bits_per_dim_{part}") for part in ("low", "cond"))
    if low is None or cond is None:
        return ""
    return f" (low {low:.3f} / cond {cond:.3f} bits/dim)"


def mean_sd(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.{digits}f}" + (f" ± {sd:.{digits}f}" if math.isfinite(sd) else "")


def group_runs(runs: list[Run], by: Sequence[str] = ()) -> dict[str, list[Run]]:
    """Runs that differ only in their seed, under one model label, in the paper's order of models.

    The label names the architecture, size, connections and data, plus the settings named in ``by``
    (``trainer.max_steps=300``). Runs under one label that differ in any other setting are not averaged:
    :class:`MixedGroupError` names the settings and the runs."""
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (model_order(r), r.seed or 0, r.path.name)):
        label = model_label(run.cfg) if run.cfg else run.metrics.get("arch", "?")
        data = run.metrics.get("variant") or run.metrics.get("dataset")
        label = f"{label} [{data}]" if data else label
        named = [f"{k}={run.identity.get(k, '-')}" for k in by if k not in LABEL_KEYS]
        groups.setdefault(f"{label} ({', '.join(named)})" if named else label, []).append(run)
    for label, members in groups.items():
        check_same_identity(label, members)
    return groups


def check_same_identity(label: str, runs: list[Run]) -> None:
    """Raise :class:`MixedGroupError` unless ``runs`` agree on every setting but the seed."""
    ids = [r.identity for r in runs]
    keys = sorted({k for i in ids for k in i})
    differ = [k for k in keys if len({i.get(k, "(unset)") for i in ids}) > 1]
    if not differ:
        return
    lines = []
    for key in differ:
        by_value: dict[str, list[str]] = {}
        for run, i in zip(runs, ids, strict=True):
            by_value.setdefault(i.get(key, "(unset)"), []).append(str(run.path))
        lines.append(f"  {key}: " + "; ".join(f"{v} in {', '.join(p)}" for v, p in by_value.items()))
    raise MixedGroupError(
        f"these runs of {label} differ in more than their seed, so they are not one model and their "
        "results are not averaged:\n" + "\n".join(lines) + "\nReport them separately, or name the settings "
        f"meant to differ with --by (e.g. {' '.join('--by ' + k for k in differ[:2])}): each value then "
        "gets its own row."
    )


def model_row(label: str, runs: list[Run]) -> dict[str, Any]:
    """One model's line: the seeds' mean, sample standard deviation and range."""
    first, digits = runs[0], 2 if runs[0].nats else 3
    tests = [x for x in (r.figure("test") for r in runs) if x is not None]
    trains = [x for x in (r.figure("train") for r in runs) if x is not None]
    fits = [r.train_seconds for r in runs if r.train_seconds is not None]
    rates = [x for x in (median_images_per_sec(r) for r in runs) if x is not None]
    steps = sorted({r.metrics.get("global_step") for r in runs})
    return {
        "model": label + split_text_mean(runs),
        "seeds": ",".join(str(r.seed) for r in runs),
        "test (mean ± sd)": mean_sd(tests, digits),
        "test min..max": f"{min(tests):.{digits}f}..{max(tests):.{digits}f}" if tests else "-",
        "train (mean ± sd)": mean_sd(trains, digits),
        "steps": "/".join(map(str, steps)),
        "train s": fmt(statistics.fmean(fits), 0) if fits else "-",
        "img/s": fmt(statistics.fmean(rates), 1) if rates else "-",
        "params": first.metrics.get("params", "-"),
        "paper test (train), not comparable": paper_text(first),
        "unit": first.unit,
    }


PAIR_COLUMNS = ["lower", "higher", "seeds", "difference of means", "Welch's t-test p", "all seeds apart"]


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances) of two samples of at least 2 values."""
    from scipy import stats  # installed with scikit-image

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def pair_rows(groups: dict[str, list[Run]]) -> list[dict[str, Any]]:
    """Every pair of models with at least 2 seeds each: which has the lower mean test NLL, by how much, the
    p-value of Welch's t-test, and whether every seed of the lower one is below every seed of the other.
    Seeds all apart is no test on its own: for two equally good models with n seeds each it happens with
    probability 2 / C(2n, n) (1/3 with 2 seeds, 1/10 with 3)."""
    tests = {
        label: [x for x in (r.figure("test") for r in runs) if x is not None]
        for label, runs in groups.items()
    }
    labels = [label for label, values in tests.items() if len(values) >= 2]
    rows = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            lo, hi = (a, b) if statistics.fmean(tests[a]) <= statistics.fmean(tests[b]) else (b, a)
            digits = 2 if groups[lo][0].nats else 3
            gap = statistics.fmean(tests[hi]) - statistics.fmean(tests[lo])
            rows.append(
                {
                    "lower": lo,
                    "higher": hi,
                    "seeds": f"{len(tests[lo])} / {len(tests[hi])}",
                    "difference of means": f"{gap:.{digits}f}",
                    "Welch's t-test p": f"{welch_p(tests[lo], tests[hi]):.3g}",
                    "all seeds apart": "yes" if max(tests[lo]) < min(tests[hi]) else "no",
                }
            )
    return rows


def split_text_mean(runs: list[Run]) -> str:
    parts = [(r.metrics.get("test/bits_per_dim_low"), r.metrics.get("test/bits_per_dim_cond")) for r in runs]
    parts = [p for p in parts if None not in p]
    if not parts:
        return ""
    low, cond = (statistics.fmean(x) for x in zip(*parts, strict=True))
    return f"; test low {low:.3f} / cond {cond:.3f} bits/dim"


def markdown(rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def read_curve(run: Path, val_key: str = "val/bits_per_dim", images: int = 16) -> dict[str, list]:
    """From logs/metrics.csv: ``train`` (step, train/loss in bits/dim), ``val`` (step, ``val_key``),
    ``images_per_sec`` (step, rate) and ``seconds`` (step, wall-clock seconds of the fit up to that step)."""
    curves: dict[str, list] = {"train": [], "val": [], "images_per_sec": [], "seconds": []}
    for rec in RunFolder(run).read_history():
        if not rec.get("step"):
            continue
        step = int(float(rec["step"]))
        for name, col in (
            ("train", "train/loss"),
            ("val", val_key),
            ("images_per_sec", "train/images_per_sec"),
        ):
            if rec.get(col):
                curves[name].append((step, float(rec[col])))
    curves["seconds"] = elapsed_seconds(curves["images_per_sec"], images)
    return curves


def elapsed_seconds(rates: list[tuple[int, float]], images: int) -> list[tuple[int, float]]:
    """(step, seconds since the first step): each logged rate covers the steps since the previous one
    (``log_every_n_steps``), each of ``images / rate`` seconds."""
    out, total, last = [], 0.0, None
    for step, rate in sorted(rates):
        if rate > 0 and math.isfinite(rate):
            total += (step - last if last is not None else 1) * images / rate
            out.append((step, total))
        last = step
    return out


def seconds_at(seconds: list[tuple[int, float]], step: int) -> float | None:
    """Elapsed seconds at ``step`` (the nearest logged step at or before it)."""
    before = [s for st, s in seconds if st <= step]
    return before[-1] if before else None


def cpus(runs: list[Run], declared: str | None = None) -> str:
    """Where the runs ran: the CPUs their metrics.json record (``host``), and ``declared`` (--host) for
    runs that record none; never this machine's, which need not be theirs."""
    recorded = sorted({r.metrics["host"]["cpu"] for r in runs if isinstance(r.metrics.get("host"), dict)})
    if any(not isinstance(r.metrics.get("host"), dict) for r in runs):
        recorded.append(declared or "not recorded in metrics.json (pass --host)")
    return "; ".join(recorded)


def regenerate_command(args: argparse.Namespace, out: Path) -> str:
    """The command that wrote this report (tests/test_results_records.py runs it again)."""
    words = ["pixel-lightning", "report", *args.dirs, "--out", str(out), "--title", args.title]
    words += [w for key in args.by for w in ("--by", key)]
    if args.host:
        words += ["--host", args.host]
    return shlex.join(words)


def plot(
    runs: list[Run] | list[Path],
    path: Path,
    title: str = "learning curves",
    by: Sequence[str] = (),
    host: str = "",
) -> Path:
    """Validation metric against steps (left) and wall-clock seconds (right): a colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r if isinstance(r, Run) else load_run(r) for r in runs]
    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    styles = ["o-", "s--", "^:", "d-."]
    for k, (label, members) in enumerate(group_runs(runs, by).items()):
        color = f"C{k % 10}"
        for j, run in enumerate(members):
            val = run.curves["val"]
            if not val:
                continue
            name = label if j == 0 else None
            style = styles[j % len(styles)]
            steps, values = zip(*val, strict=True)
            by_step.plot(steps, values, style, color=color, ms=3, lw=1.2, alpha=0.85, label=name)
            timed = [(seconds_at(run.curves["seconds"], s), v) for s, v in val]
            timed = [(t, v) for t, v in timed if t is not None]
            if timed:
                by_time.plot(*zip(*timed, strict=True), style, color=color, ms=3, lw=1.2, alpha=0.85)
    unit = runs[0].unit if runs else "bits/dim"
    values = [v for r in runs for _, v in r.curves["val"] if v > 0]
    if values and max(values) > 2 * min(values):  # one run far above the rest: keep the rest readable
        by_step.set_yscale("log")
        unit += ", log scale"
    by_step.set_xlabel("optimizer step")
    by_time.set_xlabel("wall-clock seconds of training (1 CPU thread)")
    by_step.set_ylabel(f"validation NLL ({unit})")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
    by_step.legend(fontsize=7)
    fig.suptitle(f"{title}\n(one colour per model, one line per seed; CPU: {host})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_to_wandb(rows: list[dict[str, Any]], plot_path: Path, project: str) -> bool:
    """The table (and plot) to W&B, only when online (logged in and WANDB_MODE not offline/disabled)."""
    import os

    from pixel_lightning.wandb_record import wandb_logged_in

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


def report_text(
    runs: list[Run], title: str, png: str, by: Sequence[str] = (), host: str = "", command: str = ""
) -> str:
    groups = group_runs(runs, by)
    by_model = markdown([model_row(label, members) for label, members in groups.items()], MODEL_COLUMNS)
    by_run = markdown([row(r) for r in runs])
    pairs = pair_rows(groups)
    heading = "## Pairs of models: test NLL over seeds (two-sided Welch's t-test)"
    by_pair = f"{heading}\n\n{markdown(pairs, PAIR_COLUMNS)}\n" if pairs else ""
    return (
        f"# {title}\n\n## By model (mean ± sample sd over seeds)\n\n{by_model}\n{by_pair}"
        f"## By run\n\n{by_run}\n{SECONDS_NOTE}\n\n![learning curves]({png})\n\nCPU: {host}\n"
        + (f"\nRegenerate: `{command}`\n" if command else "")
    )


SECONDS_NOTE = (
    "train s: the per-step times of logs/metrics.csv (train/images_per_sec) summed over the whole log, every "
    "resumed segment included (validation inside an epoch is in it; set-up and test are not); last fit s: "
    "metrics.json's seconds of the last process's fit only."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", help="run directories, or sweep directories holding runs")
    p.add_argument("--out", help="where report.md and curves.png go (default: the only dir given, else .)")
    p.add_argument("--title", default="pixel-lightning report", help="heading of report.md and the figure")
    p.add_argument("--project", default="pixel-lightning", help="W&B project for the table (when online)")
    p.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="KEY",
        help="a setting meant to differ between runs (e.g. model.lr, trainer.max_steps, world_size): "
        "each value gets its own row instead of the runs being refused as a mixed group",
    )
    p.add_argument("--host", help="the CPU the runs ran on, for runs whose metrics.json does not record it")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")


def main(args: argparse.Namespace) -> int:
    runs = load_runs(args.dirs)
    if not runs:
        print(f"error: no run directories (with metrics.json) under {', '.join(args.dirs)}", file=sys.stderr)
        return 2
    unknown = [k for k in args.by if not any(k in r.identity or k in LABEL_KEYS for r in runs)]
    if unknown:
        known = ", ".join(sorted({k for r in runs for k in r.identity})[:12])
        print(
            f"error: --by {' '.join(unknown)}: no run has such a setting; settings look like: {known}, ...",
            file=sys.stderr,
        )
        return 2
    try:
        group_runs(runs, args.by)
    except MixedGroupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or (args.dirs[0] if len(args.dirs) == 1 else "."))
    out.mkdir(parents=True, exist_ok=True)
    host = cpus(runs, args.host)
    png = plot(runs, out / "curves.png", args.title, args.by, host)
    text = report_text(runs, args.title, png.name, args.by, host, regenerate_command(args, out))
    (out / "report.md").write_text(text)
    print(text, end="")
    print(f"wrote {out / 'report.md'} and {png}")
    if log_to_wandb([row(r) for r in runs], png, args.project):
        print("logged the table to W&B")
    return 0


if __name__ == "__main__":
    from pixel_lightning.tools import parser

    arguments = parser("report").parse_args()
    with cli_errors(debug=arguments.debug):  # a damaged metrics.json or config.yaml: exit 2, naming it
        sys.exit(main(arguments))
