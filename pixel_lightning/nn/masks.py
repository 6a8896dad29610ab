"""Causal masks for masked convolutions (paper Section 3.4, Figure 2): the only place masks are made.

Spatially, a masked kernel sees the rows above its centre and, in the centre row, the columns to the
left. At the centre position the feature maps are split into colour groups R, G, B (or one group for
grey images) and group g may read:

    mask A (first layer only):  groups < g   -> R sees nothing, G sees R, B sees R and G
    mask B (every later layer): groups <= g  -> R sees R, G sees R and G, B sees R, G and B

A 5x5 kernel, for one (output group, input group) pair::

    mask A, g_out <= g_in       mask B, g_out >= g_in (and mask A, g_out > g_in)
      1 1 1 1 1                   1 1 1 1 1
      1 1 1 1 1                   1 1 1 1 1
      1 1 0 0 0                   1 1 1 0 0
      0 0 0 0 0                   0 0 0 0 0
      0 0 0 0 0                   0 0 0 0 0

Colour connectivity at the centre (rows: output group, columns: input group)::

    mask A      R G B          mask B      R G B
          R     0 0 0                R     1 0 0
          G     1 0 0                G     1 1 0
          B     1 1 0                B     1 1 1
"""

from __future__ import annotations

from typing import Literal

import torch

MaskType = Literal["A", "B"]


def channel_groups(n_channels: int, colours: int) -> torch.Tensor:
    """Colour group (0=R, 1=G, 2=B) of each of ``n_channels`` feature maps: contiguous, balanced blocks.

    ``n_channels >= colours`` so that every colour owns at least one map. For grey images (colours=1)
    every map is in group 0 and the masks reduce to the plain spatial ones.
    """
    if n_channels < colours:
        raise ValueError(
            f"{n_channels} feature maps cannot be split into {colours} colour groups; "
            f"use at least {colours} channels (e.g. a larger `hidden`)."
        )
    return torch.arange(n_channels) * colours // n_channels  # (n,)


def causal_mask(
    out_groups: torch.Tensor,
    in_groups: torch.Tensor,
    kernel_size: tuple[int, int],
    mask_type: MaskType,
) -> torch.Tensor:
    """Mask of shape (out, in, kh, kw) for a kernel whose centre is (kh // 2, kw // 2).

    Rows above the centre: 1. Centre row, columns left of the centre: 1. Centre: the colour rule of
    ``mask_type``. Everything after the centre in raster order: 0.
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel_size
    ci, cj = kh // 2, kw // 2
    mask = torch.zeros(len(out_groups), len(in_groups), kh, kw)
    mask[:, :, :ci, :] = 1.0  # rows above
    mask[:, :, ci, :cj] = 1.0  # left in the centre row
    og, ig = out_groups[:, None], in_groups[None, :]
    centre = (ig < og) if mask_type == "A" else (ig <= og)  # (out, in)
    mask[:, :, ci, cj] = centre.float()
    return mask
