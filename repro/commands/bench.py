"""``repro bench``: step time, images/s, memory and MFU of DiT, TREAD and stochastic depth
(:mod:`repro.experiments.bench`), or with ``--eval`` the time of one evaluation of a scale
(:mod:`repro.experiments.bench_eval`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    from ..experiments.bench import METHODS

    p = add_command(subparsers, "bench", run)
    p.add_argument("--model", default="DiT-S/2", help="a named size, e.g. DiT-S/2, DiT-B/2, DiT-XL/2")
    p.add_argument("--input-size", type=int, default=32, help="latent side (32 = 256x256 images, 256 tokens at /2)")
    p.add_argument("--in-channels", type=int, default=4)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default=None)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="autocast on GPU (CPU: fp32)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"of {', '.join(METHODS)} (default: all); with --scale also any other method of params.yaml that "
        "trains without a regularizer (sit, tread-edm, ...)",
    )
    p.add_argument(
        "--scale",
        default=None,
        help="a scale of params.yaml: time its model, batch, objectives (with --eval: its evaluation; default micro)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the step, as `repro train --compile`")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: torch's; with --eval: the scale's train.threads)",
    )
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    e = p.add_argument_group("evaluation (--eval)")
    e.add_argument(
        "--eval", action="store_true", help="time one evaluation of --scale instead (repro/experiments/bench_eval.py)"
    )
    e.add_argument("--method", default="dit", help="params.yaml method of the timed run")
    e.add_argument("--reps", type=int, default=3, help="timed evaluations per path, alternated")
    e.add_argument("--run", default=None, help="run directory or checkpoint whose EMA weights sample (default: random)")
    e.add_argument("--params", default="params.yaml")


def _at_least_one(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:  # bad input: one line, exit status 2
            raise ValueError(f"--{name}: {value} is not allowed; must be an integer >= 1")


def run(args: argparse.Namespace) -> int:
    from ..io import atomic_write_json

    _at_least_one(args, "threads")  # both benches: the step's and the evaluation's
    if args.eval:
        from ..experiments.bench_eval import format_eval_report, run_eval_bench

        _at_least_one(args, "reps")
        rep = run_eval_bench(args.scale or "micro", args.method, args.reps, args.run, args.params, args.threads)
        print(format_eval_report(rep))
        if args.json:
            atomic_write_json(Path(args.json), rep)
        return 0
    from ..experiments.bench import METHODS, format_report, run_bench

    _at_least_one(args, "batch", "steps")
    methods = args.methods or list(METHODS)
    if args.scale is None:
        for m in methods:
            if m not in METHODS:
                raise ValueError(f"--methods: {m!r} is not allowed without --scale; allowed: {', '.join(METHODS)}")
    rep = run_bench(
        args.model,
        args.batch,
        args.steps,
        args.warmup,
        args.device,
        args.precision,
        methods,
        input_size=args.input_size,
        in_channels=args.in_channels,
        num_classes=args.num_classes,
        scale=args.scale,
        compile=args.compile,
        threads=args.threads,
    )
    print(format_report(rep))
    if args.json:
        atomic_write_json(args.json, rep)
    return 0
