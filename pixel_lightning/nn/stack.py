"""The residual and skip wiring shared by every body (paper Section 3.3): the only owner of it.

x_0 = first layer output                      (B, 2h, H, W)
y_l = layer_l(x_{l-1})                        residual branch, no addition inside the layer
x_l = x_{l-1} + y_l   if residual else y_l
out = sum_l S_l(y_l)  if skip     else x_L    S_l: learnable 1x1 mask-B convolutions

Every body layer here ends in a 1x1 convolution, y_l = O_l(r_l) (PixelCNN: r_l = ReLU of the 3x3's
output, h -> 2h; Row/Diagonal LSTM: r_l = the state maps h, h -> 2h). Two 1x1 convolutions in a row are
one, so the skip term is computed from r_l with the product matrix: S_l(O_l(r_l)) = (S_l O_l) r_l +
S_l b_l, h input maps instead of 2h, half the skip work (:meth:`LayerStack.forward`; the definition
above is :meth:`LayerStack.forward_reference`, tests/test_speed_exact.py compares them). With skip on,
the last layer's y_L and x_L are not needed and not computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pixel_lightning.nn.masked_conv import MaskedConv2d, pointwise_sum


def composable_output(layer: nn.Module) -> MaskedConv2d | None:
    """The final 1x1 convolution O of a layer computed as ``O(layer.pre_output(x, cond))``, or None
    for a layer without that form (it is then called whole)."""
    out = getattr(layer, "output_conv", None)
    return out if isinstance(out, MaskedConv2d) and out.kernel_size == (1, 1) else None


class LayerStack(nn.Module):
    """Applies ``layers`` with optional residual connections and skip connections to the output head."""

    def __init__(self, layers: Sequence[nn.Module], width: int, colours: int, residual: bool, skip: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.residual = residual
        self.skip = skip
        self.skips = nn.ModuleList(
            [MaskedConv2d(width, width, 1, "B", colours) for _ in layers] if skip else []
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if not (self.skip and self.layers):
            for layer in self.layers:
                y = layer(x, cond)  # (B, 2h, H, W)
                x = x + y if self.residual else y
            return x
        terms, mats = [], []  # sum_l mats[l] @ terms[l] + bias is the output
        bias = torch.stack([s.bias for s in self.skips]).sum(0)  # (2h,)
        last = len(self.layers) - 1
        for k, (layer, s) in enumerate(zip(self.layers, self.skips, strict=True)):
            S = s.matrix()  # (2h, 2h)
            out = composable_output(layer)
            if out is None:
                y = layer(x, cond)  # (B, 2h, H, W)
                terms.append(y)
                mats.append(S)
            else:
                r = layer.pre_output(x, cond)  # (B, h, H, W)
                terms.append(r)
                mats.append(S @ out.matrix())  # (2h, h)
                bias = bias + S @ out.bias
                if k == last:
                    break  # x_L is not used with skip connections
                y = out(r)  # (B, 2h, H, W)
            x = x + y if self.residual else y
        return pointwise_sum(terms, mats, bias)

    def forward_reference(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The wiring at the top of this module, term by term (tests compare :meth:`forward`)."""
        ys = []
        for layer in self.layers:
            y = layer(x, cond)  # (B, 2h, H, W)
            x = x + y if self.residual else y
            ys.append(y)
        if not (self.skip and ys):
            return x
        return sum(s(y) for s, y in zip(self.skips, ys, strict=True))

    # -- cached sampling: one position at a time ---------------------------------------------
    def begin_cache(self, batch: int, H: int, W: int, cond: torch.Tensor | None) -> dict:
        """Per-sampling state of every layer (``layer.begin_cache``) and the skip convolutions."""
        skips = [s.point() for s in self.skips]
        return {
            "layers": [layer.begin_cache(batch, H, W, cond) for layer in self.layers],
            "skips": [s.weight for s in skips],  # (2h, 2h) each
            "skip_bias": sum(s.bias for s in skips).expand(batch, -1) if skips else None,  # (B, 2h)
        }

    def step(self, cache: dict, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """:meth:`forward` at one position: x (B, 2h) at (i, j) -> (B, 2h), with the same wiring."""
        total = cache["skip_bias"]  # sum of the skip convolutions' biases, then one addmm per layer
        for k, layer in enumerate(self.layers):
            y = layer.step(cache["layers"][k], x, i, j)  # (B, 2h)
            x = x + y if self.residual else y
            if self.skip:
                total = torch.addmm(total, y, cache["skips"][k])
        return total if self.skip and self.layers else x
