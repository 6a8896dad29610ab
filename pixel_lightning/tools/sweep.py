"""Run a batch of runs locally, one after another, skipping finished ones; then write its report.

    pixel-lightning sweep --sweep NAME [--recipe R] [--out DIR] [--seeds 0,1] [--records DIR] [key=value ...]

A batch is ``pixel_lightning/recipes/sweeps/<NAME>.yaml``:

- ``parameters``: a grid (``values`` lists and fixed ``value``s) over one recipe (``recipe`` or
  ``--recipe``), the same file ``wandb sweep`` reads; its runs are ``<out>/<key=value,...>/`` and are grouped
  in W&B as ``<NAME>-<recipe>`` (an explicit ``logger.group=`` override wins);
- or ``runs``: named runs, each ``{recipe: R, overrides: [...]}``, in ``<out>/<name>-s<seed>/``;
- ``overrides``: ``key=value`` settings of every run; ``seeds``: run everything once per seed (seed 0 of
  every run first, so a batch cut short has one seed of each); ``extends``: batches whose keys this one
  starts from (their overrides merged by key, this file's last).

Each run is a separate ``pixel-lightning fit`` process (as under ``wandb agent``), its output appended to
``<out>/<run>.log``; ``--in-process`` runs them in this process (faster for tiny batches, as in the tests).
A run whose ``metrics.json`` exists is finished and not run again; an unfinished one resumes from its newest
checkpoint (the runner's rule), so the same command completes an interrupted batch, over several sittings.
``--records DIR`` copies each finished run's record (config.yaml, metrics.json, logs/metrics.csv) to
``DIR/<run>/``, from which ``pixel-lightning report DIR`` regenerates the tables. The report (mean and
spread over the seeds, one row per model or grid point) goes to ``<out>/report.md`` and ``<out>/curves.png``.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pixel_lightning import tools
from pixel_lightning.errors import InputError, cli_errors
from pixel_lightning.runfolder import RunFolder
from pixel_lightning.tools import report

SWEEPS = Path(__file__).resolve().parents[1] / "recipes" / "sweeps"


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its folder's name under the sweep's ``--out``, recipe and overrides."""

    folder: str
    recipe: str
    overrides: list[str]


def merge_overrides(*lists: list[str]) -> list[str]:
    """``key=value`` lists merged by key, later lists winning (a key keeps its first position)."""
    merged: dict[str, str] = {}
    for text in itertools.chain(*lists):
        merged[text.partition("=")[0]] = text
    return list(merged.values())


def load_sweep(name: str) -> dict[str, Any]:
    """The sweep file ``name``, with the files it ``extends`` folded in."""
    path = SWEEPS / f"{name}.yaml"
    if not path.is_file():
        valid = ", ".join(sorted(p.stem for p in SWEEPS.glob("*.yaml")))
        raise InputError(f"unknown sweep {name!r}; valid sweeps: {valid}")
    spec = yaml.safe_load(path.read_text()) or {}
    bases = spec.pop("extends", None) or []
    merged: dict[str, Any] = {"overrides": []}
    for layer in [*(load_sweep(b) for b in ([bases] if isinstance(bases, str) else bases)), spec]:
        merged.update(
            {**layer, "overrides": merge_overrides(merged["overrides"], layer.get("overrides", []))}
        )
    return merged


def load_grid(name: str) -> list[list[str]]:
    """Every combination of the sweep's parameters, as lists of ``key=value`` overrides, in grid order."""
    return grid_of(load_sweep(name))


def grid_of(spec: dict[str, Any]) -> list[list[str]]:
    params = spec.get("parameters") or {}
    axes = [
        [f"{key}={report.yaml_text(v)}" for v in (spec["values"] if "values" in spec else [spec["value"]])]
        for key, spec in params.items()
    ]
    return [list(combo) for combo in itertools.product(*axes)]


def run_name(overrides: list[str]) -> str:
    """``["model.residual=false", "model.skip=true"]`` -> ``"residual=false,skip=true"``."""
    return ",".join(o.split(".")[-1] for o in overrides)


def plan(
    name: str, recipe: str | None, seeds: list[int] | None, overrides: Sequence[str] = ()
) -> list[SweepRun]:
    """Every run of the sweep, in running order: seed by seed, then named run or grid point. ``recipe``,
    ``seeds`` and ``overrides`` (the command line's) replace or add to the file's."""
    spec = load_sweep(name)
    named, recipe = spec.get("runs") or {}, recipe or spec.get("recipe")
    if named and spec.get("parameters"):
        raise InputError(f"sweep {name!r} has both runs and parameters: give one of them")
    if not named and not spec.get("parameters"):
        raise InputError(f"sweep {name!r} has neither runs nor parameters: it is a base for other sweeps")
    if not named and not recipe:
        raise InputError(f"sweep {name!r} names no recipe: give one with --recipe (e.g. --recipe quickstart)")
    seeds = seeds if seeds is not None else spec.get("seeds")
    group = [] if named else [f"logger.group={name}-{recipe}"]  # W&B: one panel per grid
    runs = []
    for seed in [None] if seeds is None else seeds:
        seeded = [] if seed is None else [f"seed={seed}"]
        if named:
            for key, entry in named.items():
                settings = merge_overrides(spec["overrides"], entry.get("overrides", []), seeded, overrides)
                runs.append(SweepRun(key + ("" if seed is None else f"-s{seed}"), entry["recipe"], settings))
        else:
            for combo in grid_of(spec):
                settings = merge_overrides(group, spec["overrides"], overrides, combo, seeded)
                runs.append(SweepRun(run_name(combo + seeded), recipe, settings))
    return runs


def seed_list(text: str) -> list[int]:
    """``"0,1"`` -> ``[0, 1]``: one argument, so it never swallows the key=value overrides after it."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integer seeds, e.g. 0,1"
        ) from None


def fit(argv: list[str], log: Path | None) -> int:
    """``pixel-lightning fit <argv>``: a new process (its output appended to ``log``), or with ``log``
    None the command's ``main`` in this process."""
    if log is not None:
        with log.open("a") as f:
            cmd = [sys.executable, "-m", "pixel_lightning.cli", "fit", *argv]
            return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    from pixel_lightning.cli import main

    try:
        return main(["fit", *argv])
    except SystemExit as e:  # a user error (exit 2) or argparse
        return e.code if isinstance(e.code, int) else 1


def copy_record(run: RunFolder, records: Path) -> Path:
    """A finished run's record (config.yaml, metrics.json, logs/metrics.csv: what docs/results/runs/ keeps)
    into ``records/<run>/``; checkpoints, samples and W&B files stay."""
    dst = RunFolder(records / run.path.name)
    for name in ("config_file", "metrics_file", "history_file"):
        getattr(dst, name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(getattr(run, name), getattr(dst, name))
    return dst.path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sweep",
        required=True,
        help="pixel_lightning/recipes/sweeps/<name>.yaml, e.g. residual_skip, mnist_long",
    )
    p.add_argument("--recipe", help="the recipe of a grid's runs (default: the sweep's recipe)")
    p.add_argument("--out", help="the batch's folder (default runs/sweeps/<sweep>[/<recipe>])")
    p.add_argument(
        "--seeds", type=seed_list, help="run everything once per seed, e.g. 0,1 (default: the sweep's)"
    )
    p.add_argument("--only", action="append", metavar="RUN", help="run only this run folder (repeatable)")
    p.add_argument("--records", metavar="DIR", help="copy each finished run's record to DIR/<run>/")
    p.add_argument("--records-only", action="store_true", help="copy the finished runs' records; train none")
    p.add_argument("--in-process", action="store_true", help="run in this process (no DDP), e.g. in tests")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("overrides", nargs="*", help="key=value overrides of every run (after the sweep's)")


def main(args: argparse.Namespace) -> int:
    runs = plan(args.sweep, args.recipe, args.seeds, args.overrides)
    out = Path(args.out or f"runs/sweeps/{args.sweep}" + (f"/{args.recipe}" if args.recipe else ""))
    unknown = sorted(set(args.only or []) - {r.folder for r in runs})
    if unknown:
        raise InputError(
            f"--only {' '.join(unknown)}: no such run in sweep {args.sweep!r}; its runs: "
            + ", ".join(r.folder for r in runs)
        )
    if args.records_only and not args.records:
        raise InputError("--records-only copies records: give the folder with --records DIR")
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for k, run in enumerate(runs, 1):
        folder, tag = RunFolder(out / run.folder), f"[sweep {args.sweep} {k}/{len(runs)}] {run.folder}"
        if args.only and run.folder not in args.only:
            continue
        if not folder.metrics_file.is_file() and not args.records_only:
            argv = ["--recipe", run.recipe, "--out", str(folder.path), *run.overrides]
            print(f"{tag}: {' '.join(argv)}", flush=True)
            log = None if args.in_process else out / f"{run.folder}.log"
            if fit(argv, log) != 0:
                failed.append(run.folder)
                print(f"{tag}: FAILED" + (f" (see {log})" if log else ""), file=sys.stderr, flush=True)
        elif not args.records_only:
            print(f"{tag}: finished already ({folder.path})")
        if args.records and folder.metrics_file.is_file():
            print(f"{tag}: record in {copy_record(folder, Path(args.records))}")
    if failed:
        print(f"[sweep {args.sweep}] failed runs: {', '.join(failed)}", file=sys.stderr)
    if args.records_only:
        return 0
    swept = sorted({o.partition("=")[0] for o in load_grid(args.sweep)[0]})  # each grid point: its own row
    report_args = tools.parser("report").parse_args(
        [str(out), "--out", str(out), *(f"--by={k}" for k in swept)]
    )
    return 1 if report.main(report_args) or failed else 0


if __name__ == "__main__":
    arguments = tools.parser("sweep").parse_args()
    with cli_errors(debug=arguments.debug):
        sys.exit(main(arguments))
