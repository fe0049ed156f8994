"""The arguments of ``python -m repro.experiments.gpu`` (``pack``, ``campaign``, ``land``) and their checks, made before
the campaign starts its clock or writes anything; the work itself is :mod:`repro.experiments.gpu`'s.

``register(subparsers)`` adds the same three as ``repro gpu``; :func:`build_parser` is the parser of
``python -m repro.experiments.gpu``, and :func:`main` parses and runs it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

PROG = "python -m repro.experiments.gpu"
DESCRIPTION = "The small-scale GPU campaign as one prepared call, and the folder of wheels and data it travels with."
HELP = "the GPU campaign in one budgeted call, its offline wheels (pack), and landing"


def register(subparsers: Any) -> None:
    """``repro gpu pack|campaign|land``: the same arguments as ``python -m repro.experiments.gpu``."""
    parser = subparsers.add_parser("gpu", help=HELP, description=DESCRIPTION)
    add_arguments(parser, dest="gpu_command")
    parser.set_defaults(func=run, invoked_as="repro")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m repro.experiments.gpu``."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_arguments(parser, dest="command")
    parser.set_defaults(invoked_as=PROG)
    return parser


def add_arguments(parser: argparse.ArgumentParser, dest: str) -> None:
    """The three subcommands under ``parser``; each sets ``gpu_run``, the function :func:`run` calls."""
    from repro.experiments.gpu import DEFAULT_WHEELS, GOLDENS, H200_BF16_TFLOPS, PARTS, REPO_ROOT
    from repro.experiments.gpu.campaign import DEFAULT_PARTS

    sub = parser.add_subparsers(dest=dest, required=True)
    p = sub.add_parser("pack", help="download the pinned wheels and copy the data into a folder (needs a registry)")
    p.add_argument("--dest", type=Path, default=DEFAULT_WHEELS)
    p.add_argument("--no-data", action="store_true", help="wheels only")
    p.set_defaults(gpu_run=pack_command)
    c = sub.add_parser("campaign", help="the small-scale GPU campaign in one call (see the module docstring)")
    c.add_argument("--out", type=Path, required=True, help="output folder (plan, campaign, curves, bench, log)")
    c.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of the whole command")
    c.add_argument("--train-budget-s", type=float, default=420.0, help="of which training + evaluation")
    c.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="folder made by `pack` (default .whl)")
    c.add_argument("--work", type=Path, default=None, help="run folders and installed wheels (default: a temp dir)")
    c.add_argument("--params", type=Path, default=REPO_ROOT / "params.yaml")
    c.add_argument("--dry-run", action="store_true", help="the same campaign at a tiny size on the CPU")
    c.add_argument("--device", default=None)
    c.add_argument("--mfu", type=float, default=0.30, help="assumed model FLOP utilisation, for the plan and caps")
    c.add_argument("--peak-tflops", type=float, default=None, help=f"default {H200_BF16_TFLOPS} on a GPU")
    c.add_argument("--bench-max-batch", type=int, default=256)
    c.add_argument("--seed", type=int, default=None, help="one seed for every run (default: params.yaml's)")
    c.add_argument("--parts", nargs="+", choices=PARTS, default=list(DEFAULT_PARTS),
                   help="what runs: small (DiT/TREAD/SiT), bench, long (17.5x, scale gpu-long), tokens (256 tokens, "
                   "scale gpu-tokens); default: small bench")  # fmt: skip
    c.add_argument("--probe-s", type=float, default=5.0,
                   help="seconds of each long/tokens method's first steps that measure its step time")  # fmt: skip
    c.set_defaults(gpu_run=campaign_command)
    g = sub.add_parser("land", help="copy a GPU campaign's outputs into goldens/small (refuses a dry run)")
    g.add_argument("out", type=Path, help="the folder given to `campaign --out`")
    g.add_argument("--goldens", type=Path, default=GOLDENS)
    g.set_defaults(gpu_run=land_command)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand ``args`` names; 2 (with a one-line error) on bad input."""
    return args.gpu_run(args)


def main(argv: list[str] | None = None) -> int:
    """``python -m repro.experiments.gpu``: parse ``argv`` (default: the command line's) and run it."""
    return run(build_parser().parse_args(argv))


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def land_command(args: argparse.Namespace) -> int:
    from repro.experiments.gpu.land import land

    try:
        written = land(args.out, args.goldens)
    except (OSError, ValueError) as exc:
        return _error(str(exc))
    for path in written:
        print(f"landed {path}")
    return 0


def pack_command(args: argparse.Namespace) -> int:
    from repro.experiments.gpu.wheels import pack

    if args.dest.exists() and not args.dest.is_dir():
        return _error(f"--dest: {args.dest} is a file; a folder is needed")
    try:
        m = pack(args.dest, data=not args.no_data)
    except subprocess.CalledProcessError as exc:
        return _error(f"pack: pip download failed (exit {exc.returncode}; no package registry?)")
    except (OSError, ValueError, RuntimeError) as exc:
        return _error(f"pack: {' '.join(str(exc).split())}")
    for w in m["wheels"]:
        print(f"{w['file']:<50}{w['bytes'] / 2**20:>8.2f} MiB")
    for r in m["data"]:
        print(f"{r['file']:<50}{r['bytes'] / 2**20:>8.2f} MiB")
    print(f"{'total':<50}{m['total_bytes'] / 2**20:>8.2f} MiB in {args.dest}")
    return 0


def campaign_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the campaign's arguments, in one line, or None: checked before its clock starts and
    before anything is written."""
    from repro.experiments.gpu.wheels import MANIFEST, check_wheels

    for name in ("budget_s", "train_budget_s", "mfu", "peak_tflops"):
        v = getattr(args, name)
        if v is None and name == "peak_tflops":
            continue
        if not (v > 0 and v < float("inf")) or (name == "mfu" and v > 1):  # also refuses nan
            allowed = {"mfu": "a number in (0, 1]", "peak_tflops": "a positive finite number of TFLOP/s"}.get(
                name, "a positive finite number of seconds"
            )
            return f"--{name.replace('_', '-')}: {v} is not allowed; must be {allowed}"
    for option, path, kind in (("--out", args.out, "folder"), ("--params", args.params, "file")):
        if (kind == "folder" and path.exists() and not path.is_dir()) or (kind == "file" and not path.is_file()):
            why = "is a file" if kind == "folder" else "is not a file"
            return f"{option}: {path} {why}; a {kind} is needed"
    if args.wheels is not None and (args.wheels / MANIFEST).is_file():
        try:
            check_wheels(args.wheels)  # checked before the campaign starts its clock and its outputs
        except (OSError, ValueError) as exc:
            return f"--wheels: {exc}"
    if args.train_budget_s > args.budget_s:
        return f"--train-budget-s: {args.train_budget_s} exceeds --budget-s {args.budget_s}"
    if not args.probe_s > 0:
        return f"--probe-s: {args.probe_s} is not allowed; a positive number of seconds"
    if args.bench_max_batch < 1:
        return f"--bench-max-batch: {args.bench_max_batch} is not allowed; must be >= 1"
    return None


def campaign_command(args: argparse.Namespace) -> int:
    from repro.experiments.gpu.campaign import CampaignOptions, run_gpu_campaign

    problem = campaign_problem(args)
    if problem:
        return _error(problem)
    options = CampaignOptions(
        out=args.out,
        budget_s=args.budget_s,
        train_budget_s=args.train_budget_s,
        wheels=args.wheels,
        work=args.work,
        params=args.params,
        dry_run=args.dry_run,
        device=args.device,
        mfu=args.mfu,
        peak_tflops=args.peak_tflops,
        bench_max_batch=args.bench_max_batch,
        seed=args.seed,
        parts=tuple(args.parts),
        probe_s=args.probe_s,
        command=getattr(args, "invocation", None) or " ".join([args.invoked_as, *sys.argv[1:]]),  # python -m
    )
    return run_gpu_campaign(options)
