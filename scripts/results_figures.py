"""The figures of docs/RESULTS.md from a folder of runs: completions (paper Figure 1 form) and sample grids.

    python -m scripts.results_figures RUNS_DIR --out DIR [--name NAME] [--images 6] [--completions 4]

- ``<out>/<name>_completions.png``: the bottom half of test images occluded, several completions of each
  drawn by the run with the lowest test NLL in RUNS_DIR (its best checkpoint), beside the original.
- ``<out>/<name>_samples.png``: the final sample grid of one run per model (the first seed), side by side
  (each grid is the run's ``samples/final.png``, drawn from its best checkpoint at the end of training).

Reads what ``pixel-lightning fit`` writes (metrics.json, config.yaml, samples/final.png, checkpoints). Draws
on one CPU thread with a fixed generator seed, so the same command redraws the same completions.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from pixel_lightning.cli import keep_mask  # --keep top-half, as `pixel-lightning complete` reads it
from pixel_lightning.runfolder import RunFolder
from pixel_lightning.tools import report  # runs read back, grouped and labelled as the report does


def best_run(runs: list[report.Run]) -> report.Run:
    """The run with the lowest test NLL (in its unit) that has a checkpoint to load."""
    usable = [r for r in runs if Path(str(r.metrics.get("test_checkpoint"))).is_file()]
    if not usable:
        raise SystemExit("error: no run with a test checkpoint under the given folder")
    return min(usable, key=lambda r: r.figure("test"))


def test_images(run: report.Run, k: int) -> torch.Tensor:
    """``k`` test images of the run's data set, evenly spaced over the test split: int64 (k, C, H, W)."""
    from pixel_lightning.data import build_datamodule

    data = run.cfg["data"]
    kwargs = {"source": data.get("source", "auto"), "batch_size": 256}
    if data.get("data_dir"):
        kwargs["data_dir"] = data["data_dir"]
    dm = build_datamodule(data["name"], **kwargs)
    dm.prepare_data()
    dm.setup("test")
    x = torch.cat([xb for xb, _ in dm.dataloader("test")])
    rows = np.linspace(0, len(x) - 1, k).round().astype(int)
    return x[torch.from_numpy(rows)].long()


def complete(model, images: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    """``m`` completions of each image given its top half: int64 (k, m, C, H, W)."""
    mask = keep_mask("top-half", tuple(images.shape[1:]))  # known: the top half, every colour
    g = torch.Generator().manual_seed(seed)
    return model.complete(images, mask, m, generator=g)  # (k, m, C, H, W), same draws as before


def completion_figure(images: torch.Tensor, done: torch.Tensor, levels: int, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pixel_lightning.visual import completion_rows

    k, m = done.shape[:2]
    kept = keep_mask("top-half", tuple(images.shape[1:]))
    fig, axes = plt.subplots(k, m + 2, figsize=(1.3 * (m + 2), 1.3 * k + 0.8), squeeze=False)
    for i, panels in enumerate(completion_rows(images, done, kept, levels)):
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(
                    "occluded" if j == 0 else "original" if j == m + 1 else f"completion {j}", fontsize=7
                )
    fig.suptitle(textwrap.fill(title, width=int(16 * (m + 2))), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def samples_figure(runs: list[report.Run], title: str, path: Path) -> Path | None:
    """Each model's (first seed's) samples/final.png, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = []
    for label, members in report.group_runs(runs).items():
        png = RunFolder(members[0].path).samples / "final.png"
        if png.is_file():
            grids.append((label.split(" [")[0], plt.imread(png)))
    if not grids:
        return None
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.6), squeeze=False)
    for ax, (label, grid) in zip(axes[0], grids, strict=True):
        ax.imshow(grid, interpolation="nearest")
        ax.set_title(label, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", help="a folder of runs (as pixel_lightning.tools.report takes)")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--name", help="file name prefix (default: the runs folder's name)")
    p.add_argument("--images", type=int, default=6, help="test images to complete")
    p.add_argument("--completions", type=int, default=4, help="completions per image")
    p.add_argument("--seed", type=int, default=0, help="generator seed of the completions")
    p.add_argument("--no-completions", action="store_true", help="only the sample grids")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    torch.set_num_threads(1)
    runs = report.load_runs([args.runs])
    if not runs:
        print(f"error: no runs under {args.runs}", file=sys.stderr)
        return 2
    try:
        report.group_runs(runs)  # one figure per model: runs that differ in more than their seed are refused
    except report.MixedGroupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out, name = Path(args.out), args.name or Path(args.runs).name
    out.mkdir(parents=True, exist_ok=True)
    written = [
        samples_figure(
            runs, f"samples, {name} (final grid of each model's first seed)", out / f"{name}_samples.png"
        )
    ]
    if not args.no_completions:
        from pixel_lightning import load_model

        best = best_run([r for r in runs if r.cfg.get("model", {}).get("arch") != "multiscale"])
        model = load_model(best.metrics["test_checkpoint"])
        images = test_images(best, args.images)
        done = complete(model, images, args.completions, args.seed)
        label = report.model_label(best.cfg)
        title = (
            f"{name}: bottom half of {args.images} test images occluded, {args.completions} completions"
            f" each, from {best.path.name} ({label}; test {best.figure('test'):.3f} {best.unit})"
        )
        written.append(completion_figure(images, done, model.levels, title, out / f"{name}_completions.png"))
        (out / f"{name}_completions.json").write_text(
            json.dumps(
                {  # by name, not path: the run's record is docs/results/runs/<experiment>/<run>
                    "run": best.path.name,
                    "checkpoint": f"checkpoints/{Path(best.metrics['test_checkpoint']).name}",
                    "seed": args.seed,
                }
            )
            + "\n"
        )
    for path in written:
        if path is not None:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
