"""The run folder object (pixel_lightning/runfolder.py): the one owner of a run's layout, its identity, the
metrics schema and the "nats or bits/dim" rule (issue 21)."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from pixel_lightning.errors import OtherRunError, RunDirError
from pixel_lightning.runfolder import RunFolder, figure_text, identity_differences, metric_key, unit, unit_of

PACKAGE = Path(__file__).resolve().parents[1] / "pixel_lightning"
LAYOUT_NAMES = ("metrics.json", "config.yaml", "wandb_id.txt", "run.lock", "metrics.csv", "checkpoints")

# every data set's unit, as the paper reports it: a new data set must be added here (the test fails)
UNITS = {
    "mnist": "nats",
    "binarized_mnist": "nats",
    "cifar10": "bits/dim",
    "imagenet32": "bits/dim",
    "imagenet64": "bits/dim",
    "skimage_patches": "bits/dim",
}


def test_every_data_set_has_its_unit():
    from pixel_lightning.data import DATASETS

    assert set(DATASETS) == set(UNITS)
    for name in DATASETS:
        assert unit(name) == UNITS[name], name
        assert unit(name, "nats") == "nats"  # a recipe whose paper figure is in nats
    assert unit(None) == "bits/dim" and unit(None, "bits/dim") == "bits/dim"


def test_the_unit_of_each_record_and_its_metric_key():
    # metrics.json / run_info: dataset and paper, either without the other
    assert unit_of({"dataset": "binarized_mnist"}) == "nats"
    assert unit_of({"dataset": "cifar10", "paper": {"unit": "bits/dim"}}) == "bits/dim"
    assert unit_of({"dataset": "mnist", "paper": {"unit": "bits/dim"}}) == "nats"
    assert unit_of({"paper": {"unit": "nats"}}) == "nats" and unit_of({"paper": None}) == "bits/dim"
    figures = {"test/nll_nats": 80.12345, "test/bits_per_dim": 0.147, "val/nll_nats": 81.0}
    assert figure_text(figures, "nats") == "80.1235 nats (0.1470 bits/dim)"
    assert figure_text(figures, "nats", "val") == "81.0000 nats" and figure_text({}, "bits/dim") is None
    assert metric_key("nats") == "test/nll_nats" and metric_key("bits/dim", "val") == "val/bits_per_dim"


def test_of_checkpoint_finds_the_run_of_a_checkpoint_file(tmp_path, monkeypatch):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert RunFolder.of_checkpoint(ckpt).path == tmp_path / "run"
    monkeypatch.chdir(tmp_path / ".")
    assert RunFolder.of_checkpoint("run/checkpoints/best.ckpt").path == (tmp_path / "run").resolve()
    assert RunFolder.of_checkpoint(tmp_path / "alone.ckpt") is None  # not in a run's checkpoints/
    assert (
        RunFolder.of_checkpoint(tmp_path / "run" / "checkpoints" / "diverged-after-step-3" / "x.ckpt") is None
    )
    run = RunFolder(tmp_path / "run")
    assert run.config_file.name == "config.yaml" and run.checkpoints == tmp_path / "run" / "checkpoints"
    assert run.history_file == tmp_path / "run" / "logs" / "metrics.csv"


def test_identity_differences_ignore_what_a_run_may_change():
    saved = {"out": "a", "trainer": {"max_steps": 5, "devices": 1}, "model": {"lr": 0.1, "hidden": 4},
             "data_resolved": {"variant": "x"}}  # fmt: skip
    same = {"out": "b", "trainer": {"max_steps": 9, "devices": 1}, "model": {"lr": 0.01, "hidden": 4}}
    assert identity_differences(saved, same, resumable=["lr"]) == []
    assert identity_differences(saved, same) == ["model.lr=0.1 there, model.lr=0.01 here"]
    other = {**same, "seed": 3, "model": {"hidden": [1, 2]}}
    assert identity_differences(saved, other, resumable=["lr"]) == [
        "model.hidden=4 there, model.hidden=[1, 2] here",
        "seed=(unset) there, seed=3 here",
    ]


def fake_cfg(**model: object) -> SimpleNamespace:
    """What RunFolder asks of a RunConfig: to_dict, trainer's budget, the model's resumable fields."""
    config = {"seed": 0, "trainer": {"max_steps": 5}, "model": {"hidden": 4, "lr": 0.1, **model}}
    trainer = SimpleNamespace(max_epochs=-1, max_steps=5, max_time=None)
    return SimpleNamespace(
        to_dict=lambda: config, trainer=trainer, model=SimpleNamespace(RESUMABLE_CHANGES={"lr"})
    )


def test_another_run_is_refused_only_where_the_folder_holds_state(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.write_config({**fake_cfg().to_dict(), "data_resolved": {"variant": "v"}})
    run.check_same_run(fake_cfg(hidden=8))  # no checkpoint, no result: nothing to mix up
    run.checkpoints.mkdir()
    (run.checkpoints / "last.ckpt").write_bytes(b"")
    run.check_same_run(fake_cfg(lr=0.01))  # a resumable change
    with pytest.raises(OtherRunError, match=r"model.hidden=4 there, model.hidden=8 here.*another --out"):
        run.check_same_run(fake_cfg(hidden=8))
    run.config_file.write_text("model: [unclosed\n")
    with pytest.raises(RunDirError, match=r"cannot read .*config.yaml.*restore that file"):
        run.check_same_run(fake_cfg())


def test_a_damaged_metrics_json_is_named_and_a_missing_one_is_unfinished(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_metrics() is None and run.read_config() == {} and run.about_checkpoint("x.ckpt") == {}
    run.metrics_file.write_text('{"budget": {"max_st')  # a copy cut short
    with pytest.raises(RunDirError, match=r"cannot read .*metrics.json \(JSONDecodeError.*restore that file"):
        run.read_metrics()
    with pytest.raises(RunDirError, match="metrics.json"):
        run.about_checkpoint("x.ckpt")  # loading the checkpoint: the user must act
    assert run.finished(fake_cfg()) is None  # the runner: not finished, written again at the end
    run.metrics_file.write_text("[1, 2]")
    with pytest.raises(RunDirError, match=r"metrics.json \(ValueError: it holds a list, not a mapping"):
        run.read_metrics()
    run.config_file.write_text("")
    assert run.read_config() == {}


def test_metrics_round_trip_the_budget_and_the_schema(tmp_path):
    run = RunFolder(tmp_path)
    best = str(tmp_path / "checkpoints" / "best-1.ckpt")
    metrics = {"dataset": "mnist", "budget": {"max_epochs": -1, "max_steps": 5, "max_time": None},
               "test/nll_nats": 80.5, "test_checkpoint": best}  # fmt: skip
    run.write_metrics(metrics)
    assert run.read_metrics() == metrics and run.finished(fake_cfg()) == metrics
    cfg = fake_cfg()
    cfg.trainer.max_steps = 9  # a larger budget: the run continues
    assert run.finished(cfg) is None
    with pytest.raises(ValueError, match=r"keys \[.global_stpe.\] are not declared in"):
        run.write_metrics({"dataset": "mnist", "lr-RMSprop": 0.001, "global_stpe": 3})
    assert run.about_checkpoint("best-1.ckpt")["test/nll_nats"] == 80.5
    other = run.about_checkpoint("last.ckpt")
    assert "test/nll_nats" not in other and other["tested_checkpoint"] == "best-1.ckpt"


def test_find_and_read_history(tmp_path):
    for name in ("b", "a", "sweep/x/y"):
        RunFolder(tmp_path / name).write_metrics({"dataset": "mnist"})
    (tmp_path / "unfinished").mkdir()
    found = [r.path for r in RunFolder.find([tmp_path / "b", tmp_path])]
    assert found == [tmp_path / "b", tmp_path / "a", tmp_path / "sweep" / "x" / "y"]
    run = RunFolder(tmp_path / "a")
    assert run.read_history() == []
    run.history_file.parent.mkdir()
    run.history_file.write_text("step,train/loss\n0,1.5\n2,1.25\n4,1.")  # the last line cut by a kill
    assert run.read_history() == [{"step": "0", "train/loss": "1.5"}, {"step": "2", "train/loss": "1.25"}]


def layout_literals(path: Path) -> list[str]:
    """The layout's file names written as string literals (a path part) in ``path``, docstrings aside."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value.strip()  # a path or a path part; text with spaces is a message
            hits = [name for name in LAYOUT_NAMES if " " not in text and text.split("/")[-1] == name]
            found += [f"{path.name}:{node.lineno}: {name}" for name in hits]
    return found


def test_only_the_run_folder_names_the_layouts_files():
    files = [f for f in sorted(PACKAGE.rglob("*.py")) if f.name != "runfolder.py"]
    found = [hit for f in files for hit in layout_literals(f)]
    assert found == [], "ask pixel_lightning.runfolder.RunFolder for these paths"
    assert len(layout_literals(PACKAGE / "runfolder.py")) >= len(LAYOUT_NAMES)  # the check sees them
