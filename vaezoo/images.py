"""PNG image grids (samples, reconstructions) with Pillow."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

from vaezoo import fileio


def make_grid(images, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile ``[N, H, W, C]`` images with values in [0, 1] into one uint8 ``[rows*H, cols*W, C]`` array."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"make_grid expects images [N, H, W, 1 or 3], got shape {images.shape}.")
    n, h, w, c = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), dtype=np.float32)
    for i, img in enumerate(np.clip(images, 0.0, 1.0)):
        r, col = divmod(i, ncols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = img
    return (grid * 255).round().astype(np.uint8)


def save_grid(images, path: str | os.PathLike, ncols: int | None = None, upscale: int = 2) -> str:
    """Write ``images`` as a PNG grid to ``path`` (folders created, replaced atomically); returns the path."""
    grid = make_grid(images, ncols)
    image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if upscale > 1:
        image = image.resize((image.width * upscale, image.height * upscale), Image.NEAREST)
    with fileio.atomic_path(path) as tmp:  # a kill leaves the old picture or the new one
        image.save(tmp)
    return os.fspath(path)
