"""Training throughput of two source trees, alternating in one run on one host (issue 14).

    git worktree add --detach /tmp/old bc02ecb
    python benchmarks/compare.py --old /tmp/old --configs mnist --threads 2 --rounds 5

Each round runs, for every (config, architecture), one fresh subprocess per tree (old, new, in an
order that alternates between rounds). A subprocess builds the model from its tree, takes one warm-up
training step (forward, backward, RMSProp) and times ``--steps`` more; its figure is the median step.
The report gives, per row, the median img/s of each tree over the rounds, the ratio of the medians and
the spread (min-max) of the per-round ratios new/old: on a shared host that spread is the noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEW = HERE.parent


def use_tree(root: str) -> None:
    """Import ``pixel_lightning`` from the source tree at ``root`` (before ``common`` is imported,
    whose own import of the package then reuses it)."""
    sys.path.insert(0, root)
    import pixel_lightning

    assert Path(pixel_lightning.__file__).resolve().is_relative_to(Path(root).resolve())
    sys.path.insert(1, str(HERE))


def child(root: str, arch: str, config: str, batch: int, steps: int, threads: int, overrides: str) -> dict:
    """One measurement, in this process, of the tree at ``root``."""
    use_tree(root)
    import torch
    from common import build, images, timed

    torch.set_num_threads(threads)
    model = build(arch, config, **json.loads(overrides))
    x = images(model, batch)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-5)

    def step():
        loss = -model.log_prob(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = timed(step, steps)
    return {"img_s": batch / t["wall_s"], "cpu_s": t["cpu_s"]}


def run(root: Path, arch: str, config: str, a: argparse.Namespace, overrides: str) -> float:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(root), "--archs", arch]
    cmd += ["--configs", config, "--batch", str(a.batch), "--steps", str(a.steps)]
    cmd += ["--threads", str(a.threads), "--overrides", overrides]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root).stdout
    return json.loads(out.strip().splitlines()[-1])["img_s"]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", help="root of the old source tree (a git worktree); required")
    p.add_argument("--new", default=str(NEW), help="root of the new tree (default: this one)")
    p.add_argument("--configs", nargs="+", default=["mnist"])
    p.add_argument("--archs", nargs="+", default=["pixelcnn", "row_lstm", "diagonal_bilstm"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="timed steps per subprocess (median)")
    p.add_argument("--rounds", type=int, default=5, help="old/new pairs per row")
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
    sys.path.insert(0, str(HERE))
    from common import machine, save_rows

    print(f"# machine: {machine()}", flush=True)
    rows = []
    for config in a.configs:
        for arch in a.archs:
            old, new = [], []
            for r in range(a.rounds):
                pair = [("old", Path(a.old), "{}"), ("new", Path(a.new), a.new_overrides)]
                for name, root, ov in pair if r % 2 == 0 else pair[::-1]:
                    (old if name == "old" else new).append(run(root, arch, config, a, ov))
            ratios = [n / o for n, o in zip(new, old, strict=True)]
            row = {
                "config": config, "arch": arch, "old_img_s": old, "new_img_s": new,
                "old_median": statistics.median(old), "new_median": statistics.median(new),
                "ratio_of_medians": statistics.median(new) / statistics.median(old),
                "round_ratio_min": min(ratios), "round_ratio_max": max(ratios),
                "batch": a.batch, "steps": a.steps, "threads": a.threads, "new_overrides": a.new_overrides,
            }  # fmt: skip
            rows.append(row)
            print(
                f"{config:8s} {arch:16s} old {row['old_median']:7.1f}  new {row['new_median']:7.1f} img/s"
                f"  ratio {row['ratio_of_medians']:.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f})",
                flush=True,
            )
    save_rows(a.out, rows)
    return rows


if __name__ == "__main__":
    main()
