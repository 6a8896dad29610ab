"""The architecture registry (pixel_lightning/models/registry.py, issue 21): the one list of architectures,
networks inside the Lightning wrapper, weights saved before that split, and a user's own architecture
registered in a module of its own and run through the real command line with no other edit."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import ARCHS, SINGLE_SCALE, lightning_checkpoint, tiny_model
from safetensors.torch import save_file

import pixel_lightning
from pixel_lightning.errors import CheckpointError
from pixel_lightning.hub import build_from_config
from pixel_lightning.models import PixelNetwork, registry
from pixel_lightning.models.base import LEGACY_NETWORK_KEYS

ROOT = Path(__file__).resolve().parents[1]


# -- one list ---------------------------------------------------------------------------------------------
def literal_name_lists(root: Path, names: set[str]) -> list[str]:
    """``file:line`` of every list, tuple, set or dict literal under ``root`` holding two or more of
    ``names`` as string constants (elements, keys or values): a second list of the architectures."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.List | ast.Tuple | ast.Set):
                items = node.elts
            elif isinstance(node, ast.Dict):
                items = [k for k in node.keys if k is not None] + node.values
            else:
                continue
            held = {i.value for i in items if isinstance(i, ast.Constant) and i.value in names}
            if len(held) >= 2:
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} {sorted(held)}")
    return found


def test_no_literal_list_of_architecture_names_in_the_package():
    assert {"pixelcnn", "row_lstm", "diagonal_bilstm", "multiscale"} <= set(registry.names())
    assert literal_name_lists(ROOT / "pixel_lightning", set(registry.names())) == []


def test_the_literal_check_catches_each_kind_of_list(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        'A = ("pixelcnn", "row_lstm")\nB = {"row_lstm": 1, "x": "multiscale"}\nC = ["x"]\n'
    )
    (pkg / "b.py").write_text('def f(arch):\n    return arch in {"diagonal_bilstm", "pixelcnn"}\n')
    found = literal_name_lists(pkg, set(registry.names()))
    assert [f.split(" ")[0] for f in found] == ["pkg/a.py:1", "pkg/a.py:2", "pkg/b.py:2"]


def test_each_entry_is_its_class_and_the_bases_are_the_single_networks():
    for name, a in registry.architectures().items():
        assert a.model_class.arch == name and a.config_class is a.model_class.config_class
        assert sys.modules[a.module].__dict__[a.model_class.__name__] is a.model_class
        assert pixel_lightning.ARCHITECTURES[name] is a.model_class
        if a.is_base:
            assert issubclass(a.network_class, PixelNetwork)
    assert SINGLE_SCALE == registry.bases() and "multiscale" not in registry.bases()
    assert sorted(pixel_lightning.ARCHITECTURES) == ARCHS == registry.names()
    with pytest.raises(TypeError):
        pixel_lightning.ARCHITECTURES["x"] = None  # a view: registering is the decorator's job
    with pytest.raises(ValueError, match=r"unknown architecture 'nope'; choose one of \['diagonal_bilstm'"):
        pixel_lightning.build_model("nope")
    with pytest.raises(ValueError, match="already registered by pixel_lightning.models.pixelcnn"):
        registry.register("pixelcnn", title="Another")(
            type("Other", (pixel_lightning.AutoregressiveImageModel,), {})
        )
    assert registry.get("pixelcnn").model_class.__name__ == "PixelCNN"  # the refused class changed nothing


def test_docs_table_lists_the_registry():
    text = (ROOT / "docs" / "api.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| `(\w+)` \| (yes|no) \|$", text, re.M)
    want = [
        (n, a.title, a.model_class.__name__, "yes" if a.is_base else "no")
        for n, a in registry.architectures().items()
    ]
    assert sorted((n, t.strip(), c, b) for n, t, c, b in rows) == sorted(want)


# -- networks inside the Lightning wrapper ----------------------------------------------------------------
def test_multiscale_owns_networks_not_lightning_modules():
    model = tiny_model("multiscale", (1, 4, 4), 2, base="pixelcnn", low_res=2, cond_maps=2, layers=1)
    wrappers = [
        n for n, m in model.named_modules() if isinstance(m, pixel_lightning.AutoregressiveImageModel)
    ]
    assert wrappers == [""]  # the model itself, no LightningModule inside it
    assert isinstance(model.low, PixelNetwork) and isinstance(model.full, PixelNetwork)
    assert type(model.low) is registry.get("pixelcnn").network_class


def old_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as ea0e511 wrote it for a single-scale model: the network's parameters at the top
    (``first.weight``, ``stack.layers.0...``, ``head.1.weight``), not under ``net.``."""
    old = {k.removeprefix("net."): v for k, v in state.items()}
    assert any(k.startswith(LEGACY_NETWORK_KEYS) for k in old) and not any(k.startswith("net.") for k in old)
    return old


@pytest.mark.parametrize("arch", SINGLE_SCALE)
def test_weights_in_the_old_key_layout_still_load(arch, tmp_path):
    """A Lightning checkpoint and a save_pretrained folder written before networks were modules of
    their own load with the same function; without the migration they are refused (the control)."""
    model = tiny_model(arch, (1, 4, 4), 2, layers=1).float()
    x = torch.randint(0, 2, (5, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    want = model.log_prob(x)
    old = old_layout(model.state_dict())
    # a Lightning checkpoint: the state dict renamed inside the file the Trainer wrote
    ckpt_path = lightning_checkpoint(model, tmp_path / "old.ckpt")
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["state_dict"] = old
    torch.save(ckpt, ckpt_path)
    # a save_pretrained folder: its safetensors file rewritten with the old names
    model.save_pretrained(tmp_path / "old")
    save_file({k: v.contiguous() for k, v in old.items()}, str(tmp_path / "old" / "model.safetensors"))
    for source in (ckpt_path, tmp_path / "old"):
        assert torch.equal(pixel_lightning.load_model(source).log_prob(x), want), source
    fresh = tiny_model(arch, (1, 4, 4), 2, layers=1, seed=1).float()
    fresh.load_state_dict(old)  # strict: every old key found its new place
    assert torch.equal(fresh.eval().log_prob(x), want)
    control = torch.nn.Module()
    control.net = tiny_model(arch, (1, 4, 4), 2, layers=1).net
    with pytest.raises(RuntimeError, match="Missing key"):
        control.load_state_dict(old)


# -- a user's own architecture ----------------------------------------------------------------------------
TOY = '''
"""A toy architecture outside pixel_lightning: one 1x1 mask-B convolution per layer."""

import torch.nn.functional as F
from torch import nn

from pixel_lightning.models.base import AutoregressiveImageModel
from pixel_lightning.models.network import PixelNetwork
from pixel_lightning.models.registry import register
from pixel_lightning.nn.masked_conv import MaskedConv2d


class ToyLayer(nn.Module):
    def __init__(self, hidden, colours):
        super().__init__()
        self.conv = MaskedConv2d(2 * hidden, 2 * hidden, 1, "B", colours)

    def forward(self, x, cond=None):
        return self.conv(F.relu(x))  # (B, 2h, H, W)

    def begin_cache(self, batch, H, W, cond):
        return {"conv": self.conv.point()}

    def step(self, cache, x, i, j):
        return cache["conv"](F.relu(x))  # (B, 2h) at (i, j)


class ToyNetwork(PixelNetwork):
    def make_layer(self, config, index):
        return ToyLayer(config.hidden, config.image_shape[0])


@register("toy", title="Toy masked conv")
class Toy(AutoregressiveImageModel):
    network_class = ToyNetwork
'''


def toy_env(folder: Path | None) -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([str(folder)] if folder else [])])
    env.pop("SLURM_JOB_ID", None)
    return env


def test_checkpoint_of_a_module_that_cannot_be_imported_names_it_and_the_fix():
    config = {"arch": "toy_gone", "module": "no_such_toy_arch_module", "model": {"hidden": 4}}
    with pytest.raises(CheckpointError, match=r"defined in the module 'no_such_toy_arch_module'.*PYTHONPATH"):
        build_from_config(config, "x.ckpt")
    assert "toy_gone" not in registry.names()


def test_an_import_that_fails_is_a_config_error_naming_the_module():
    from pixel_lightning.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"imports: cannot import 'no_such_toy_arch_module'.*PYTHONPATH"):
        load_config("quickstart", ["imports=[no_such_toy_arch_module]", "model.arch=toy"])
    with pytest.raises(ConfigError, match=r"model.arch='toy' is unknown; choose one of \['diagonal_bilstm'"):
        load_config("quickstart", ["model.arch=toy"])  # without the import: not registered


@pytest.mark.slow
def test_a_toy_architecture_in_its_own_module_runs_through_the_real_cli(tmp_path):
    """fit (recipes/run.py with ``imports=[toy_arch]``), test and sample (``python -m
    pixel_lightning.cli``), save_pretrained/load_model, with nothing but the module on PYTHONPATH; the
    same commands without it fail with an error naming the module."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "toy_arch.py").write_text(textwrap.dedent(TOY))
    out, env = tmp_path / "run", toy_env(plugins)

    def run(*argv: str, env: dict[str, str] = env) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )

    fit = run(
        str(ROOT / "recipes" / "run.py"), "--recipe", "quickstart", "--out", str(out), "imports=[toy_arch]",
        "model.arch=toy", "model.hidden=2", "model.layers=1", "model.head_channels=4", "data.batch_size=8",
        "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=csv",
        "sample.n=0", "trainer.enable_progress_bar=false",
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = out / "checkpoints" / "last.ckpt"
    meta = torch.load(ckpt, weights_only=True)["pixel_lightning"]
    assert (meta["arch"], meta["module"]) == ("toy", "toy_arch")
    test = run("-m", "pixel_lightning.cli", "test", "--ckpt", str(ckpt), "--out", str(tmp_path / "t.json"))
    assert test.returncode == 0, test.stderr[-3000:]
    assert json.loads((tmp_path / "t.json").read_text())["test/nll_nats"] > 0
    sample = run(
        "-m", "pixel_lightning.cli", "sample", "--ckpt", str(ckpt), "--n", "2", "--out", str(tmp_path / "s")
    )
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert (tmp_path / "s" / "samples.png").is_file()
    round_trip = f"""
import sys, torch, pixel_lightning
m = pixel_lightning.load_model({str(ckpt)!r})
m.save_pretrained({str(tmp_path / "saved")!r})
n = pixel_lightning.load_model({str(tmp_path / "saved")!r})
x = torch.randint(0, 2, (3, 1, 28, 28), generator=torch.Generator().manual_seed(0))
assert type(n).__module__ == "toy_arch" and "toy_arch" in sys.modules
assert torch.equal(m.log_prob(x), n.log_prob(x)), "round trip changed the model"
"""
    loaded = run("-c", round_trip)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["module"] == "toy_arch"
    # the control: the same checkpoint where the module is not importable
    gone = run(
        "-m",
        "pixel_lightning.cli",
        "sample",
        "--ckpt",
        str(ckpt),
        "--n",
        "1",
        "--out",
        str(tmp_path / "g"),
        env=toy_env(None),
    )
    assert gone.returncode == 2, gone.stderr[-3000:]
    assert "'toy_arch'" in gone.stderr and "PYTHONPATH" in gone.stderr and "Traceback" not in gone.stderr


# -- dead code removed, records written before still read ---------------------------------------------
def test_a_run_config_written_before_model_extra_was_removed_still_resumes_and_loads(tmp_path):
    """ea0e511's config.yaml holds ``model.extra: {}`` (read by no architecture, now gone) and no
    ``imports``: the same run is still the same run, and ``--config`` of it still loads."""
    import yaml

    from pixel_lightning.config import load_config
    from pixel_lightning.runfolder import identity_differences

    current = load_config("quickstart", ["model.hidden=4"])
    assert not hasattr(current.model, "extra") and current.imports == []
    old = current.to_dict()
    old["model"]["extra"] = {}
    del old["imports"]
    assert identity_differences(old, current.to_dict()) == []
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    assert load_config(None, config_path=tmp_path / "config.yaml").model.hidden == 4
    old["model"]["hidden"] = 5  # the control: a real difference is still one
    assert identity_differences(old, current.to_dict()) == ["model.hidden=5 there, model.hidden=4 here"]
