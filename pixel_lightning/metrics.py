"""Likelihood metrics. Bits per dimension is defined here, and only here.

    bits/dim = NLL_nats(image) / (C * H * W * ln 2)

Both metrics keep *summed* states (total nats, image count), so under DDP and with unequal last
batches the epoch value is the exact mean over all evaluated images, not a mean of batch means.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric


def bits_per_dim(nll_nats: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """Convert a negative log-likelihood in nats per image into bits per sub-pixel dimension."""
    return nll_nats / (dims * math.log(2.0))


class NLLNats(Metric):
    """Mean negative log-likelihood in nats per image; ``update(log_prob)`` with log_prob (B,) in nats."""

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total_nats", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, log_prob: torch.Tensor) -> None:
        self.total_nats += -log_prob.detach().double().sum()
        self.count += log_prob.numel()

    def compute(self) -> torch.Tensor:
        return (self.total_nats / self.count.clamp(min=1)).float()


class BitsPerDim(NLLNats):
    """Mean negative log-likelihood in bits per dimension, for images of ``dims`` = C * H * W values."""

    def __init__(self, dims: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dims = dims

    def compute(self) -> torch.Tensor:
        return bits_per_dim(super().compute(), self.dims)
