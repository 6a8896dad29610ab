"""The README and docs/: the two fresh-machine commands, every documented command runs (or dry-runs),
every docs page is linked from a README under 10,000 bytes, and every relative link resolves."""

from __future__ import annotations

import importlib
import json
import os
import re
import runpy
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- commands -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README must hold the two fresh-machine commands in a ```bash block after <!-- commands -->"
    lines = [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 2, lines
    return lines


def test_ci_runs_the_readme_test_command():
    quickstart, tests = _commands()
    assert "recipes/run.py --recipe quickstart" in quickstart
    assert "pytest" in tests
    assert tests.strip() in (ROOT / ".ci" / "run").read_text()


def test_requirements_pin_torch():
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text().split()


# ----------------------------------------------------------------------------- README size and links


def test_readme_is_under_10_kb():
    assert len((ROOT / "README.md").read_bytes()) < 10_000


def test_every_docs_page_is_linked_from_the_readme():
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)\)", (ROOT / "README.md").read_text()))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages, "docs/ holds the moved README sections"
    assert pages <= linked, f"pages not linked from README.md: {sorted(pages - linked)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if not re.match(r"[a-z]+://", target):
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


# ----------------------------------------------------------------------------- documented commands


def documented_commands(page: Path) -> list[str]:
    """The shell commands in a page's ```bash blocks: continuations joined, comments and placeholders
    (``[key=value ...]``) dropped, ``a && b`` split."""
    commands = []
    for body in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", page.read_text(), re.S):
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s\[[^\]]*\.\.\.\]", "", line.split(" # ")[0]).strip()
            if line and not line.startswith("#"):
                commands += [c.strip() for c in line.split("&&")]
    return commands


def dry(args: list[str]) -> list[str]:
    return [*args, "--dry-run"] if not {"--list", "--dry-run"} & set(args) else args


def _run_py(args: list[str]) -> None:
    assert runpy.run_path(str(ROOT / "recipes" / "run.py"))["main"](dry(args)) == 0  # not as __main__


def _sweep_py(args: list[str]) -> None:
    """No dry-run of its own: its runs load, and the runs of one seed dry-run (the others differ in the seed
    alone)."""
    from pixel_lightning import tools
    from pixel_lightning.tools import sweep

    opts = tools.parser("sweep").parse_args(args)
    runs = sweep.plan(opts.sweep, opts.recipe, opts.seeds, opts.overrides)
    assert runs
    seed = next((o for o in runs[0].overrides if o.startswith("seed=")), None)
    for run in [r for r in runs if seed is None or seed in r.overrides]:
        _run_py(["--recipe", run.recipe, *run.overrides])


def _report_py(args: list[str], tmp_path: Path) -> None:
    """``pixel-lightning report``, for real on stand-in run directories (a metrics.json each) at the
    documented paths."""
    from pixel_lightning import cli

    flags = ("--out", "--title", "--project")
    dirs = [a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] not in flags)]
    inside = {d: d.lstrip("/") for d in dirs}  # an absolute documented path stays inside tmp_path
    for d in inside.values():
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / d / "metrics.json").write_text(json.dumps({"arch": "pixelcnn", "dataset": "mnist"}))
    os.chdir(tmp_path)
    assert cli.main(["report", *(inside.get(a, a) for a in args)]) == 0


def _parses(script: str) -> Callable[[list[str]], None]:
    """Scripts that need finished runs or minutes of CPU (the results figures, the paper-scale FLOP count):
    the documented arguments parse with the script's own parser."""

    def check(args: list[str]) -> None:
        importlib.import_module(script).make_parser().parse_args(args)

    return check


def _wandb(args: list[str]) -> None:
    """``wandb sweep FILE``: the file's program exists and its command dry-runs. ``wandb agent`` needs a
    live W&B sweep id, so only its form is checked."""
    if args[0] == "agent":
        assert len(args) == 2 and args[1].count("/") == 2, args
        return
    assert args[0] == "sweep", args
    spec = yaml.safe_load((ROOT / args[1]).read_text())
    assert (ROOT / spec["program"]).is_file()
    cmd = [c for c in spec["command"] if not c.startswith("${")]
    _run_py(cmd[cmd.index("--recipe") :])


def _pip(args: list[str]) -> None:
    assert args[:2] == ["install", "-q"] or args[0] == "install", args
    assert (ROOT / args[-1]).is_file(), f"{args[-1]} missing"


def _pixel_lightning(args: list[str], tmp_path: Path) -> None:
    """``fit`` (the default) dry-runs, ``sweep`` and ``report`` as above; ``sample``, ``complete``,
    ``evaluate`` run for real, in ``tmp_path``, on a tiny stand-in model (the quickstart's shape, 1x28x28
    binary) and stand-in images written at the documented ``--ckpt`` and ``--images`` paths."""
    import numpy as np
    import torch
    from helpers import lightning_checkpoint, tiny_model

    from pixel_lightning import cli

    if args[:1] == ["sweep"]:
        return _sweep_py(args[1:])
    if args[:1] == ["report"]:
        return _report_py(args[1:], tmp_path)
    if not args or args[0] not in ("sample", "complete", "evaluate"):
        assert cli.main(dry(args)) == 0  # fit, named or the default
        return
    os.chdir(tmp_path)
    value = dict(zip(args, args[1:], strict=False))
    ckpt = Path(value["--ckpt"])
    model = tiny_model("pixelcnn", (1, 28, 28), 2, hidden=4, layers=1).float()
    lightning_checkpoint(model, ckpt)
    if "--images" in value:
        images = Path(value["--images"])
        images.parent.mkdir(parents=True, exist_ok=True)
        np.savez(images, images=model.sample(2, generator=torch.Generator().manual_seed(0)).numpy())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(args) == 0
    finally:
        torch.set_num_threads(threads)


def _this_suite(args: list[str]) -> None:
    """``ruff check .`` and ``python -m pytest``: what this test run is part of (CI runs them)."""


def dispatch(command: str) -> tuple[Callable[..., None], list[str]]:
    tokens = shlex.split(command)
    if tokens[0] in ("srun", "torchrun"):  # launcher: the script and its arguments follow the options
        tokens = ["python", *tokens[next(i for i, t in enumerate(tokens) if t.endswith(".py")) :]]
    prog, args = tokens[0], tokens[1:]
    if prog in ("python", "python3"):
        if args[:2] == ["-m", "pip"]:
            return _pip, args[2:]
        if args[:2] == ["-m", "pytest"]:
            return _this_suite, args[2:]
        script, args = (args[1], args[2:]) if args[0] == "-m" else (args[0], args[1:])
        handlers = {"recipes/run.py": _run_py}
        handlers |= {s: _parses(s) for s in ("scripts.results_figures", "scripts.paper_scale")}
        assert script in handlers, f"no check for documented script {script}: add one to tests/test_readme.py"
        return handlers[script], args
    handlers = {"wandb": _wandb, "ruff": _this_suite, "pixel-lightning": _pixel_lightning}
    assert prog in handlers, f"no check for documented command {prog}: add one to tests/test_readme.py"
    return handlers[prog], args


CASES = [(page, cmd) for page in PAGES for cmd in documented_commands(page)]


def test_the_docs_document_commands():
    assert len(CASES) >= 10 and all(any(p == page for p, _ in CASES) for page in PAGES[:1])


@pytest.mark.parametrize(("page", "command"), CASES, ids=[f"{p.name}:{c[:60]}" for p, c in CASES])
def test_documented_command_runs_or_dry_runs(page, command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    handler, args = dispatch(command)
    if "tmp_path" in handler.__code__.co_varnames[: handler.__code__.co_argcount]:
        handler(args, tmp_path)
    else:
        handler(args)
