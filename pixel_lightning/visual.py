"""Sample grids as images (for PNG files and loggers)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def to_rgb(x: torch.Tensor, levels: int) -> np.ndarray:
    """int (N, C, H, W) in [0, levels) -> uint8 (N, H, W, 3), values spread over 0..255."""
    img = (x.detach().cpu().double() * (255.0 / (levels - 1))).round().clamp(0, 255).to(torch.uint8)
    if img.shape[1] == 1:
        img = img.expand(-1, 3, -1, -1)
    return img.permute(0, 2, 3, 1).numpy()


def image_grid(x: torch.Tensor, levels: int, pad: int = 1) -> np.ndarray:
    """int (N, C, H, W) in [0, levels) -> uint8 (rows*(H+pad)+pad, cols*(W+pad)+pad, 3) RGB grid."""
    n, c, h, w = x.shape
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    img = to_rgb(x, levels)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 128, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[top : top + h, left : left + w] = img[k]
    return grid


def row_figure(
    rows: list[list[np.ndarray]], gaps: tuple[int, ...] = (), pad: int = 1, gap: int = 4
) -> np.ndarray:
    """Images uint8 (H, W, 3), one list per row, on a grey canvas; a wider ``gap`` after the columns
    in ``gaps`` (e.g. the paper's Figure 1: occluded | completions | original)."""
    h, w, _ = rows[0][0].shape
    cols = max(len(r) for r in rows)
    lefts = [pad + q * (w + pad) + gap * sum(g < q for g in gaps) for q in range(cols)]
    canvas = np.full((pad + len(rows) * (h + pad), lefts[-1] + w + pad, 3), 200, dtype=np.uint8)
    for r, row in enumerate(rows):
        for q, img in enumerate(row):
            top = pad + r * (h + pad)
            canvas[top : top + h, lefts[q] : lefts[q] + w] = img
    return canvas


def completion_rows(
    x: torch.Tensor, completions: torch.Tensor, mask: torch.Tensor, levels: int
) -> list[list[np.ndarray]]:
    """The paper's Figure 1, one row per image: the input with its hidden pixels grey, its completions, the
    original. ``x`` int (B, C, H, W), ``completions`` (B, K, C, H, W), ``mask`` bool (C, H, W): kept."""
    originals = to_rgb(x, levels)  # (B, H, W, 3)
    occluded = originals.copy()
    occluded[:, ~mask.all(0).numpy()] = 128
    return [[occluded[b], *to_rgb(completions[b], levels), originals[b]] for b in range(len(x))]


def display_scale(width: int, min_width: int = 56) -> int:
    """Nearest-neighbour factor that draws an image ``width`` pixels wide at least ``min_width`` wide."""
    return max(1, math.ceil(min_width / width))


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (scale*H, scale*W, 3), each pixel drawn as scale x scale (nearest neighbour)."""
    return image.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else image


def readable_grid(x: torch.Tensor, levels: int) -> np.ndarray:
    """The grid of int (N, C, H, W) for a screen (loggers): each image at least 56 pixels wide."""
    return upscale(image_grid(x, levels), display_scale(x.shape[-1]))


def save_png(path: str | Path, image: np.ndarray, scale: int = 1) -> Path:
    """Write uint8 (H, W, 3) as a PNG, each pixel drawn as scale x scale (nearest neighbour), atomically."""
    from PIL import Image

    from pixel_lightning.atomic import atomic_write

    im = Image.fromarray(upscale(image, scale))
    return atomic_write(Path(path), lambda f: im.save(f, format="PNG"))


def save_grid(path: str | Path, x: torch.Tensor, levels: int, scale: int = 4) -> Path:
    """Write a PNG sample grid (each pixel drawn as scale x scale) atomically; returns the path."""
    return save_png(path, image_grid(x, levels), scale)
