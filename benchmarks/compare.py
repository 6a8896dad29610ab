"""Training throughput of two source trees, alternating in one run on one host (issue 14).

    git worktree add --detach /tmp/old bc02ecb
    python -m benchmarks.compare --old /tmp/old --configs mnist --threads 2 --steps 20

Default (in-process): for every (config, architecture) one process imports both trees (the old one,
then the new one, each under the name ``pixel_lightning``; a model keeps the module it was built
from), builds one model from each, takes two warm-up training steps (forward, backward, RMSProp) of
each, then alternates single timed steps old/new/new/old/... The report gives the median img/s of
each tree, their ratio, and the quartiles of the per-pair ratios. Why in one process: on the 2-core
VM hosts the speed of a whole process varies by up to 1.5x from one process to the next (the same
tree gave 134-207 ms per Row LSTM step in successive processes), while within a process the paired
ratio is stable; ``--old`` equal to the new tree is the control (ratio 1.00).

``--subprocess`` runs each tree in fresh processes instead (``--rounds`` pairs, ``--steps`` steps
each), the method of the first measurements.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

NEW = Path(__file__).resolve().parents[1]  # this tree


def use_tree(root: str) -> None:
    """Make ``import pixel_lightning`` give the source tree at ``root``: its package is loaded by file
    (submodules from its folder), before ``benchmarks.common`` is imported, whose own import of the
    package then reuses it. A tree already imported is kept; another tree must be unloaded first."""
    package = Path(root).resolve() / "pixel_lightning"
    loaded = sys.modules.get("pixel_lightning")
    if loaded is None:
        spec = importlib.util.spec_from_file_location(
            "pixel_lightning", package / "__init__.py", submodule_search_locations=[str(package)]
        )
        loaded = importlib.util.module_from_spec(spec)
        sys.modules["pixel_lightning"] = loaded
        spec.loader.exec_module(loaded)
    assert Path(loaded.__file__).resolve().is_relative_to(package), (loaded.__file__, root)


def child(root: str, arch: str, config: str, batch: int, steps: int, threads: int, overrides: str) -> dict:
    """One measurement, in this process, of the tree at ``root``."""
    use_tree(root)
    import torch

    from benchmarks.common import build, images, timed, train_step

    torch.set_num_threads(threads)
    model = build(arch, config, **json.loads(overrides))
    t = timed(train_step(model, images(model, batch)), steps)
    return {"img_s": batch / t["wall_s"], "cpu_s": t["cpu_s"]}


def load_tree(root: str, arch: str, config: str, batch: int, overrides: str):
    """A training step of a model built from the tree at ``root``, imported afresh in this process."""
    for name in [n for n in sys.modules if n == "benchmarks.common" or n.split(".")[0] == "pixel_lightning"]:
        del sys.modules[name]
    use_tree(root)
    common = importlib.import_module("benchmarks.common")  # after use_tree: its pixel_lightning is root's
    assert common.pixel_lightning is sys.modules["pixel_lightning"]
    model = common.build(arch, config, **json.loads(overrides))
    return common.train_step(model, common.images(model, batch))


def in_process(arch: str, config: str, a: argparse.Namespace) -> tuple[list[float], list[float]]:
    """Per-step img/s of the old and the new tree, alternating in this process (see the docstring)."""
    import torch

    torch.set_num_threads(a.threads)
    steps = {
        "old": load_tree(str(Path(a.old).resolve()), arch, config, a.batch, "{}"),
        "new": load_tree(str(Path(a.new).resolve()), arch, config, a.batch, a.new_overrides),
    }
    for step in steps.values():
        step()
        step()
    from benchmarks.common import alternated  # the last tree's common: the same function

    out = alternated(steps, a.steps, a.batch)
    return out["old"], out["new"]


def run(root: Path, arch: str, config: str, a: argparse.Namespace, overrides: str) -> float:
    cmd = [sys.executable, "-m", "benchmarks.compare", "--child", str(root), "--archs", arch]
    cmd += ["--configs", config, "--batch", str(a.batch), "--steps", str(a.steps)]
    cmd += ["--threads", str(a.threads), "--overrides", overrides]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=NEW).stdout
    return json.loads(out.strip().splitlines()[-1])["img_s"]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", help="root of the old source tree (a git worktree); required")
    p.add_argument("--new", default=str(NEW), help="root of the new tree (default: this one)")
    p.add_argument("--configs", nargs="+", default=["mnist"])
    p.add_argument("--archs", nargs="+", default=["pixelcnn", "row_lstm", "diagonal_bilstm"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="timed steps of each tree (per subprocess)")
    p.add_argument("--subprocess", action="store_true", help="fresh processes per tree, not in-process")
    p.add_argument("--rounds", type=int, default=5, help="--subprocess: old/new process pairs per row")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new-overrides", default="{}", help="JSON ModelConfig overrides for the new tree")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.archs[0], a.configs[0], a.batch, a.steps, a.threads, a.overrides)))
        return []
    if not a.old:
        p.error("--old is required: the root of the old tree (git worktree add --detach /tmp/old bc02ecb)")
    from benchmarks.common import machine, paired, paired_text, save_rows

    print(f"# machine: {machine()}", flush=True)
    rows = []
    for config in a.configs:
        for arch in a.archs:
            old, new = [], []
            if not a.subprocess:
                old, new = in_process(arch, config, a)
            else:
                for r in range(a.rounds):
                    pair = [("old", Path(a.old), "{}"), ("new", Path(a.new), a.new_overrides)]
                    for name, root, ov in pair if r % 2 == 0 else pair[::-1]:
                        (old if name == "old" else new).append(run(root, arch, config, a, ov))
            row = {
                "config": config, "arch": arch, "old_img_s": old, "new_img_s": new,
                "old_median": statistics.median(old), "new_median": statistics.median(new),
                **paired(new, old),
                "mode": "subprocess" if a.subprocess else "in-process",
                "batch": a.batch, "steps": a.steps, "threads": a.threads, "new_overrides": a.new_overrides,
            }  # fmt: skip
            rows.append(row)
            print(
                f"{config:8s} {arch:16s} old {row['old_median']:7.1f}  new {row['new_median']:7.1f} img/s"
                f"  {paired_text(row)}",
                flush=True,
            )
    save_rows(a.out, rows)
    return rows


if __name__ == "__main__":
    main()
