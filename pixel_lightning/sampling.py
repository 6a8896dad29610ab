"""Samplers. One interface, two implementations: naive (re-run the network for every sub-pixel) and,
where a model provides one, cached.

Randomness: all uniforms are drawn up front, one per sub-pixel, u ~ U(0,1) of shape (n, C, H, W), from
the caller's generator. Sub-pixel (c, i, j) is then the inverse CDF of its conditional at u[:, c, i, j].
So every sampler that computes the same conditionals returns the same images for the same generator,
whatever order it does its work in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


def draw_uniforms(n: int, shape: tuple[int, int, int], generator: torch.Generator | None) -> torch.Tensor:
    """u (n, C, H, W) float64 on the CPU, from ``generator`` (or the global RNG)."""
    return torch.rand((n, *shape), generator=generator, dtype=torch.float64)


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor, levels: int) -> torch.Tensor:
    """Draw one value per row. logits (n, K) with K = levels (softmax) or K = 1 (sigmoid, levels 2);
    u (n,) uniforms. Returns int64 (n,): the smallest k with CDF(k) > u."""
    logits = logits.double()
    if levels == 2 and logits.shape[-1] == 1:
        return (u < torch.sigmoid(logits[:, 0])).long()  # P(x = 1) = sigmoid(logit)
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)  # (n, levels)
    return (cdf < u[:, None]).sum(dim=-1).clamp(max=levels - 1)


def raster_order(shape: tuple[int, int, int]) -> Iterator[tuple[int, int, int]]:
    """Sub-pixels in the model's order: rows, then columns, then R -> G -> B. Yields (c, i, j)."""
    C, H, W = shape
    for i in range(H):
        for j in range(W):
            for c in range(C):
                yield c, i, j


def sample_naive(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    shape: tuple[int, int, int],
    levels: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Generate ``n`` images by running ``logits_fn`` (int64 (n, C, H, W) -> (n, K, C, H, W)) once per
    sub-pixel. ``known`` = (values int64 (n, C, H, W), mask bool (C, H, W)) fixes some sub-pixels: they
    are copied, not drawn (their uniforms are still consumed, so the random stream does not move)."""
    u = draw_uniforms(n, shape, generator).to(device)
    x = torch.zeros((n, *shape), dtype=torch.long, device=device)
    if known is not None:
        values, mask = known
        x[:, mask] = values.to(device)[:, mask]
    steps = list(raster_order(shape))
    for c, i, j in _progress(steps, progress, "sampling (naive)"):
        if known is not None and known[1][c, i, j]:
            continue
        logits = logits_fn(x)[:, :, c, i, j]  # (n, K)
        x[:, c, i, j] = inverse_cdf(logits, u[:, c, i, j], levels)
    return x


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)
