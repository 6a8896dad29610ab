"""The bad-input table (issue 7): each bad command line of ``recipes/run.py`` exits non-zero with one
paragraph naming the problem and the fix, no traceback (unless --debug), no partial files, and existing
checkpoints untouched.

Each case is a separate process running ``recipes/run.py``'s ``main`` on its command line: a fork server
(tests/cli_forkserver.py) pays the imports once. One case also runs as ``python recipes/run.py`` proper.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.hidden=4",
    "model.layers=1",
    "logger=none",
    "sample.n=0",
    "data.batch_size=4",
    "trainer.max_steps=3",
    "trainer.enable_progress_bar=false",
    "threads=1",
]


class ForkServer:
    def __init__(self) -> None:
        env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "cli_forkserver.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def run(
        self, argv: list[str], logs: Path, cwd: Path | None = None, program: str = "recipes/run.py"
    ) -> tuple[int, str, str]:
        out, err = logs / "stdout.txt", logs / "stderr.txt"
        request = {"argv": argv, "stdout": str(out), "stderr": str(err), "cwd": str(cwd or ROOT)}
        request["program"] = program
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        code = json.loads(self.proc.stdout.readline())["code"]
        return code, out.read_text(), err.read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


def write_amat(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        (folder / f"binarized_mnist_{split}.amat").write_text("\n".join(lines) + "\n")
    return folder


def good_line() -> str:
    return " ".join(["0", "1"] * 392)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Data folders with one defect each, and a run directory holding a checkpoint of another model."""
    base = tmp_path_factory.mktemp("data")
    folders = {
        "out_of_range": write_amat(base / "range", [good_line(), good_line().replace("1", "2", 1)]),
        "truncated": write_amat(base / "truncated", [good_line(), good_line()[:301]]),
        "wrong_size": write_amat(base / "size", [" ".join(["0"] * 64)] * 2),
        "empty": base / "empty",
    }
    folders["empty"].mkdir()
    folders["missing"] = base / "missing"
    not_a_dir = base / "a_file"
    not_a_dir.write_text("x")
    folders["file"] = not_a_dir
    return folders


@pytest.fixture(scope="module")
def other_model_run(server, tmp_path_factory) -> Path:
    """A finished tiny quickstart run (hidden=4): its checkpoints are what later cases must not touch."""
    out = tmp_path_factory.mktemp("other") / "run"
    logs = tmp_path_factory.mktemp("logs")
    code, stdout, stderr = server.run(["--recipe", "quickstart", "--out", str(out), *TINY], logs)
    assert code == 0, stdout + stderr
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash (and the folders), to prove nothing changed."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def files(tree: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tree.items() if v != "dir"}


@dataclass
class Case:
    name: str
    argv: list[str]
    says: list[str]  # words the message must hold: the problem and the fix
    out: str = "new"  # "new": --out is a fresh path; "other": the run dir of another model; "given": in argv
    tiny: bool = True
    extra: list[str] = field(default_factory=list)


def amat(folder: str) -> list[str]:
    return [
        "--recipe",
        "mnist_pixelcnn",
        "data.source=amat",
        f"data.data_dir={{{folder}}}",
        "data.strict=false",
    ]


CASES = [
    Case("unknown recipe", ["--recipe", "mnist_pixelcnnn"], ["mnist_pixelcnnn", "quickstart"]),
    Case("no recipe", [], ["--recipe", "--list"], tiny=False),
    Case("unknown override key", ["--recipe", "quickstart", "model.hiden=8"], ["model.hiden", "hidden"]),
    Case("unknown section", ["--recipe", "quickstart", "optim.lr=0.1"], ["'optim'", "valid keys"]),
    Case("wrong value type", ["--recipe", "quickstart", "model.hidden=abc"], ["model.hidden", "int"]),
    Case("batch size 0", ["--recipe", "quickstart", "data.batch_size=0"], ["data.batch_size", ">= 1"]),
    Case("negative learning rate", ["--recipe", "quickstart", "model.lr=-0.1"], ["lr", "> 0"]),
    Case("negative max_steps", ["--recipe", "quickstart", "trainer.max_steps=-5"], ["max_steps", "-1"]),
    Case(
        "zero checkpoint interval",
        ["--recipe", "quickstart", "checkpoint.every_n_steps=0"],
        ["every_n_steps"],
    ),
    Case(
        "negative guard count", ["--recipe", "quickstart", "guard.max_skips=-1"], ["guard.max_skips", ">= 0"]
    ),
    Case("unknown logger", ["--recipe", "quickstart", "logger=foo"], ["foo", "wandb"]),
    Case("unknown dataset", ["--recipe", "quickstart", "data.name=svhn"], ["svhn", "cifar10"]),
    Case(
        "image shape vs model",
        ["--recipe", "quickstart", "model.image_shape=[1,8,8]"],
        ["image_shape", "mnist"],
    ),
    Case("levels mismatch", ["--recipe", "quickstart", "model.levels=256"], ["levels", "mnist"]),
    Case("unknown data source", ["--recipe", "quickstart", "data.source=tfrecord"], ["tfrecord", "amat"]),
    Case("missing data", amat("missing"), ["binarized_mnist_train.amat"]),
    Case("empty data dir", amat("empty"), ["binarized_mnist_train.amat"]),
    Case("pixel values out of range", amat("out_of_range"), ["0/1", "line 2", "download"]),
    Case("corrupt (truncated) data", amat("truncated"), ["line 2", "truncated", "download"]),
    Case("images of the wrong size", amat("wrong_size"), ["64 values", "784"]),
    Case(
        "unwritable run dir",
        ["--recipe", "quickstart", "--out", "{file}/run"],
        ["--out", "a_file"],
        out="given",
    ),
    Case(
        "run dir is a file", ["--recipe", "quickstart", "--out", "{file}"], ["--out", "a_file"], out="given"
    ),
    Case(
        "checkpoint of another model",
        ["--recipe", "quickstart", "model.hidden=6"],
        ["hidden=4", "hidden=6"],
        "other",
    ),
    Case(
        "other architecture",
        ["--recipe", "quickstart", "model.arch=row_lstm"],
        ["row_lstm", "pixelcnn"],
        "other",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, server, data, other_model_run, tmp_path):
    argv = [a.format(**{k: str(v) for k, v in data.items()}) for a in case.argv]
    if case.tiny:  # shrink the run, except for the keys the case itself sets
        argv += [t for t in TINY if not any(a.startswith(t.split("=")[0] + "=") for a in argv)]
    if case.out == "new":
        out = tmp_path / "run"
        argv += ["--out", str(out)]
    elif case.out == "other":
        out = other_model_run
        argv += ["--out", str(out)]
    else:
        out = Path(argv[argv.index("--out") + 1])
    logs = tmp_path / "logs"
    logs.mkdir()
    before = snapshot(out)
    data_before = snapshot(data["empty"].parent)

    code, stdout, stderr = server.run(argv, logs)

    assert code == 2, f"exit {code}\n{stdout}\n{stderr}"
    assert "Traceback" not in stderr + stdout
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1, stderr  # one paragraph (then the --debug hint), at the end
    assert lines[errors[0] :] == [lines[errors[0]], "(run with --debug for the traceback)"], stderr
    for word in case.says:
        assert word in lines[errors[0]], f"{word!r} not in: {lines[errors[0]]}"
    assert snapshot(out) == before  # no partial files; existing checkpoints untouched
    # nor any file in the data folders (the data package may leave an empty arrow/ cache folder)
    assert files(snapshot(data["empty"].parent)) == files(data_before)


def test_debug_shows_the_traceback(server, tmp_path):
    code, stdout, stderr = server.run(["--recipe", "quickstart", "model.hiden=8", "--debug"], tmp_path)
    assert code == 1 and "Traceback" in stderr and "ConfigError" in stderr


def test_the_real_script_reports_the_same_way(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "recipes/run.py", "--recipe", "nope", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "nope" in result.stderr
    assert not (tmp_path / "run").exists()


def test_an_internal_error_exits_1_with_its_traceback_and_deletes_nothing(server, tmp_path):
    """Not the user's input: a callback failing inside the run (EarlyStopping on a metric nobody logs).
    Exit 1 with the traceback; the run directory keeps the user's files."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    stop = "callbacks=[{class_path: lightning.pytorch.callbacks.EarlyStopping, init_args: {monitor: nope}}]"
    argv = ["--recipe", "quickstart", *TINY, stop, "trainer.val_check_interval=2"]
    argv += ["trainer.limit_val_batches=1", "--out", str(out)]
    logs = tmp_path / "logs"
    logs.mkdir()
    code, stdout, stderr = server.run(argv, logs)
    assert code == 1, stdout + stderr
    assert "Traceback" in stderr and "nope" in stderr
    assert (out / "notes.txt").read_text() == "mine"
