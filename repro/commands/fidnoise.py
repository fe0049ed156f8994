"""``repro fidnoise``: the FID's sampling noise at a sample count, from independent sample sets of one checkpoint
(:func:`repro.experiments.fidnoise.fid_noise`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers,
        "fidnoise",
        run,
        "FIDs of independent sample sets of one checkpoint, and their sd at the count, its half and its quarter: "
        "how a scale's eval.num_samples is chosen (`python -m repro.experiments.fidnoise` runs this command).",
    )
    p.add_argument("run", help="run directory (config.json, checkpoints/)")
    p.add_argument("--checkpoint", default=None, help="a checkpoint of the run (default: checkpoints/last.pt)")
    p.add_argument("--num", type=int, default=2000, help="samples a set (default: 2000)")
    p.add_argument("--sets", type=int, default=4, help="independent sets (default: 4)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="JSON report to write")


def run(args: argparse.Namespace) -> int:
    from ..experiments.fidnoise import fid_noise
    from ..io import atomic_write_json
    from ..provenance import git_commit

    if args.num < 8 or args.num % 4:
        raise ValueError(f"--num: {args.num} is not allowed; must be a multiple of 4, >= 8 (it is split in quarters)")
    if args.sets < 1:
        raise ValueError(f"--sets: {args.sets} is not allowed; must be >= 1")
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    report = fid_noise(Path(args.run), checkpoint, args.num, args.sets, args.device, command=args.invocation)
    report["git_commit"] = git_commit()
    atomic_write_json(args.out, report)
    for size, r in report["by_sample_count"].items():
        sd = "-" if r["sd"] is None else f"{r['sd']:.3f}"
        print(f"{size:>6} samples: FID {r['mean']:.3f}, sd {sd} over {r['n']} sets")
    return 0
