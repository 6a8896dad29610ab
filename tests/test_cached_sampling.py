"""Cached sampling (issue 6): the same images as the naive sampler for the same generator, and the same
logits at every step, for every architecture, image kind, odd sizes, residual/skip wiring, with a
conditioning map and with known sub-pixels (the multi-scale model's needs)."""

import pytest
import torch
from helpers import COMBOS, SINGLE_SCALE, tiny_model

import pixel_lightning

ARCHS = SINGLE_SCALE


def both(model, n, seed=0, **kw):
    a = model.sample(n, torch.Generator().manual_seed(seed), cache=False, **kw)
    b = model.sample(n, torch.Generator().manual_seed(seed), cache=True, **kw)
    return a, b


def step_errors(model, x, cond=None):
    """Largest |cached step logits - full forward logits| over every position of images x."""
    step = model.net.incremental(len(x), cond)
    with torch.no_grad():
        full = model(x, cond)  # (n, K, C, H, W)
        return max(
            (step(x, i, j) - full[:, :, :, i, j]).abs().max().item()
            for i in range(x.shape[2])
            for j in range(x.shape[3])
        )


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("residual,skip", COMBOS)
def test_binary_odd_size(arch, residual, skip):
    model = tiny_model(arch, (1, 5, 7), 2, residual, skip, hidden=4)
    a, b = both(model, 3)
    assert torch.equal(a, b)
    assert 0 < a.float().mean() < 1  # not a degenerate all-0 / all-1 draw


@pytest.mark.parametrize("arch", ARCHS)
def test_rgb_256_levels(arch):
    model = tiny_model(arch, (3, 3, 4), 256, hidden=6, head_channels=12)
    a, b = both(model, 2, seed=3)
    assert torch.equal(a, b)
    assert model.sample(2, generator=torch.Generator().manual_seed(3)).equal(b)  # cache=True by default


@pytest.mark.parametrize("arch", ARCHS)
def test_cond_and_known(arch):
    shape, n = (3, 4, 5), 3
    model = tiny_model(arch, shape, 5, hidden=6, cond_channels=2)
    g = torch.Generator().manual_seed(5)
    cond = torch.randn(n, 2, 4, 5, generator=g, dtype=torch.float64)
    values = torch.randint(0, 5, (n, *shape), generator=g)
    mask = torch.rand(shape, generator=g) < 0.4
    mask[:, 1, 2] = True  # a whole pixel known
    mask[2, 0, 0] = True  # a pixel whose last colour is known
    a, b = both(model, n, cond=cond, known=(values, mask))
    assert torch.equal(a, b)
    assert torch.equal(b[:, mask], values[:, mask])
    c = model.sample(n, torch.Generator().manual_seed(0), cond=torch.zeros_like(cond))
    assert not torch.equal(b, c)  # the conditioning map is used
    with pytest.raises(ValueError, match="cond"):
        model.sample(n, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape,levels", [((1, 6, 5), 2), ((3, 4, 3), 256)])
def test_step_logits_match_forward_float32(arch, shape, levels):
    """Per-step logits of the cached network agree with the full forward pass to 1e-4 (float32)."""
    model = tiny_model(arch, shape, levels, hidden=6, head_channels=12, std=0.3).float()
    x = torch.randint(0, levels, (4, *shape), generator=torch.Generator().manual_seed(0))
    assert step_errors(model, x) < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_step_logits_with_cond(arch):
    model = tiny_model(arch, (1, 4, 4), 2, hidden=4, cond_channels=3)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 2, (2, 1, 4, 4), generator=g)
    cond = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    assert step_errors(model, x, cond) < 1e-10


@pytest.mark.parametrize("base", SINGLE_SCALE)
@pytest.mark.parametrize("shape,levels,low_res", [((1, 4, 4), 2, 2), ((3, 4, 4), 256, 2)])
def test_multiscale_cached_equals_naive(base, shape, levels, low_res):
    torch.manual_seed(0)
    m = pixel_lightning.build_model(
        "multiscale",
        base=base,
        image_shape=shape,
        levels=levels,
        low_res=low_res,
        hidden=3,
        layers=1,
        head_channels=16,
        cond_maps=4,
    ).eval()
    a = m.sample(3, generator=torch.Generator().manual_seed(5), cache=False)
    b = m.sample(3, generator=torch.Generator().manual_seed(5), cache=True)
    assert torch.equal(a, b)
