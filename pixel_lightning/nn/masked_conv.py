"""MaskedConv2d: a convolution whose kernel is multiplied by a causal mask (paper Section 3.4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pixel_lightning.nn.amp import autocast_dtype
from pixel_lightning.nn.masks import MaskType, causal_mask, channel_groups

# A masked k x k convolution with at most this many input channels (the first layer, on images) runs as
# a matmul on its patches (MaskedConv2d.patch_matmul); wider ones use F.conv2d.
PATCH_MATMUL_MAX_IN = 4


class MaskedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a mask A or mask B (see :mod:`pixel_lightning.nn.masks`), 'same' padding.

    Args:
        in_channels, out_channels: feature maps; each is split into ``colours`` contiguous groups,
            unless explicit ``in_groups`` / ``out_groups`` (one group index per channel) are given.
        kernel_size: (kh, kw) or k; the centre is (kh // 2, kw // 2). Row LSTM's K_is is (1, 3).
        mask_type: "A" (first layer: a colour does not see itself) or "B" (later layers: it does).
        colours: 3 for RGB, 1 for grey images.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        mask_type: MaskType,
        colours: int,
        in_groups: torch.Tensor | None = None,
        out_groups: torch.Tensor | None = None,
        bias: bool = True,
    ) -> None:
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        in_groups = channel_groups(in_channels, colours) if in_groups is None else in_groups
        out_groups = channel_groups(out_channels, colours) if out_groups is None else out_groups
        self.mask_type = mask_type
        self.register_buffer(
            "mask", causal_mask(out_groups, in_groups, (kh, kw), mask_type), persistent=False
        )
        with torch.no_grad():
            self.weight.mul_(self.mask)  # masked weights start (and, by the product below, stay) at zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W) -> (B, out, H, W)
        kh = self.kernel_size[0]
        if self.kernel_size == (1, 1):
            return pointwise(x, self.matrix(), self.bias)
        if kh == 1:
            return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)
        if self.in_channels <= PATCH_MATMUL_MAX_IN:
            return self.patch_matmul(x)
        # Kernel rows below the centre are all masked: convolve with the kh//2 + 1 causal rows only
        # (a third fewer FLOPs for 3x3, 3/7 fewer for 7x7). With the same padding the output gains
        # kh//2 rows at the bottom; output row r reads input rows r - kh//2 .. r, so keep the first H.
        # (Cropping a one-row kernel's masked right half the same way measured slower: not done.)
        rows = kh // 2 + 1
        w = self.weight[:, :, :rows] * self.mask[:, :, :rows]
        return FirstRows.apply(F.conv2d(x, w, self.bias, padding=self.padding), x.shape[2])

    def patch_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution as one matmul on the causal patches (im2col), for image inputs (few
        channels): (B, C, H, W) -> (B, out, H, W) channels-last.

        oneDNN computes the weight gradient of a convolution with 1-3 input channels far below its
        matmul rate (the first layer's backward was the slowest convolution of a step; figures in
        benchmarks/README.md). Here the patches are a small (B*H*W, rows*kw*C) matrix, and forward and
        weight gradient are one GEMM each. With many input channels the patch matrix is large and the
        convolution is faster: those keep ``F.conv2d``.

            x padded: kh//2 zero rows on top (none below: those rows are masked), kw//2 columns each side
            patch of (i, j): rows i .. i + kh//2, columns j .. j + kw - 1 of the padded map   (rows, kw, C)
        """
        B, C, H, W = x.shape
        kh, kw = self.kernel_size
        rows = kh // 2 + 1
        w = (self.weight * self.mask)[:, :, :rows]  # (out, C, rows, kw)
        w = w.permute(0, 2, 3, 1).reshape(self.out_channels, rows * kw * C)  # patch order (r, k, c)
        xp = F.pad(x, (kw // 2, kw // 2, kh // 2, 0)).permute(0, 2, 3, 1).contiguous()  # (B, H+r-1, W+k-1, C)
        sB, sH, sW, sC = xp.stride()
        patches = xp.as_strided((B, H, W, rows, kw, C), (sB, sH, sW, sH, sW, sC))  # a view
        flat = patches.reshape(B * H * W, rows * kw * C)  # the one copy: (P, rows*kw*C)
        out = flat @ w.t() if self.bias is None else torch.addmm(self.bias, flat, w.t())  # (P, out)
        return out.view(B, H, W, self.out_channels).permute(0, 3, 1, 2)  # (B, out, H, W)

    def matrix(self) -> torch.Tensor:
        """The masked weight of a 1x1 convolution as an (out, in) matrix."""
        return (self.weight * self.mask).view(self.out_channels, self.in_channels)

    def point(self) -> PointConv:
        """This convolution evaluated at one position at a time (cached sampling)."""
        return PointConv(self)


class FirstRows(torch.autograd.Function):
    """``y[:, :, :H]`` (a view), whose backward pads the gradient in ``y``'s memory format.

    Autograd's own slice backward writes the gradient into NCHW zeros, and the convolution backward
    that follows then copies that into the channels-last format of its input: one more pass over the
    map per causal convolution (benchmarks/README.md). Here the gradient is written once, into a map
    laid out as ``y`` is, and only the cropped rows are zeroed. Same values as the slice:
    ``test_causal_conv_gradient_equals_full_kernel``.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, H: int) -> torch.Tensor:
        ctx.shape = y.shape
        ctx.channels_last = y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last)
        return y[:, :, :H]

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
        dx = torch.empty(ctx.shape, dtype=dy.dtype, device=dy.device, memory_format=fmt)
        H = dy.shape[2]
        dx[:, :, :H] = dy
        dx[:, :, H:] = 0
        return dx, None


class PointConv:
    """A :class:`MaskedConv2d` evaluated at one output position, for cached sampling.

    Kernel rows below the centre are masked out, so a position (i, j) reads only its causal patch: rows
    i - kh//2 .. i and columns j - kw//2 .. j + kw//2 of the input. The masked kernel is cut to those rows
    and flattened once: (in * (kh//2 + 1) * kw, out), so a step on a flat patch is one ``addmm``. On a
    map cached with :meth:`padded_buffer` a step is one ``addmm`` per kernel row, read in place.
    """

    def __init__(self, conv: MaskedConv2d) -> None:
        kh, kw = conv.kernel_size
        self.rows, self.cols = kh // 2 + 1, kw  # causal patch (rows above + centre row, all columns)
        w = (conv.weight * conv.mask)[:, :, : self.rows]  # (out, in, rows, kw)
        self.weight = w.flatten(1).t().contiguous()  # (in * rows * kw, out)
        self.row_weights = w.permute(2, 3, 1, 0).flatten(1, 2).contiguous()  # (rows, kw * in, out)
        self.bias = conv.bias

    def __call__(self, v: torch.Tensor) -> torch.Tensor:  # (B, in * rows * kw) -> (B, out)
        if self.bias is None:
            return v @ self.weight
        return torch.addmm(self.bias, v, self.weight)

    def padded_buffer(self, batch: int, channels: int, H: int, W: int, like: torch.Tensor) -> torch.Tensor:
        """Zero map cache (H + rows - 1, B, W + cols - 1, in): the convolution's zero padding around the
        map (no bottom rows: they are masked). Row-major with channels last, so one kernel row of a
        patch is a (B, cols * in) matrix view: no copy per step."""
        return like.new_zeros(H + self.rows - 1, batch, W + self.cols - 1, channels)

    def write(self, buf: torch.Tensor, i: int, j: int, v: torch.Tensor) -> None:
        """Store the input vectors v (B, in) of position (i, j) in a :meth:`padded_buffer`."""
        buf[i + self.rows - 1, :, j + self.cols // 2] = v

    def at(self, buf: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Output (B, out) at position (i, j) of a :meth:`padded_buffer`."""
        out = None
        for r in range(self.rows):
            patch_row = buf[i + r, :, j : j + self.cols].flatten(1)  # (B, cols * in), a view
            if out is None:
                out = patch_row @ self.row_weights[r]
                out = out if self.bias is None else out.add_(self.bias)
            else:
                out.addmm_(patch_row, self.row_weights[r])
        return out


def channel_layout(x: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Where the channels of the (B, C, H, W) map x sit in memory: (outer, inner), the position dims
    stored outside and inside the channel dim, each in memory order, if x is dense; else None. Then
    ``x.permute(*outer, 1, *inner)`` is contiguous: channels-last is ((0, 2, 3), ()), NCHW is ((0,),
    (2, 3)), the Row LSTM's channels-outermost layout is ((), (2, 3, 0)) (nn/row_lstm.py)."""
    if x.dim() != 4:
        return None
    order = sorted(range(4), key=lambda d: -x.stride(d))  # outermost first (stable for size-1 ties)
    if not x.permute(*order).is_contiguous():
        return None
    k = order.index(1)
    return tuple(order[:k]), tuple(order[k + 1 :])


def pointwise(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution with the (out, in) matrix w: (B, in, H, W) -> (B, out, H, W), in x's layout.

    As a matmul on the map's own memory: channels innermost (channels-last), one (positions, in) x
    (in, out) ``addmm``; channels outermost, one (out, in) x (in, positions) ``addmm``; channels in
    between (NCHW), a batched (out, in) x (in, inner positions) matmul. oneDNN's 1x1 convolution path
    is slower here (benchmarks/README.md), and the output keeps the input's layout, so no layout
    copies appear between layers.
    """
    return pointwise_sum([x], [w], bias)


def pointwise_sum(xs: list[torch.Tensor], ws: list[torch.Tensor], bias: torch.Tensor | None) -> torch.Tensor:
    """sum_k (1x1 convolution of xs[k] with the (out, in_k) matrix ws[k]) + bias: (B, out, H, W).

    On dense maps of one layout (:func:`channel_layout`) the products accumulate into one output with
    ``addmm_``/``baddbmm_`` (the skip connections of Section 3.3: no per-term output map and no
    additions between them); other inputs go through ``F.conv2d``. Under autocast every term is cast to
    its dtype first: in-place products take no mix of dtypes (nn/amp.py)."""
    amp = autocast_dtype(xs[0])
    if amp is not None:
        xs, ws = [x.to(amp) for x in xs], [w.to(amp) for w in ws]
        bias = None if bias is None else bias.to(amp)
    layout = channel_layout(xs[0])
    if layout is None or any(channel_layout(x) != layout for x in xs):
        terms = [F.conv2d(x, w[:, :, None, None]) for x, w in zip(xs, ws, strict=True)]
        total = torch.stack(terms).sum(0) if len(terms) > 1 else terms[0]
        return total if bias is None else total + bias.view(1, -1, 1, 1)
    outer, inner = layout
    x0 = xs[0]
    n_out = math.prod([x0.shape[d] for d in outer])  # lists, not generators: torch.compile traces them
    n_in = math.prod([x0.shape[d] for d in inner])
    perm = (*outer, 1, *inner)
    if not inner:  # (positions, in_k) matrices
        flats = [x.permute(*perm).reshape(n_out, x.shape[1]) for x in xs]  # views
        acc = flats[0] @ ws[0].t() if bias is None else torch.addmm(bias, flats[0], ws[0].t())  # (P, out)
        for flat, w in zip(flats[1:], ws[1:], strict=True):
            acc.addmm_(flat, w.t())
    elif not outer:  # (in_k, positions) matrices
        flats = [x.permute(*perm).reshape(x.shape[1], n_in) for x in xs]  # views
        acc = ws[0] @ flats[0] if bias is None else torch.addmm(bias[:, None], ws[0], flats[0])  # (out, P)
        for flat, w in zip(flats[1:], ws[1:], strict=True):
            acc.addmm_(w, flat)
    else:  # (outer positions, in_k, inner positions): one matmul per outer position
        mats = [x.permute(*perm).reshape(n_out, x.shape[1], n_in) for x in xs]  # views
        wb = [w.expand(n_out, *w.shape) for w in ws]
        acc = torch.bmm(wb[0], mats[0]) if bias is None else torch.baddbmm(bias[:, None], wb[0], mats[0])
        for m, w in zip(mats[1:], wb[1:], strict=True):
            acc.baddbmm_(w, m)
    shape = [*(x0.shape[d] for d in outer), ws[0].shape[0], *(x0.shape[d] for d in inner)]
    return acc.view(shape).permute(*sorted(range(4), key=perm.__getitem__))  # (B, out, H, W)


def position_major(m: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (H, W, B, D) contiguous, so one position's vectors are one contiguous slice."""
    return m.permute(2, 3, 0, 1).contiguous()


def require_cond(cond: torch.Tensor | None) -> torch.Tensor:
    if cond is None:
        raise ValueError("this layer was built with cond_channels > 0 and needs a `cond` map")
    return cond
