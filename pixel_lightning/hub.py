"""Saving and loading trained models: Lightning checkpoints, ``save_pretrained`` folders and Hugging Face
Hub ids, all without unpickling arbitrary objects.

    model.save_pretrained("my-model")         # model.safetensors + config.json + README.md (model card)
    model.push_to_hub("user/pixelcnn-mnist")  # the same folder, uploaded
    pixel_lightning.load_model("my-model" | "user/pixelcnn-mnist" | "runs/x/checkpoints/best.ckpt")

``save_pretrained`` and ``push_to_hub`` are huggingface_hub's ``PyTorchModelHubMixin`` (safetensors
weights, upload) with this module's ``config.json`` and model card. ``from_pretrained`` is replaced
(:meth:`HubMixin.from_pretrained`): the mixin instantiates the class it is called on and passes the JSON
keys as constructor arguments, so it cannot pick the architecture recorded in the file (needed by
``AutoregressiveImageModel.from_pretrained`` and the ``--ckpt`` of the command line), and it loads
weights with ``strict=False``, which would accept a folder with missing weights silently
(``tests/test_hub.py::test_missing_weights_are_an_error``). Downloads still go through
``hf_hub_download``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import ModelCard, ModelCardData, PyTorchModelHubMixin, constants, hf_hub_download

from pixel_lightning.errors import CheckpointError

if TYPE_CHECKING:
    from pixel_lightning.models.base import AutoregressiveImageModel

WEIGHTS = constants.SAFETENSORS_SINGLE_FILE  # "model.safetensors"
CONFIG = constants.CONFIG_NAME  # "config.json"
PAPER_URL = "https://arxiv.org/abs/1601.06759"
ARCH_NAMES = {
    "pixelcnn": "PixelCNN",
    "row_lstm": "Row LSTM",
    "diagonal_bilstm": "Diagonal BiLSTM",
    "multiscale": "Multi-Scale PixelRNN",
}


class HubMixin(
    PyTorchModelHubMixin,
    library_name="pixel-lightning",
    paper_url=PAPER_URL,
    license="mit",
    tags=["pixel-rnn", "autoregressive", "image-generation", "pytorch-lightning"],
):
    """``save_pretrained`` / ``push_to_hub`` / ``from_pretrained`` for every pixel-lightning model.

    ``run_info`` (a dict, may be empty) describes the run that trained the model: ``recipe``, ``dataset``,
    ``variant``, test metrics, the paper's figure, the command. :func:`load_model` fills it from the run
    directory of a checkpoint; it is written into ``config.json`` and the model card."""

    run_info: dict[str, Any] = {}

    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)  # model.safetensors
        (save_directory / CONFIG).write_text(json.dumps(config_json(self), indent=2, sort_keys=True) + "\n")

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        return model_card(self)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | Path, *, map_location: str = "cpu", **hub_kwargs: Any
    ) -> AutoregressiveImageModel:
        """Load a ``save_pretrained`` folder or a Hub model id (``hub_kwargs``: ``revision``,
        ``cache_dir``, ``token``, ``local_files_only``, ... as for ``hf_hub_download``), in eval mode.
        Called on a concrete architecture, a folder of another one is refused."""
        model = load_pretrained(pretrained_model_name_or_path, map_location, **hub_kwargs)
        if not isinstance(model, cls):
            raise CheckpointError(
                f"{pretrained_model_name_or_path} holds a {type(model).__name__}, not a {cls.__name__}",
                "load it with pixel_lightning.load_model or the matching class",
            )
        return model


# ----------------------------------------------------------------------------- config.json


def config_json(model: AutoregressiveImageModel) -> dict[str, Any]:
    """What ``config.json`` holds: plain JSON, enough to rebuild the model and describe its run."""
    from pixel_lightning import __version__

    return {
        "arch": model.arch,
        "model": asdict(model.config),
        "run": dict(model.run_info),
        "pixel_lightning_version": __version__,
    }


def build_from_config(config: dict[str, Any], source: str) -> AutoregressiveImageModel:
    from pixel_lightning import ARCHITECTURES

    arch = config.get("arch")
    if arch not in ARCHITECTURES or not isinstance(config.get("model"), dict):
        raise CheckpointError(
            f"{source} is not a pixel-lightning model (config.json records no known architecture: {arch!r})",
            f"save it with model.save_pretrained; architectures: {sorted(ARCHITECTURES)}",
        )
    fields = set(ARCHITECTURES[arch].config_fields())
    return ARCHITECTURES[arch](**{k: v for k, v in config["model"].items() if k in fields})


def load_pretrained(
    source: str | Path, map_location: str = "cpu", **hub_kwargs: Any
) -> AutoregressiveImageModel:
    """A ``save_pretrained`` folder or a Hub model id -> the model (eval mode), weights from safetensors."""
    from safetensors.torch import load_model as load_safetensors

    folder = Path(source)
    if folder.is_dir():
        config_file, weights_file = folder / CONFIG, folder / WEIGHTS
        for f in (config_file, weights_file):
            if not f.is_file():
                raise CheckpointError(f"{folder} has no {f.name}", "pass a folder written by save_pretrained")
    else:
        config_file = Path(hf_hub_download(str(source), CONFIG, **hub_kwargs))
        weights_file = Path(hf_hub_download(str(source), WEIGHTS, **hub_kwargs))
    config = json.loads(config_file.read_text())
    model = build_from_config(config, str(source))
    missing, unexpected = load_safetensors(model, str(weights_file), strict=False, device=map_location)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: the weights do not match the recorded {config['arch']} model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})",
            "save the folder again with model.save_pretrained",
        )
    model.run_info = dict(config.get("run") or {})
    return model.eval()


# ----------------------------------------------------------------------------- Lightning checkpoints


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> AutoregressiveImageModel:
    """A Lightning checkpoint of any architecture -> the model (eval mode). ``weights_only=True``: only
    tensors and plain Python values are unpickled. ``run_info`` comes from the run directory
    (``<run>/checkpoints/x.ckpt`` -> ``<run>/metrics.json`` and ``config.yaml``) when present."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holding arbitrary objects
        why = f"{type(e).__name__}: {str(e)[:200]}"
        raise CheckpointError(f"cannot read {path} as a checkpoint ({why})") from e
    meta = ckpt.get("pixel_lightning") if isinstance(ckpt, dict) else None
    if meta is None:
        raise CheckpointError(f"{path} is not a pixel-lightning checkpoint (no architecture recorded in it)")
    model = build_from_config({"arch": meta.get("arch"), "model": meta.get("config")}, str(path))
    model.load_state_dict(ckpt["state_dict"])
    model.run_info = run_info(Path(path).resolve().parent.parent)
    return model.eval()


def run_info(run_dir: Path) -> dict[str, Any]:
    """What a finished run directory says about its model (empty when it is not one)."""
    import yaml

    metrics_file, config_file = run_dir / "metrics.json", run_dir / "config.yaml"
    if not metrics_file.is_file():
        return {}
    metrics = json.loads(metrics_file.read_text())
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    keep = ("recipe", "dataset", "variant", "global_step", "epochs", "params", "paper", "command")
    info = {k: metrics[k] for k in keep if metrics.get(k) is not None}
    info.update({k: v for k, v in metrics.items() if k.startswith("test/")})
    source = ((config or {}).get("data") or {}).get("source")
    if source:
        info["data_source"] = source
    return info


# ----------------------------------------------------------------------------- any source


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_model(source: str | Path, map_location: str = "cpu", **hub_kwargs: Any) -> AutoregressiveImageModel:
    """Any trained model, in eval mode: a Lightning checkpoint file, a ``save_pretrained`` folder, or a
    Hugging Face Hub model id (``user/name``)."""
    path = Path(source)
    if path.is_dir():
        return load_pretrained(path, map_location, **hub_kwargs)
    if path.is_file():
        return load_checkpoint(path, map_location)
    if HUB_ID.match(str(source)) and not str(source).endswith((".ckpt", ".pt", ".pth")):
        try:
            return load_pretrained(str(source), map_location, **hub_kwargs)
        except CheckpointError:
            raise
        except Exception as e:  # offline, unknown repo, no such file in it
            raise CheckpointError(
                f"{source} is neither a file nor a folder here, and it could not be loaded as a Hugging Face "
                f"Hub model id ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                "pass a checkpoint file, a save_pretrained folder, or a Hub id (online, or cached)",
            ) from e
    raise CheckpointError(
        f"no checkpoint at {source}",
        "pass a Lightning checkpoint (.ckpt), a folder written by save_pretrained, or a Hub id user/name",
    )


# ----------------------------------------------------------------------------- model card


def model_card(model: AutoregressiveImageModel) -> ModelCard:
    """A model card from what is known: the architecture and sizes always, the data and test figure
    (beside the paper's) when the model came from a finished run."""
    c, run = model.config, model.run_info
    arch = ARCH_NAMES.get(model.arch, model.arch)
    if model.arch == "multiscale":
        arch = f"{arch} ({ARCH_NAMES.get(c.base, c.base)} body, {c.low_res}x{c.low_res} -> full size)"
    C, H, W = c.image_shape
    params = sum(p.numel() for p in model.parameters())
    data = ModelCardData(
        library_name="pixel-lightning",
        license="mit",
        tags=["pixel-rnn", "autoregressive", "image-generation", "pytorch-lightning", model.arch],
        pipeline_tag="unconditional-image-generation",
    )
    lines = [
        f"# {arch}" + (f" on {run['dataset']}" if run.get("dataset") else ""),
        "",
        "An exact-likelihood autoregressive image model from *Pixel Recurrent Neural Networks* "
        f"(van den Oord, Kalchbrenner, Kavukcuoglu, ICML 2016, [arXiv:1601.06759]({PAPER_URL})), "
        "built with pixel-lightning.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {arch} |",
        f"| images | {C}x{H}x{W}, {c.levels} levels per sub-pixel |",
        f"| layers, h | {c.layers}, {c.hidden} |",
        f"| residual, skip | {c.residual}, {c.skip} |",
        f"| output head | {c.head_channels} maps, {'sigmoid' if c.levels == 2 else 'softmax'} |",
        f"| parameters | {params:,} |",
        "",
        "## Data and results",
        "",
    ]
    lines += results_lines(run)
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import pixel_lightning",
        "model = pixel_lightning.load_model(path_or_hub_id)  # this folder, or this repository's id",
        "x = model.sample(16)                 # int64 (16, C, H, W)",
        "logp = model.log_prob(x)             # (16,) nats",
        "```",
        "",
        "From the command line, `pixel-lightning sample --ckpt` takes the same folder or id.",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def results_lines(run: dict[str, Any]) -> list[str]:
    if not run:
        return [
            "This model was not saved from a finished pixel-lightning run, so its training data and test "
            "likelihood are not recorded here."
        ]
    paper = run.get("paper") or {}
    nats = paper.get("unit") == "nats" or run.get("dataset") == "mnist"
    key, unit = ("test/nll_nats", "nats") if nats else ("test/bits_per_dim", "bits/dim")
    lines = [
        f"- data: `{run.get('dataset', 'unknown dataset')}`, variant `{run.get('variant', 'not recorded')}`"
        " (likelihoods of different variants are not comparable)",
    ]
    if run.get(key) is not None:
        ours = f"{run[key]:.4f} {unit}"
        other = run.get("test/bits_per_dim" if nats else "test/nll_nats")
        if other is not None:
            ours += f" ({other:.4f} {'bits/dim' if nats else 'nats'})"
        lines.append(f"- test negative log-likelihood: {ours}")
    if paper.get("test") is not None:
        lines.append(f"- paper: {paper['test']} {paper.get('unit', unit)} ({paper.get('where', '')})")
    else:
        lines.append("- paper: no figure published for this configuration")
    if run.get("global_step") is not None:
        epochs = f" ({run['epochs']} epochs)" if run.get("epochs") is not None else ""
        lines.append(f"- trained for {run['global_step']} steps{epochs}")
    if run.get("command"):
        lines.append(f"- trained by: `{run['command']}`")
    elif run.get("recipe"):
        lines.append(
            f"- recipe: `{run['recipe']}`, trained by `python recipes/run.py --recipe {run['recipe']}` "
            "with the overrides recorded in that run's config.yaml"
        )
    return lines
