"""Run a recipe: python recipes/run.py --recipe NAME [--out DIR] [--dry-run] [key=value ...]; --list.

The same as ``pixel-lightning fit`` (pixel_lightning/cli.py parses, pixel_lightning/runner.py runs). The
package must be importable: ``pip install -r requirements.txt`` installs this clone (editable). Nothing runs
at import, so DDP's re-launch of this script by each rank is safe.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    try:
        from pixel_lightning.cli import main as cli_main
    except ModuleNotFoundError as e:
        if e.name != "pixel_lightning":
            raise
        print(
            "recipes/run.py: the pixel_lightning package is not importable; install this clone with "
            "`python3 -m pip install -r requirements.txt` (or run with PYTHONPATH=<the clone>)",
            file=sys.stderr,
        )
        return 2
    return cli_main(["fit", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
