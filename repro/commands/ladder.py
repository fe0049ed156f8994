"""``repro ladder``: the sanity gate's ladder as PNG grids, real training images and their degraded copies
(:func:`repro.metrics.ladder.write_ladder`)."""

from __future__ import annotations

import argparse
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "ladder",
        run,
        "Write real.png and one grid per rung of the reference report's corruption ladder (blur-1.0.png, "
        "noise-0.2.png, ...), 10 images of each class in its own column: what the rung a run must beat looks like "
        "(`python -m repro.metrics.ladder` runs this command).",
    )
    p.add_argument("out", help="folder for the PNG grids")


def run(args: argparse.Namespace) -> int:
    from ..metrics.ladder import write_ladder

    print("\n".join(map(str, write_ladder(args.out))))
    return 0
