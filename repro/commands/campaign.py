"""``repro campaign``: a scale's training stages that are not up to date, side by side, in pieces
(:func:`repro.experiments.campaign.run_campaign`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..cli import add_command, add_run_args, jobs_arg


def register(subparsers: Any) -> None:
    from ..experiments import campaign

    p = add_command(subparsers, "campaign", run, (campaign.__doc__ or "").split("\n\n")[0])
    add_run_args(p, method=False)
    p.add_argument(
        "--jobs",
        type=jobs_arg,
        default="auto",
        help="runs side by side, each with the scale's train.threads (default auto: CPUs / train.threads)",
    )
    p.add_argument("--hours", type=float, default=None, help="length of this piece: start no run that would not fit")
    p.add_argument("--all", action="store_true", help="every training stage afresh, up to date or not")
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help="run the stages of these methods only (for example the core methods before the ablations)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the pending stages in their order, run nothing")
    p.add_argument(
        "--status",
        action="store_true",
        help="where each run of the scale stands (done, in progress at which step and resumable from what, waiting, "
        "not started; its newest FID and validation loss) and exit: runs nothing",
    )
    p.add_argument(
        "--keep-states",
        action="store_true",
        help="keep the resume states of the scale's paused runs (machine store and goldens/resume/) and exit: for "
        "runs paused by a piece that did not",
    )
    p.add_argument(
        "--commit-states-after",
        type=float,
        default=30.0,
        metavar="MINUTES",
        help="a run paused at the deadline has its resume state written to goldens/resume/ (26 MB at micro, for git) "
        "only after this much training since its committed state; a shorter stretch stays in the machine's store "
        "and runs/ (a fresh machine re-makes it); 0: always",
    )
    p.add_argument("--no-downstream", action="store_true", help="do not re-run the speedup, claims and summary stages")


def run(args: argparse.Namespace) -> int:
    from ..build import resolve
    from ..config import ConfigError, load_params, runs_of
    from ..experiments import campaign
    from ..runtime import side_by_side

    if args.hours is not None and not args.hours > 0:
        raise ConfigError(f"--hours: {args.hours!r} is not allowed; must be a positive number of hours")
    if not args.commit_states_after >= 0:
        raise ConfigError(f"--commit-states-after: {args.commit_states_after!r} is not allowed; must be >= 0 minutes")
    params = load_params(args.params)
    runs = runs_of(params, args.scale)
    jobs = side_by_side(args.jobs, [resolve(params, args.scale, m, s).train.threads for m, s in runs], args.scale)
    methods = list(dict.fromkeys(m for m, _ in runs))
    for method in args.methods or []:
        if method not in methods:
            allowed = ", ".join(methods)
            raise ConfigError(f"--methods: {method!r} is not a method of scale {args.scale}; allowed: {allowed}")
    root = Path.cwd()
    if args.status:
        from ..experiments.progress import campaign_status, format_status

        print(format_status(campaign_status(root, args.scale)))
        return 0
    if args.keep_states:
        kept = campaign.keep_paused_states(root, args.scale)
        print(f"kept the resume states of {kept} paused run(s) of scale {args.scale}")
        return 0
    print(f"{len(runs)} runs in scale {args.scale}; {jobs} side by side")
    result = campaign.run_campaign(
        root,
        methods,
        jobs,
        args.hours,
        args.dry_run,
        everything=args.all,
        only=args.methods,
        scale=args.scale,
        min_commit_seconds=args.commit_states_after * 60,
    )
    failed = [k for k, v in result.items() if v.startswith("failed")]
    changed = any(v == "done" or "diverged, recorded" in v for v in result.values())
    if not args.dry_run and not args.no_downstream and changed:
        # a new diverged record changes the ledger too (the claims stage reads goldens/diverged)
        try:
            campaign.run_downstream(root, args.scale)
        except RuntimeError as err:  # the piece's runs are committed to dvc.lock all the same: say so, then fail
            print(f"error: {err}; fix it and run `dvc repro` before recording the piece", file=sys.stderr)
            failed.append("downstream")
    paused = any(v.startswith("paused") for v in result.values())
    if changed or paused:  # a pause leaves its record and resume state in goldens/ for the next piece
        print("record the piece: git add dvc.lock goldens reports && git commit -m '<what this piece ran>'")
    return 1 if failed else 0
