"""AutoregressiveImageModel: the loss base shared by every architecture (paper Sections 2 and 5.1).

    x (int64, B x C x H x W, values in [0, levels))
      -> self.net, the architecture's network (models/network.py):
           scale to [-1, 1], first layer 7x7 conv mask A (C -> 2h), body of L layers, 1x1 mask-B head
      -> logits (B, K, C, H, W)
      -> log p(x) = sum over sub-pixels of log p(x_{i,c} | x_{<i}, x_{i,<c})   (paper Equations 1-2)

An architecture defines only its network's ``make_layer`` (its body) and registers its LightningModule
(models/registry.py). Everything about probabilities lives here: loss, metrics, optimizer, sampling."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from pixel_lightning.hub import HubMixin
from pixel_lightning.metrics import BitsPerDim, NLLNats, bits_per_dim
from pixel_lightning.models import registry
from pixel_lightning.models.network import PixelNetwork

OPTIMIZERS = ("rmsprop", "adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine")


@dataclass
class ModelConfig:
    """Everything that defines a model. Recipes override fields under ``model.``."""

    # fields a resumed run may change; every other one shapes the parameters or the optimizer state
    RESUMABLE_CHANGES: ClassVar[frozenset[str]] = frozenset(
        {"lr", "weight_decay", "scheduler", "channels_last", "compile"}
    )

    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W); C in {1, 3}
    levels: int = 2  # values per sub-pixel: 2 -> one sigmoid each, > 2 -> a levels-way softmax each
    hidden: int = 16  # h: layers carry 2h feature maps, LSTM states have h
    layers: int = 7  # L: residual blocks (PixelCNN) or LSTM layers
    residual: bool = True  # add each layer's input to its output (Section 3.3)
    skip: bool = True  # learnable 1x1 connections from every layer's output into the head
    head_channels: int | None = None  # maps of the 1x1 head; None: 32 if levels == 2 else 1024 (paper)
    first_kernel: int = 7  # k of the first k x k mask-A convolution (odd)
    cond_channels: int = 0  # channels of a conditioning map added in every layer (multi-scale)
    optimizer: str = "rmsprop"  # one of OPTIMIZERS; the paper uses RMSProp
    lr: float = 1e-3  # learning rate (the paper's were tuned by hand and not published)
    weight_decay: float = 0.0
    scheduler: str = "none"  # one of SCHEDULERS; cosine decays to 0 over the run's total steps
    # speed only (same function): NHWC feature maps (faster PixelCNN training on CPU; the Row LSTM
    # body keeps its own channels-outermost layout either way) and torch.compile of the network
    # (measured slower on CPU: off by default); figures in benchmarks/README.md
    channels_last: bool = True
    compile: bool = False
    # Row LSTM: layers advance together on row diagonals (nn/wavefront.py); None: on CUDA only (fewer
    # launches), off on CPU where it measured slower (benchmarks/README.md)
    wavefront: bool | None = None

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(v) for v in self.image_shape)  # YAML gives lists
        if self.head_channels is None:
            self.head_channels = 32 if self.levels == 2 else 1024
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"invalid model config: {msg}")

        if len(self.image_shape) != 3:
            bad(f"image_shape must be (C, H, W), got {self.image_shape}")
        C, H, W = self.image_shape
        if C not in (1, 3):
            bad(f"image_shape C must be 1 (grey) or 3 (RGB), got {C}")
        if H < 1 or W < 1:
            bad(f"image height and width must be >= 1, got {H}x{W}")
        if self.levels < 2:
            bad(f"levels must be >= 2 (2 for binary images, 256 for 8-bit), got {self.levels}")
        if self.hidden < C:
            bad(f"hidden (h) must be >= {C} so each colour group owns feature maps, got {self.hidden}")
        if self.layers < 0:
            bad(f"layers must be >= 0, got {self.layers}")
        if self.head_channels < C:
            bad(f"head_channels must be >= {C}, got {self.head_channels}")
        if self.first_kernel < 1 or self.first_kernel % 2 == 0:
            bad(f"first_kernel must be odd and >= 1, got {self.first_kernel}")
        if self.optimizer not in OPTIMIZERS:
            bad(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            bad(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if not self.lr > 0:
            bad(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            bad(f"weight_decay must be >= 0, got {self.weight_decay}")


def without_autocast(method: Callable[..., Any]) -> Callable[..., Any]:
    """A model method run with autocast off on the model's device: sampling. The samplers draw the same
    images for the same generator, cached or not, only when both compute the same conditionals, and
    reduced-precision rounding differs between the whole-map and the one-position paths; sampling is
    inference on (n, h) vectors, bound by launches, so fp32 costs it little (nn/amp.py)."""

    @functools.wraps(method)
    def run(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self.device.type, enabled=False):
            return method(self, *args, **kwargs)

    return run


def log_likelihood(logits: torch.Tensor, x: torch.Tensor, levels: int) -> torch.Tensor:
    """log p(x) in nats per image, (B,), from logits (B, K, C, H, W) and x int64 (B, C, H, W).

    Numerics. The network gives unnormalised scores; we never form probabilities and take their log.
    * levels > 2 (K = levels): log softmax_k(l) = l_k - logsumexp(l), and logsumexp subtracts max(l)
      before exponentiating, so no exp overflows and the largest term is exactly exp(0) = 1.
      ``log_softmax`` over K, then the entry at the target (what ``F.cross_entropy`` computes). K is
      moved last in the logits' own memory order: with channels-last maps a sub-pixel's K scores are
      contiguous, so there is no transposing copy (cross_entropy over dim 1 made three, ~0.3 s of a
      CIFAR-10 PixelCNN training step).
    * levels == 2 (K = 1, one sigmoid per sub-pixel): log sigmoid(l) for x = 1 and
      log(1 - sigmoid(l)) = log sigmoid(-l) for x = 0. ``binary_cross_entropy_with_logits`` evaluates
      max(l, 0) - l*x + log1p(exp(-|l|)), finite for any l (no log(0) at saturated sigmoids).
    Per-sub-pixel terms are summed over C*H*W in float32 (<= 12,288 terms of size ~1: far inside
    float32's range and precision for a mean over a batch). Logits from a mixed-precision network
    (bf16/fp16 under autocast) are cast to float32 first: the softmax, sigmoid and sum run in fp32 (or
    fp64, for a float64 model).
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # a no-op for fp32 and fp64
    if levels == 2:
        ll = -F.binary_cross_entropy_with_logits(logits[:, 0], x.to(logits.dtype), reduction="none")
    else:
        order = sorted((d for d in range(logits.dim()) if d != 1), key=lambda d: -logits.stride(d))
        lp = torch.log_softmax(logits.permute(*order, 1), dim=-1)  # (..., K), memory order
        xt = x.permute(*[d - (d > 1) for d in order])  # the same order (x has no class dim)
        ll = lp.gather(-1, xt.unsqueeze(-1)).squeeze(-1).movedim(order.index(0), 0)  # (B, ...)
    return ll.flatten(1).sum(dim=1)


def check_images(x: torch.Tensor, shape: tuple[int, int, int], levels: int) -> None:
    """Raise ValueError naming the problem if ``x`` is not an integer (B, *shape) batch with values in
    [0, levels)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor of images, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise ValueError(
            f"images must be an integer tensor (int64) of values in [0, {levels}), got dtype "
            f"{x.dtype}; convert with x.round().long() if they are whole numbers"
        )
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(
            f"images must have shape (B, {', '.join(map(str, shape))}) for this model, got {tuple(x.shape)}"
        )
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= levels):
        raise ValueError(
            f"pixel values must lie in [0, {levels}) for levels={levels}, got range "
            f"[{int(x.min())}, {int(x.max())}]"
            + ("; binarize 8-bit images first (e.g. x > 127)" if levels == 2 else "")
        )


# parameter names of a single-scale model before its network was a module of its own (``first.weight``,
# now ``net.first.weight``): checkpoints and save_pretrained folders written then still load
LEGACY_NETWORK_KEYS = ("first.", "stack.", "head.")


def migrate_legacy_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: ``<prefix>first.weight`` -> ``<prefix>net.first.weight`` (and so on
    for the stack and the head), in the dict ``load_state_dict`` works on (a copy of the caller's)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        if key[len(prefix) :].startswith(LEGACY_NETWORK_KEYS):
            state_dict[f"{prefix}net.{key[len(prefix) :]}"] = state_dict.pop(key)


class AutoregressiveImageModel(L.LightningModule, HubMixin):
    """Exact-likelihood image model p(x) = prod_i p(x_i | x_<i) with R -> G -> B order inside a pixel:
    the loss, metrics, optimizer and sampling of every architecture, around its network ``self.net``.

    An architecture sets ``network_class`` (its :class:`PixelNetwork`) and registers the class
    (:func:`pixel_lightning.models.registry.register`, which sets ``arch``). ``save_pretrained``,
    ``push_to_hub`` and ``from_pretrained`` come from :class:`pixel_lightning.hub.HubMixin`.
    """

    arch: ClassVar[str] = ""  # set by the registry
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    network_class: ClassVar[type[PixelNetwork] | None] = None

    @classmethod
    def config_fields(cls) -> list[str]:
        """Names a recipe (``model.*``) or :func:`pixel_lightning.build_model` may set."""
        return [f.name for f in fields(cls.config_class)]

    def __init__(self, config: ModelConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = self.config_class(**kwargs)
        elif kwargs:
            raise TypeError("pass either a ModelConfig or keyword arguments, not both")
        self.config = config
        self.save_hyperparameters(asdict(config))
        self.build(config)
        # separate metric objects per stage, so train, val and test states never mix
        self.train_metrics = self.make_metrics()
        self.val_metrics = self.make_metrics()
        self.test_metrics = self.make_metrics()
        self.register_load_state_dict_pre_hook(migrate_legacy_keys)

    def make_metrics(self) -> nn.ModuleDict:
        return nn.ModuleDict({"nll_nats": NLLNats(), "bits_per_dim": BitsPerDim(self.dims)})

    def build(self, config: ModelConfig) -> None:
        """The network (a model made of several networks, multi-scale, overrides this)."""
        self.net = self.network_class(config)

    # -- shapes -----------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.config.image_shape

    @property
    def levels(self) -> int:
        return self.config.levels

    @property
    def dims(self) -> int:
        C, H, W = self.config.image_shape
        return C * H * W

    # -- network ----------------------------------------------------------------------------
    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """int values in [0, levels) -> floats in [-1, 1]."""
        return self.net.scale(x)

    def network(self, xf: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled images (B, C, H, W) -> logits (B, K, C, H, W), K = levels (softmax) or 1 (sigmoid)."""
        return self.net(xf, cond)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, K, C, H, W) for integer images x (B, C, H, W)."""
        return self.network(self.scale(x), cond)

    # -- likelihood -------------------------------------------------------------------------
    def check_images(self, x: torch.Tensor) -> None:
        """Raise ValueError naming the problem if ``x`` is not an integer (B, C, H, W) batch of
        this model's shape with values in [0, levels)."""
        check_images(x, self.image_shape, self.levels)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats (natural log), float (B,), for int64 images x (B, C, H, W)."""
        self.check_images(x)
        if len(x) == 0:  # no images: no log-likelihoods (the network does not take an empty batch)
            return torch.zeros(0, dtype=next(self.parameters()).dtype, device=self.device)
        x = x.long().to(self.device)
        return log_likelihood(self(x), x, self.levels)

    # -- sampling ---------------------------------------------------------------------------
    def check_known(
        self, known: tuple[torch.Tensor, torch.Tensor] | None, n: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``known`` = (values, mask) as the samplers take it: values int64 (n, C, H, W) (one image
        (C, H, W) is repeated n times), mask bool (C, H, W). ValueError naming the problem otherwise."""
        if known is None:
            return None
        values, mask = known
        if isinstance(values, torch.Tensor) and values.dim() == 3:
            values = values.unsqueeze(0).expand(n, *values.shape)
        try:
            self.check_images(values)
        except ValueError as e:
            raise ValueError(f"known values: {e}") from None
        if values.shape[0] != n:
            raise ValueError(f"known values must hold one image per sample: n={n}, got {values.shape[0]}")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = getattr(mask, "dtype", type(mask).__name__)
            raise ValueError(f"known mask must be a bool tensor of shape {self.image_shape}, got {got}")
        if tuple(mask.shape) != tuple(self.image_shape):
            got = tuple(mask.shape)
            raise ValueError(f"known mask must have shape {self.image_shape} (C, H, W), got {got}")
        return values.long().to(self.device), mask.to(self.device)

    @torch.no_grad()
    @without_autocast
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        cache: bool = True,
        progress: bool = False,
        known: tuple[torch.Tensor, torch.Tensor] | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` images, int64 (n, C, H, W), in raster order, R -> G -> B inside each pixel
        (Section 2); with ``known``, complete images (Figure 1).

        Args:
            n: number of images.
            generator: source of the uniforms, drawn up front (one per sub-pixel, see
                :mod:`pixel_lightning.sampling`): same generator, same images, cached or not.
            cache: True (default) runs each layer at the one position a step changes
                (:func:`~pixel_lightning.sampling.sample_cached`); False re-runs the whole network per
                sub-pixel (:func:`~pixel_lightning.sampling.sample_naive`).
            progress: show a tqdm bar.
            known: (values int64 (n, C, H, W) or (C, H, W), mask bool (C, H, W)): sub-pixels where mask
                is True are copied from values, not drawn (their uniforms are still consumed). Each
                drawn sub-pixel is conditioned on every sub-pixel before it, kept or drawn.
            cond: conditioning map (n, cond_channels, H, W) handed to every layer (multi-scale models).
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        known = self.check_known(known, n)
        if cond is not None:
            cond = cond.to(device=self.device, dtype=self.net.first.weight.dtype)
        was_training = self.training
        self.eval()
        try:
            return self.net.draw(n, generator, cache, progress, known, cond)
        finally:
            self.train(was_training)

    def complete(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        n: int = 1,
        generator: torch.Generator | None = None,
        cache: bool = True,
        progress: bool = False,
    ) -> torch.Tensor:
        """``n`` completions of each image: the sub-pixels where ``mask`` (bool (C, H, W)) is True are
        kept from ``x``, the others drawn (the paper's Figure 1). ``x`` int64 (C, H, W) gives
        (n, C, H, W); a batch (B, C, H, W) gives (B, n, C, H, W). A thin wrapper of :meth:`sample`."""
        batch = x.unsqueeze(0) if isinstance(x, torch.Tensor) and x.dim() == 3 else x
        self.check_images(batch)
        values = batch.repeat_interleave(n, dim=0)  # (B*n, C, H, W), image-major
        out = self.sample(len(values), generator, cache, progress, known=(values, mask))
        out = out.view(len(batch), n, *self.image_shape)
        return out[0] if batch is not x else out

    # -- Lightning --------------------------------------------------------------------------
    @staticmethod
    def batch_images(batch: Any) -> torch.Tensor:
        """Images from a loader batch: a tensor, an (x, y) tuple/list or a dict with key "image"."""
        if isinstance(batch, dict):
            batch = batch["image"]
        elif isinstance(batch, (tuple, list)):
            batch = batch[0]
        return batch

    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        x = self.batch_images(batch)
        logp = self.log_prob(x)  # (B,) nats
        for name, metric in getattr(self, f"{stage}_metrics").items():
            metric.update(logp)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return bits_per_dim(-logp.mean(), self.dims)  # the loss, in bits/dim

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.shared_step(batch, "train")
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def configure_optimizers(self) -> Any:
        c = self.config
        params = self.parameters()
        if c.optimizer == "rmsprop":
            opt = torch.optim.RMSprop(params, lr=c.lr, weight_decay=c.weight_decay)
        elif c.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        elif c.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=c.lr, momentum=0.9, weight_decay=c.weight_decay)
        if c.scheduler == "none":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        module = registry.get(self.arch).module  # imported again before "arch" is looked up (hub.py)
        checkpoint["pixel_lightning"] = {"arch": self.arch, "module": module, "config": asdict(self.config)}

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"arch={self.arch}, params={n:,}, bits/dim uniform={math.log2(self.levels):.2f}"
