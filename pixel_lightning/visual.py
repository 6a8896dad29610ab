"""Sample grids as images (for PNG files and loggers)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def image_grid(x: torch.Tensor, levels: int, pad: int = 1) -> np.ndarray:
    """int (N, C, H, W) in [0, levels) -> uint8 (rows*(H+pad)+pad, cols*(W+pad)+pad, 3) RGB grid."""
    n, c, h, w = x.shape
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    img = (x.detach().cpu().double() * (255.0 / (levels - 1))).round().clamp(0, 255).to(torch.uint8)
    if c == 1:
        img = img.expand(n, 3, h, w)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 128, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[top : top + h, left : left + w] = img[k].permute(1, 2, 0).numpy()
    return grid


def save_grid(path: str | Path, x: torch.Tensor, levels: int, scale: int = 4) -> Path:
    """Write a PNG sample grid (each pixel drawn as scale x scale) atomically; returns the path."""
    from PIL import Image

    path = Path(path)
    grid = image_grid(x, levels)
    im = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    tmp = path.with_name(path.name + ".tmp")
    im.save(tmp, format="PNG")
    tmp.replace(path)
    return path
