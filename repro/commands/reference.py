"""``repro reference``: the metrics' reference report (:func:`repro.metrics.fid.reference_report`): the FID of
real images against real images at each sample count, and the corruption ladder the sanity gate reads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "reference",
        run,
        "Write the metrics' reference values: real-vs-real FIDs at each sample count and the FIDs of corrupted "
        "training images (the ladder of the sanity gate). `python -m repro.metrics.fid` runs this command.",
    )
    p.add_argument("--out", "--reference-report", dest="out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--weights", type=Path, default=None, help="feature-network weights (default: committed)")
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 5000, 10_000], help="sample counts")
    p.add_argument("--curve-size", type=int, default=10_000, help="images in the corruption curves")


def run(args: argparse.Namespace) -> int:
    from ..io import atomic_write_json
    from ..metrics import fid

    report = fid.reference_report(args.sizes, args.curve_size, weights=args.weights)
    atomic_write_json(args.out, report)
    print(json.dumps(report, indent=2))
    return 0
