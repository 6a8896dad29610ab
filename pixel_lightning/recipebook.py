"""The recipe files (``pixel_lightning/recipes/*.yaml``) and their listing: standard library and PyYAML only,
so that ``pixel-lightning --list`` answers at once (timed: tests/test_cli.py, benchmarks/startup.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"  # package data: pip install ships them


def list_recipes(recipes_dir: Path = RECIPES_DIR) -> list[str]:
    """Names of every recipe, sorted."""
    return sorted(p.stem for p in recipes_dir.glob("*.yaml"))


def read_yaml(path: Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The mapping in a YAML file; ``error`` (config.py: ConfigError) names a broken file."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{path} is not valid YAML ({e}); fix the file") from e
    if not isinstance(data, dict):
        raise error(f"{path} must hold a mapping of sections (model:, data:, ...)")
    return data


def describe_recipes(recipes_dir: Path = RECIPES_DIR) -> list[dict[str, Any]]:
    """name, description and paper figure of every recipe (for ``--list``)."""
    rows = []
    for name in list_recipes(recipes_dir):
        data = read_yaml(recipes_dir / f"{name}.yaml")
        paper = data.get("paper") or {}
        figure = paper_figure(paper.get("test"), paper.get("train"), paper.get("unit", ""))
        where = paper.get("where", "")
        rows.append(dict(name=name, description=data.get("description", ""), paper=figure, where=where))
    return rows


def paper_figure(test: float | None, train: float | None, unit: str) -> str:
    if test is None:
        return "-"
    return f"{test:.2f}" + (f" ({train:.2f})" if train is not None else "") + f" {unit}"


def list_text() -> str:
    rows = describe_recipes()
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'recipe'.ljust(width)}  paper figure (where)  |  description"]
    for r in rows:
        where = f" ({r['where']})" if r["where"] else ""
        lines.append(f"{r['name'].ljust(width)}  {r['paper']}{where}  |  {r['description']}")
    return "\n".join(lines)
