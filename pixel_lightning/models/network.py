"""PixelNetwork: the network of an architecture, without loss, optimizer or metrics (paper Figure 2,
Table 1). An architecture's module subclasses it (its body's layers); the architecture's LightningModule
on the loss base (:mod:`.base`) owns one, the multi-scale model two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from pixel_lightning.nn.masked_conv import MaskedConv2d
from pixel_lightning.nn.stack import LayerStack
from pixel_lightning.sampling import StepFn, sample_cached, sample_naive

if TYPE_CHECKING:
    from pixel_lightning.models.base import ModelConfig

# torch.compile of the network (``compile=True``): static shapes, so a new batch size or mode (train,
# evaluation, naive sampling) compiles once each and the LSTM recurrences can be opaque operators
# (pixel_lightning/nn/opaque.py). The network is one graph (tests/test_compile.py); not fullgraph=True,
# which would turn Dynamo's fallback to eager, after recompile_limit models in one process, into an error.
COMPILE_OPTIONS: dict[str, Any] = {"dynamic": False}


class PixelNetwork(nn.Module):
    """The network of one architecture (paper Figure 2, Table 1): no loss, no optimizer, no metrics.

        xf (B, C, H, W), scaled to [-1, 1]
          -> first: k x k conv, mask A, C -> 2h                          (B, 2h, H, W)
          -> stack: the body's L layers with residual/skip wiring         (B, 2h, H, W)
          -> head: ReLU, 1x1 mask B, ReLU, 1x1 mask B                     (B, C*K, H, W)
          -> logits                                                       (B, K, C, H, W)

    An architecture subclasses it and defines :meth:`make_layer` (and :meth:`make_stack` when its layers
    run differently, same function). Its LightningModule owns one (``model.net``); the multi-scale model
    owns two of its base architecture. ``config.compile`` compiles the forward (``COMPILE_OPTIONS``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        C, _, _ = config.image_shape
        h2 = 2 * config.hidden
        out_per_colour = 1 if config.levels == 2 else config.levels
        self.first = MaskedConv2d(C, h2, config.first_kernel, "A", C)  # (B, C, H, W) -> (B, 2h, H, W)
        self.stack = self.make_stack([self.make_layer(config, k) for k in range(config.layers)], config)
        self.head = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(h2, config.head_channels, 1, "B", C),
            nn.ReLU(),
            MaskedConv2d(config.head_channels, C * out_per_colour, 1, "B", C),  # colour-major blocks
        )
        if config.compile:
            self.forward = torch.compile(self.forward, **COMPILE_OPTIONS)  # type: ignore[method-assign]

    def make_layer(self, config: ModelConfig, index: int) -> nn.Module:
        """Layer ``index`` of the body: (B, 2h, H, W), cond -> residual branch (B, 2h, H, W)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_layer (its body's layers)")

    def make_stack(self, layers: list[nn.Module], config: ModelConfig) -> LayerStack:
        """The body's residual/skip wiring (a subclass may run its layers differently, same function)."""
        return LayerStack(layers, 2 * config.hidden, config.image_shape[0], config.residual, config.skip)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.config.image_shape

    @property
    def levels(self) -> int:
        return self.config.levels

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """int values in [0, levels) -> floats in [-1, 1]."""
        return x.to(self.first.weight.dtype) * (2.0 / (self.levels - 1)) - 1.0

    def forward(self, xf: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled images (B, C, H, W) -> logits (B, K, C, H, W), K = levels (softmax) or 1 (sigmoid)."""
        h = self.first(xf)  # (B, 2h, H, W)
        # every later convolution keeps this layout (the first layer's patch matmul gives channels-last)
        fmt = torch.channels_last if self.config.channels_last else torch.contiguous_format
        h = h.contiguous(memory_format=fmt)
        h = self.stack(h, cond)  # (B, 2h, H, W)
        out = self.head(h)  # (B, C*K, H, W)
        B, _, H, W = out.shape
        C = self.image_shape[0]
        if self.levels == 2:
            return out.unsqueeze(1)  # (B, 1, C, H, W)
        return out.view(B, C, self.levels, H, W).transpose(1, 2)  # (B, levels, C, H, W)

    def incremental(self, n: int, cond: torch.Tensor | None = None) -> StepFn:
        """A cached one-position network for sampling ``n`` images: ``step(x, i, j)`` returns the logits
        (n, K, C) of pixel (i, j) for the int64 images x (n, C, H, W), reading x only at (i, j) and
        before. Positions must be stepped in raster order; re-stepping the current one is allowed (and
        needed after its colours change). Logits of colour c are exact once x's colours < c are set."""
        C, H, W = self.image_shape
        K = 1 if self.levels == 2 else self.levels
        first, head1, head2 = self.first.point(), self.head[1].point(), self.head[3].point()
        state = self.stack.begin_cache(n, H, W, cond)
        r, k = first.rows - 1, first.cols // 2  # causal patch: rows i-r..i, columns j-k..j+k

        def step(x: torch.Tensor, i: int, j: int) -> torch.Tensor:
            patch = x[:, :, max(i - r, 0) : i + 1, max(j - k, 0) : j + k + 1]
            patch = self.scale(patch)  # zero padding is in the scaled domain, as in the convolution
            pad = (max(k - j, 0), max(j + k + 1 - W, 0), max(r - i, 0), 0)
            v = first(F.pad(patch, pad).flatten(1))  # (n, 2h)
            v = self.stack.step(state, v, i, j)  # (n, 2h)
            logits = head2(F.relu(head1(F.relu(v))))  # (n, C*K), colour-major
            return logits.view(n, C, K).transpose(1, 2)  # (n, K, C)

        return step

    def draw(
        self,
        n: int,
        generator: torch.Generator | None = None,
        cache: bool = True,
        progress: bool = False,
        known: tuple[torch.Tensor, torch.Tensor] | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``n`` images int64 (n, C, H, W) from this network, arguments as for
        :meth:`AutoregressiveImageModel.sample` (which checks them): cached or naive sampler."""
        device = self.first.weight.device
        if cache:
            return sample_cached(
                lambda: self.incremental(n, cond), n, self.image_shape, self.levels, generator, device,
                known=known, progress=progress,
            )  # fmt: skip
        return sample_naive(
            lambda x: self(self.scale(x), cond), n, self.image_shape, self.levels, generator, device,
            known=known, progress=progress,
        )  # fmt: skip
