"""Shared test utilities: tiny models with randomized weights, enumeration of every image."""

from __future__ import annotations

import itertools

import torch

import pixel_lightning

COMBOS = [(r, s) for r in (False, True) for s in (False, True)]  # (residual, skip)
# single-scale architectures (one body on the loss base); "multiscale" composes them: tests/test_multiscale.py
SINGLE_SCALE = sorted(a for a in pixel_lightning.ARCHITECTURES if a != "multiscale")


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
    """Mean entropy (nats) of the per-sub-pixel conditionals of ``model`` at images ``x``."""
    with torch.no_grad():
        logits = model(x)  # (B, K, C, H, W)
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
