"""``repro featurenet``: retrain the metrics' feature network and write its weights and record
(:func:`repro.metrics.featurenet.train_feature_net`). The shipped weights are frozen: see dvc.yaml."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..cli import add_command


def register(subparsers: Any) -> None:
    from ..metrics.featurenet import DEFAULT_DIR

    p = add_command(
        subparsers,
        "featurenet",
        run,
        "Retrain the feature network of the metrics (a Fashion-MNIST classifier) and write its weights and record. "
        "Every FID depends on these weights: the shipped ones are frozen (`python -m repro.metrics.featurenet` "
        "runs this command).",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_DIR, help="directory for featurenet.pt/.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-accuracy", type=float, default=0.90, help="refuse to write weights below this")


def run(args: argparse.Namespace) -> int:
    from ..metrics.featurenet import save_feature_net, train_feature_net
    from ..provenance import git_commit

    net, info = train_feature_net(seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    if info["test_accuracy"] < args.min_accuracy:
        print(f"test accuracy {info['test_accuracy']:.4f} < {args.min_accuracy}; nothing written", file=sys.stderr)
        return 1
    command = args.invocation.strip()
    info = {"command": command, "git_commit": git_commit(("repro/metrics", "repro/data")) or "unknown", **info}
    record = save_feature_net(net, args.out, info)
    print(json.dumps(record, indent=2))
    return 0
