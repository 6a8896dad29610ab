"""Run many ``recipes/run.py`` (or ``pixel-lightning``) command lines cheaply: import once, fork once per
command line.

Reads JSON requests from stdin, one per line:
``{"argv": [...], "cwd": "...", "stdout": path, "stderr": path}`` (an optional ``"program":
"pixel-lightning"`` runs the console script's ``pixel_lightning.cli.main`` instead). For each it forks
a child that redirects its stdout/stderr to those files, changes to ``cwd`` and runs ``recipes/run.py``'s
``main(argv)`` as the script does (``sys.exit(main())``), and writes ``{"code": exit status}`` to
stdout. Nothing is computed before the fork, so children start clean.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

import pixel_lightning.cli
import pixel_lightning.runner  # noqa: F401  the heavy imports, paid once

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = {
    "recipes/run.py": runpy.run_path(str(ROOT / "recipes" / "run.py"))["main"],  # not as __main__: no run
    "pixel-lightning": pixel_lightning.cli.main,
}


def child(request: dict) -> None:
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    os.chdir(request.get("cwd") or ROOT)
    program = request.get("program", "recipes/run.py")
    sys.argv = [program, *request["argv"]]
    code = 1
    try:
        code = PROGRAMS[program](request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # an uncaught exception: Python would print it and exit 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
