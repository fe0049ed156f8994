"""``repro rerun``: re-train a scale's runs afresh and compare each curve with its golden
(:func:`repro.experiments.rerun.rerun`)."""

from __future__ import annotations

import argparse
from typing import Any

from ..cli import add_command, add_run_args, add_tolerance_args, jobs_arg


def register(subparsers: Any) -> None:
    r = add_command(
        subparsers,
        "rerun",
        run,
        "Re-train every run of a scale afresh and compare each curve with its golden. The default "
        "tolerances are loose enough for other hardware (GPU kernels, bf16); `repro compare` defaults to a "
        "tight one for a re-run on the same CPU type.",
        allow_abbrev=False,  # --method (train's) must not pass for --methods and silently re-train every seed
    )
    add_run_args(r, method=False)
    r.add_argument("--out", default=None, help="run folder (default: runs/<scale>-rerun)")
    r.add_argument("--golden", default=None, help="golden curves (default: goldens/<scale>/runs)")
    r.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    r.add_argument(
        "--jobs",
        type=jobs_arg,
        default=1,
        help="runs side by side, each with the scale's train.threads (same numbers); auto: CPUs / train.threads",
    )
    r.add_argument("--seeds", type=int, nargs="+", default=None, help="only the runs of these seeds")
    r.add_argument("--methods", nargs="+", default=None, help="only the runs of these methods")
    r.add_argument(
        "--points",
        type=int,
        default=None,
        help="train each run only to its golden's N-th evaluation and compare those N points",
    )
    add_tolerance_args(r, rel_tol=0.15, abs_tol=1.0)


def run(args: argparse.Namespace) -> int:
    from ..experiments import rerun as golden

    report = golden.rerun(
        args.scale,
        args.out or f"runs/{args.scale}-rerun",
        args.golden or f"goldens/{args.scale}/runs",
        args.params,
        args.device,
        args.rel_tol,
        args.abs_tol,
        args.jobs,
        args.seeds,
        args.points,
        args.methods,
        log=lambda line: print(line, flush=True),
    )
    golden.print_report(report)
    return 0 if all(r["status"] in ("pass", "new", "no golden") for r in report.values()) else 1
