"""The ``repro`` command. Each subcommand lives next to the code it drives and registers itself here.

``COMMANDS`` maps a subcommand to ``"module:function"``; the function receives the argparse
subparsers object and adds its parser, with ``set_defaults(func=...)``. Modules are imported only
when their command runs, so ``repro --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, str] = {
    "train": "repro.train:register_cli",
    "rerun": "repro.golden:register_rerun",
    "compare": "repro.golden:register_compare",
    "speedup": "repro.speedup:register_cli",
    "evaluate": "repro.metrics.fid:register_cli",
    "audit": "repro.audit:register_cli",
    "claims": "repro.claims:register_cli",
    "bench": "repro.bench:register_cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="repro", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, target in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"(see: repro {name} --help)")
            continue
        module, func = target.split(":")
        getattr(importlib.import_module(module), func)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    try:
        import torch

        torch.set_flush_denormal(True)  # near-zero adaLN gates make denormals; they slow CPUs ~30x
    except ImportError:  # pragma: no cover
        pass
    rc = args.func(args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
