"""The ``pixel-lightning`` command: sample, complete, evaluate run as command lines (one process each,
forked from a server that paid the imports once) on a tiny model; bad input exits 2 naming the problem;
installed by pip in a venv, the console script runs from an empty directory (slow)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import lightning_checkpoint, tiny_model
from PIL import Image
from test_cli_errors import ForkServer

import pixel_lightning
from pixel_lightning import cli

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def server():
    """One process that imported pixel-lightning once and forks per command line (tests/cli_forkserver.py):
    each command then runs in its own process without paying the ~10 s of imports again."""
    s = ForkServer()
    yield s
    s.close()


@pytest.fixture
def command(server, tmp_path):
    """``pixel-lightning ARGS`` in ``cwd``: (exit status, stdout, stderr)."""
    calls = iter(range(100))

    def run(*args, cwd, check=True):
        logs = tmp_path / f"logs{next(calls)}"
        logs.mkdir()
        code, out, err = server.run([str(a) for a in args], logs, cwd=cwd, program="pixel-lightning")
        if check:
            assert code == 0, out[-3000:] + err[-3000:]
        return code, out, err

    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run's directory holding a tiny binary PixelCNN checkpoint, and the model."""
    root = tmp_path_factory.mktemp("cli")
    model = tiny_model("pixelcnn", SHAPE, 2, hidden=4, layers=1, std=0.6).float()
    ckpt = lightning_checkpoint(model, root / "run" / "checkpoints" / "last.ckpt")
    (root / "run" / "metrics.json").write_text(json.dumps({"dataset": "mnist", "variant": "tiny"}))
    digits = model.sample(5, generator=torch.Generator().manual_seed(7))  # (5, 1, 8, 8) in {0, 1}
    return root, ckpt, model.eval(), digits


def test_sample_writes_a_readable_grid_and_the_integer_images(run, command):
    root, ckpt, model, _ = run
    command("sample", "--ckpt", ckpt, "--n", 4, "--out", "s", "--seed", 3, cwd=root)
    x = np.load(root / "s" / "samples.npz")["images"]
    assert x.shape == (4, *SHAPE) and np.issubdtype(x.dtype, np.integer) and set(np.unique(x)) <= {0, 1}
    expected = model.sample(4, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(x, expected.numpy())  # the seed fixes the images
    with Image.open(root / "s" / "samples.png") as im:
        assert im.width >= 2 * 56  # a 2x2 grid, each 8-pixel image drawn at least 56 pixels wide


def test_complete_keeps_the_kept_pixels_and_draws_figure_1(run, command):
    root, ckpt, model, digits = run
    np.savez(root / "digits.npz", images=digits.numpy())
    argv = [
        "complete",
        "--ckpt",
        ckpt,
        "--images",
        "digits.npz",
        "--keep",
        "top-half",
        "--n",
        3,
        "--out",
        "c",
    ]
    command(*argv, cwd=root)
    data = np.load(root / "c" / "completions.npz")
    xc, mask = data["completions"], data["mask"]
    assert xc.shape == (5, 3, *SHAPE) and mask.shape == SHAPE and mask[:, :4].all() and not mask[:, 4:].any()
    kept = np.broadcast_to(digits.numpy()[:, None], xc.shape)[:, :, mask]
    assert np.array_equal(xc[:, :, mask], kept)  # kept pixels exactly unchanged
    assert not np.array_equal(
        xc[:, :, ~mask], np.broadcast_to(digits.numpy()[:, None], xc.shape)[:, :, ~mask]
    )
    with Image.open(root / "c" / "completions.png") as im:
        scale = 7  # 8-pixel images drawn 56 wide
        # 5 rows; 5 columns (occluded, 3 completions, original) with wider gaps around the completions
        assert im.height == (1 + 5 * (8 + 1)) * scale
        assert im.width == (1 + 5 * (8 + 1) + 2 * 4) * scale


def test_evaluate_png_folder_csv_to_stdout_matches_log_prob(run, command):
    root, ckpt, model, digits = run
    (root / "pngs").mkdir(exist_ok=True)
    for k, d in enumerate(digits):
        Image.fromarray((d[0].numpy() * 255).astype(np.uint8)).save(root / "pngs" / f"d{k}.png")
    _, stdout, stderr = command("evaluate", "--ckpt", ckpt, "--images", "pngs", cwd=root)
    rows = list(csv.DictReader(io.StringIO(stdout)))
    assert [r["image"] for r in rows] == [f"d{k}.png" for k in range(5)]  # one row per image
    nll = -model.log_prob(digits).double()
    got = torch.tensor([float(r["nll_nats"]) for r in rows], dtype=torch.float64)
    assert torch.allclose(got, nll, atol=1e-4)
    bpd = torch.tensor([float(r["bits_per_dim"]) for r in rows], dtype=torch.float64)
    assert torch.allclose(bpd, nll / (64 * np.log(2)), atol=1e-5)
    assert f"mean over 5 images: {nll.mean():.4f} nats" in stderr


def test_evaluate_npz_to_a_csv_file_and_a_save_pretrained_folder(run, command):
    root, ckpt, model, digits = run
    model.save_pretrained(root / "folder")
    np.savez(root / "digits.npz", images=digits.numpy())
    command("evaluate", "--ckpt", "folder", "--images", "digits.npz", "--out", "scores.csv", cwd=root)
    rows = list(csv.DictReader((root / "scores.csv").open()))
    assert len(rows) == 5 and rows[0]["image"] == "digits.npz:0"
    got = torch.tensor([float(r["nll_nats"]) for r in rows], dtype=torch.float64)
    assert torch.allclose(got, -model.log_prob(digits).double(), atol=1e-4)


def exit_and_message(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in argv])
    return e.value.code, capsys.readouterr().err


def test_bad_input_exits_2_naming_the_problem(run, capsys, monkeypatch):
    root, ckpt, _, digits = run
    monkeypatch.chdir(root)
    (root / "bad").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(root / "bad" / "wide.png")
    (root / "grey").mkdir(exist_ok=True)
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(root / "grey" / "g.png")
    np.savez(root / "big.npz", images=digits.numpy() + 2)
    np.savez(root / "float.npz", images=digits.numpy().astype(np.float32))
    np.savez(root / "ok.npz", images=digits.numpy())
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "small_mask.png")
    cases = [
        (["evaluate", "--ckpt", ckpt, "--images", "bad"], "wide.png is an 8-bit grey PNG (mode L), 8x9"),
        (
            ["evaluate", "--ckpt", ckpt, "--images", "grey"],
            "g.png is an 8-bit grey PNG (mode L), 8x8: value 100 at (channel, row, column) (0, 0, 0) is "
            "not one of the model's 2 levels",
        ),
        (["evaluate", "--ckpt", ckpt, "--images", "big.npz"], r"big.npz: pixel values must lie in [0, 2)"),
        (["evaluate", "--ckpt", ckpt, "--images", "float.npz"], "images must be integers in [0, 2)"),
        (["evaluate", "--ckpt", ckpt, "--images", "nothing.npz"], "no file or folder at nothing.npz"),
        (["evaluate", "--ckpt", "missing.ckpt", "--images", "big.npz"], "no checkpoint at missing.ckpt"),
        (["sample", "--ckpt", ckpt, "--n", 0, "--out", "o"], "--n must be >= 1"),
        (
            ["complete", "--ckpt", ckpt, "--images", "ok.npz", "--keep", "bottom", "--out", "o"],
            "--keep 'bottom'",
        ),
    ]
    small = ["complete", "--ckpt", ckpt, "--images", "ok.npz", "--keep", "small_mask.png", "--out", "o"]
    cases.append((small, "mask small_mask.png is 4x4 pixels, the model's images 8x8"))
    for argv, message in cases:
        code, err = exit_and_message(argv, capsys)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)


def test_fit_is_the_default_subcommand(capsys):
    assert cli.main(["--recipe", "quickstart", "--dry-run"]) == 0
    assert "recipe quickstart" in capsys.readouterr().out
    assert cli.main(["fit", "--list"]) == 0
    assert "mnist_diagonal_bilstm_7l" in capsys.readouterr().out
    for fit in ([], ["fit"]):  # overrides before and after the options
        argv = ["model.hidden=5", "--recipe", "quickstart", "--out", "o", "trainer.max_steps=7", "--dry-run"]
        assert cli.main([*fit, *argv]) == 0
        config = yaml.safe_load(capsys.readouterr().out)
        assert (config["model"]["hidden"], config["trainer"]["max_steps"], config["out"]) == (5, 7, "o")


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    out = capsys.readouterr().out
    subcommands = ("fit", "test", "sample", "complete", "evaluate", "report", "sweep")
    assert e.value.code == 0 and all(f"    {s} " in out for s in subcommands), out


def test_fit_help_is_the_parser_of_fit(capsys):
    """One parser: ``pixel-lightning fit --help`` shows fit's own options (recipes/run.py --help too)."""
    for argv in (["fit", "--help"], ["--recipe", "x", "--help"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        out = capsys.readouterr().out
        assert e.value.code == 0 and out.startswith("usage: pixel-lightning fit"), out
        assert all(option in out for option in ("--recipe", "--config", "--list", "--dry-run", "--out"))


def test_a_tool_is_its_modules_arguments_and_main(monkeypatch, capsys):
    """``report`` and ``sweep`` run their module's ``add_arguments`` and ``main``; only the chosen tool's
    module is imported (the other names one that does not exist)."""
    tool = types.ModuleType("a_tool")
    tool.add_arguments = lambda p: (p.add_argument("dirs", nargs="+"), p.add_argument("--out"))
    tool.main = lambda args: print(args.dirs, args.out) or 3
    monkeypatch.setitem(sys.modules, "a_tool", tool)
    monkeypatch.setitem(cli.TOOLS, "report", ("a_tool", "a tool"))
    monkeypatch.setitem(cli.TOOLS, "sweep", ("no_such_module", "not imported"))
    assert cli.main(["report", "a", "--out", "o", "b"]) == 3
    assert capsys.readouterr().out == "['a', 'b'] o\n"


@pytest.mark.parametrize("tool", sorted(cli.TOOLS))
def test_report_and_sweep_are_subcommands(tool, capsys):
    """The real tools behind the one parser: their module's arguments, described by its docstring."""
    with pytest.raises(SystemExit) as e:
        cli.main([tool, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith(f"usage: pixel-lightning {tool}") and "--out" in out, out


LIGHT = [
    ("pixel-lightning", ["--help"]),
    ("pixel-lightning", ["--list"]),
    ("pixel-lightning", ["fit", "--help"]),
    ("pixel-lightning", ["sample", "--help"]),
    ("recipes/run.py", ["--help"]),
    ("recipes/run.py", ["--list"]),
]


@pytest.mark.parametrize(("program", "argv"), LIGHT, ids=[f"{p} {' '.join(a)}" for p, a in LIGHT])
def test_help_and_list_import_neither_torch_nor_lightning(program, argv):
    """What makes them answer at once, as the installed console script runs them (``from
    pixel_lightning.cli import main``); nor are the tools imported. The time: benchmarks/startup.py."""
    main = {
        "pixel-lightning": "from pixel_lightning.cli import main",
        "recipes/run.py": "import runpy; main = runpy.run_path('recipes/run.py')['main']",
    }[program]
    code = (
        f"import sys\n{main}\n"
        f"try:\n    code = main({argv!r})\nexcept SystemExit as e:\n    code = e.code\n"
        "print(code, sorted(m for m in sys.modules if m in ('torch', 'lightning') or '.tools.' in m))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 []", result.stdout[-2000:]
    assert ("quickstart" if "--list" in argv else "usage: pixel-lightning") in result.stdout


@pytest.mark.slow
def test_installed_command_runs_from_an_empty_directory(run, tmp_path, data_digits, data_write):
    """``pip install .`` (of a copy: the build leaves files beside the sources) into a fresh venv that
    takes the dependencies from the system site, then the console script from an empty directory:
    --help, sample, complete, evaluate, --list (the recipes are package data), a tiny fit and test of
    its checkpoint. The
    venv has no pip of its own (its bundled setuptools is too old to build a wheel), the system pip
    installs into it."""
    root, ckpt, _, _ = run
    src = tmp_path / "src"
    shutil.copytree(
        ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "runs")
    )
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True
    )
    python = str(venv / "bin" / "python")
    pip = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
    ]
    subprocess.run([*pip, str(src)], check=True, cwd=tmp_path, timeout=600)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    exe = str(venv / "bin" / "pixel-lightning")
    help_ = subprocess.run([exe, "--help"], cwd=empty, env=env, capture_output=True, text=True)
    assert help_.returncode == 0 and "evaluate" in help_.stdout, help_.stderr
    probe = "import pixel_lightning; print(pixel_lightning.__file__)"
    where = subprocess.run([python, "-c", probe], cwd=empty, env=env, capture_output=True, text=True)
    assert str(venv) in where.stdout  # the installed copy, not the clone
    argv = [exe, "sample", "--ckpt", str(ckpt), "--n", "2", "--out", "s"]
    result = subprocess.run(argv, cwd=empty, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    images = np.load(empty / "s" / "samples.npz")["images"]
    assert images.shape == (2, *SHAPE)
    argv = [exe, "complete", "--ckpt", str(ckpt), "--images", "s/samples.npz", "--keep", "top-half"]
    argv += ["--n", "2", "--out", "c"]
    result = subprocess.run(argv, cwd=empty, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    done = np.load(empty / "c" / "completions.npz")["completions"]  # (B, K, C, H, W)
    top = SHAPE[1] // 2
    assert (done[:, :, :, :top] == images[:, None, :, :top]).all()  # the kept pixels, exactly
    assert (empty / "c" / "completions.png").is_file()
    argv = [exe, "evaluate", "--ckpt", str(ckpt), "--images", "s/samples.npz"]
    result = subprocess.run(argv, cwd=empty, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    logp = pixel_lightning.load_model(ckpt).log_prob(torch.from_numpy(images).long())
    assert [float(r["nll_nats"]) for r in rows] == pytest.approx((-logp).tolist(), abs=1e-3)

    listed = subprocess.run([exe, "--list"], cwd=empty, env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "mnist_diagonal_bilstm_7l" in listed.stdout, listed.stderr  # packaged
    from exp_helpers import TINY, tiny_data

    data = tiny_data("mnist_pixelcnn", tmp_path / "data", data_digits[0][:20], data_write)
    fit = [exe, "--recipe", "mnist_pixelcnn", *TINY, *data, "logger=csv", "sample.n=0", "--out", "run"]
    result = subprocess.run(fit, cwd=empty, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    done = json.loads((empty / "run" / "metrics.json").read_text())
    argv = [exe, "test", "--ckpt", str(empty / "run" / "checkpoints" / "last.ckpt"), "--out", "t.json"]
    result = subprocess.run(argv, cwd=empty, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((empty / "t.json").read_text())["test/nll_nats"] > 0 and done["test/nll_nats"] > 0


def test_test_reevaluates_a_runs_checkpoint_on_its_data(command, tmp_path, data_digits, data_write):
    """A tiny fit, then ``pixel-lightning test`` on its best checkpoint: the run's own test figures back,
    from the run's config.yaml (data, limits); --split val; a checkpoint without a run config exits 2."""
    from exp_helpers import TINY, tiny_data

    data = tiny_data("mnist_pixelcnn", tmp_path / "data", data_digits[0][:20], data_write)
    fit = ["--recipe", "mnist_pixelcnn", *TINY, *data, "trainer.val_check_interval=1", "logger=csv"]
    _, fit_out, fit_err = command(*fit, "sample.n=0", "--out", "run", cwd=tmp_path)
    assert "was not set, defaulting" not in fit_out + fit_err  # checkpoints say they hold the whole state
    done = json.loads((tmp_path / "run" / "metrics.json").read_text())
    best = done["test_checkpoint"]
    assert Path(best).is_file() and "best" in Path(best).name

    # a fresh process converting the data again itself (`test` with a new data.cache_dir), piped: no bars
    fresh = f"data.cache_dir={tmp_path / 'fresh-cache'}"
    argv = [sys.executable, "-m", "pixel_lightning.cli", "test", "--ckpt", best, "--out", "test.json", fresh]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done_test = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, timeout=300)  # bytes:
    out, err = done_test.stdout, done_test.stderr  # text mode would turn a bar's carriage return into \n
    assert done_test.returncode == 0 and (tmp_path / "fresh-cache").is_dir(), err[-3000:]
    assert b"\r" not in out + err and b"Testing DataLoader" not in out + err  # no bars in a log file
    tested = json.loads((tmp_path / "test.json").read_text())
    for key in ("test/nll_nats", "test/bits_per_dim"):
        assert tested[key] == pytest.approx(done[key], rel=1e-6), key
    assert tested["split"] == "test" and tested["data"]["variant"] == done["variant"]

    _, out, _ = command("test", "--ckpt", best, "--split", "val", cwd=tmp_path)  # JSON to stdout
    val = json.loads(out)
    assert val["split"] == "val" and val["val/nll_nats"] > 0 and "test/nll_nats" not in val

    # a save_pretrained folder has no run directory: its config.json names the recipe, the data is passed
    pixel_lightning.load_model(best).save_pretrained(tmp_path / "folder")
    limits = ["trainer.limit_test_batches=1", "data.batch_size=2"]
    command("test", "--ckpt", "folder", *data, *limits, "--out", "f.json", cwd=tmp_path)
    from_folder = json.loads((tmp_path / "f.json").read_text())
    assert from_folder["test/nll_nats"] == pytest.approx(done["test/nll_nats"], rel=1e-6)

    alone = tmp_path / "alone.ckpt"
    shutil.copy(best, alone)  # no run directory around it
    code, _, err = command("test", "--ckpt", alone, cwd=tmp_path, check=False)
    assert code == 2 and "no run config" in err and "--config" in err and "Traceback" not in err
    code, _, err = command("test", "--ckpt", alone, "--config", tmp_path / "run" / "config.yaml",
                           "--split", "val", "--out", "v.json", cwd=tmp_path)  # fmt: skip
    assert code == 0 and json.loads((tmp_path / "v.json").read_text())["val/nll_nats"] == val["val/nll_nats"]
