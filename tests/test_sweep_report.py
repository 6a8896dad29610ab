"""The residual/skip sweep, run locally at tiny size, and its report: four rows and a plot."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from exp_helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import report  # noqa: E402
import sweep  # noqa: E402


def test_sweep_file_is_a_wandb_grid_over_residual_and_skip():
    spec = yaml.safe_load((ROOT / "pixel_lightning/recipes/sweeps/residual_skip.yaml").read_text())
    assert spec["method"] == "grid" and spec["program"] == "recipes/run.py"
    assert set(spec["parameters"]) == {"model.residual", "model.skip"}
    assert "${args_no_hyphens}" in spec["command"] and "--recipe" in spec["command"]
    assert sweep.load_grid("residual_skip") == [
        ["model.residual=false", "model.skip=false"],
        ["model.residual=false", "model.skip=true"],
        ["model.residual=true", "model.skip=false"],
        ["model.residual=true", "model.skip=true"],
    ]


def test_local_sweep_runs_the_grid_and_reports_four_rows_and_a_plot(tmp_path, capsys):
    out = tmp_path / "sweep"
    tiny = [o for o in TINY if not o.startswith("trainer.max_steps")]
    args = ["--sweep", "residual_skip", "--recipe", "quickstart", "--out", str(out), "--in-process"]
    args += [*tiny, "trainer.max_steps=3", "sample.n=0", f"data.data_dir={tmp_path / 'data'}"]
    assert sweep.main(args) == 0
    runs = sorted(p.name for p in out.iterdir() if (p / "metrics.json").is_file())
    assert runs == [
        "residual=false,skip=false",
        "residual=false,skip=true",
        "residual=true,skip=false",
        "residual=true,skip=true",
    ]
    text = (out / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "pixelcnn" in line]
    assert len(rows) == 4 and "no residual/skip" in text and "residual+skip" in text
    assert all("nats" in r and "81.30" in r for r in rows)
    png = out / "curves.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = report.read_curve(out / "residual=true,skip=true")
    assert [s for s, _ in curves["train"]] == [0, 1, 2]  # train/loss at every step (bits/dim)
