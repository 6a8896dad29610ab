"""Masks A and B: spatial causality and the R -> G -> B colour rule (paper Section 3.4)."""

import pytest
import torch

from pixel_lightning.nn import MaskedConv2d, causal_mask, channel_groups
from pixel_lightning.nn.diagonal_lstm import shift_down, skew, unskew


def test_channel_groups_are_contiguous_and_balanced():
    assert channel_groups(6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    assert channel_groups(4, 1).tolist() == [0, 0, 0, 0]
    assert channel_groups(256, 3).bincount().tolist() == [86, 85, 85]
    with pytest.raises(ValueError, match="colour groups"):
        channel_groups(2, 3)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_spatial_pattern(mask_type):
    m = causal_mask(torch.tensor([0]), torch.tensor([0]), (5, 5), mask_type)[0, 0]
    expected = torch.tensor(
        [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, int(mask_type == "B"), 0, 0], [0] * 5, [0] * 5]
    ).float()
    assert torch.equal(m, expected)


def test_colour_rule_at_the_centre():
    rgb = torch.arange(3)
    a = causal_mask(rgb, rgb, (3, 3), "A")[:, :, 1, 1]
    b = causal_mask(rgb, rgb, (3, 3), "B")[:, :, 1, 1]
    assert a.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]  # R sees nothing, G sees R, B sees R, G
    assert b.tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    # every off-centre earlier position connects all colours
    assert causal_mask(rgb, rgb, (3, 3), "A")[:, :, 0].eq(1).all()


def test_row_kernel_masks_the_right_neighbour():
    """Row LSTM's K_is is 1x3 with mask B: left neighbour, centre (colour-masked), never the right."""
    conv = MaskedConv2d(6, 12, (1, 3), "B", colours=3)
    assert conv.mask[:, :, 0, 0].eq(1).all() and conv.mask[:, :, 0, 2].eq(0).all()


def test_masked_weights_get_no_gradient():
    conv = MaskedConv2d(3, 6, 3, "A", colours=3)
    conv(torch.randn(2, 3, 5, 5)).sum().backward()
    assert conv.weight.grad[conv.mask == 0].abs().max() == 0


def test_skew_unskew_round_trip_and_layout():
    x = torch.arange(2 * 3 * 4, dtype=torch.float).view(1, 2, 3, 4)
    s = skew(x)
    assert s.shape == (1, 2, 3, 6)
    for i in range(3):
        assert torch.equal(s[0, :, i, i : i + 4], x[0, :, i])  # row i shifted right by i
        assert s[0, :, i, :i].eq(0).all() and s[0, :, i, i + 4 :].eq(0).all()
    assert torch.equal(unskew(s, 4), x)
    assert torch.equal(shift_down(x)[:, :, 1:], x[:, :, :-1]) and shift_down(x)[:, :, 0].eq(0).all()
