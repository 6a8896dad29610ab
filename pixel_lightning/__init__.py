"""pixel-lightning: Pixel Recurrent Neural Networks (van den Oord et al., ICML 2016) in PyTorch Lightning.

import torch, pixel_lightning
model = pixel_lightning.build_model("row_lstm", image_shape=(3, 32, 32), levels=256,
                                    hidden=128, layers=12, residual=True, skip=True)
logp = model.log_prob(x)      # x int64 (B, C, H, W) in [0, levels) -> (B,) nats
xs = model.sample(16, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixel_lightning.models import AutoregressiveImageModel, ModelConfig, registry
from pixel_lightning.models.registry import build_model

__version__ = "0.1.0"

# name -> LightningModule class, read-only and live: the registry's (pixel_lightning/models/registry.py)
ARCHITECTURES = registry.ModelClasses()


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
