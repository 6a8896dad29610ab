"""Samplers. One interface, two implementations: naive (re-run the network for every sub-pixel) and
cached (each step runs every layer at the one position it changes; the layers keep what earlier
positions computed, see each layer's ``begin_cache`` / ``step``).

Randomness: all uniforms are drawn up front, one per sub-pixel, u ~ U(0,1) of shape (n, C, H, W), from
the caller's generator. Sub-pixel (c, i, j) is then the inverse CDF of its conditional at u[:, c, i, j].
So every sampler that computes the same conditionals returns the same images for the same generator,
whatever order it does its work in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

StepFn = Callable[[torch.Tensor, int, int], torch.Tensor]  # (x int64 (n, C, H, W), i, j) -> (n, K, C)


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


def _begin(n, shape, generator, device, known):
    """What every sampler starts from: the uniforms u (n, C, H, W), the images x with the ``known``
    sub-pixels copied in, and draw[c][i][j] (nested lists): whether sub-pixel (c, i, j) is drawn."""
    u = draw_uniforms(n, shape, generator).to(device)
    x = torch.zeros((n, *shape), dtype=torch.long, device=device)
    draw = torch.ones(shape, dtype=torch.bool)
    if known is not None:
        values, mask = known
        x[:, mask] = values.to(device)[:, mask]
        draw &= ~mask.cpu()
    return u, x, draw.tolist()


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
    u, x, draw = _begin(n, shape, generator, device, known)
    steps = list(raster_order(shape))
    for c, i, j in _progress(steps, progress, "sampling (naive)"):
        if not draw[c][i][j]:
            continue
        logits = logits_fn(x)[:, :, c, i, j]  # (n, K)
        x[:, c, i, j] = inverse_cdf(logits, u[:, c, i, j], levels)
    return x


def sample_cached(
    start: Callable[[], StepFn],
    n: int,
    shape: tuple[int, int, int],
    levels: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = False,
    threads: int | None = 1,
) -> torch.Tensor:
    """Generate ``n`` images with a cached one-position network ``step = start()`` (see
    :meth:`PixelNetwork.incremental`): per pixel, one step per colour to draw, and always one
    with every colour but the last set (the features of a pixel never read its last colour, mask A), so
    the caches hold the pixel's final features. Same uniforms and ``known`` rule as :func:`sample_naive`.

    ``threads``: intra-op CPU threads while sampling (restored after). A step is a few hundred tiny
    kernels on (n, h) tensors; extra threads only add synchronisation (measured: 1 thread is 1.2-30x
    faster than 2 on a shared 2-core machine, see benchmarks/README.md). None leaves the setting alone.
    """
    previous = torch.get_num_threads()
    if threads is not None and torch.device(device).type == "cpu":
        torch.set_num_threads(threads)
    try:
        return _sample_cached(start, n, shape, levels, generator, device, known, progress)
    finally:
        torch.set_num_threads(previous)


def _sample_cached(start, n, shape, levels, generator, device, known, progress) -> torch.Tensor:
    C, H, W = shape
    u, x, draw_list = _begin(n, shape, generator, device, known)
    step = start()
    positions = [(i, j) for i in range(H) for j in range(W)]
    for i, j in _progress(positions, progress, "sampling (cached)"):
        for c in range(C):
            if draw_list[c][i][j]:
                logits = step(x, i, j)  # (n, K, C)
                x[:, c, i, j] = inverse_cdf(logits[:, :, c], u[:, c, i, j], levels)
            elif c == C - 1:
                step(x, i, j)  # nothing to draw here: only fill the caches at (i, j)
    return x


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)
