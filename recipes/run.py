"""Run a recipe: python recipes/run.py --recipe NAME [--out DIR] [--dry-run] [key=value ...]; --list.

Thin on purpose: everything lives in pixel_lightning/runner.py. Nothing runs at import, so DDP's re-launch
of this script by each rank is safe.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # usable from a clone without pip install


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help", "--list") for a in args):  # answered without importing torch/Lightning
        import importlib.util

        path = Path(__file__).resolve().parents[1] / "pixel_lightning" / "recipebook.py"
        spec = importlib.util.spec_from_file_location("pixel_lightning_recipebook", path)
        book = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(book)
        return book.quick_main(args)
    from pixel_lightning.runner import main as run_main

    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
