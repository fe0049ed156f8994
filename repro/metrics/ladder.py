"""The sanity gate's ladder, looked at: PNG grids of real training images and of their degraded copies.

``repro ladder OUT_DIR`` (or ``python -m repro.metrics.ladder``) writes ``real.png`` and one grid per rung of the
reference report's ladder (``blur-1.0.png``, ``noise-0.2.png``, ...: :data:`repro.metrics.fid.CURVES`, made by
:func:`repro.metrics.fid.corrupt`), 10 images of each class in its own column, like the sample grids of the runs.
A run "generates" when its samples score a lower FID than the rung the gate names; these grids show what that
rung looks like.
"""

from __future__ import annotations

from pathlib import Path

import torch


def class_columns(images: torch.Tensor, labels: torch.Tensor, per_class: int = 10, classes: int = 10) -> torch.Tensor:
    """The first ``per_class`` images of each class, ordered so that a grid of ``classes`` columns has a class
    per column (row r holds the r-th image of every class)."""
    picks = [torch.nonzero(labels == c).flatten()[:per_class] for c in range(classes)]
    if any(len(p) < per_class for p in picks):
        raise ValueError(f"fewer than {per_class} images of some class among {len(labels)}")
    return images[torch.stack(picks, dim=1).flatten()]


def write_ladder(out: str | Path) -> list[Path]:
    """``real.png`` (the first 10 training images of each class) and one grid per rung of the ladder
    (``<kind>-<strength>.png``) in the folder ``out``; the paths written."""
    from ..data.fashion_mnist import load
    from .fid import CURVES, corrupt
    from .grid import save_grid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = load("train")
    real = class_columns(train.images[:1000], train.labels[:1000])
    written = [save_grid(real, out / "real.png", nrow=10)]
    for kind, strengths in CURVES.items():
        for s in strengths:
            written.append(save_grid(corrupt(real, kind, s), out / f"{kind}-{s}.png", nrow=10))
    return written


if __name__ == "__main__":  # `python -m repro.metrics.ladder ARGS` is `repro ladder ARGS`
    from repro.cli import run_as_module

    run_as_module("ladder")
