"""``repro land``: finished paper-scale run directories landed in ``goldens/paper/``, with provenance
(:func:`repro.experiments.land.land`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    from ..experiments import land

    p = add_command(subparsers, "land", run, land.__doc__.split("\n\n")[1] if land.__doc__ else None)
    p.allow_abbrev = False
    p.add_argument(
        "run_dirs", nargs="+", type=Path, help="finished paper-scale run directories (config.json, curve.json)"
    )
    p.add_argument(
        "--goldens", type=Path, default=Path("goldens"), help="goldens folder; writes its paper/ (default: goldens)"
    )
    p.add_argument(
        "--evaluations",
        nargs="*",
        type=Path,
        default=[],
        help="evaluation JSONs of repro evaluate kept elsewhere than RUN/samples/ (matched to runs by their run_id)",
    )


def run(args: argparse.Namespace) -> int:
    from ..experiments.land import land

    written = land(args.run_dirs, args.goldens, args.evaluations, args.invocation)
    for path in written:
        print(f"wrote {path}")
    return 0
