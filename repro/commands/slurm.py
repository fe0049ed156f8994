"""``repro slurm``: an sbatch script for one paper-scale run: torchrun on every node, c10d rendezvous, a requeue
on preemption (:func:`repro.experiments.cluster.render`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    from ..experiments import cluster

    p = add_command(subparsers, "slurm", run, cluster.__doc__.split("\n\n")[1] if cluster.__doc__ else None)
    p.allow_abbrev = False
    p.add_argument("--method", required=True, help="a method of --params (dit, tread, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", default="paper")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--run-dir", default=None, help="on a shared file system (default: runs/<scale>/<method>-s<seed>)")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--cpus-per-task", type=int, default=64)
    p.add_argument("--time", default="48:00:00", help="the job's time limit (SLURM's format)")
    p.add_argument("--grace", type=int, default=600, help="seconds before the time limit to checkpoint and requeue")
    p.add_argument(
        "--shutdown-timeout", type=int, default=480, help="seconds torchrun waits for its workers to checkpoint"
    )
    p.add_argument("--port", type=int, default=29500, help="the c10d rendezvous port on the first node")
    p.add_argument("--workdir", default=".", help="the checkout the job runs in")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--write", type=Path, default=None, help="write the script here instead of printing it")


def run(args: argparse.Namespace) -> int:
    from ..experiments.cluster import render

    script = render(
        method=args.method,
        seed=args.seed,
        scale=args.scale,
        params=args.params,
        run_dir=args.run_dir,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        time=args.time,
        grace=args.grace,
        shutdown_timeout=args.shutdown_timeout,
        port=args.port,
        workdir=args.workdir,
        partition=args.partition,
        account=args.account,
        command="repro " + " ".join(shlex.quote(a) for a in args.argv),
    )
    if args.write is None:
        sys.stdout.write(script)
        return 0
    from ..io import atomic_write_text

    atomic_write_text(args.write, script)
    args.write.chmod(0o755)
    print(f"wrote {args.write}; submit it with: sbatch {args.write}")
    return 0
