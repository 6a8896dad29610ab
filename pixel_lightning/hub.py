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
from huggingface_hub.errors import LocalEntryNotFoundError

from pixel_lightning.errors import CheckpointError
from pixel_lightning.runfolder import RunFolder, figure_text, unit_of

if TYPE_CHECKING:
    from pixel_lightning.models.base import AutoregressiveImageModel

WEIGHTS = constants.SAFETENSORS_SINGLE_FILE  # "model.safetensors"
CONFIG = constants.CONFIG_NAME  # "config.json"
CARD_TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"


class HubMixin(PyTorchModelHubMixin):
    """``save_pretrained`` / ``push_to_hub`` / ``from_pretrained`` for every pixel-lightning model.
    The mixin's card metadata arguments are not used: :meth:`generate_model_card` writes the card.

    ``run_info`` (a dict, may be empty) describes the run that trained the model: ``recipe``, ``dataset``,
    ``variant``, test metrics, the paper's figure. :func:`load_model` fills it from the run folder of a
    checkpoint (:meth:`RunFolder.about_checkpoint`); it is written into ``config.json`` and the model card."""

    run_info: dict[str, Any] = {}

    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)  # model.safetensors
        (save_directory / CONFIG).write_text(json.dumps(config_json(self), indent=2, sort_keys=True) + "\n")

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The README.md: the architecture and sizes always, the data and test figure (beside the
        paper's) when the model came from a finished run. The prose is templates/model_card.md; this
        computes its values."""
        from pixel_lightning.data.base import is_user_data
        from pixel_lightning.models import registry

        c, run = self.config, self.run_info
        arch = registry.get(self.arch).title
        if hasattr(c, "base"):  # multi-scale: networks of a base architecture
            arch = f"{arch} ({registry.get(c.base).title} body, {c.low_res}x{c.low_res} -> full size)"
        data = ModelCardData(
            library_name="pixel-lightning",
            license="mit",
            tags=["pixel-rnn", "autoregressive", "image-generation", "pytorch-lightning", self.arch],
            pipeline_tag="unconditional-image-generation",
        )
        unit = unit_of(run)
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
    from pixel_lightning.models import registry

    return {
        "arch": model.arch,
        "module": registry.get(model.arch).module,  # imported again before "arch" is looked up
        "model": asdict(model.config),
        "run": dict(model.run_info),
        "pixel_lightning_version": __version__,
    }


def build_from_config(config: dict[str, Any], source: str) -> AutoregressiveImageModel:
    """The model ``config`` records (``arch``, ``model`` fields, and the ``module`` defining the
    architecture), untrained. The module is imported first when it is not a built-in one: only an
    installed or importable module of that name (``PYTHONPATH``), nothing from ``source`` itself."""
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
    fields = set(cls.config_fields())
    try:
        return cls(**{k: v for k, v in config["model"].items() if k in fields})
    except (TypeError, ValueError) as e:  # sizes of the wrong type or impossible values
        raise CheckpointError(
            f"{source}: the recorded {arch} sizes cannot build a model ({type(e).__name__}: {one_line(e)})",
            "the config was edited or damaged: save the model again with model.save_pretrained",
        ) from e


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
    config = read_config_json(config_file)
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


def read_config_json(path: Path) -> dict[str, Any]:
    """A ``config.json`` as a dict, or a CheckpointError naming the file."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"cannot read {path} as JSON ({type(e).__name__}: {one_line(e)})",
            "restore the file, or save the folder again with model.save_pretrained",
        ) from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a JSON {type(config).__name__}, not an object", "save it again")
    return config


def hub_files(repo_id: str, **hub_kwargs: Any) -> tuple[Path, Path]:
    """(config.json, model.safetensors) of a Hub model id, downloaded or from the cache.

    Without a network huggingface_hub retries each download for about 25 s before using the cache; one
    quick request tells first whether the Hub answers, and offline the cache is used at once."""
    offline = constants.is_offline_mode() or hub_kwargs.get("local_files_only")
    if not offline and not hub_reachable():
        hub_kwargs = {**hub_kwargs, "local_files_only": True}
        offline = True
    try:
        return tuple(Path(hf_hub_download(repo_id, f, **hub_kwargs)) for f in (CONFIG, WEIGHTS))  # type: ignore[return-value]
    except LocalEntryNotFoundError as e:
        if not offline:
            raise
        raise CheckpointError(
            f"{repo_id} is neither a file nor a folder here, and it could not be loaded as a Hugging Face "
            "Hub model id: the Hub is not reachable (offline) and no copy of it is cached",
            "pass a checkpoint file or a save_pretrained folder, or load the id once where the Hub is "
            "reachable (it is cached then; HF_HUB_OFFLINE=1 uses the cache only)",
        ) from e


def hub_reachable(timeout: float = 3.0) -> bool:
    """Does the Hub endpoint answer one request within ``timeout`` seconds (no retries)?"""
    from huggingface_hub import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # noqa: BLE001 - no DNS, refused, timed out: all mean offline here
        return False
    return True


def check_finite(model: torch.nn.Module, source: str | Path) -> None:
    """Refuse weights holding NaN or infinity: such a model's samples and likelihoods are not results."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise CheckpointError(
            f"{source} holds non-finite weights (NaN or infinity in {', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}): its samples and likelihoods would be meaningless",
            "use an earlier checkpoint of the run (training diverged before this one was written)",
        )


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


# ----------------------------------------------------------------------------- Lightning checkpoints


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> AutoregressiveImageModel:
    """A Lightning checkpoint of any architecture -> the model (eval mode). ``weights_only=True``: only
    tensors and plain Python values are unpickled. ``run_info``: what the checkpoint's run folder says
    about it, when it is one (:meth:`RunFolder.about_checkpoint`), and its own figures."""
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
    model.run_info = {**info, **own_figures(ckpt, Path(path))} if info else {}
    return model.eval()


def own_figures(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """A Lightning checkpoint's own step and epoch, and its validation figure when it is the file a
    ``ModelCheckpoint`` kept as best (that callback's state records the score it was kept for)."""
    out: dict[str, Any] = {}
    if isinstance(ckpt.get("global_step"), int):
        out["global_step"] = ckpt["global_step"]
    if isinstance(ckpt.get("epoch"), int):
        out["epochs"] = ckpt["epoch"]
    for state in (ckpt.get("callbacks") or {}).values():
        if not isinstance(state, dict) or not str(state.get("monitor")).startswith("val/"):
            continue  # (the periodic checkpoints' callback "monitors" the step: not a figure)
        score, best = state.get("best_model_score"), state.get("best_model_path")
        if best and Path(str(best)).name == path.name and score is not None:
            out[str(state["monitor"])] = float(score)
    return out


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
