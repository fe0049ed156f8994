"""``repro targets``: the targets that runs trained to target stop at, from a baseline's finished runs
(:func:`repro.evidence.speedup.train_targets`)."""

from __future__ import annotations

import argparse
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "targets", run, "the targets runs trained to target stop at, from a baseline's runs")
    p.add_argument("--curves", nargs="+", required=True, help="the baseline's finished curves (files, folders, globs)")
    p.add_argument(
        "--objective", required=True, choices=["ddpm", "interpolant", "edm"], help="the baseline's objective"
    )
    p.add_argument("--out", required=True, help="targets JSON path (train.to_target reads it)")


def run(args: argparse.Namespace) -> int:
    from ..evidence import speedup
    from ..io import atomic_write_json
    from ..provenance import provenance

    speedup.check_output("--out", args.out)
    curves = speedup.load_curves(speedup.find_curve_files(args.curves))
    doc = speedup.train_targets(curves, args.objective)
    doc["provenance"] = provenance(None, device="none (arithmetic on committed curves)")
    speedup.check_replaceable("--out", args.out, ("fid", "objective"), "a targets file")
    atomic_write_json(args.out, speedup.round_floats(doc))
    print(
        f"wrote {args.out}: FID {doc['fid']:.4g}, validation loss {doc['val_loss']:.4g} ({args.objective}), "
        f"from {len(curves)} runs"
    )
    return 0
