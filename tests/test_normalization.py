"""Exhaustive normalization: sum over every image of exp(log_prob) is 1 (issue 2 acceptance)."""

import math

import pytest
import torch
from helpers import COMBOS, SINGLE_SCALE, all_images, mean_conditional_entropy, tiny_model

CASES = [((1, 3, 3), 2), ((3, 1, 2), 4), ((1, 2, 3), 3)]


@pytest.mark.parametrize("arch", SINGLE_SCALE)
@pytest.mark.parametrize("residual,skip", COMBOS)
@pytest.mark.parametrize("shape,levels", CASES)
def test_sum_of_probabilities_is_one(arch, residual, skip, shape, levels):
    model = tiny_model(arch, shape, levels, residual, skip, std=1.0)
    x = all_images(shape, levels)
    assert len(x) == levels ** math.prod(shape)
    with torch.no_grad():
        logp = model.log_prob(x)
    total = torch.logsumexp(logp, 0).exp().item()
    assert abs(total - 1.0) < 1e-4, f"sum p(x) = {total}"
    # the randomized conditionals are far from uniform, so a model that ignored its input, or one that
    # leaked the future, could not pass by accident
    assert mean_conditional_entropy(model, x) < 0.8 * math.log(levels)


def test_a_leaky_model_is_caught():
    """Sanity check of the test itself: mask B in the first layer lets each pixel see itself, and the
    sum over all images is then far from 1."""
    from pixel_lightning.nn.masks import causal_mask, channel_groups

    model = tiny_model("pixelcnn", (1, 3, 3), 2, std=0.5)
    model.net.first.mask.copy_(causal_mask(channel_groups(6, 1), torch.zeros(1), (7, 7), "B"))
    with torch.no_grad():
        total = model.log_prob(all_images((1, 3, 3), 2)).exp().sum().item()
    assert abs(total - 1.0) > 0.05
