"""The README's two commands are the ones CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
