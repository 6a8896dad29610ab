"""``pixel-lightning``: the installed command and its one parser (``recipes/run.py`` is ``fit``).

    pixel-lightning [fit] --recipe NAME [--out DIR] [key=value ...]     train (the default subcommand)
    pixel-lightning test     --ckpt SRC [--split test|val] [--out FILE.json] [--config YAML] [key=value ...]
    pixel-lightning sample   --ckpt SRC --n N --out DIR [--seed S]
    pixel-lightning complete --ckpt SRC --images PATH --keep top-half|left-half|MASK.png --n K --out DIR
    pixel-lightning evaluate --ckpt SRC --images PATH [--out FILE.csv]
    pixel-lightning report|sweep ...                                    pixel_lightning/tools/

``SRC``: a checkpoint, a ``save_pretrained`` folder or a Hub id (:func:`pixel_lightning.hub.load_model`);
``PATH``: PNG files or an ``.npz`` of integer images (:mod:`pixel_lightning.images`). Module-level imports
stay in the standard library, so that ``--help`` and ``--list`` answer at once (tests/test_cli.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from pixel_lightning.errors import InputError, cli_errors
from pixel_lightning.runfolder import RunFolder, figure_text, unit

# the tools' modules, each with add_arguments(parser) and main(args) -> exit status: imported only when chosen
TOOLS = {
    "report": ("pixel_lightning.tools.report", "compare finished runs like the paper's tables"),
    "sweep": ("pixel_lightning.tools.sweep", "run a sweep's grid locally, skipping finished runs"),
}
COMMANDS = ("fit", "test", "sample", "complete", "evaluate", *TOOLS)
Parsers = dict[str, argparse.ArgumentParser]


def write_npz(path: Path, **arrays: Any) -> None:
    import numpy as np

    from pixel_lightning.atomic import atomic_write

    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def write_out(text: str, out: str | None) -> None:
    """``text`` to the file ``out`` (atomically), or to standard output."""
    if out:
        from pixel_lightning.atomic import atomic_write

        atomic_write(Path(out), text)
    else:
        sys.stdout.write(text)


def keep_mask(keep: str, shape: tuple[int, int, int]):
    """--keep -> bool (C, H, W): True where the input is kept."""
    import torch

    from pixel_lightning.images import read_mask

    C, H, W = shape
    mask = torch.zeros(shape, dtype=torch.bool)
    if keep == "top-half":
        mask[:, : H // 2] = True
    elif keep == "left-half":
        mask[:, :, : W // 2] = True
    elif Path(keep).is_file():
        mask = read_mask(keep, shape)
    else:
        raise InputError(
            f"--keep {keep!r} is neither top-half, left-half nor an existing file",
            "use top-half, left-half or a mask PNG (white = keep) that exists",
        )
    return mask


def at_least_one(flag: str, value: int) -> None:
    if value < 1:
        raise InputError(f"{flag} must be >= 1, got {value}")


def model_and_images(args: argparse.Namespace) -> tuple[Any, list[str], Any]:
    """The model of ``--ckpt`` and the images of ``--images`` it scores: (model, names, int (N, C, H, W))."""
    from pixel_lightning.hub import load_model
    from pixel_lightning.images import check, read_images

    model = load_model(args.ckpt)
    names, x = read_images(args.images, model.image_shape, model.levels)
    check(model, x, args.images)
    return model, names, x


def tested_batches(args: argparse.Namespace, run: RunFolder | None) -> int | None:
    """How many test batches the run's own test figure covers (its metrics.json ``test_batches``: under
    DDP ``limit_test_batches`` counts per process), unless ``trainer.limit_test_batches=`` is given."""
    given = any(o.startswith("trainer.limit_test_batches=") for o in args.overrides)
    if args.split != "test" or run is None or given:
        return None
    recorded = (run.read_metrics() or {}).get("test_batches")
    return recorded if isinstance(recorded, int) else None


def run_config(args: argparse.Namespace, run: RunFolder | None, run_info: dict[str, Any]) -> Any:
    """The config of the data to test on, the ``key=value`` overrides on top: ``--config``, else the run's
    config.yaml (a checkpoint file), else the recipe a ``save_pretrained`` folder or Hub id records; with
    the data source the run resolved (``auto`` -> the one it used)."""
    from pixel_lightning.config import ConfigError, load_config
    from pixel_lightning.recipebook import read_yaml

    fix = "pass --config <run dir>/config.yaml, or a recipe's YAML, naming the data to test on"
    path = Path(args.config) if args.config else run.config_file if run else None
    if (path is None and Path(args.ckpt).is_file()) or (path is not None and not path.is_file()):
        raise ConfigError(f"no run config for {args.ckpt} (looked for {path or 'its run folder'})", fix)
    if path is None and not run_info.get("recipe"):
        raise ConfigError(f"{args.ckpt} records no recipe to take its data from", fix)
    resolved = (read_yaml(path, ConfigError).get("data_resolved") or {}) if path else {}
    source = resolved.get("source") if path else run_info.get("data_source")
    overrides = [*([f"data.source={source}"] if source else []), *args.overrides]
    return load_config(None if path else run_info["recipe"], overrides, config_path=path)


def cmd_fit(args: argparse.Namespace) -> int:
    """Train a recipe, test its best checkpoint and write the results (:func:`pixel_lightning.runner.run`);
    ``--list`` and ``--dry-run`` stop before anything trains."""
    from pixel_lightning.recipebook import list_text, paper_figure

    if args.list:
        print(list_text())
        return 0
    from pixel_lightning.config import ConfigError, load_config

    if not args.recipe and not args.config:
        raise ConfigError(
            "no recipe given: pass --recipe NAME (python recipes/run.py --list shows them) or --config PATH"
        )
    out = [f"out={args.out}"] if args.out else []
    cfg = load_config(args.recipe, [*args.overrides, *out], config_path=args.config)
    if args.dry_run:
        print(f"# recipe {cfg.recipe}: {cfg.description}")
        print(f"# paper: {paper_figure(cfg.paper.test, cfg.paper.train, cfg.paper.unit)} ({cfg.paper.where})")
        print(cfg.to_yaml(), end="")
        return 0
    from pixel_lightning.runner import run

    run(cfg)  # checks the run directory first (writable, not in use, this run's)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Re-evaluate a checkpoint on the test (or validation) split of its run's data: the metrics the run
    logged as ``test/*`` (``val/*``), as JSON."""
    import json

    from pixel_lightning.config import ConfigError
    from pixel_lightning.hub import load_model
    from pixel_lightning.runner import build_datamodule, make_trainer, progress_bars, scalar_metrics

    model = load_model(args.ckpt)
    run = RunFolder.of_checkpoint(args.ckpt) if Path(args.ckpt).is_file() else None
    cfg = run_config(args, run, model.run_info)
    dm = build_datamodule(cfg)
    if (tuple(dm.image_shape), dm.levels) != (tuple(model.image_shape), model.levels):
        raise ConfigError(
            f"{args.ckpt} models {model.image_shape} images with {model.levels} levels, the data "
            f"{cfg.data.name} is {tuple(dm.image_shape)} with {dm.levels}",
            "pass --config naming the data the model was trained on",
        )
    t = cfg.trainer  # evaluation only (one device, no logger, no checkpoints), bars on a terminal only
    tested = tested_batches(args, run) or t.limit_test_batches  # the batches the run's test figure covers
    kwargs = dict(accelerator=t.accelerator, precision=t.precision, enable_progress_bar=progress_bars(cfg))
    trainer = make_trainer({**kwargs, "limit_val_batches": t.limit_val_batches, "limit_test_batches": tested})
    evaluate = trainer.test if args.split == "test" else trainer.validate
    (metrics,) = evaluate(model, datamodule=dm, verbose=False)
    result = {
        "checkpoint": str(args.ckpt),
        "split": args.split,
        **scalar_metrics(metrics),
        "data": dm.describe(),
    }
    write_out(json.dumps(result, indent=1, default=str) + "\n", args.out)
    figure = figure_text(result, unit(cfg.data.name, cfg.paper.unit), args.split) or "n/a"
    print(f"{args.split}: {figure}" + (f"; wrote {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from pixel_lightning.hub import load_model
    from pixel_lightning.reliability.rundir import ensure_writable
    from pixel_lightning.visual import display_scale, image_grid, save_png

    at_least_one("--n", args.n)
    model = load_model(args.ckpt)
    out = ensure_writable(args.out, "--out")
    g = torch.Generator().manual_seed(args.seed)
    x = model.sample(args.n, generator=g, progress=sys.stderr.isatty())  # no bars in a log file
    write_npz(out / "samples.npz", images=x.numpy().astype(np.uint8 if model.levels <= 256 else np.int64))
    save_png(out / "samples.png", image_grid(x, model.levels), display_scale(model.image_shape[2]))
    print(f"wrote {out / 'samples.png'} and {out / 'samples.npz'} ({args.n} images)")
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    import torch

    from pixel_lightning.reliability.rundir import ensure_writable
    from pixel_lightning.visual import completion_rows, display_scale, row_figure, save_png

    at_least_one("--n", args.n)
    model, names, x = model_and_images(args)
    mask = keep_mask(args.keep, model.image_shape)
    out = ensure_writable(args.out, "--out")
    g = torch.Generator().manual_seed(args.seed)
    xc = model.complete(x, mask, n=args.n, generator=g, progress=sys.stderr.isatty())  # (B, K, C, H, W)
    write_npz(out / "completions.npz", completions=xc.numpy(), originals=x.numpy(), mask=mask.numpy())
    figure = row_figure(completion_rows(x, xc, mask, model.levels), gaps=(0, args.n))
    save_png(out / "completions.png", figure, display_scale(model.image_shape[2]))
    print(f"wrote {out / 'completions.png'} and {out / 'completions.npz'} ({len(x)} images x {args.n})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from pixel_lightning.metrics import bits_per_dim

    at_least_one("--batch-size", args.batch_size)
    images = Path(args.images).resolve()
    if args.out and (Path(args.out).resolve() == images or images in Path(args.out).resolve().parents):
        raise InputError(f"--out {args.out} would overwrite the images it scores", "choose another file")
    model, names, x = model_and_images(args)
    with torch.no_grad():
        nll = torch.cat([-model.log_prob(b) for b in x.split(args.batch_size)]).double()  # (N,) nats
    bpd = bits_per_dim(nll, model.dims)
    table = io.StringIO(newline="")
    rows = zip(names, nll.tolist(), bpd.tolist(), strict=True)
    csv.writer(table).writerows(
        [("image", "nll_nats", "bits_per_dim"), *((n, f"{a:.6f}", f"{b:.6f}") for n, a, b in rows)]
    )
    write_out(table.getvalue(), args.out)
    wrote = f"; wrote {args.out}" if args.out else ""
    print(
        f"mean over {len(names)} images: {nll.mean():.4f} nats, {bpd.mean():.4f} bits/dim{wrote}",
        file=sys.stderr,
    )
    return 0


def build_parser(tool: str | None = None) -> tuple[argparse.ArgumentParser, Parsers]:
    """The command's parser and its subcommands' parsers by name. Of the tools, only ``tool``'s module is
    imported, to add its arguments: the others appear in ``--help`` by name."""
    p = argparse.ArgumentParser(
        prog="pixel-lightning",
        description="Train, sample, complete and evaluate PixelRNN / PixelCNN models (van den Oord et al., "
        "ICML 2016). Without a subcommand, the arguments go to fit.",
        epilog="train: pixel-lightning --recipe quickstart   |   recipes: pixel-lightning --list   |   "
        "help of one: pixel-lightning sample --help",
    )
    sub = p.add_subparsers(dest="command")
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", help="show full tracebacks")
    ckpt = argparse.ArgumentParser(add_help=False, parents=[debug])
    ckpt.add_argument("--ckpt", required=True, help="a run's checkpoint, save_pretrained folder or Hub id")
    images = argparse.ArgumentParser(add_help=False, parents=[ckpt])
    images.add_argument("--images", required=True, help="folder of PNG files or an .npz of integer images")

    f = sub.add_parser(
        "fit",
        parents=[debug],
        help="train a recipe, test its best checkpoint, write the results (the default; = recipes/run.py)",
        description="Run a pixel-lightning recipe: fit, test on the best checkpoint, write the results "
        "(python recipes/run.py takes the same arguments).",
        epilog="example: pixel-lightning fit --recipe quickstart trainer.max_steps=200 logger=none",
    )
    f.add_argument("--recipe", help="recipe name (pixel_lightning/recipes/<name>.yaml); --list shows them")
    f.add_argument("--config", help="a YAML config, e.g. a run's <out>/config.yaml (reproduces that run)")
    f.add_argument("--list", action="store_true", help="list the recipes with the paper's figures and exit")
    f.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    f.add_argument("--out", help="run directory (default runs/<recipe>)")
    f.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. model.hidden=32")
    f.set_defaults(func=cmd_fit)

    help_ = "re-evaluate a checkpoint on its run's test (or validation) data: JSON"
    t = sub.add_parser("test", parents=[ckpt], help=help_)
    t.add_argument("--split", choices=("test", "val"), default="test", help="split (default test)")
    t.add_argument("--out", help="JSON file (default: standard output)")
    t.add_argument("--config", help="the run config (default: <run>/config.yaml, or the recorded recipe)")
    t.add_argument("overrides", nargs="*", help="key=value changes to that config, e.g. data.data_dir=DIR")
    t.set_defaults(func=cmd_test)

    s = sub.add_parser("sample", parents=[ckpt], help="draw images: a PNG grid and an .npz of the images")
    s.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    s.add_argument("--out", required=True, help="folder for samples.png and samples.npz")
    s.add_argument("--seed", type=int, default=0, help="seed of the sampler's uniforms (default 0)")
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("complete", parents=[images], help="complete occluded images (the paper's Figure 1)")
    c.add_argument(
        "--keep", default="top-half", help="top-half (default), left-half or MASK.png (white = keep)"
    )
    c.add_argument("--n", type=int, default=4, help="completions per image (default 4)")
    c.add_argument("--out", required=True, help="folder for completions.png and completions.npz")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_complete)

    e = sub.add_parser("evaluate", parents=[images], help="NLL in nats and bits/dim per image, as CSV")
    e.add_argument("--out", help="CSV file (default: standard output); the mean goes to standard error")
    e.add_argument("--batch-size", type=int, default=64)
    e.set_defaults(func=cmd_evaluate)

    for name, (module_name, help_) in TOOLS.items():
        if name != tool:
            sub.add_parser(name, help=help_)
            continue
        module = import_module(module_name)
        raw = argparse.RawDescriptionHelpFormatter  # the module's docstring is its description
        q = sub.add_parser(name, help=help_, description=module.__doc__, formatter_class=raw)
        module.add_arguments(q)
        q.set_defaults(func=module.main)
    return p, sub.choices


def main(argv: Sequence[str] | None = None) -> int:
    """The ``pixel-lightning`` console script (and ``recipes/run.py``: ``main(["fit", ...])``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["fit", *argv]  # fit is the default subcommand: pixel-lightning --recipe quickstart
    parser, commands = build_parser(tool=argv[0])
    if argv[0] not in commands:
        parser.parse_args(argv)  # --help: prints and exits
    args = commands[argv[0]].parse_intermixed_args(argv[1:])  # overrides before and after options
    with cli_errors(debug=getattr(args, "debug", False)):  # bad input: InputError and friends (exit 2)
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
