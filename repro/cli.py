"""The ``repro`` command: the top of the layers (see README, "Architecture"). Each subcommand is a module of
:mod:`repro.commands` that parses its options and calls the library; no library module imports this one.

``COMMANDS`` maps a subcommand to its module, which defines ``register(subparsers)`` (adds its parser with the
help of ``HELP`` and ``set_defaults(func=run)``) and ``run(args) -> int`` (the exit status). Modules are imported
only when their command runs: ``repro --help`` prints the one-line helps of ``HELP`` and imports neither torch nor
any command module (a test keeps ``HELP`` equal to what each module registers). Bad input, a ``ValueError`` or
``OSError`` raised by a command, is one line ``repro COMMAND: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMANDS: dict[str, str] = {
    "train": "repro.commands.train",
    "sample": "repro.commands.sample",
    "evaluate": "repro.commands.evaluate",
    "reference": "repro.commands.reference",
    "rerun": "repro.commands.rerun",
    "compare": "repro.commands.compare",
    "campaign": "repro.commands.campaign",
    "speedup": "repro.commands.speedup",
    "targets": "repro.commands.targets",
    "summary": "repro.commands.summary",
    "audit": "repro.commands.audit",
    "claims": "repro.commands.claims",
    "bench": "repro.commands.bench",
    "land": "repro.commands.land",
    "slurm": "repro.commands.slurm",
    "gpu": "repro.commands.gpu",
    "data": "repro.commands.data",
    "featurenet": "repro.commands.featurenet",
    "ladder": "repro.commands.ladder",
    "fidnoise": "repro.commands.fidnoise",
    "adm": "repro.commands.adm",
    "probe": "repro.commands.probe",
}

# One-line help of each command, shown by ``repro --help`` without importing the command's module
HELP: dict[str, str] = {
    "train": "train one run of params.yaml (scale x method x seed)",
    "sample": "draw samples of a run or checkpoint (torchrun: distributed) into an ADM .npz",
    "evaluate": "sample quality against a Fashion-MNIST split or an ADM reference batch",
    "reference": "the metrics' reference report: real-vs-real FIDs and the corruption ladder",
    "rerun": "re-train every run of a scale and compare with its goldens",
    "compare": "compare re-run curves with golden curves (pass/fail per run)",
    "campaign": "run a scale's training stages that are not up to date, side by side, in pieces",
    "speedup": "speedup to a target FID from training curves, with intervals and tests",
    "targets": "the targets runs trained to target stop at, from a baseline's runs",
    "summary": "flat metrics and plot files of a scale's goldens, for DVC",
    "audit": "count parameters and MACs (meta device) and rebuild the published speedups",
    "claims": "evaluate every claim spec and write the verdict table",
    "bench": "step time, images/s, memory, MFU: DiT vs TREAD vs stochastic depth",
    "land": "land finished paper-scale run directories in goldens/paper/, with provenance",
    "slurm": "an sbatch script for a paper-scale run: torchrun, c10d, requeue on preemption",
    "gpu": "the GPU campaign in one budgeted call, its offline wheels (pack), and landing",
    "data": "prepare a data set: fashion-mnist (verified, manifest) or latents (SD-VAE)",
    "featurenet": "retrain the metrics' feature network (frozen: every FID depends on it)",
    "ladder": "PNG grids of the sanity gate's ladder: real images and their degraded copies",
    "fidnoise": "the FID's sampling noise at a sample count, from independent sample sets",
    "adm": "ADM's evaluation data: write a reference batch of an ImageFolder",
    "probe": "spread of a run's tokens after each block (the dispersive loss's distance)",
}

DESCRIPTION = (
    "Reference DiT, SiT and TREAD, golden training runs with measured speedups, and a ledger of the claims "
    "of the 'is DiT wrong?' debate with a verdict each."
)
EPILOG = """examples:
  repro train --scale micro --method tread --seed 0
  repro sample runs/micro/tread-s0 --num-samples 64 --out runs/samples/tread-s0.npz
  repro evaluate runs/samples/tread-s0.npz
  repro claims

'repro COMMAND --help' describes a command and its defaults."""


def version() -> str:
    """The installed package's version (its metadata), else the source tree's ``__version__``."""
    from importlib import metadata

    try:
        return metadata.version("repro")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to every option that has a default and does not state it already."""

    @staticmethod
    def _default_text(action: argparse.Action) -> str | None:
        default = action.default
        if (
            not action.option_strings
            or any(default is v for v in (None, False, argparse.SUPPRESS))
            or action.nargs == 0
        ):
            return None
        if "default" in (action.help or ""):
            return None
        return f"(default: {_show(default)})".replace("%", "%%")

    def _format_action(self, action: argparse.Action) -> str:
        text = self._default_text(action)
        if text and action.help is not argparse.SUPPRESS:
            action = copy.copy(action)
            action.help = f"{action.help} {text}" if action.help else text
        return super()._format_action(action)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that shows defaults and reports every usage error in one line
    (``repro train: error: ...``, exit status 2) that points to ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_command(
    subparsers: Any,
    name: str,
    run: Callable[[argparse.Namespace], int | None],
    description: str | None = None,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """The parser of command ``name``, with its one-line help from :data:`HELP`; ``run(args)`` is what it does
    (its return value the exit status; a ``ValueError`` or ``OSError`` becomes a one-line error, status 2).
    ``kwargs`` go to ``add_parser`` (e.g. ``allow_abbrev=False``)."""
    parser = subparsers.add_parser(name, help=HELP[name], description=description, **kwargs)
    parser.set_defaults(func=run)
    return parser


def _params_names(path: str | Path, section: str) -> list[str] | None:
    """Names under ``section`` of a params file, or None when it cannot be read cleanly or the section is
    empty or malformed: the command then reports what is wrong with the file, with its own message."""
    from .io import read_yaml  # the project's strict reader: duplicate keys and bad syntax raise

    try:
        names = [str(k) for k in read_yaml(path)[section]]
    except Exception:
        return None
    return names or None


def jobs_arg(text: str) -> int | str:
    """``--jobs``: a positive integer, or ``auto`` (as many runs side by side as the CPUs hold at the
    scale's ``train.threads`` each: see :func:`repro.runtime.side_by_side`)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; must be a positive integer or auto")
    return value


def add_run_args(parser: argparse.ArgumentParser, *, method: bool = True) -> None:
    """``--params``, ``--scale`` (and ``--method``), their choices shown from ``params.yaml``.

    The help lists the names in ``params.yaml`` of the working directory. The values are checked by the
    command against the file that ``--params`` names (so a custom scale or method in another file is
    accepted), with a one-line error that names the allowed ones.
    """
    default = "params.yaml"
    parser.add_argument("--params", default=default, help="run configurations: scales and methods")
    sections = [("scale", "scales")] + ([("method", "methods")] if method else [])
    for dest, section in sections:
        names = _params_names(default, section)
        listed = f"{{{','.join(names)}}}" if names else dest.upper()
        parser.add_argument(f"--{dest}", required=True, metavar=listed, help=f"a name under '{section}:' of --params")


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (a tolerance of inf would pass any value: it checks nothing)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; must be a finite number >= 0")
    return value


def add_tolerance_args(parser: argparse.ArgumentParser, rel_tol: float, abs_tol: float) -> None:
    """The tolerances of ``compare`` and ``rerun``: same names, same rule, defaults of each command."""
    rule = "a value passes when |new - golden| <= max(abs-tol, rel-tol * |golden|), for FID and val loss"
    parser.add_argument("--rel-tol", type=nonnegative_float, default=rel_tol, help=f"relative tolerance; {rule}")
    parser.add_argument("--abs-tol", type=nonnegative_float, default=abs_tol, help="absolute tolerance (see --rel-tol)")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``only`` command's module is imported (none when ``only`` is None)."""
    parser = Parser(prog="repro", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"repro {version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name, target in COMMANDS.items():
        if name != only:
            sub.add_parser(name, help=HELP[name], add_help=False)
            continue
        importlib.import_module(target).register(sub)
    return parser


def _split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without the ``--debug`` flags given before the command, and whether there was one."""
    lead = 0
    while lead < len(argv) and argv[lead].startswith("-"):
        lead += 1
    debug = "--debug" in argv[:lead]
    return [a for i, a in enumerate(argv) if not (i < lead and a == "--debug")], debug


NEGATIVE_VALUED = ("--range",)
"""Options whose value may start with a minus (``--range -1,1``): argparse would read such a value as an option."""


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--range -1,1`` as ``--range=-1,1``: the spelling the help shows parses like the one argparse accepts."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in NEGATIVE_VALUED and i + 1 < len(argv) and argv[i + 1][:2].replace(".", "0") in _MINUS_DIGIT:
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


_MINUS_DIGIT = {f"-{d}" for d in "0123456789"}


def main(argv: list[str] | None = None, invocation: str | None = None) -> int:
    """Run the command of ``argv`` (default: ``sys.argv[1:]``); its exit status. ``args.invocation`` tells the
    command how it was called, for the records it writes: ``invocation``, else ``repro ARGV``; ``args.argv`` is
    ARGV itself. Commands read these, never ``sys.argv``."""
    given = list(sys.argv[1:] if argv is None else argv)
    argv, debug = _split_debug(given)
    argv = _join_negative_values(argv)
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    args.invocation = invocation or " ".join(["repro", *map(str, given)])
    args.argv = given  # what was parsed (sys.argv is another program's when main is called in-process)
    from .runtime import cpu_setup

    cpu_setup()  # near-zero adaLN gates make denormals; they slow CPUs ~30x
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


def run_as_module(*command: str) -> None:
    """``python -m repro.X ARGS`` as ``repro COMMAND ARGS``: the ``__main__`` shim of a library module that had
    its own command line (its options and exit statuses are the command's; records name ``python -m repro.X``)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    invocation = " ".join([f"python -m {spec.name}" if spec else sys.argv[0], *sys.argv[1:]])
    sys.exit(main([*command, *sys.argv[1:]], invocation=invocation))


if __name__ == "__main__":
    sys.exit(main())
