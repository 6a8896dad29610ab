"""Run a sweep's grid locally, one run after another, without a W&B server; then write its report.

    python -m pixel_lightning.tools.sweep --sweep residual_skip --recipe cifar10_row_lstm [--out DIR]
                                          [--seeds 0,1] [key=value ...]

The grid comes from ``pixel_lightning/recipes/sweeps/<sweep>.yaml`` (``parameters``: ``values`` lists and
fixed ``value``s), the same file ``wandb sweep`` reads. Each run is a separate ``pixel-lightning fit``
process (as under ``wandb agent``; ``--in-process`` runs them in this process, faster for tiny sweeps), in
``<out>/<key=value,...>/`` (with ``--seeds``: every grid point once per seed, in
``<out>/<key=value,...>,seed=<s>/``); the report (mean and spread over the seeds, one row per grid point:
the swept settings are passed to it as ``--by``) goes to ``<out>/report.md`` and ``<out>/curves.png``. A run
whose ``metrics.json`` exists is finished and not run again, so the same
command completes an interrupted sweep.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
from pathlib import Path

import yaml

SWEEPS = Path(__file__).resolve().parents[1] / "recipes" / "sweeps"


def load_grid(name: str) -> list[list[str]]:
    """Every combination of the sweep's parameters, as lists of ``key=value`` overrides, in grid order."""
    path = SWEEPS / f"{name}.yaml"
    if not path.is_file():
        valid = ", ".join(sorted(p.stem for p in SWEEPS.glob("*.yaml")))
        raise SystemExit(f"error: unknown sweep {name!r}; valid sweeps: {valid}")
    params = (yaml.safe_load(path.read_text()) or {}).get("parameters") or {}
    axes = []
    for key, spec in params.items():
        values = spec["values"] if "values" in spec else [spec["value"]]
        axes.append(
            [
                f"{key}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for v in values
            ]
        )
    return [list(combo) for combo in itertools.product(*axes)]


def yaml_text(value: object) -> str:
    """A value as the YAML text an override takes (``False`` -> ``false``)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def run_name(overrides: list[str]) -> str:
    """``["model.residual=false", "model.skip=true"]`` -> ``"residual=false,skip=true"``."""
    return ",".join(o.split(".")[-1] for o in overrides)


def seed_list(text: str) -> list[int]:
    """``"0,1"`` -> ``[0, 1]``: one argument, so it never swallows the key=value overrides after it."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integer seeds, e.g. 0,1"
        ) from None


def fit(argv: list[str], in_process: bool) -> int:
    """``pixel-lightning fit <argv>``: a new process, or (``in_process``) the command's ``main`` here."""
    if not in_process:
        return subprocess.run([sys.executable, "-m", "pixel_lightning.cli", "fit", *argv]).returncode
    from pixel_lightning.cli import main

    try:
        return main(["fit", *argv])
    except SystemExit as e:  # a user error (exit 2) or argparse
        return e.code if isinstance(e.code, int) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", required=True, help="pixel_lightning/recipes/sweeps/<name>.yaml")
    p.add_argument("--recipe", required=True, help="the recipe every run starts from")
    p.add_argument("--out", help="sweep directory (default runs/sweeps/<sweep>/<recipe>)")
    p.add_argument("--in-process", action="store_true", help="run in this process (no DDP), e.g. in tests")
    p.add_argument(
        "--seeds", type=seed_list, help="run every grid point once per seed, e.g. 0,1 (default: once)"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every run")
    args = p.parse_args(argv)
    out = Path(args.out or f"runs/sweeps/{args.sweep}/{args.recipe}")
    grid = [
        combo + ([f"seed={seed}"] if args.seeds is not None else [])
        for combo in load_grid(args.sweep)
        for seed in (args.seeds if args.seeds is not None else [None])
    ]
    failed = []
    for k, combo in enumerate(grid, 1):
        run_dir = out / run_name(combo)
        if (run_dir / "metrics.json").is_file():
            print(f"[sweep {args.sweep} {k}/{len(grid)}] {' '.join(combo)}: finished already ({run_dir})")
            continue
        argv = [
            "--recipe",
            args.recipe,
            "--out",
            str(run_dir),
            *args.overrides,
            *combo,
            f"logger.group={args.sweep}-{args.recipe}",
        ]
        print(f"[sweep {args.sweep} {k}/{len(grid)}] {' '.join(combo)} -> {run_dir}", flush=True)
        if fit(argv, args.in_process) != 0:
            failed.append(run_name(combo))
    by = [f"--by={o.split('=', 1)[0]}" for o in grid[0] if not o.startswith("seed=")]  # the swept settings
    from pixel_lightning.tools import report as report_tool

    report = report_tool.main([str(out), "--out", str(out), *by])
    if failed:
        print(f"[sweep {args.sweep}] failed runs: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or report else 0


if __name__ == "__main__":
    sys.exit(main())
