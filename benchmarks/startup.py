"""Start-up time of the installed command (issue 21: ``--help`` and ``--list`` under 0.5 s).

    python -m benchmarks.startup [--exe PATH] [--runs 21] [--out benchmarks/results/startup.json]

Times whole processes of the console script pip installed (``pixel-lightning`` on PATH, or ``--exe``):
``--help``, ``--list`` and ``fit --help``, beside the bare interpreter of its shebang (``python -c pass``,
the floor no command goes under). Each run is a fresh process from fork to exit, output discarded. The
commands alternate run by run, so a shared host's load falls on all of them alike; the table gives the
median and the range of the wall time, and the median CPU time (user + system) of the child, which load
disturbs less.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from benchmarks.common import machine, save_rows


def run_once(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one process running ``argv``, without PYTHONPATH: the installed copy runs, not
    a checkout the path names."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exe", default=shutil.which("pixel-lightning"), help="the console script to time")
    p.add_argument("--runs", type=int, default=21, help="processes per command")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    if not a.exe:
        p.error("no pixel-lightning on PATH: pip install the package (a venv will do) or pass --exe")
    python = Path(a.exe).read_text().splitlines()[0].removeprefix("#!").strip()  # the script's interpreter
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "pixel-lightning --help": [a.exe, "--help"],
        "pixel-lightning --list": [a.exe, "--list"],
        "pixel-lightning fit --help": [a.exe, "fit", "--help"],
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for cmd in commands.values():
        run_once(cmd)  # warm the file cache
    for _ in range(a.runs):
        for name, cmd in commands.items():
            times[name].append(run_once(cmd))
    print(f"# machine: {machine()}; {a.runs} runs each, alternated; {a.exe}")
    rows = []
    for name, runs in times.items():
        wall = sorted(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        rows.append({"command": name, "wall_s": wall, "median_wall_s": statistics.median(wall), "cpu_s": cpu})
        print(
            f"{name:28s} wall median {statistics.median(wall):.3f} s "
            f"(range {wall[0]:.3f}-{wall[-1]:.3f})  CPU median {cpu:.3f} s"
        )
    save_rows(a.out, rows)
    return rows


if __name__ == "__main__":
    main()
