"""Completion (the paper's Figure 1) through the one public sampler, ``model.sample(n, known=(values,
mask))``, and its wrapper ``model.complete``, for all four architectures: kept sub-pixels unchanged, the
drawn ones from the right conditional, cached == naive, clear errors for bad inputs."""

import pytest
import torch
from helpers import ARCHS, all_images, tiny_model
from test_multiscale import one_thread  # noqa: F401  autouse: tiny float64 models run faster on one thread


def tiny(arch, shape, levels, std=0.7, seed=0):
    extra = {}
    if arch == "multiscale":
        extra = dict(base="pixelcnn", low_res=1, cond_maps=3, layers=1, first_kernel=3)
    return tiny_model(arch, shape, levels, std=std, seed=seed, **extra)


@pytest.mark.parametrize("arch", ARCHS)
def test_completion_frequencies_match_the_conditional(arch):
    """Top row kept (it precedes the drawn sub-pixels in every model's order): the completions'
    frequencies equal p(x) / sum of p over the images that agree with the kept row."""
    shape, levels, n = (1, 2, 2), 2, 20_000
    model = tiny(arch, shape, levels)
    support = all_images(shape, levels)  # (16, 1, 2, 2)
    with torch.no_grad():
        p = model.log_prob(support).exp()
    top = torch.tensor([[[1, 0], [0, 0]]])
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[:, 0] = True
    agree = (support[:, :, 0] == top[:, 0]).flatten(1).all(1)
    p_given = torch.where(agree, p, torch.zeros_like(p)) / p[agree].sum()
    xs = model.sample(n, generator=torch.Generator().manual_seed(0), known=(top, mask))
    index = (xs.flatten(1) * torch.tensor([8, 4, 2, 1])).sum(1)
    freq = torch.bincount(index, minlength=16).double() / n
    assert torch.equal(xs[:, mask], top[mask].expand(n, -1))
    tv = 0.5 * (freq - p_given).abs().sum().item()
    assert tv < 0.03, f"{arch}: total variation {tv:.4f}"
    wrong = torch.where(agree, torch.full_like(p, 0.25), torch.zeros_like(p))  # control: uniform completion
    assert 0.5 * (freq - wrong).abs().sum().item() > 0.03


@pytest.mark.parametrize("arch", ARCHS)
def test_kept_pixels_unchanged_and_cached_equals_naive(arch):
    shape, levels = (3, 4, 4), 5
    model = tiny(arch, shape, levels)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, levels, (2, *shape), generator=g)
    mask = torch.rand(shape, generator=g) < 0.5
    a = model.sample(2, torch.Generator().manual_seed(2), cache=True, known=(x, mask))
    b = model.sample(2, torch.Generator().manual_seed(2), cache=False, known=(x, mask))
    assert torch.equal(a, b)
    assert torch.equal(a[:, mask], x[:, mask])
    assert not torch.equal(a[:, ~mask], x[:, ~mask])  # the rest is drawn, not copied


@pytest.mark.parametrize("arch", ARCHS)
def test_complete_gives_n_completions_per_image(arch):
    shape, levels = (1, 4, 4), 2
    model = tiny(arch, shape, levels)
    x = torch.randint(0, levels, (3, *shape), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[:, :, :2] = True  # left half
    out = model.complete(x, mask, n=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 4, *shape) and out.dtype == torch.long
    for b in range(3):
        assert torch.equal(out[b][:, mask], x[b][mask].expand(4, -1))
    one = model.complete(x[1], mask, n=4, generator=torch.Generator().manual_seed(0))
    assert one.shape == (4, *shape)
    # complete is sample with the images repeated: same generator, same completions
    same = model.sample(4, torch.Generator().manual_seed(0), known=(x[1], mask))
    assert torch.equal(one, same)


def test_bad_known_inputs_name_the_problem():
    shape = (1, 4, 4)
    model = tiny("pixelcnn", shape, 2)
    x = torch.zeros((2, *shape), dtype=torch.long)
    mask = torch.ones(shape, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"known mask must have shape \(1, 4, 4\)"):
        model.sample(2, known=(x, mask[:, :2]))
    with pytest.raises(ValueError, match="known mask must be a bool tensor"):
        model.sample(2, known=(x, mask.long()))
    with pytest.raises(ValueError, match=r"known values: pixel values must lie in \[0, 2\)"):
        model.sample(2, known=(x + 3, mask))
    with pytest.raises(ValueError, match="one image per sample: n=3, got 2"):
        model.sample(3, known=(x, mask))
    with pytest.raises(ValueError, match="integer tensor"):
        model.complete(x.float(), mask, n=2)
