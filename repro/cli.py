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
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, target in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"(see: repro {name} --help)")
            continue
        module, func = target.split(":")
        getattr(importlib.import_module(module), func)(sub)
    return parser


def _split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without the ``--debug`` flags given before the command, and whether there was one."""
    lead = 0
    while lead < len(argv) and argv[lead].startswith("-"):
        lead += 1
    debug = "--debug" in argv[:lead]
    return [a for i, a in enumerate(argv) if not (i < lead and a == "--debug")], debug


def main(argv: list[str] | None = None) -> int:
    argv, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    try:
        import torch

        torch.set_flush_denormal(True)  # near-zero adaLN gates make denormals; they slow CPUs ~30x
    except ImportError:  # pragma: no cover
        pass
    try:
        rc = args.func(args)
    except (ValueError, OSError) as e:
        # bad input (configuration, files, arguments): one line naming what is wrong, no traceback
        if debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in message:
            message = f"{e.filename}: {message}"
        print(f"repro {args.command}: error: {message}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
