"""docs/results/<experiment>/report.md is re-derivable from the committed run records alone (issue 22): each
report ends with the command that wrote it, and running that command again on docs/results/runs/ gives the
same text."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from pixel_lightning.tools import parser
from pixel_lightning.tools.report import main as report_main

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = re.compile(r"^Regenerate: `(.+)`$", re.M)
REPORTS = sorted(
    p for p in (ROOT / "docs" / "results").glob("*/report.md") if REGENERATE.search(p.read_text())
)


def command_args(report: Path):
    """The parsed arguments of the ``pixel-lightning report`` command at the end of ``report``."""
    words = shlex.split(REGENERATE.search(report.read_text()).group(1))
    assert words[:2] == ["pixel-lightning", "report"]
    return parser("report").parse_args(words[2:])


def regenerate(report: Path, out: Path, runs: Path | None = None) -> str:
    """Run the report's own command again with --out ``out`` (and the records in ``runs``, if given)."""
    args = command_args(report)
    args.dirs = [str(runs) if runs else str(ROOT / d) for d in args.dirs]
    args.out, args.project = str(out), "pixel-lightning"
    assert report_main(args) == 0
    return (out / "report.md").read_text()


def without_command(text: str) -> str:
    return REGENERATE.sub("", text)


def test_the_mnist_report_is_committed_with_its_records():
    assert ROOT / "docs" / "results" / "mnist_long" / "report.md" in REPORTS
    runs = sorted((ROOT / "docs" / "results" / "runs" / "mnist").iterdir())
    assert len(runs) >= 8
    for run in runs:
        for name in ("config.yaml", "metrics.json", "logs/metrics.csv"):
            assert (run / name).is_file(), f"{run} lacks {name}"


@pytest.mark.parametrize("report", REPORTS, ids=[p.parent.name for p in REPORTS])
def test_a_committed_report_is_what_its_records_give(report, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert without_command(regenerate(report, tmp_path)) == without_command(report.read_text())


def test_a_changed_record_changes_the_report(tmp_path, monkeypatch):
    """Control: the comparison above can fail."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    report = ROOT / "docs" / "results" / "mnist_long" / "report.md"
    runs = tmp_path / "runs"
    shutil.copytree(ROOT / "docs" / "results" / "runs" / "mnist", runs)
    metrics_file = next(runs.iterdir()) / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["test/nll_nats"] += 1.0
    metrics_file.write_text(json.dumps(metrics))
    assert without_command(regenerate(report, tmp_path / "out", runs)) != without_command(report.read_text())


def test_every_report_results_md_cites_is_regenerated_from_committed_records():
    """Issue 22: docs/RESULTS.md shows no run without a record. Each report it links to ends with a
    command over docs/results/runs/<experiment>, whose every run folder holds the three record files and
    appears in the report's per-run table."""
    text = (ROOT / "docs" / "RESULTS.md").read_text()
    cited = sorted(set(re.findall(r"\(results/([\w-]+)/report\.md\)", text)))
    assert len(cited) == 3, cited  # MNIST, the ablation, the photographs
    for name in cited:
        report = ROOT / "docs" / "results" / name / "report.md"
        assert report in REPORTS, f"{report} has no Regenerate command"
        args = command_args(report)
        assert len(args.dirs) == 1 and args.dirs[0].startswith("docs/results/runs/"), args.dirs
        runs = sorted(p for p in (ROOT / args.dirs[0]).iterdir() if p.is_dir())
        assert len(runs) == 12, (name, len(runs))  # 4 models x 3 seeds
        by_run = report.read_text().split("## By run")[1]
        for run in runs:
            assert all((run / f).is_file() for f in ("config.yaml", "metrics.json", "logs/metrics.csv")), run
            assert f"| {run.name} |" in by_run, (name, run.name)
