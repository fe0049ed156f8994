"""``repro compare``: re-run curves against golden curves, pass or fail per run
(:func:`repro.experiments.rerun.compare_folders`)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..cli import add_command, add_tolerance_args


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "compare", run)
    p.add_argument("new", help="folder of re-run curve JSON files")
    p.add_argument("golden", help="folder of golden curve JSON files")
    add_tolerance_args(p, rel_tol=1e-3, abs_tol=1e-4)
    p.add_argument(
        "--common-steps",
        action="store_true",
        help="pair runs by method and seed (across scales) and compare the steps both evaluated: a long run's first "
        "3,000 steps against the core run",
    )


def run(args: argparse.Namespace) -> int:
    from ..experiments import rerun as golden

    for name in ("rel_tol", "abs_tol"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"--{name.replace('_', '-')}: {value} is not allowed; must be a finite number >= 0")
    report = golden.compare_folders(args.new, args.golden, args.rel_tol, args.abs_tol, args.common_steps)
    if not report:
        raise ValueError(f"{args.golden}: no golden curves (*.json) in this folder")
    golden.print_report(report)
    return 0 if all(r["status"] == "pass" for r in report.values()) else 1
