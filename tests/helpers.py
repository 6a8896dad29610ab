"""Shared test utilities: tiny models with randomized weights, enumeration of every image."""

from __future__ import annotations

import itertools

import torch

import pixel_lightning
from pixel_lightning.models import registry

COMBOS = [(r, s) for r in (False, True) for s in (False, True)]  # (residual, skip)
ARCHS = registry.names()  # every registered architecture
# single-network architectures (one network on the loss base): the multi-scale model's possible bases
SINGLE_SCALE = registry.bases()


def tiny_model(
    arch: str, shape, levels: int, residual=True, skip=True, std=0.5, seed=0, zero_bias=False, **kw
):
    """A small model in float64 whose weights are random and large enough that the conditionals are
    far from uniform (the tests check that too). ``zero_bias`` keeps ReLUs alive about half the time,
    so a Jacobian test sees every structural dependency."""
    torch.manual_seed(seed)
    opts = dict(hidden=max(3, shape[0]), layers=2, head_channels=8)
    opts.update(kw)
    m = pixel_lightning.build_model(
        arch, image_shape=shape, levels=levels, residual=residual, skip=skip, **opts
    ).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
        if zero_bias:
            for name, p in m.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
    return m.eval()


def all_images(shape, levels: int) -> torch.Tensor:
    """Every image of ``shape`` with values in [0, levels): int64 (levels ** (C*H*W), C, H, W)."""
    C, H, W = shape
    grid = torch.tensor(list(itertools.product(range(levels), repeat=C * H * W)), dtype=torch.long)
    return grid.view(-1, C, H, W)


def mean_conditional_entropy(model, x: torch.Tensor) -> float:
    """Mean entropy (nats) of the per-sub-pixel conditionals of ``model`` (a model, or a network: then
    of its scaled input) at images ``x``."""
    with torch.no_grad():
        logits = model(x if hasattr(model, "log_prob") else model.scale(x))  # (B, K, C, H, W)
    if model.levels == 2:
        p = torch.sigmoid(logits[:, 0])
        ent = -(p * p.clamp_min(1e-300).log() + (1 - p) * (1 - p).clamp_min(1e-300).log())
    else:
        logp = torch.log_softmax(logits, dim=1)
        ent = -(logp.exp() * logp).sum(dim=1)
    return float(ent.mean())


def lightning_checkpoint(model, path):
    """Save ``model`` as a Lightning checkpoint at ``path`` (as a run does), without training."""
    import lightning as L

    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path)
    return path


def observed_dependencies(network, shape, trials=4, seed=1):
    """seen[c, i, j, c2, a, b]: the logits of sub-pixel (c, i, j), projected on a random direction,
    have a non-zero derivative with respect to input sub-pixel (c2, a, b), for some of ``trials``
    random inputs. One forward and one backward pass per trial: the batch holds one copy of the input
    per output sub-pixel and copy k back-propagates output k only (images in a batch never interact).
    ReLUs are made leaky meanwhile: the wiring is what is tested, and a ReLU that a random draw leaves
    dead for every input would hide a real connection (it cannot create one, so leaks are still caught
    exactly)."""
    C, H, W = shape
    D = C * H * W
    g = torch.Generator().manual_seed(seed)
    seen = torch.zeros(D, D, dtype=torch.bool)
    relu = torch.nn.functional.relu
    torch.nn.functional.relu = lambda x, inplace=False: torch.nn.functional.leaky_relu(x, 0.1)
    try:
        for _ in range(trials):
            x = torch.rand((1, C, H, W), generator=g, dtype=torch.float64) * 2 - 1
            x = x.expand(D, C, H, W).clone().requires_grad_()
            logits = network(x)  # (D, K, C, H, W)
            proj = torch.randn(logits.shape[1], generator=g, dtype=torch.float64)
            y = torch.einsum("bkchw,k->bchw", logits, proj).flatten(1)  # (D, D)
            y.diagonal().sum().backward()  # row k of x.grad: d y[k, k] / d x[k]
            seen |= x.grad.flatten(1) != 0
    finally:
        torch.nn.functional.relu = relu
    return seen.view(C, H, W, C, H, W)
