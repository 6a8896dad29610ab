"""The config layers on OmegaConf: what the library parses and checks, and how config.py words its errors.

Each test loads the quickstart recipe (MNIST, embedded digits: no files needed) through ``load_config``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pixel_lightning.config import ConfigError, RunConfig, load_config
from pixel_lightning.recipebook import RECIPES_DIR


def recipes_with(tmp_path: Path, **sections) -> Path:
    """A recipes folder holding quickstart plus ``tiny.yaml`` (quickstart with ``sections`` over it)."""
    quick = yaml.safe_load((RECIPES_DIR / "quickstart.yaml").read_text())
    (tmp_path / "quickstart.yaml").write_text(yaml.safe_dump(quick))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**quick, **sections}))
    return tmp_path


def test_text_fields_keep_the_command_lines_text():
    """YAML would read 0123 as the octal number 83 and 1e3 as 1000.0; a ``str`` field takes the text."""
    cfg = load_config(
        "quickstart",
        ["data.data_dir=0123", "logger.name=1e3", "trainer.precision=16", "out=runs/a=b", "logger=none"],
    )
    assert (cfg.data.data_dir, cfg.logger.name, cfg.trainer.precision) == ("0123", "1e3", "16")
    assert cfg.out == "runs/a=b" and cfg.logger.kind == "none"


@pytest.mark.parametrize(
    "override, key, value",
    [
        ("trainer.val_check_interval=3", "val_check_interval", 3),  # a number of batches
        ("trainer.val_check_interval=0.5", "val_check_interval", 0.5),  # a fraction of the epoch
        ("trainer.devices=2", "devices", 2),
        ("trainer.devices=0,1", "devices", "0,1"),
        ("trainer.gradient_clip_val=1", "gradient_clip_val", 1.0),
    ],
)
def test_unions_keep_the_type_given(override, key, value):
    got = getattr(load_config("quickstart", [override]).trainer, key)
    assert got == value and type(got) is type(value)


def test_an_undeclared_trainer_argument_goes_to_extra_from_every_layer(tmp_path):
    recipes = recipes_with(tmp_path, trainer={"max_epochs": 1, "detect_anomaly": True})
    cfg = load_config("tiny", ["trainer.gradient_clip_algorithm=value"], recipes_dir=recipes)
    assert cfg.trainer.extra == {"detect_anomaly": True, "gradient_clip_algorithm": "value"}
    assert cfg.trainer.kwargs()["gradient_clip_algorithm"] == "value" and cfg.trainer.max_epochs == 1
    with pytest.raises(ConfigError, match=r"unknown key 'trainer.max_step'.*any other lightning.Trainer"):
        load_config("quickstart", ["trainer.max_step=3"])


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["model.hidden=abc"], ["model.hidden='abc'", "expected int", "model.hidden=<int>"]),
        (["model.image_shape=[1,a,8]"], ["model.image_shape=[1, 'a', 8]", "tuple[int, int, int]"]),
        (["model=3"], ["model is a section", "model.<key>=<value>"]),
        (["model.hidden.x=3"], ["model.hidden=", "expected int"]),
        (["model.hidden"], ["not key=value", "trainer.max_steps=200"]),
        (["description=${nope}"], ["nope", "description"]),
    ],
)
def test_command_line_errors_name_the_key_and_the_fix(overrides, words):
    with pytest.raises(ConfigError) as e:
        load_config("quickstart", overrides)
    for word in words:
        assert word in str(e.value), str(e.value)


def test_an_error_in_a_file_names_the_file(tmp_path):
    recipes = recipes_with(tmp_path, model={"hidden": "abc"})
    with pytest.raises(ConfigError, match=r"model.hidden='abc' \(in .*tiny.yaml\).*expected int"):
        load_config("tiny", recipes_dir=recipes)
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump({"modle": {"hidden": 3}}))
    with pytest.raises(
        ConfigError, match=r"unknown key 'modle' in --config .*config.yaml; valid keys: .*model"
    ):
        load_config(None, config_path=saved)


def test_layers_apply_in_order_recipe_then_config_then_command_line(tmp_path):
    recipes = recipes_with(
        tmp_path, model={"hidden": 5, "layers": 2}, trainer={"extra": {"detect_anomaly": True}}
    )
    over = tmp_path / "over.yaml"
    over.write_text(
        yaml.safe_dump({"model": {"layers": 3}, "logger": "none", "trainer": {"benchmark": False}})
    )
    cfg = load_config("tiny", ["model.layers=4"], recipes_dir=recipes, config_path=over)
    assert (cfg.model.hidden, cfg.model.layers, cfg.logger.kind, cfg.recipe) == (5, 4, "none", "tiny")
    assert cfg.trainer.extra == {"detect_anomaly": True, "benchmark": False}  # dicts merge across layers


def test_a_saved_config_loads_back_to_the_same_config(tmp_path):
    cfg = load_config("quickstart", ["model.hidden=4", "trainer.val_check_interval=3", "logger=csv"])
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    again = load_config(None, config_path=tmp_path / "config.yaml")
    assert again.to_dict() == cfg.to_dict() and isinstance(again, RunConfig)


def test_the_data_shape_comes_from_the_datamodule_class_not_an_instance(monkeypatch):
    """The config reads shape and levels as class-level facts and checks the data's arguments with the
    class's own check: it builds no DataModule (the runner builds the one a run uses)."""
    from pixel_lightning.data import ImageDataModule

    def refuse(self, *args, **kwargs):
        raise AssertionError("load_config built a DataModule")

    monkeypatch.setattr(ImageDataModule, "__init__", refuse)
    cfg = load_config("quickstart", ["data.name=imagenet64", "data.source=auto", "paper.unit=bits/dim"])
    assert (cfg.model.image_shape, cfg.model.levels, cfg.model.head_channels) == ((3, 64, 64), 256, 1024)
    with pytest.raises(ConfigError, match=r"unknown data.source 'tfrecord' for imagenet64"):
        load_config("quickstart", ["data.name=imagenet64", "data.source=tfrecord"])


def test_the_model_section_is_the_architectures_config_class_and_pickles():
    """The section takes the chosen architecture's keys only (another one's is named as such), and a
    config survives pickling (its section class is made at run time)."""
    import pickle

    cfg = load_config("quickstart", ["model.arch=multiscale", "model.low_res=7"])
    again = pickle.loads(pickle.dumps(cfg))
    assert again.to_dict() == cfg.to_dict() and again.model.build_kwargs()["low_res"] == 7
    assert "low_res" not in load_config("quickstart").to_dict()["model"]
    with pytest.raises(ConfigError, match="model.low_res is for model.arch=multiscale only; remove it"):
        load_config("quickstart", ["model.low_res=7"])


PLUGIN = """
from dataclasses import dataclass

from pixel_lightning.models.base import ModelConfig
from pixel_lightning.models.pixelcnn import PixelCNN
from pixel_lightning.models.registry import register


@dataclass
class WideConfig(ModelConfig):
    widen: int = 1  # a field of this architecture only


@register("wide_toy", title="Wide toy")
class WideToy(PixelCNN):
    config_class = WideConfig
"""


def test_a_plugin_architectures_own_fields_are_model_keys(tmp_path, monkeypatch):
    """The model section is the chosen architecture's config class: a plugin's own field is a model.* key
    (checked by type), and only for that architecture."""
    import sys

    from pixel_lightning.models import registry

    registry.architectures()  # the built-in ones first, then a copy the plugin registers into
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    (tmp_path / "wide_toy_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cfg = load_config("quickstart", ["imports=[wide_toy_plugin]", "model.arch=wide_toy", "model.widen=3"])
        assert cfg.model.widen == 3 and cfg.model.build_kwargs()["widen"] == 3
        assert cfg.to_dict()["model"]["widen"] == 3
        with pytest.raises(ConfigError, match=r"model.widen='x' .*expected int"):
            load_config("quickstart", ["imports=[wide_toy_plugin]", "model.arch=wide_toy", "model.widen=x"])
        with pytest.raises(ConfigError, match=r"model.widen is for model.arch=wide_toy only"):
            load_config("quickstart", ["imports=[wide_toy_plugin]", "model.widen=3"])
    finally:
        sys.modules.pop("wide_toy_plugin", None)
