"""``repro probe RUN``: the spread of a run's tokens after each block (:func:`repro.experiments.probe.token_spread`),
as a table or JSON."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "probe", run)
    p.add_argument("source", help="a run directory (config.json, checkpoints/last.pt) or one of its checkpoints")
    p.add_argument("--config", default=None, help="the run's config.json when it is not beside the checkpoint")
    p.add_argument("--weights", default="ema", help="ema (default) or model")
    p.add_argument("--batch", type=int, default=64, help="test images in the batch (default 64, micro's batch)")
    p.add_argument("--seed", type=int, default=0, help="seed of the images' choice, noise levels and noise")
    p.add_argument("--temperature", type=float, default=0.5, help="the dispersive loss's temperature (default 0.5)")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..experiments.probe import format_spread, token_spread
    from ..io import atomic_write_json

    torch.set_flush_denormal(True)
    report = token_spread(
        args.source,
        batch=args.batch,
        seed=args.seed,
        temperature=args.temperature,
        weights=args.weights,
        config=args.config,
    )
    print(format_spread(report))
    if args.json is not None:
        atomic_write_json(args.json, report)
    return 0
