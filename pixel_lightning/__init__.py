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

from pixel_lightning.models import (
    AutoregressiveImageModel,
    DiagonalBiLSTM,
    ModelConfig,
    PixelCNN,
    RowLSTM,
)
from pixel_lightning.models.multiscale import MultiScalePixelRNN

__version__ = "0.1.0"

ARCHITECTURES: dict[str, type[AutoregressiveImageModel]] = {
    "pixelcnn": PixelCNN,
    "row_lstm": RowLSTM,
    "diagonal_bilstm": DiagonalBiLSTM,
    "multiscale": MultiScalePixelRNN,
}


def build_model(name: str, **kwargs: Any) -> AutoregressiveImageModel:
    """Build architecture ``name`` (a key of ARCHITECTURES) from ModelConfig fields as keywords."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    unknown = set(kwargs) - set(ARCHITECTURES[name].config_fields())
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for {name!r}; valid: {ARCHITECTURES[name].config_fields()}"
        )
    return ARCHITECTURES[name](**kwargs)


def load_model(path: str | Path, map_location: str = "cpu") -> AutoregressiveImageModel:
    """Load any pixel-lightning checkpoint without knowing its architecture in advance."""
    import torch

    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    meta = ckpt.get("pixel_lightning")
    if meta is None or meta.get("arch") not in ARCHITECTURES:
        raise ValueError(f"{path} is not a pixel-lightning checkpoint (no architecture recorded in it)")
    cls = ARCHITECTURES[meta["arch"]]
    model = cls(**meta["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model


__all__ = [
    "ARCHITECTURES",
    "AutoregressiveImageModel",
    "ModelConfig",
    "build_model",
    "load_model",
    "__version__",
]
