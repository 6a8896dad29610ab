"""Row LSTM layer (paper Section 3.1, Figure 2 middle).

The image is processed row by row from the top. For row i the gates are

    [o_i, f_i, i_i, g_i] = K_ss (*) h_{i-1}  +  K_is (*) x_i          (paper Equation 3)

K_is is a width-3 convolution along the row with mask B (it sees x at (i, j-1) and, colour-masked,
(i, j)); it is computed for the whole map at once before the recurrence. K_ss is a width-3 unmasked
convolution over the previous row's hidden state. The receptive field is a triangle above the pixel:
row i-k contributes columns j-k-1 .. j+k.

    K_is (1x3, mask B)      K_ss (1x3 on row i-1, unmasked)
        [1 c 0]                 [1 1 1]   <- h_{i-1}
                                [. x .]   <- row i
"""

from __future__ import annotations

import torch
from torch import nn

from pixel_lightning.nn.amp import apply_autocast_free, autocast_free_backward
from pixel_lightning.nn.lstm_cell import lstm_scan, lstm_update
from pixel_lightning.nn.masked_conv import MaskedConv2d, position_major, require_cond
from pixel_lightning.nn.masks import channel_groups


class RowLSTMLayer(nn.Module):
    """One Row LSTM layer: (B, 2h, H, W) -> residual branch (B, 2h, H, W).

    The h-dimensional state is raised back to 2h by a 1x1 mask-B convolution (Section 3.4). Residual
    and skip wiring are not done here: :class:`pixel_lightning.nn.stack.LayerStack` owns them.
    """

    def __init__(self, hidden: int, colours: int, cond_channels: int = 0) -> None:
        super().__init__()
        h = hidden
        self.hidden = h
        state_groups = channel_groups(h, colours)
        gate_groups = state_groups.repeat(4)  # o, f, i, g each grouped like the state
        self.K_is = MaskedConv2d(2 * h, 4 * h, (1, 3), "B", colours, out_groups=gate_groups)
        self.K_ss = nn.Conv1d(h, 4 * h, 3, padding=1)  # unmasked: row i-1 is entirely in the past
        self.h0 = nn.Parameter(torch.zeros(h))  # learned initial state (Section 3.1)
        self.c0 = nn.Parameter(torch.zeros(h))
        self.out = MaskedConv2d(h, 2 * h, 1, "B", colours)
        self.cond = nn.Conv2d(cond_channels, 4 * h, 1) if cond_channels else None

    def input_to_state(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """K_is for the whole map at once (plus the conditioning map, if any): (B, 4h, H, W)."""
        s = self.K_is(x)
        if self.cond is not None:
            s = s + self.cond(require_cond(cond))
        return s

    def initial_state(self, batch: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.h0.view(1, -1, 1).expand(batch, -1, width)  # (B, h, W)
        c = self.c0.view(1, -1, 1).expand(batch, -1, width)
        return h, c

    def forward_reference(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Straightforward row loop with a conv1d K_ss (the definition; tests compare :meth:`forward`)."""
        B, _, H, W = x.shape
        s_is = self.input_to_state(x, cond)  # (B, 4h, H, W)
        h, c = self.initial_state(B, W)
        rows = []
        for i in range(H):
            gates = s_is[:, :, i] + self.K_ss(h)  # (B, 4h, W)
            h, c = lstm_update(gates, c, dim=1)  # (B, h, W)
            rows.append(h)
        return self.out(torch.stack(rows, dim=2))  # (B, h, H, W) -> (B, 2h, H, W)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.pre_output(x, cond))  # (B, 2h, H, W)

    @property
    def output_conv(self) -> MaskedConv2d:
        return self.out

    def pre_output(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The state maps, the input of the 1x1 output convolution: (B, 2h, H, W) -> (B, h, H, W).

        Runs with channels outermost (memory order C, H, W, B; :func:`to_chwb`): a map is one (C,
        H*W*B) matrix, so K_is is two GEMMs over the whole map (:class:`RowInputToState`), a row of
        the gates is a (4h, W*B) slice that :func:`lstm_scan` reads in place, the states come back in
        the same layout, and the 1x1 convolutions around the layer are single GEMMs as well
        (:func:`~pixel_lightning.nn.masked_conv.pointwise`). No copies between layers when the stack
        keeps its maps so (:class:`~pixel_lightning.nn.wavefront.RowLSTMStack`).
        """
        B, _, H, W = x.shape
        hd = self.hidden
        K = self.K_is.weight * self.K_is.mask  # (4h, 2h, 1, 3); the tap j+1 is all zero (mask B)
        bias = self.K_is.bias + self.K_ss.bias  # (4h,)
        s = apply_autocast_free(
            RowInputToState, "autocast", to_chwb(x), K[:, :, 0, 1], K[:, :, 0, 0], bias, W, B
        )  # (4h, H*W*B)
        if self.cond is not None:
            s = s + to_chwb(self.cond(require_cond(cond)))
        s = s.view(1, 4 * hd, H, W, B).permute(2, 0, 1, 3, 4)  # (H, 1, 4h, W, B) view: a step is a row
        K_ss = self.K_ss.weight.permute(0, 2, 1).reshape(1, 4 * hd, 3 * hd)  # taps (j-1, j, j+1)
        h0 = self.h0.view(1, hd, 1, 1).expand(1, hd, W, B)
        c0 = self.c0.view(1, hd, 1, 1).expand(1, hd, W, B)
        hs = lstm_scan(s, K_ss, h0, c0, (-1, 0, 1))  # (H, 1, h, W, B), stored (1, h, H, W, B)
        return hs[:, 0].permute(3, 1, 0, 2)  # (B, h, H, W), memory order (h, H, W, B)

    # -- cached sampling: one position at a time ---------------------------------------------
    def begin_cache(self, batch: int, H: int, W: int, cond: torch.Tensor | None) -> dict:
        """Per-sampling state. Row i-1's h, c are final once row i starts, so K_ss of the whole
        previous row is computed once per row; a step runs K_is and the LSTM update at (i, j) only."""
        K_is = self.K_is.point()
        w = K_is.weight.view(self.K_is.in_channels, 3, -1)  # (2h, taps j-1, j, j+1, 4h); j+1 masked
        h, c = self.initial_state(batch, W)  # (B, h, W)
        return {
            "K_is": torch.cat([w[:, 0], w[:, 1]], 0),  # on [x(i, j-1), x(i, j)]: (4h, 4h)
            "K_is_bias": K_is.bias,
            "out": self.out.point(),
            "x": [],  # this row's layer inputs, (B, 2h) each
            "h": list(h.unbind(2)),  # the row being written, (B, h) per column
            "c": list(c.unbind(2)),
            "row": -1,
            "cond": None if self.cond is None else position_major(self.cond(require_cond(cond))),
            "zero": self.h0.new_zeros(batch, 2 * self.hidden),
        }

    def _begin_row(self, cache: dict, i: int) -> None:
        """Row i starts: the finished row becomes h_{i-1}, c_{i-1}; K_ss over it (plus the K_is bias
        and the conditioning of row i) once: (W, B, 4h)."""
        h_prev = torch.stack(cache["h"], 2)  # (B, h, W)
        kss = self.K_ss(h_prev) + cache["K_is_bias"][:, None]  # (B, 4h, W)
        kss = kss.permute(2, 0, 1)  # (W, B, 4h)
        if cache["cond"] is not None:
            kss = kss + cache["cond"][i]
        cache["kss"] = kss.contiguous()
        cache["c_prev"] = cache["c"]
        W = len(cache["c"])
        cache["x"], cache["h"], cache["c"] = [None] * W, [None] * W, [None] * W
        cache["row"] = i

    def step(self, cache: dict, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Residual branch (B, 2h) at (i, j) from the layer input x (B, 2h) at (i, j). Idempotent."""
        if cache["row"] != i:
            self._begin_row(cache, i)
        cache["x"][j] = x
        left = cache["x"][j - 1] if j > 0 else cache["zero"]
        gates = torch.addmm(cache["kss"][j], torch.cat([left, x], 1), cache["K_is"])  # (B, 4h)
        h, c = lstm_update(gates, cache["c_prev"][j], dim=1)  # (B, h)
        cache["h"][j], cache["c"][j] = h, c
        return cache["out"](h)  # (B, 2h)


def to_chwb(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (C, H*W*B): channels outermost, positions row-major with the batch innermost.
    A view if x is stored so already (:func:`from_chwb`), else one copy."""
    B, C, H, W = x.shape
    return x.permute(1, 2, 3, 0).reshape(C, H * W * B)


def from_chwb(v: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Inverse of :func:`to_chwb` as a view: (C, H*W*B) -> (B, C, H, W), memory order (C, H, W, B)."""
    B, C, H, W = shape
    return v.view(C, H, W, B).permute(3, 0, 1, 2)


class RowInputToState(torch.autograd.Function):
    """K_is (1x3, mask B) on the whole map at once, channels outermost: (2h, H*W*B) -> (4h, H*W*B).

    The tap on column j+1 is masked out entirely, so only two are computed (a third less work than the
    1x3 convolution): s(j) = bias + K_c x(j) + K_l x(j-1). Positions are row-major with the batch inner,
    so in a row's (C, W*B) block x(j-1) is x(j) shifted by B columns; the shifted product runs per row
    (a batched matmul over the H rows, strided views), so nothing crosses from one row into the next and
    no shifted copy of x or of the gradient is made. Forward: one GEMM over H*W*B columns plus the
    per-row products; backward: two GEMMs plus two per-row products.
    """

    @staticmethod
    def forward(ctx, x, K_c, K_l, bias, width, batch):
        C, P = x.shape
        H, B = P // (width * batch), batch
        s = torch.addmm(bias[:, None], K_c, x)  # (4h, P)
        _rows(s, H)[:, :, B:].baddbmm_(K_l.expand(H, *K_l.shape), _rows(x, H)[:, :, :-B])  # x(j-1), j >= 1
        ctx.save_for_backward(x, K_c, K_l)
        ctx.shape = H, B
        return s

    @staticmethod
    @autocast_free_backward
    def backward(ctx, ds):
        x, K_c, K_l = ctx.saved_tensors
        H, B = ctx.shape
        ds = ds.contiguous()
        dx = K_c.t() @ ds  # (2h, P)
        ds_l = _rows(ds, H)[:, :, B:]  # (H, 4h, (W-1)*B): the gradient of the shifted tap
        _rows(dx, H)[:, :, :-B].baddbmm_(K_l.t().expand(H, *K_l.t().shape), ds_l)
        dK_c = ds @ x.t()
        dK_l = torch.bmm(ds_l, _rows(x, H)[:, :, :-B].transpose(1, 2)).sum(0)  # (4h, 2h)
        return dx, dK_c, dK_l, ds.sum(1), None, None


def _rows(v: torch.Tensor, H: int) -> torch.Tensor:
    """(C, H*M) -> (H, C, M): every row's (C, M) block, a strided view."""
    return v.view(v.shape[0], H, -1).transpose(0, 1)
