"""Every input a user can hand the commands (issue 23): a clear error or the right reading, never a
traceback or a silent misreading.

The table runs ``pixel-lightning evaluate/complete/sample/test`` in-process (``cli.main``, as
tests/test_cli.py's bad-input test does: each case costs milliseconds, not a process's imports) on tiny
models, and checks the exit status, that the message names the file and the fix, that good variants read
the right values, and that no file the user made is changed or deleted. Then: the zero budgets, NaN
weights, the empty batch, the card of a non-best checkpoint, a user's own PNG folder, a read-only data
folder and an unreachable Hub.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SINGLE_SCALE, lightning_checkpoint, tiny_model
from PIL import Image

import pixel_lightning
from pixel_lightning import cli
from pixel_lightning.errors import CheckpointError

BIN, GREY, RGB = (1, 8, 8), (1, 4, 4), (3, 4, 4)  # binary model; 256-level grey and RGB models


def png16_rgb(path: Path, values: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (Pillow writes none): values uint16 (H, W, 3)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = values.shape
    raw = b"".join(b"\x00" + values[r].astype(">u2").tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    path.write_bytes(data)


def png(path: Path, array: np.ndarray, **save) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A user's folder: three tiny models (checkpoint, save_pretrained folders), broken copies of them, and
    images in every form, good and bad. Returns (root, models, expected images of the good inputs)."""
    root = tmp_path_factory.mktemp("inputs")
    binary = tiny_model("pixelcnn", BIN, 2, hidden=4, layers=1, std=0.6).float()
    grey = tiny_model("pixelcnn", GREY, 256, hidden=4, layers=1, std=0.3).float()
    rgb = tiny_model("pixelcnn", RGB, 256, hidden=4, layers=1, std=0.3).float()
    lightning_checkpoint(binary, root / "run" / "checkpoints" / "last.ckpt")
    (root / "run" / "metrics.json").write_text(json.dumps({"dataset": "mnist", "variant": "tiny"}))
    grey.save_pretrained(root / "grey256")
    rgb.save_pretrained(root / "rgb256")

    nan = tiny_model("pixelcnn", BIN, 2, hidden=4, layers=1, std=0.6).float()
    with torch.no_grad():
        next(nan.parameters())[0].fill_(float("nan"))
    lightning_checkpoint(nan, root / "run" / "checkpoints" / "nan.ckpt")
    nan.save_pretrained(root / "nan_folder")
    data = (root / "run" / "checkpoints" / "last.ckpt").read_bytes()
    (root / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    ckpt = torch.load(root / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    name = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][name] = torch.zeros(3)  # weights of another shape than the recorded model's
    torch.save(ckpt, root / "reshaped.ckpt")
    (root / "broken.yaml").write_text("model: {arch: [\n")
    rgb.save_pretrained(root / "garbage_weights")
    (root / "garbage_weights" / "model.safetensors").write_bytes(b"not safetensors at all" * 10)
    rgb.save_pretrained(root / "bad_json")
    (root / "bad_json" / "config.json").write_text('{"arch": "pixelcnn", ')
    rgb.save_pretrained(root / "list_json")
    (root / "list_json" / "config.json").write_text('["pixelcnn"]')

    digits = binary.sample(3, generator=torch.Generator().manual_seed(7))  # (3, 1, 8, 8) in {0, 1}
    for k, d in enumerate(digits):
        png(root / "imgs" / f"d{k}.png", (d[0].numpy() * 255).astype(np.uint8))
    np.savez(root / "digits.npz", images=digits.numpy())
    (root / "corrupt").mkdir()
    (root / "corrupt" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04" + b"garbage" * 20)
    np.savez(root / "empty.npz", images=np.zeros((0, *BIN), np.uint8))
    png(root / "g16_1000.png", np.full((8, 8), 1000, np.uint16))  # was read as white on the binary model
    png(root / "g16_25600.png", np.full((4, 4), 25600, np.uint16))  # ~100 in 8 bits, but not exactly
    level = np.arange(16, dtype=np.uint16).reshape(4, 4) * 17  # 256-level grey values
    png(root / "g16_exact.png", level * 257)  # 8-bit values stored in 16 bits: exact
    png(root / "red.png", np.tile(np.array([255, 0, 0], np.uint8), (8, 8, 1)))
    png(root / "grey_as_rgb.png", np.repeat((digits[0, 0].numpy() * 255).astype(np.uint8)[..., None], 3, -1))
    colour = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    png(root / "rgba_half.png", np.concatenate([colour, np.full((4, 4, 1), 128, np.uint8)], -1))
    png(root / "rgba_opaque.png", np.concatenate([colour, np.full((4, 4, 1), 255, np.uint8)], -1))
    png(root / "grey4.png", level.astype(np.uint8))
    png16_rgb(root / "rgb16.png", colour.astype(np.uint16) * 257)
    png(root / "jpeg.png", colour, format="JPEG")
    pal = Image.frombytes("P", (8, 8), digits[1, 0].numpy().astype(np.uint8).tobytes())  # indices 0, 1
    pal.putpalette([0, 0, 0, 255, 255, 255])
    pal.save(root / "palette_transparent.png", transparency=0)
    pal.save(root / "palette.png")
    np.savez(root / "channels_last.npz", images=colour[None].astype(np.int64))
    png(root / "mask_grey.png", np.full((8, 8), 100, np.uint8))
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :3] = 255
    png(root / "mask_ok.png", mask)
    (root / "notes.txt").write_text("not an image")
    expected = {
        "single": digits[:1],
        "grey_as_rgb": digits[:1],
        "g16_exact": torch.from_numpy(np.arange(16).reshape(1, 1, 4, 4) * 17),
        "rgba_opaque": torch.from_numpy(colour.transpose(2, 0, 1)[None].astype(np.int64)),
        "palette": digits[1:2],
    }
    return root, {"run/checkpoints/last.ckpt": binary, "grey256": grey, "rgb256": rgb}, expected


LAST, NAN = "run/checkpoints/last.ckpt", "run/checkpoints/nan.ckpt"
CASES: dict[str, tuple[list[str], int, tuple[str, ...]]] = {}


def case(name: str, command: str, status: int, *needles: str) -> None:
    """A command line (``LAST``/``NAN``: the checkpoints), its exit status, substrings of its message."""
    CASES[name] = (command.replace("LAST", LAST).replace("NAN", NAN).split(), status, needles)


# corrupt or unreadable files
case(
    "corrupt-png", "evaluate --ckpt LAST --images corrupt", 2, "c.png is not a readable PNG", "save it again"
)
case(
    "corrupt-npz", "evaluate --ckpt LAST --images corrupt.npz", 2, "corrupt.npz is not a readable", "np.savez"
)
case("empty-npz", "evaluate --ckpt LAST --images empty.npz", 2, "empty.npz holds no images")
case(
    "batch-size-0", "evaluate --ckpt LAST --images digits.npz --batch-size 0", 2, "--batch-size must be >= 1"
)
case(
    "garbage-safetensors",
    "evaluate --ckpt garbage_weights --images grey4.png",
    2,
    "cannot read garbage_weights/model.safetensors",
    "save the folder again",
)
case(
    "bad-config-json", "sample --ckpt bad_json --out o", 2, "bad_json/config.json as JSON", "save the folder"
)
case("list-config-json", "sample --ckpt list_json --out o", 2, "holds a JSON list, not an object", "save the")
case(
    "truncated-ckpt", "sample --ckpt truncated.ckpt --out o", 2, "cannot read truncated.ckpt as a checkpoint"
)
case("reshaped-ckpt", "sample --ckpt reshaped.ckpt --out o", 2, "reshaped.ckpt: its weights do not match")
case("broken-config", "test --ckpt LAST --config broken.yaml", 2, "broken.yaml is not valid YAML", "fix the")
case("out-in-a-file", "sample --ckpt LAST --n 1 --out notes.txt/o", 2, "cannot write to --out notes.txt/o")
case(
    "out-is-a-file", "complete --ckpt LAST --images digits.npz --out notes.txt", 2, "notes.txt (it is a file)"
)
case("not-an-image", "evaluate --ckpt LAST --images notes.txt", 2, "notes.txt is neither a .png nor an .npz")
case(
    "jpeg-named-png",
    "evaluate --ckpt rgb256 --images jpeg.png",
    2,
    "jpeg.png is a JPEG file",
    "save it as PNG",
)
case(
    "out-over-input",
    "evaluate --ckpt LAST --images digits.npz --out digits.npz",
    2,
    "would overwrite the images",
)
# non-finite weights: every command that loads a model
case("nan-sample", "sample --ckpt NAN --out o", 2, "nan.ckpt holds non-finite weights", "earlier checkpoint")
case("nan-evaluate", "evaluate --ckpt NAN --images imgs", 2, "nan.ckpt holds non-finite weights")
case("nan-complete", "complete --ckpt NAN --images imgs --out o", 2, "nan.ckpt holds non-finite weights")
case("nan-test", "test --ckpt NAN", 2, "nan.ckpt holds non-finite weights")
case("nan-folder", "sample --ckpt nan_folder --out o", 2, "model.safetensors holds non-finite weights")
# silent misreadings, now refused
case(
    "16-bit-on-binary",
    "evaluate --ckpt LAST --images g16_1000.png",
    2,
    "g16_1000.png is a 16-bit grey PNG (mode I;16), 8x8",
    "value 1000",
    "binarize it",
)
case(
    "16-bit-inexact",
    "evaluate --ckpt grey256 --images g16_25600.png",
    2,
    "g16_25600.png is a 16-bit grey PNG",
    "0, 257, 514",
    "quantize",
)
case(
    "16-bit-rgb",
    "evaluate --ckpt rgb256 --images rgb16.png",
    2,
    "rgb16.png is a 16-bit RGB PNG",
    "8 bits per",
)
case(
    "rgba-transparent",
    "evaluate --ckpt rgb256 --images rgba_half.png",
    2,
    "rgba_half.png is an 8-bit RGBA PNG",
    "transparency",
    "without alpha",
)
case(
    "palette-alpha", "evaluate --ckpt LAST --images palette_transparent.png", 2, "palette PNG", "transparency"
)
case("red-on-binary", "evaluate --ckpt LAST --images red.png", 2, "red.png is an 8-bit RGB PNG", "in colour")
case(
    "grey-on-rgb",
    "evaluate --ckpt rgb256 --images grey4.png",
    2,
    "grey4.png is an 8-bit grey PNG",
    "reads RGB",
    "Image.convert('RGB')",
)
case(
    "channels-last", "evaluate --ckpt rgb256 --images channels_last.npz", 2, "channels_last.npz", "transpose"
)
case(
    "mask-grey",
    "complete --ckpt LAST --images digits.npz --keep mask_grey.png --out o",
    2,
    "mask mask_grey.png",
    "value 100",
    "binarize",
)
# good variants: read exactly (the CSV is compared with log_prob of the expected images)
case("single", "evaluate --ckpt LAST --images imgs/d0.png", 0)
case("grey_as_rgb", "evaluate --ckpt LAST --images grey_as_rgb.png", 0)
case("g16_exact", "evaluate --ckpt grey256 --images g16_exact.png", 0)
case("rgba_opaque", "evaluate --ckpt rgb256 --images rgba_opaque.png", 0)
case("palette", "evaluate --ckpt LAST --images palette.png", 0)
case("mask_ok", "complete --ckpt LAST --images digits.npz --keep mask_ok.png --n 1 --out o", 0)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file the user made (outputs under o/ excluded)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "o"
    }


@pytest.mark.parametrize("case", list(CASES))
def test_each_input_is_read_exactly_or_refused_naming_the_file(case, world, capsys, monkeypatch):
    root, models, expected = world
    argv, status, needles = CASES[case]
    monkeypatch.chdir(root)
    before = tree_hashes(root)
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code == status, (argv, err[-2000:])
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert tree_hashes(root) == before  # nothing the user made changed or deleted
    if case in expected:  # the values read are the image's own: the CSV equals log_prob of them
        rows = list(csv.DictReader(io.StringIO(out)))
        model = models[argv[2]]
        nll = -model.log_prob(expected[case]).double()
        assert len(rows) == len(nll) and rows[0]["image"] == Path(argv[4]).name
        assert torch.allclose(torch.tensor([float(r["nll_nats"]) for r in rows], dtype=torch.float64), nll)


def test_an_offline_hub_id_fails_at_once_with_the_offline_hint(monkeypatch):
    """Not marked offline but unreachable: one quick probe, then the cache only (no download retries)."""
    from huggingface_hub import constants

    from pixel_lightning import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # connection refused
    calls = []
    real = hub.hf_hub_download

    def spy(*args, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(hub, "hf_hub_download", spy)
    with pytest.raises(CheckpointError, match="not reachable .offline.*HF_HUB_OFFLINE=1"):
        pixel_lightning.load_model("nobody/no-such-model-here")
    assert calls == [True]  # the cache looked up, no network download (which retries for ~25 s)


# ----------------------------------------------------------------------------- untrained or broken models


@pytest.mark.parametrize(
    "key", ["max_steps=0", "max_epochs=0", "limit_train_batches=0", "limit_train_batches=0.0"]
)
def test_budgets_that_train_nothing_are_refused(key, tmp_path, capsys):
    from pixel_lightning import runner

    with pytest.raises(SystemExit) as e:
        runner.main(["--recipe", "quickstart", f"trainer.{key}", "logger=none", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"trainer.{key.split('=')[0]}=0" in err and "trains nothing" in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


def test_nan_weights_are_refused_when_loading(tmp_path):
    model = tiny_model("row_lstm", (1, 4, 4), 2, hidden=3, layers=1).float()
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("inf")
    model.save_pretrained(tmp_path / "m")
    lightning_checkpoint(model, tmp_path / "m.ckpt")
    for source in (tmp_path / "m", tmp_path / "m.ckpt"):
        with pytest.raises(CheckpointError, match="holds non-finite weights"):
            pixel_lightning.load_model(source)


@pytest.mark.parametrize("arch", SINGLE_SCALE)
def test_log_prob_of_an_empty_batch_is_empty(arch):
    """(Row LSTM's input-to-state convolution divided by the batch size: ZeroDivisionError.)"""
    model = tiny_model(arch, (3, 4, 4), 4, hidden=3, layers=1)
    out = model.log_prob(torch.zeros(0, 3, 4, 4, dtype=torch.long))
    assert out.shape == (0,) and out.dtype == torch.float64


# ----------------------------------------------------------------------------- provenance


def test_card_of_a_non_best_checkpoint_claims_no_test_figure(tmp_path):
    """A run tested its best checkpoint (78.9079 nats after 300 steps); its step-270 checkpoint's card and
    config.json give step 270 and no test figure; the best one's give the test and validation figures."""
    run = tmp_path / "run"
    best_name, step_name = "best-001-0000300.ckpt", "step=000000270.ckpt"
    model = tiny_model("pixelcnn", (1, 4, 4), 2, hidden=3, layers=1).float()
    for name, step in ((best_name, 300), (step_name, 270)):
        path = lightning_checkpoint(model, run / "checkpoints" / name)
        ckpt = torch.load(path, weights_only=True)
        ckpt["global_step"], ckpt["epoch"] = step, 1
        best_state = {"monitor": "val/nll_nats", "best_model_score": torch.tensor(80.25)}
        periodic = {"monitor": "step", "best_model_score": torch.tensor(step), "best_model_path": str(path)}
        best = {**best_state, "best_model_path": str(run / best_name)}
        ckpt["callbacks"] = {"ModelCheckpoint{best}": best, "PeriodicCheckpoint": periodic}  # as a run writes
        torch.save(ckpt, path)
    metrics = {
        "recipe": "mnist_pixelcnn",
        "dataset": "mnist",
        "variant": "lecun-idx-threshold",
        "test/nll_nats": 78.9079,
        "test/bits_per_dim": 0.1452,
        "global_step": 300,
        "epochs": 1,
        "test_checkpoint": str(run / "checkpoints" / best_name),
        "paper": {"test": 81.3, "train": None, "unit": "nats", "where": "binarized MNIST"},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    cards = {}
    for name in (step_name, best_name):
        pixel_lightning.load_model(run / "checkpoints" / name).save_pretrained(tmp_path / name)
        cards[name] = (tmp_path / name / "README.md").read_text()
        config = json.loads((tmp_path / name / "config.json").read_text())["run"]
        assert config["global_step"] == (270 if name == step_name else 300)
        assert ("test/nll_nats" in config) == (name == best_name) and "step" not in config
    card = cards[step_name]
    assert "78.9079" not in card and "trained for 270 steps" in card and "80.25" not in card
    assert f"not recorded for this checkpoint (`{step_name}`, step 270)" in card
    assert f"the run's test figure belongs to `{best_name}`" in card
    best = cards[best_name]
    assert "test negative log-likelihood: 78.9079 nats" in best and "trained for 300 steps" in best
    assert "validation `val/nll_nats` of these weights: 80.2500" in best


def test_a_users_own_png_folder_is_user_data_without_the_papers_figure(tmp_path, data_write):
    """ImageNet's PNG source on a folder that is not the release (strict=False): variant user-png, and
    the run's summary prints no paper figure beside it (the release's variant keeps it: the control)."""
    from pixel_lightning.config import load_config
    from pixel_lightning.data import ImageNetDataModule
    from pixel_lightning.runner import summary

    images = data_write.photos(6)
    for folder in ("train_32x32", "valid_32x32"):
        data_write.pngs(tmp_path / "d" / folder, images, [f"{k}.png" for k in range(6)])
    dm = ImageNetDataModule(32, data_dir=tmp_path / "d", source="png", strict=False, val_size=2)
    dm.prepare_data()
    assert dm.variant == "user-png"
    cfg = load_config("imagenet32_row_lstm")
    metrics = {"test/bits_per_dim": 5.1, "global_step": 3, "seconds": {"total": 1}}
    assert "3.86" not in summary(cfg, {**metrics, "variant": dm.variant})
    assert "3.86" in summary(cfg, {**metrics, "variant": "oord-downsampled-png"})


# ----------------------------------------------------------------------------- read-only data


def immutable(path: Path, on: bool) -> bool:
    """chattr +i / -i (a folder nobody, root included, can write): False where unsupported."""
    result = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    return result.returncode == 0


def test_a_read_only_data_folder_works_and_a_read_only_cache_dir_is_named(
    tmp_path, monkeypatch, data_digits, data_write
):
    from pixel_lightning.data import BinarizedMNISTDataModule, DataError

    data = tmp_path / "shared"
    data.mkdir()
    for split in ("train", "valid", "test"):
        data_write.amat(data / f"binarized_mnist_{split}.amat", (data_digits[0][:8] > 127).astype(np.uint8))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if not immutable(data, True):
        pytest.skip("chattr +i is not available here: no read-only folder to test with")
    try:
        before = sorted(p.name for p in data.iterdir())
        dm = BinarizedMNISTDataModule(data_dir=data, source="amat", strict=False, val_size=0)
        dm.setup()
        x, _ = next(iter(dm.train_dataloader()))
        assert x.shape[1:] == (1, 28, 28) and sorted(p.name for p in data.iterdir()) == before
        assert any(
            (tmp_path / "cache" / "pixel-lightning").iterdir()
        )  # the conversion went to the user cache
        with pytest.raises(DataError, match=r"cannot write the converted data .*set data.cache_dir"):
            BinarizedMNISTDataModule(
                data_dir=data, source="amat", strict=False, cache_dir=data / "arrow"
            ).setup()
    finally:
        immutable(data, False)


# ----------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_inside_lightning_exits_130_not_1(capsys):
    """Lightning's Trainer turns a KeyboardInterrupt into ``sys.exit(1)``: cli_errors reports it as 130."""
    from pixel_lightning.errors import cli_errors

    with pytest.raises(SystemExit) as e, cli_errors():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemExit(1)  # noqa: B904 - as Lightning does it
    assert e.value.code == 130 and "interrupted (Ctrl-C)" in capsys.readouterr().err


@pytest.mark.slow  # > 10 s: a real process and a real SIGINT, as tests/test_preemption.py's SIGTERM test
def test_ctrl_c_checkpoints_the_current_step_and_exits_130(tmp_path):
    import signal

    from test_preemption import finish, read_until_step, start

    from pixel_lightning.reliability import checkpoints as ck

    out = tmp_path / "run"
    proc = start(out, "--steps", "100000", "--every", "100000", "--sleep", "0.2")
    step_at_signal = int(read_until_step(proc, 4)[-1].split()[1])
    proc.send_signal(signal.SIGINT)
    code, text, _ = finish(proc, timeout=60)
    assert code == 130 and "interrupted (Ctrl-C)" in text and "Traceback" not in text, text
    saved = [p for p in (out / "checkpoints").iterdir() if ck.STEP_RE.match(p.name)]
    assert len(saved) == 1 and step_at_signal <= ck.inspect_checkpoint(saved[0]).step <= step_at_signal + 1


# ----------------------------------------------------------------------------- messages


def test_sample_and_complete_draw_no_bars_off_a_terminal(world, capsys, monkeypatch):
    root, _, _ = world
    monkeypatch.chdir(root)
    for argv in (
        f"sample --ckpt {LAST} --n 2 --out o",
        f"complete --ckpt {LAST} --images imgs --n 1 --out o",
    ):
        assert cli.main(argv.split()) == 0
        out, err = capsys.readouterr()
        assert "\r" not in out + err and "sampling" not in err, err


def test_the_val_line_eta_follows_the_budget_that_ends_first(capsys, monkeypatch):
    """max_steps would end in 15 minutes at this pace, max_time in 1:45: the ETA is 0:01:45."""
    import time
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    from pixel_lightning.callbacks import ValidationLine

    timer = Timer(duration="00:00:10:00")
    monkeypatch.setattr(timer, "time_remaining", lambda stage="train": 105.0)
    trainer = SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        callback_metrics={},
        global_step=100,
        current_epoch=0,
        estimated_stepping_batches=1000,
        callbacks=[timer],
    )
    line = ValidationLine()
    line._start = (time.perf_counter() - 100.0, 0)  # 100 steps in 100 s: 900 s left by steps
    line.on_validation_end(trainer, None)
    assert "ETA 0:01:45" in capsys.readouterr().out
    trainer.callbacks = []  # no max_time: the steps' ETA
    line.on_validation_end(trainer, None)
    assert "ETA 0:15:0" in capsys.readouterr().out


def test_wandb_is_not_given_the_anonymous_setting(tmp_path, monkeypatch):
    """wandb 0.31 prints "The anonymous setting has no effect" for any ``anonymous=`` passed to
    ``wandb.init``, None included (what Lightning's WandbLogger passes); the call is recorded, not made."""
    import wandb

    from pixel_lightning.wandb_record import RunWandbLogger

    given = {}

    def init(**kwargs):
        given.update(kwargs)
        raise RuntimeError("recorded")

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb, "run", None)
    with pytest.raises(RuntimeError, match="recorded"):
        _ = RunWandbLogger(save_dir=str(tmp_path), mode="offline", project="p").experiment
    assert given["project"] == "p" and "anonymous" not in given
