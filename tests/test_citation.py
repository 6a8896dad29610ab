"""CITATION.cff is valid CFF 1.2.0 (what GitHub's "Cite this repository" and cffconvert accept) and the
MIT licence that pyproject.toml names is in LICENSE."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cffconvert() -> str:
    """The cffconvert executable (requirements-dev.txt pins it), beside this Python or on PATH."""
    here = Path(sys.executable).with_name("cffconvert")
    found = str(here) if here.is_file() else shutil.which("cffconvert")
    if not found:
        pytest.skip("cffconvert not installed: python3 -m pip install -r requirements-dev.txt")
    return found


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([cffconvert(), "--validate", "-i", str(path)], capture_output=True, text=True)


def test_citation_cff_validates():
    result = validate(ROOT / "CITATION.cff")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "valid" in result.stdout


def test_a_citation_without_top_level_authors_is_rejected(tmp_path):
    """The control: the check catches the missing top-level ``authors`` this file once had."""
    lines = (ROOT / "CITATION.cff").read_text().splitlines()
    start = lines.index("authors:")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith(" "))
    bad = tmp_path / "CITATION.cff"
    bad.write_text("\n".join(lines[:start] + lines[end:]) + "\n")
    result = validate(bad)
    assert result.returncode != 0 and "'authors' is a required property" in result.stderr


def test_mit_license_file_matches_pyproject():
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
