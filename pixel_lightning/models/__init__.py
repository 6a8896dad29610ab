"""One module per architecture of the paper, all on the loss base in :mod:`.base`; each registers itself
(:mod:`.registry`) when imported here. A new architecture: its own module plus one import below."""

from pixel_lightning.models.base import AutoregressiveImageModel, ModelConfig, log_likelihood
from pixel_lightning.models.diagonal_bilstm import DiagonalBiLSTM
from pixel_lightning.models.multiscale import MultiScalePixelRNN
from pixel_lightning.models.network import PixelNetwork
from pixel_lightning.models.pixelcnn import PixelCNN
from pixel_lightning.models.row_lstm import RowLSTM

__all__ = [
    "AutoregressiveImageModel",
    "DiagonalBiLSTM",
    "ModelConfig",
    "MultiScalePixelRNN",
    "PixelCNN",
    "PixelNetwork",
    "RowLSTM",
    "log_likelihood",
]
