"""Multi-Scale PixelRNN (paper Section 3.5), exactly normalized.

An unconditional network of the base architecture generates an s x s image subsampled from the n x n
image; a conditional network of the same architecture generates the n x n image given it:

    x (B, C, n, n) ----------------------------------------------+
      |                                                          |
      +-> x_low = x[:, :, ::f, ::f]   (B, C, s, s), f = n / s    |     top-left pixel of each f x f block
      |     |-> low network (unconditional, base arch)  -> logits at the s*s low positions
      |     +-> conditioning net: 3x3 conv, transposed convs up by f, 3x3 conv -> cond (B, c, n, n)
      |                                                          |
      +-> full network (base arch, cond_channels = c): every layer adds a 1x1 unmasked conv of cond to its
          input-to-state map (PixelCNN: to the block's masked conv output)  -> logits at the other pixels

    log p(x) = log p(x_low) + log p(x_rest | x_low)

The full image's pixels at the low positions *are* x_low: the conditional model does not predict them
again (they are masked out of its likelihood, and sampling copies them), so p is a normalized
distribution over n x n images. The paper's formulation predicts every n x n pixel in the conditional
model; see the README (Multi-Scale) for the difference. Sub-pixel order of the whole model: every low
position (raster order inside the s x s image, R -> G -> B), then the remaining pixels in raster order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pixel_lightning.metrics import BitsPerDim, NLLNats, bits_per_dim
from pixel_lightning.models import registry
from pixel_lightning.models.base import (
    AutoregressiveImageModel,
    ModelConfig,
    check_images,
    log_likelihood,
    without_autocast,
)


@dataclass
class MultiScaleConfig(ModelConfig):
    """ModelConfig of the full-resolution (conditional) model, plus the multi-scale fields.

    hidden, layers, residual, skip, head_channels and first_kernel apply to both networks unless
    ``low_hidden`` / ``low_layers`` say otherwise. ``cond_channels`` is not used: set ``cond_maps``.
    """

    base: str = "row_lstm"  # architecture of both networks: any registered single-network one
    low_res: int | None = None  # s: the low-res image is (C, s, s); n % s == 0, s < n; None: n // 2
    cond_maps: int = 32  # c: maps of the conditioning net's output (B, c, n, n), and its width
    low_hidden: int | None = None  # h of the low-res model; None: hidden
    low_layers: int | None = None  # L of the low-res model; None: layers

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(v) for v in self.image_shape)
        if self.low_res is None and len(self.image_shape) == 3:
            self.low_res = self.image_shape[1] // 2
        super().__post_init__()

    def validate(self) -> None:
        super().validate()

        def bad(msg: str) -> None:
            raise ValueError(f"invalid multi-scale config: {msg}")

        C, H, W = self.image_shape
        s = self.low_res
        if self.base not in registry.bases():
            bad(f"base must be one of {registry.bases()}, got {self.base!r}")
        if H != W:
            bad(f"the multi-scale model takes square n x n images (paper Section 3.5), got {H}x{W}")
        if not isinstance(s, int) or s < 1:
            bad(f"low_res (s) must be an integer >= 1, got {s!r}")
        if H % s != 0:
            bad(f"image side n={H} must be divisible by low_res s={s} (x_low is every (n/s)-th pixel)")
        if s == H:
            bad(f"low_res s={s} must be smaller than the image side n={H} (nothing left to condition)")
        if self.cond_maps < 1:
            bad(f"cond_maps (c) must be >= 1, got {self.cond_maps}")
        if self.cond_channels != 0:
            bad("cond_channels is set by the multi-scale model itself; set cond_maps instead")
        if self.low_hidden is not None and self.low_hidden < C:
            bad(f"low_hidden must be >= {C} so each colour group owns feature maps, got {self.low_hidden}")
        if self.low_layers is not None and self.low_layers < 0:
            bad(f"low_layers must be >= 0, got {self.low_layers}")

    @property
    def factor(self) -> int:
        """f = n / s: the low-res image is the top-left pixel of every f x f block."""
        return self.image_shape[1] // self.low_res

    def low_config(self) -> ModelConfig:
        """Config of the unconditional model of the (C, s, s) image."""
        return ModelConfig(
            **self._shared(),
            image_shape=(self.image_shape[0], self.low_res, self.low_res),
            hidden=self.hidden if self.low_hidden is None else self.low_hidden,
            layers=self.layers if self.low_layers is None else self.low_layers,
        )

    def full_config(self) -> ModelConfig:
        """Config of the conditional model of the (C, n, n) image."""
        return ModelConfig(
            **self._shared(),
            image_shape=self.image_shape,
            hidden=self.hidden,
            layers=self.layers,
            cond_channels=self.cond_maps,
        )

    def _shared(self) -> dict[str, Any]:
        """Fields both models take from this config (the optimizer fields stay with the outer model)."""
        keys = ("levels", "residual", "skip", "head_channels", "first_kernel")
        keys += ("channels_last", "compile", "wavefront")  # speed switches: same function, each part
        return {k: getattr(self, k) for k in keys}


def upsampling_stages(factor: int) -> list[tuple[int, int, int]]:
    """(kernel, stride, padding) of the transposed convolutions that multiply a side by ``factor``:
    a stride-2 stage (kernel 4, padding 1: out = 2 * in) per factor of 2, then one stride-r stage
    (kernel r, padding 0) for the odd remainder r > 1."""
    stages = []
    while factor % 2 == 0:
        stages.append((4, 2, 1))
        factor //= 2
    if factor > 1:
        stages.append((factor, factor, 0))
    return stages


class ConditioningNet(nn.Module):
    """Low-res image (B, C, s, s), scaled to [-1, 1] -> conditioning map (B, c, n, n) (Section 3.5:
    "upsampled by a small network with deconvolutional layers"). Unmasked: it sees the whole low-res
    image, and only it (the full-resolution pixels never enter).

        3x3 conv C -> c, ReLU
        transposed conv up by 2 (or by the odd remainder of n/s), ReLU     (repeated, see upsampling_stages)
        3x3 conv c -> c                                                     -> (B, c, n, n)
    """

    def __init__(self, colours: int, maps: int, factor: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(colours, maps, 3, padding=1)
        stages = upsampling_stages(factor)
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(maps, maps, k, stride=t, padding=p) for k, t, p in stages]
        )
        self.out = nn.Conv2d(maps, maps, 3, padding=1)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.inp(low))  # (B, c, s, s)
        for up in self.up:
            h = F.relu(up(h))  # side x 2 (or x r)
        return self.out(h)  # (B, c, n, n)


@registry.register("multiscale", title="Multi-Scale PixelRNN")
class MultiScalePixelRNN(AutoregressiveImageModel):
    """Multi-Scale PixelRNN on the loss base: the network ``self.low`` models x_low, the network
    ``self.full`` models the rest given ``self.upsample(x_low)``; both of the base architecture
    (``config.base``). Not itself a network, so no base of another multi-scale model."""

    config_class = MultiScaleConfig

    def build(self, config: MultiScaleConfig) -> None:
        """Two networks of the base architecture and the conditioning net, instead of one network;
        ``compile``, ``channels_last`` and ``wavefront`` reach both through their configs."""
        network = registry.get(config.base).network_class
        C, n, _ = config.image_shape
        f = config.factor
        self.low = network(config.low_config())  # p(x_low), (C, s, s)
        self.full = network(config.full_config())  # p(x_rest | x_low), (C, n, n), cond_channels = c
        self.upsample = ConditioningNet(C, config.cond_maps, f)
        # low_mask[i, j]: pixel (i, j) of the full image is a copy of a low-res pixel (not predicted again)
        low_mask = torch.zeros(n, n, dtype=torch.bool)
        low_mask[::f, ::f] = True
        self.register_buffer("low_mask", low_mask, persistent=False)

    def make_metrics(self) -> nn.ModuleDict:
        """Total (over C*n*n dims), low part (over C*s*s dims) and conditional part (over the
        C*(n*n - s*s) dims it predicts), each in nats per image and in bits/dim."""
        return nn.ModuleDict(
            {
                "nll_nats": NLLNats(),
                "bits_per_dim": BitsPerDim(self.dims),
                "nll_nats_low": NLLNats(),
                "bits_per_dim_low": BitsPerDim(self.dims_low),
                "nll_nats_cond": NLLNats(),
                "bits_per_dim_cond": BitsPerDim(self.dims_cond),
            }
        )

    # -- shapes -----------------------------------------------------------------------------
    @property
    def dims_low(self) -> int:
        """Sub-pixels of the low-res image: C * s * s."""
        return self.image_shape[0] * self.config.low_res**2

    @property
    def dims_cond(self) -> int:
        """Sub-pixels the conditional model predicts: C * (n * n - s * s)."""
        return self.dims - self.dims_low

    def subsample(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, n, n) -> (B, C, s, s): the top-left pixel of every f x f block."""
        f = self.config.factor
        return x[:, :, ::f, ::f]

    def embed_low(self, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res images (B, C, s, s) -> (values (B, C, n, n) with them at the low positions and 0
        elsewhere, mask bool (C, n, n) of those positions): the ``known`` pair of the samplers."""
        C, n, _ = self.image_shape
        f = self.config.factor
        values = low.new_zeros((low.shape[0], C, n, n))
        values[:, :, ::f, ::f] = low
        return values, self.low_mask.expand(C, n, n).clone()

    # -- network ----------------------------------------------------------------------------
    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """int values in [0, levels) -> floats in [-1, 1] (the base networks' own scaling)."""
        return self.low.scale(x)

    def conditioning(self, xf: torch.Tensor) -> torch.Tensor:
        """Scaled full images (B, C, n, n) -> cond map (B, c, n, n), a function of x_low only."""
        return self.upsample(self.subsample(xf))

    def network_parts(self, xf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled images (B, C, n, n) -> (low logits (B, K, C, s, s), full logits (B, K, C, n, n));
        the full logits at the low positions are computed but not used."""
        low_logits = self.low(self.subsample(xf))  # (B, K, C, s, s)
        full_logits = self.full(xf, self.conditioning(xf))  # (B, K, C, n, n)
        return low_logits, full_logits

    def network(self, xf: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, K, C, n, n) of the whole model: the low model's at the low positions, the
        conditional model's elsewhere, so ``log_likelihood(network(x), x)`` is log p(x)."""
        if cond is not None:
            raise ValueError("the multi-scale model makes its own conditioning map; do not pass `cond`")
        low_logits, full_logits = self.network_parts(xf)
        f = self.config.factor
        logits = full_logits.clone()
        logits[..., ::f, ::f] = low_logits
        return logits

    # -- likelihood -------------------------------------------------------------------------
    def log_prob_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x_low), log p(x_rest | x_low)) in nats, each float (B,), for int images x (B, C, n, n)."""
        self.check_images(x)
        x = x.long().to(self.device)
        low_logits, full_logits = self.network_parts(self.scale(x))
        rest = ~self.low_mask  # (n, n)
        logp_low = log_likelihood(low_logits, self.subsample(x), self.levels)
        # only the pixels that are not copies of x_low: logits (B, K, C, P), targets (B, C, P)
        logp_cond = log_likelihood(full_logits[..., rest], x[..., rest], self.levels)
        return logp_low, logp_cond

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log p(x_low) + log p(x_rest | x_low) in nats, float (B,), for int64 x (B, C, n, n)."""
        logp_low, logp_cond = self.log_prob_parts(x)
        return logp_low + logp_cond

    # -- sampling ---------------------------------------------------------------------------
    def check_low_res(self, low_res: torch.Tensor, n: int) -> None:
        """Raise ValueError if ``low_res`` is not an integer (n, C, s, s) batch in [0, levels)."""
        try:
            check_images(low_res, self.low.image_shape, self.levels)
        except ValueError as e:
            raise ValueError(f"low_res: {e}") from None
        if low_res.shape[0] != n:
            raise ValueError(f"low_res must hold one low-res image per sample: n={n}, got {low_res.shape[0]}")

    @torch.no_grad()
    @without_autocast
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        cache: bool = True,
        progress: bool = False,
        known: tuple[torch.Tensor, torch.Tensor] | None = None,
        low_res: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` images, int64 (n, C, n, n): x_low from the low model (or ``low_res``, int64
        (n, C, s, s), for super-resolution), then the other pixels from the conditional model in raster
        order; the low positions are copies of x_low. Random stream: the low model's uniforms
        (n, C, s, s) first (none when ``low_res`` is given), then (n, C, n, n) for the full image.

        ``known`` = (values, mask) completes images as for every model: the kept sub-pixels at low-res
        positions are kept by the low model, the others by the conditional model (``low_res``, when
        given, wins at the low-res positions)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if low_res is not None:
            self.check_low_res(low_res, n)
        known = self.check_known(known, n)
        was_training = self.training
        self.eval()
        try:
            if low_res is None:
                f = self.config.factor
                low_known = None if known is None else (self.subsample(known[0]), known[1][:, ::f, ::f])
                low = self.low.draw(n, generator, cache, progress, known=low_known)
            else:
                low = low_res.long().to(self.device)
            cond = self.upsample(self.scale(low))  # (n, c, n, n)
            values, mask = self.embed_low(low)  # copies of x_low: never drawn again
            if known is not None:
                values = torch.where(mask, values, known[0])
                mask = mask | known[1]
            return self.full.draw(n, generator, cache, progress, known=(values, mask), cond=cond)
        finally:
            self.train(was_training)

    # -- Lightning --------------------------------------------------------------------------
    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        x = self.batch_images(batch)
        logp_low, logp_cond = self.log_prob_parts(x)  # (B,) nats each
        logp = logp_low + logp_cond
        for name, metric in getattr(self, f"{stage}_metrics").items():
            part = logp_low if name.endswith("_low") else logp_cond if name.endswith("_cond") else logp
            metric.update(part)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return bits_per_dim(-logp.mean(), self.dims)  # the loss, in bits/dim of the whole image
