"""``repro train``: one run of params.yaml (:func:`repro.experiments.train.train`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..cli import add_command, add_run_args


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "train", run, "Train one run. Under torchrun, every process runs this same command.")
    add_run_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the run (initialization, data order, noise)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<scale>/<method>-s<seed>)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--steps", type=int, default=None, help="override train.steps (e.g. a dry run)")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    p.add_argument(
        "--to-target",
        default=None,
        metavar="FILE",
        help="train to target: stop once the targets in FILE (written by repro targets) are reached (train.to_target)",
    )
    p.add_argument("--curve", default=None, help="also write the finished run's curve.json to this path")
    p.add_argument(
        "--grid", default=None, help="also copy the finished run's samples.png (final samples, a column per class) here"
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the training step (equal up to float rounding)"
    )
    p.add_argument("--live", action="store_true", help="also log DVCLive scalars into <out>/dvclive")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no evaluation lines")


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from ..build import resolve
    from ..config import ConfigError, load_params
    from ..experiments.train import EXIT_PREEMPTED, TrainingDiverged, load_targets, train
    from ..io import atomic_write_bytes, atomic_write_json, check_writable
    from ..runtime import dist_info

    cfg = resolve(load_params(args.params), args.scale, args.method, args.seed)
    if args.steps is not None:
        if isinstance(args.steps, bool) or args.steps < 1:
            raise ConfigError(f"--steps: {args.steps!r} is not allowed; must be a positive integer")
        cfg = cfg.with_train(steps=args.steps)
    if args.to_target is not None:
        cfg = cfg.with_train(to_target=args.to_target)
        load_targets(args.to_target)  # a missing or broken file fails here, before anything is written
    out = Path(args.out or Path("runs") / args.scale / f"{args.method}-s{args.seed}")
    check_writable("--grid", args.grid)  # before the training, not after it
    check_writable("--curve", args.curve)
    try:
        curve = train(
            cfg,
            out,
            device=args.device,
            resume=not args.no_resume,
            command=args.invocation,
            compile=args.compile,
            live=args.live,
            quiet=args.quiet,
        )
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    else:
        if curve.get("stopped_by"):
            if dist_info()[0] == 0:
                print(
                    f"{cfg.run_id}: stopped by {curve['stopped_by']} after step {curve['stopped_at']} with its "
                    f"checkpoint written to {out / 'checkpoints' / 'last.pt'}; run the same command to resume",
                    file=sys.stderr,
                )
            return EXIT_PREEMPTED
        if curve["complete"] and dist_info()[0] == 0:
            if args.grid:
                grid = out / "samples.png"
                if not grid.exists():
                    print(f"error: --grid {args.grid}: {grid} was not written (no sample metrics?)", file=sys.stderr)
                    return 2
                atomic_write_bytes(args.grid, grid.read_bytes())
            if args.curve:  # last: a curve in place marks the run done
                atomic_write_json(args.curve, curve)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
