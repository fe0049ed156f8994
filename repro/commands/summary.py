"""``repro summary``: a scale's flat metrics and plot files from its goldens, for DVC
(:func:`repro.evidence.summary.write_summary`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "summary",
        run,
        "Writes a scale's small flat metrics files (final FID and val loss per method, speedups with intervals, "
        "verdict counts: one narrow row each in `dvc metrics show`) and a flat table of every curve point for "
        "`dvc plots`.",
    )
    p.add_argument("--curves", nargs="+", required=True, help="curve JSON files, run folders or quoted globs")
    p.add_argument("--speedup", nargs="*", default=[], metavar="REPORT", help="speedup reports (repro speedup --out)")
    p.add_argument("--claims", default=None, help="claims ledger JSON whose verdicts are counted (optional)")
    p.add_argument("--target", default="final", help="speedup target of the reports to summarize")
    p.add_argument("--unit", default="macs", help="cost unit of the speedups (one of the reports' units)")
    p.add_argument("--out", required=True, help="folder for the metrics files (one small file per quantity)")
    p.add_argument("--plot-data", default=None, help="also write every curve point here, flat, for dvc plots")


def run(args: argparse.Namespace) -> int:
    from ..evidence.summary import write_summary

    written = write_summary(
        args.curves,
        args.out,
        speedup=args.speedup,
        claims=args.claims,
        target=args.target,
        unit=args.unit,
        plot_data=args.plot_data,
        command=args.invocation,
    )
    print(f"wrote {written} files to {Path(args.out)}" + (f" and {args.plot_data}" if args.plot_data else ""))
    return 0
