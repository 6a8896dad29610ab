"""Sampling: frequencies of 20,000 samples match exp(log_prob) (issue 2 acceptance)."""

import pytest
import torch
from helpers import SINGLE_SCALE, all_images, tiny_model


def empirical_tv(model, shape, levels, n=20_000, seed=0):
    xs = model.sample(n, generator=torch.Generator().manual_seed(seed))
    assert xs.dtype == torch.long and tuple(xs.shape) == (n, *shape)
    support = all_images(shape, levels)
    with torch.no_grad():
        p = model.log_prob(support).exp()
    weights = levels ** torch.arange(support[0].numel() - 1, -1, -1)
    index = (xs.flatten(1) * weights).sum(1)
    freq = torch.bincount(index, minlength=len(support)).double() / n
    return 0.5 * (freq - p).abs().sum().item()


@pytest.mark.parametrize("arch", SINGLE_SCALE)
@pytest.mark.parametrize("shape,levels", [((1, 2, 2), 2), ((3, 1, 1), 3)])
def test_sample_frequencies_match_probabilities(arch, shape, levels):
    model = tiny_model(arch, shape, levels, std=0.6)
    assert empirical_tv(model, shape, levels) < 0.03


def test_frequency_test_detects_a_wrong_sampler():
    """The statistic is sensitive: samples from a different model are far in total variation."""
    shape, levels = (1, 2, 2), 2
    a = tiny_model("pixelcnn", shape, levels, std=0.8, seed=0)
    b = tiny_model("pixelcnn", shape, levels, std=0.8, seed=3)
    xs = b.sample(20_000, generator=torch.Generator().manual_seed(0))
    support = all_images(shape, levels)
    with torch.no_grad():
        p = a.log_prob(support).exp()
    index = (xs.flatten(1) * torch.tensor([8, 4, 2, 1])).sum(1)
    freq = torch.bincount(index, minlength=16).double() / len(xs)
    assert 0.5 * (freq - p).abs().sum().item() > 0.03


def test_same_generator_same_samples():
    m = tiny_model("row_lstm", (3, 3, 3), 5)
    a = m.sample(4, generator=torch.Generator().manual_seed(7))
    b = m.sample(4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() < 5
