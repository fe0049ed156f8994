"""A grid of images as one PNG: samples of a run at a glance."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np


def to_uint8(images) -> np.ndarray:
    """``N x C x H x W`` (or ``N x H x W``) images as uint8: floats are read in [-1, 1] (clamped), uint8 as is."""
    a = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise ValueError(f"images: shape {tuple(a.shape)}; allowed: N x C x H x W or N x H x W")
    if a.dtype == np.uint8:
        return a
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"images: dtype {a.dtype}; allowed: uint8 in [0, 255] or float in [-1, 1]")
    return np.round((np.clip(a, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def grid_array(images, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """The grid as an ``H x W`` (1 channel) or ``H x W x 3`` uint8 array, ``nrow`` images per row."""
    a = to_uint8(images)
    n, c, h, w = a.shape
    if n == 0:
        raise ValueError("images: an empty batch has no grid")
    if c not in (1, 3):
        raise ValueError(f"images: {c} channels; a grid needs 1 (grey) or 3 (RGB), e.g. decoded latents")
    nrow = nrow or math.ceil(math.sqrt(n))
    if nrow < 1:
        raise ValueError(f"nrow: {nrow}; allowed: an integer >= 1")
    rows = math.ceil(n / nrow)
    out = np.full((c, padding + rows * (h + padding), padding + nrow * (w + padding)), pad_value, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        out[:, y : y + h, x : x + w] = a[i]
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def save_grid(images, path: str | os.PathLike, nrow: int | None = None, padding: int = 2) -> Path:
    """Write ``images`` (``N x C x H x W``, float in [-1, 1] or uint8) as one PNG grid, atomically."""
    from PIL import Image

    from ..io import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(grid_array(images, nrow, padding)).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
