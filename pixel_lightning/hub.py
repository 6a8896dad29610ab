"""Saving and loading trained models: Lightning checkpoints, ``save_pretrained`` folders and Hugging Face
Hub ids, none of them unpickling arbitrary objects.

    model.save_pretrained("my-model")         # model.safetensors + config.json + README.md (model card)
    model.push_to_hub("user/pixelcnn-mnist")  # the same folder, uploaded
    pixel_lightning.load_model("my-model" | "user/pixelcnn-mnist" | "runs/x/checkpoints/best.ckpt")

Saving and uploading are huggingface_hub's ``PyTorchModelHubMixin``. Its ``from_pretrained`` is replaced,
because the mixin's builds the class it is called on (not the architecture the file records) and loads with
``strict=False`` (tests/test_hub.py::test_missing_weights_are_an_error).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import ModelCard, ModelCardData, PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError

from pixel_lightning.errors import CheckpointError, one_line
from pixel_lightning.runfolder import RunFolder, figure_text, unit_of

if TYPE_CHECKING:
    from pixel_lightning.models.base import AutoregressiveImageModel

WEIGHTS, CONFIG = constants.SAFETENSORS_SINGLE_FILE, constants.CONFIG_NAME  # model.safetensors, config.json
CARD_TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubMixin(PyTorchModelHubMixin):
    """``save_pretrained`` / ``push_to_hub`` / ``from_pretrained`` for every pixel-lightning model.

    ``run_info`` describes the run that trained the model (``recipe``, ``dataset``, ``variant``, test
    figures, the paper's): :func:`load_model` fills it from a checkpoint's run folder; config.json and the
    model card record it."""

    run_info: dict[str, Any] = {}

    def _save_pretrained(self, save_directory: Path) -> None:
        """model.safetensors (the mixin's) and config.json: plain JSON, enough to rebuild the model."""
        from pixel_lightning import __version__
        from pixel_lightning.models import registry

        super()._save_pretrained(save_directory)
        config = {
            "arch": self.arch,
            "module": registry.get(self.arch).module,  # imported again before "arch" is looked up
            "model": asdict(self.config),
            "run": dict(self.run_info),
            "pixel_lightning_version": __version__,
        }
        (save_directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """README.md from templates/model_card.md: the architecture and sizes, and the data and test figure
        beside the paper's when the model came from a finished run."""
        from pixel_lightning.data.base import is_user_data
        from pixel_lightning.models import registry

        c, run, unit = self.config, self.run_info, unit_of(self.run_info)
        arch = registry.get(self.arch).title
        if hasattr(c, "base"):  # multi-scale: networks of a base architecture
            arch = f"{arch} ({registry.get(c.base).title} body, {c.low_res}x{c.low_res} -> full size)"
        data = ModelCardData(
            library_name="pixel-lightning",
            license="mit",
            tags=["pixel-rnn", "autoregressive", "image-generation", "pytorch-lightning", self.arch],
            pipeline_tag="unconditional-image-generation",
        )
        return ModelCard.from_template(
            data,
            template_path=str(CARD_TEMPLATE),
            arch=arch,
            c=c,
            params=sum(p.numel() for p in self.parameters()),
            run=run,
            paper=run.get("paper") or {},
            unit=unit,
            test=figure_text(run, unit),
            user_data=is_user_data(run.get("variant")),
        )

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | Path, *, map_location: str = "cpu", **hub_kwargs: Any
    ) -> AutoregressiveImageModel:
        """A ``save_pretrained`` folder or Hub id (``hub_kwargs``: as for ``hf_hub_download``), in eval
        mode; called on a concrete architecture, a folder of another one is refused."""
        model = load_pretrained(pretrained_model_name_or_path, map_location, **hub_kwargs)
        if not isinstance(model, cls):
            raise CheckpointError(
                f"{pretrained_model_name_or_path} holds a {type(model).__name__}, not a {cls.__name__}",
                "load it with pixel_lightning.load_model or the matching class",
            )
        return model


def build_from_config(config: dict[str, Any], source: str) -> AutoregressiveImageModel:
    """The untrained model ``config`` records (``arch``, ``model`` fields, ``module``). A module that is not
    built in is imported first: only an installed or importable one, nothing from ``source`` itself."""
    from pixel_lightning.models import registry

    arch, module = config.get("arch"), config.get("module")
    if isinstance(arch, str) and isinstance(module, str) and arch not in registry.names():
        try:
            registry.import_module(module)
        except ImportError as e:
            raise CheckpointError(
                f"{source} holds a {arch!r} model, an architecture defined in the module {module!r}, which "
                f"cannot be imported ({one_line(e)})",
                f"install that module or put its folder on PYTHONPATH, so that `import {module}` works",
            ) from e
    if arch not in registry.names() or not isinstance(config.get("model"), dict):
        raise CheckpointError(
            f"{source} is not a pixel-lightning model (config.json records no known architecture: {arch!r})",
            f"save it with model.save_pretrained; architectures: {registry.names()}",
        )
    cls = registry.get(arch).model_class
    fields = set(cls.config_fields())  # once, not once per recorded key
    try:
        return cls(**{k: v for k, v in config["model"].items() if k in fields})
    except (TypeError, ValueError) as e:  # sizes of the wrong type or impossible values
        raise CheckpointError(
            f"{source}: the recorded {arch} sizes cannot build a model ({type(e).__name__}: {one_line(e)})",
            "the config was edited or damaged: save the model again with model.save_pretrained",
        ) from e


def check_finite(model: torch.nn.Module, source: str | Path) -> None:
    """Refuse NaN or infinite weights: such a model's samples and likelihoods are not results."""
    from pixel_lightning.reliability.checkpoints import non_finite_tensors

    if bad := non_finite_tensors(model.state_dict()):
        raise CheckpointError(
            f"{source} holds non-finite weights (NaN or infinity in {', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}): its samples and likelihoods would be meaningless",
            "use an earlier checkpoint of the run (training diverged before this one was written)",
        )


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
        config_file, weights_file = hub_files(str(source), **hub_kwargs)
    try:
        config = json.loads(config_file.read_text())
        if not isinstance(config, dict):
            raise ValueError(f"it holds a JSON {type(config).__name__}, not an object")
    except (OSError, ValueError) as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(
            f"cannot read {config_file} as JSON ({type(e).__name__}: {one_line(e)})",
            "restore the file, or save the folder again with model.save_pretrained",
        ) from e
    model = build_from_config(config, str(source))
    try:
        missing, unexpected = load_safetensors(model, str(weights_file), strict=False, device=map_location)
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, shape mismatches (RuntimeError)
        raise CheckpointError(
            f"cannot read {weights_file} as this model's weights ({type(e).__name__}: {one_line(e)})",
            "the file is damaged or of another model: save the folder again with model.save_pretrained",
        ) from e
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: the weights do not match the recorded {config['arch']} model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})",
            "save the folder again with model.save_pretrained",
        )
    model.run_info = dict(config.get("run") or {})
    check_finite(model, weights_file)
    return model.eval()


def hub_files(repo_id: str, **hub_kwargs: Any) -> tuple[Path, Path]:
    """(config.json, model.safetensors) of a Hub model id, downloaded or cached. Offline, huggingface_hub
    retries each download for ~25 s before using the cache: one quick request says whether it answers."""
    from pixel_lightning.data.sources import hub_reachable

    offline = constants.is_offline_mode() or hub_kwargs.get("local_files_only")
    if not offline and not hub_reachable(f"api/models/{repo_id}", timeout=3.0):
        hub_kwargs, offline = {**hub_kwargs, "local_files_only": True}, True
    try:
        config, weights = (Path(hf_hub_download(repo_id, f, **hub_kwargs)) for f in (CONFIG, WEIGHTS))
    except Exception as e:  # noqa: BLE001 - offline and not cached, unknown repo, no such file in it
        why = f"{type(e).__name__}: {one_line(e)}"
        if offline and isinstance(e, LocalEntryNotFoundError):
            why = "the Hub is not reachable (offline) and no copy of it is cached"
        raise CheckpointError(
            f"{repo_id} is neither a file nor a folder here, and it could not be loaded as a Hugging Face "
            f"Hub model id ({why})",
            "pass a checkpoint file, a save_pretrained folder, or a Hub id (loaded once where the Hub is "
            "reachable, it is cached; HF_HUB_OFFLINE=1 uses the cache only)",
        ) from e
    return config, weights


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> AutoregressiveImageModel:
    """A Lightning checkpoint of any architecture -> the model (eval mode), read with ``weights_only=True``;
    ``run_info`` from its run folder, when it is in one, and its own step, epoch and best score."""
    from pixel_lightning.reliability.checkpoints import read_checkpoint

    ckpt = read_checkpoint(path, map_location)
    meta = ckpt["pixel_lightning"]
    model = build_from_config(
        {"arch": meta.get("arch"), "module": meta.get("module"), "model": meta.get("config")}, str(path)
    )
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:  # no state_dict, or weights of another shape
        raise CheckpointError(
            f"{path}: its weights do not match the {meta.get('arch')} model it records "
            f"({type(e).__name__}: {one_line(e)})",
            "the file is damaged or was edited: use another checkpoint of the run",
        ) from e
    check_finite(model, path)
    run = RunFolder.of_checkpoint(path)
    info = run.about_checkpoint(path) if run is not None else {}
    if info:
        own = {"global_step": ckpt.get("global_step"), "epochs": ckpt.get("epoch")}
        info.update({k: v for k, v in own.items() if isinstance(v, int)})
        for state in (ckpt.get("callbacks") or {}).values():  # the ModelCheckpoint that kept it as best
            if not isinstance(state, dict) or not str(state.get("monitor")).startswith("val/"):
                continue  # (the periodic checkpoints' callback "monitors" the step: not a figure)
            best, score = state.get("best_model_path"), state.get("best_model_score")
            if best and Path(str(best)).name == Path(path).name and score is not None:
                info[str(state["monitor"])] = float(score)
    model.run_info = info
    return model.eval()


def load_model(source: str | Path, map_location: str = "cpu", **hub_kwargs: Any) -> AutoregressiveImageModel:
    """Any trained model, in eval mode: a Lightning checkpoint file, a ``save_pretrained`` folder, or a
    Hugging Face Hub model id (``user/name``)."""
    path = Path(source)
    if path.is_dir():
        return load_pretrained(path, map_location, **hub_kwargs)
    if path.is_file():
        return load_checkpoint(path, map_location)
    if HUB_ID.match(str(source)) and not str(source).endswith((".ckpt", ".pt", ".pth")):
        return load_pretrained(str(source), map_location, **hub_kwargs)
    raise CheckpointError(
        f"no checkpoint at {source}",
        "pass a Lightning checkpoint (.ckpt), a folder written by save_pretrained, or a Hub id user/name",
    )
