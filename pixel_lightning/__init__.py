"""pixel-lightning: Pixel Recurrent Neural Networks (van den Oord et al., ICML 2016) in PyTorch Lightning.

import torch, pixel_lightning
model = pixel_lightning.build_model("row_lstm", image_shape=(3, 32, 32), levels=256,
                                    hidden=128, layers=12, residual=True, skip=True)
logp = model.log_prob(x)      # x int64 (B, C, H, W) in [0, levels) -> (B,) nats
xs = model.sample(16, generator=torch.Generator().manual_seed(0))

The names that need torch load on first use (PEP 562 ``__getattr__``): ``import pixel_lightning`` alone
imports neither torch nor Lightning, so ``pixel-lightning --help`` and ``--list`` answer at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pixel_lightning.models import AutoregressiveImageModel, ModelConfig
    from pixel_lightning.models.registry import ModelClasses, build_model

    ARCHITECTURES: ModelClasses

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """ARCHITECTURES, AutoregressiveImageModel, ModelConfig and build_model, imported on first use and
    then cached."""
    if name not in ("ARCHITECTURES", "AutoregressiveImageModel", "ModelConfig", "build_model"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pixel_lightning import models
    from pixel_lightning.models import registry

    if name == "ARCHITECTURES":
        value = registry.ModelClasses()  # name -> LightningModule class, read-only and live
    elif name == "build_model":
        value = registry.build_model
    else:
        value = getattr(models, name)
    globals()[name] = value  # later lookups find it without __getattr__
    return value


def load_model(source: str | Path, map_location: str = "cpu", **hub_kwargs: Any) -> AutoregressiveImageModel:
    """Any trained model, in eval mode: a Lightning checkpoint file, a ``save_pretrained`` folder or a
    Hugging Face Hub id; no arbitrary objects are unpickled (see :mod:`pixel_lightning.hub`)."""
    from pixel_lightning.hub import load_model as load

    return load(source, map_location, **hub_kwargs)


__all__ = [
    "ARCHITECTURES",
    "AutoregressiveImageModel",
    "ModelConfig",
    "build_model",
    "load_model",
    "__version__",
]
