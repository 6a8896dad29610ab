"""One module per architecture of the paper, all on the loss base in :mod:`.base`."""

from pixel_lightning.models.base import AutoregressiveImageModel, ModelConfig, log_likelihood
from pixel_lightning.models.diagonal_bilstm import DiagonalBiLSTM
from pixel_lightning.models.pixelcnn import PixelCNN
from pixel_lightning.models.row_lstm import RowLSTM

__all__ = [
    "AutoregressiveImageModel",
    "DiagonalBiLSTM",
    "ModelConfig",
    "PixelCNN",
    "RowLSTM",
    "log_likelihood",
]
